"""MobileNetV2-face (Sandler et al., 2018, as adapted by the TVConv paper's face models).

Differences from the ImageNet MobileNetV2: the stem conv has stride 1 (a 96x96 face keeps 96x96 in
the first block), the last 1x1 conv goes to 512 channels, and the classifier is replaced by the
512-d embedding head. At 96x96 the 17 depthwise convs (the TVConv sites) run at 96, 48, 48, 24, 24,
24, 12 (x7), 6 (x4). Layers, channels and parameter counts match the official face models.
"""

from __future__ import annotations

import torch
from torch import nn

from tvconv.models._common import ConvBNAct, check_input_size, init_weights, make_divisible
from tvconv.models._registry import register_model
from tvconv.models.heads import EmbeddingHead

# (expansion t, channels c, repeats n, first stride s)
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
STEM_CHANNELS = 32
LAST_CHANNELS = 512


class InvertedResidual(nn.Module):
    """1x1 expand (if t > 1) -> depthwise 3x3 -> 1x1 projection (+ residual if shapes match)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = ConvBNAct(in_channels, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNetV2Face(nn.Module):
    def __init__(
        self,
        width: float,
        input_size: int | tuple[int, int] = 96,
        embedding_size: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_size = check_input_size(input_size, f"MobileNetV2-face x{width}")
        channels = make_divisible(STEM_CHANNELS * width)
        layers: list[nn.Module] = [ConvBNAct(3, channels, 3, stride=1)]
        for expansion, base_channels, repeats, first_stride in BLOCKS:
            out_channels = make_divisible(base_channels * width)
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, stride, expansion))
                channels = out_channels
        last_channels = make_divisible(LAST_CHANNELS * max(1.0, width))
        layers.append(ConvBNAct(channels, last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.head = EmbeddingHead(last_channels, embedding_size, dropout)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, embedding_size)


def _width_variant(width: float):
    def build(
        input_size: int | tuple[int, int] = 96, embedding_size: int = 512, dropout: float = 0.0
    ) -> MobileNetV2Face:
        return MobileNetV2Face(width, input_size, embedding_size, dropout)

    return build


mobilenet_v2_x0_1 = register_model("mobilenet_v2_x0_1", _width_variant(0.1))
mobilenet_v2_x0_2 = register_model("mobilenet_v2_x0_2", _width_variant(0.2))
mobilenet_v2_x0_3 = register_model("mobilenet_v2_x0_3", _width_variant(0.3))
mobilenet_v2_x0_5 = register_model("mobilenet_v2_x0_5", _width_variant(0.5))
mobilenet_v2_x1_0 = register_model("mobilenet_v2_x1_0", _width_variant(1.0))
