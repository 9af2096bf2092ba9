"""ShuffleNetV2-face (Ma et al., 2018, as adapted by the TVConv paper's face models).

Differences from the ImageNet ShuffleNetV2: the stem conv has stride 1 (the max-pool brings 96 to
48), and the classifier is replaced by the 512-d embedding head. Stages of 4/8/4 units run at 24,
12 and 6 (for a 96x96 input); every depthwise 3x3 (both branches of the stride-2 units) is a TVConv
site, 19 in all. Layers, channels and parameter counts match the official face models; unlike them
(PyTorch default init) we use the MobileNetV2-face init for both backbones.
"""

from __future__ import annotations

import torch
from torch import nn

from tvconv.models._common import ConvBNAct, check_input_size, init_weights
from tvconv.models._registry import register_model
from tvconv.models.heads import EmbeddingHead

STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: split channels, transform one half. Stride 2: both branches downsample."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        branch = out_channels // 2
        if stride == 1 and in_channels != 2 * branch:
            raise ValueError(f"stride-1 unit needs in == out channels, got {in_channels}")
        self.stride = stride
        if stride == 2:
            self.branch_shortcut = nn.Sequential(
                ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels, activation=None),
                ConvBNAct(in_channels, branch, 1, activation=nn.ReLU),
            )
        self.branch_main = nn.Sequential(
            ConvBNAct(in_channels if stride == 2 else branch, branch, 1, activation=nn.ReLU),
            ConvBNAct(branch, branch, 3, stride, groups=branch, activation=None),
            ConvBNAct(branch, branch, 1, activation=nn.ReLU),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch_main(transformed)), dim=1)
        else:
            out = torch.cat((self.branch_shortcut(x), self.branch_main(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2Face(nn.Module):
    def __init__(
        self,
        width: float,
        input_size: int | tuple[int, int] = 96,
        embedding_size: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_size = check_input_size(input_size, f"ShuffleNetV2-face x{width}")
        stem, *stages, last = STAGE_CHANNELS[width]
        self.stem = nn.Sequential(
            ConvBNAct(3, stem, 3, stride=1, activation=nn.ReLU),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        units: list[nn.Module] = []
        channels = stem
        for repeats, out_channels in zip(STAGE_REPEATS, stages, strict=True):
            units.append(ShuffleUnit(channels, out_channels, stride=2))
            units += [ShuffleUnit(out_channels, out_channels, 1) for _ in range(repeats - 1)]
            channels = out_channels
        self.stages = nn.Sequential(*units)
        self.last_conv = ConvBNAct(channels, last, 1, activation=nn.ReLU)
        self.head = EmbeddingHead(last, embedding_size, dropout)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last_conv(self.stages(self.stem(x))))  # (N, embedding_size)


def _width_variant(width: float):
    def build(
        input_size: int | tuple[int, int] = 96, embedding_size: int = 512, dropout: float = 0.0
    ) -> ShuffleNetV2Face:
        return ShuffleNetV2Face(width, input_size, embedding_size, dropout)

    return build


shufflenet_v2_x0_5 = register_model("shufflenet_v2_x0_5", _width_variant(0.5))
shufflenet_v2_x1_0 = register_model("shufflenet_v2_x1_0", _width_variant(1.0))
shufflenet_v2_x1_5 = register_model("shufflenet_v2_x1_5", _width_variant(1.5))
