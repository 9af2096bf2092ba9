"""DeepLabV3+ with a MobileNetV2 backbone for optic cup / disc segmentation (the paper's model).

Backbone: the ImageNet MobileNetV2 (stem stride 2) at output stride 16: the stage that would go
to stride 32 keeps stride 16 and dilates its depthwise convs by 2 instead. Module names follow
torchvision's ``mobilenet_v2`` (``features.<i>.conv.<j>``), so an ImageNet state dict of that
layout loads into ``backbone`` unchanged (``load_backbone``; the final 1x1 conv to 1280 channels
and the classifier are not used). Low-level features come from stride 4 (``features[:4]``).

ASPP, selected by ``atom``:

- ``aspp``: the standard DeepLabV3 head: a 1x1 branch, three dilated 3x3 branches (rates 6, 12,
  18), image pooling, then a 1x1 projection. At output stride 16 a 256 px input gives a 16x16
  map, where rate 18 only keeps the centre tap; at 96 px (6x6) every rate does, and the three
  branches act as 1x1 convs.
- ``dw``: each dilated branch becomes an inverted residual, 1x1 -> depthwise 3x3 -> 1x1, all with
  the branch's width. The depthwise conv is not dilated: TVConv has no dilation, and ``tvconv``
  replaces exactly this conv, so ``dw`` vs ``tvconv`` isolates translation variance.
- ``tvconv``: ``dw`` with its three depthwise convs replaced by TVConv at the ASPP resolution
  (``input_size / 16``). The TVConv scope of this model is the ASPP (``tvconv_target``): the
  backbone keeps its depthwise convs, as in the paper.

Decoder (DeepLabV3+): the ASPP output upsampled x4, concatenated with the projected low-level
features, two 3x3 convs, a 1x1 classifier to two logits (cup, disc; sigmoid outputs), upsampled
to the input size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tvconv.models._common import ConvBNAct, check_input_size, init_weights, make_divisible
from tvconv.models._registry import register_model

SEG_ATOMS = ("aspp", "dw", "tvconv")  # tvconv = dw with the ASPP's depthwise convs replaced
ASPP_RATES = (6, 12, 18)
NUM_OUTPUTS = 2  # cup, disc
# (expansion t, channels c, repeats n, first stride s): the ImageNet MobileNetV2
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
LOW_LEVEL_END = 4  # features[:4] end at stride 4 (24 channels at width 1)


class ImageNetInvertedResidual(nn.Module):
    """torchvision's layout: ``conv`` = [expand ConvBNReLU6 (t > 1)], depthwise ConvBNReLU6,
    1x1 conv, BN; residual when the shape is kept."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, expansion: int, dilation: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1))
        depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden)
        if dilation > 1:
            depthwise[0].dilation = (dilation, dilation)
            depthwise[0].padding = (dilation, dilation)
        layers += [depthwise, nn.Conv2d(hidden, out_channels, 1, bias=False)]
        layers.append(nn.BatchNorm2d(out_channels))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Backbone(nn.Module):
    """ImageNet MobileNetV2 features at output stride 16; forward -> (low-level, high-level)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        channels = make_divisible(32 * width)
        layers: list[nn.Module] = [ConvBNAct(3, channels, 3, stride=2)]
        stride_so_far, dilation = 2, 1
        for expansion, base_channels, repeats, first_stride in BLOCKS:
            out_channels = make_divisible(base_channels * width)
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                block_dilation = dilation
                if stride == 2 and stride_so_far == 16:  # keep output stride 16: dilate instead
                    stride, dilation = 1, dilation * 2
                stride_so_far *= stride
                layers.append(
                    ImageNetInvertedResidual(
                        channels, out_channels, stride, expansion, block_dilation
                    )
                )
                channels = out_channels
        self.features = nn.Sequential(*layers)
        self.low_level_channels = make_divisible(24 * width)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.features[:LOW_LEVEL_END](x)
        return low, self.features[LOW_LEVEL_END:](low)


class InvertedResidualBranch(nn.Module):
    """An ASPP branch of the ``dw`` / ``tvconv`` heads: 1x1 -> depthwise 3x3 -> 1x1 (+ ReLU)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.expand = ConvBNAct(in_channels, channels, 1)
        self.depthwise = ConvBNAct(channels, channels, 3, groups=channels)
        self.project = ConvBNAct(channels, channels, 1, activation=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.depthwise(self.expand(x)))


class ImagePooling(nn.Module):
    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels, channels, 1, activation=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(x.mean(dim=(2, 3), keepdim=True))
        return pooled.expand(-1, -1, *x.shape[2:])


class ASPP(nn.Module):
    """1x1 branch + three rate branches (by ``atom``) + image pooling -> concat -> 1x1."""

    def __init__(self, in_channels: int, channels: int, atom: str) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNAct(in_channels, channels, 1, activation=nn.ReLU)]
        for rate in ASPP_RATES:
            if atom == "aspp":
                dilated = ConvBNAct(in_channels, channels, 3, activation=nn.ReLU)
                dilated[0].dilation, dilated[0].padding = (rate, rate), (rate, rate)
                branches.append(dilated)
            else:
                branches.append(InvertedResidualBranch(in_channels, channels))
        self.branches = nn.ModuleList(branches)
        self.pooling = ImagePooling(in_channels, channels)
        self.project = ConvBNAct(channels * (len(branches) + 1), channels, 1, activation=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches] + [self.pooling(x)]
        return self.project(torch.cat(outputs, dim=1))


class DeepLabV3Plus(nn.Module):
    """forward(images (N, 3, H, W)) -> logits (N, 2, H, W) for (cup, disc)."""

    def __init__(
        self,
        atom: str = "aspp",
        input_size: int | tuple[int, int] = 256,
        width: float = 1.0,
        aspp_channels: int = 256,
        decoder_channels: int = 256,
        low_level_channels: int = 48,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        if atom not in ("aspp", "dw"):
            raise ValueError(
                f"atom must be aspp or dw, got {atom!r} (a TVConv model comes from "
                "tvconv.models.create(..., atom='tvconv'))"
            )
        self.input_size = check_input_size(input_size, "DeepLabV3+ MobileNetV2")
        self.atom = atom
        self.backbone = MobileNetV2Backbone(width)
        self.aspp = ASPP(self.backbone.out_channels, aspp_channels, atom)
        self.low_level = ConvBNAct(
            self.backbone.low_level_channels, low_level_channels, 1, activation=nn.ReLU
        )
        self.decoder = nn.Sequential(
            ConvBNAct(aspp_channels + low_level_channels, decoder_channels, activation=nn.ReLU),
            ConvBNAct(decoder_channels, decoder_channels, activation=nn.ReLU),
            nn.Conv2d(decoder_channels, NUM_OUTPUTS, 1),
        )
        init_weights(self)
        if backbone_weights is not None:
            load_backbone(self.backbone, backbone_weights)

    def tvconv_target(self) -> tuple[nn.Module, tuple[int, int, int]]:
        """The module whose depthwise convs TVConv replaces (the ASPP) and its input shape."""
        h, w = (v // 16 for v in self.input_size)
        return self.aspp, (self.backbone.out_channels, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(x)
        context = F.interpolate(
            self.aspp(high), size=low.shape[2:], mode="bilinear", align_corners=False
        )
        logits = self.decoder(torch.cat([context, self.low_level(low)], dim=1))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def load_backbone(backbone: MobileNetV2Backbone, path: str | Path) -> None:
    """Load backbone weights from a local state dict (``torch.load(weights_only=True)``).

    Accepted: the backbone's own state dict, or an ImageNet MobileNetV2 state dict in torchvision's
    layout (``features.*``; keys this backbone lacks, such as the last 1x1 conv and the
    classifier, are ignored). Every backbone key must be present with the same shape."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"backbone weights {path} do not exist (no download is ever made)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, a truncated one, a pickle of other objects
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ValueError(
            f"backbone weights {path} cannot be read as a state dict ({type(error).__name__}: "
            f"{reason}); expected a file saved by torch.save(model.state_dict())"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"backbone weights {path}: expected a state dict (parameter name -> tensor), got "
            f"{type(state).__name__}"
            + (" with values that are not tensors" if isinstance(state, dict) else "")
        )
    expected = backbone.state_dict()
    missing = [key for key in expected if key not in state]
    wrong = [
        f"{key} {tuple(state[key].shape)} != {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if missing or wrong:
        detail = (f"missing {missing[:3]}" if missing else "") + (
            f" shape mismatch {wrong[:3]}" if wrong else ""
        )
        raise ValueError(
            f"backbone weights {path} do not fit MobileNetV2 width "
            f"{backbone.out_channels / 320:g}: {detail.strip()} (expected torchvision's "
            "mobilenet_v2 layout or this backbone's own state dict)"
        )
    backbone.load_state_dict({key: state[key] for key in expected})


def _variant(width: float, aspp_channels: int, decoder_channels: int, low_level_channels: int):
    def build(
        atom: str = "aspp",
        input_size: int | tuple[int, int] = 256,
        backbone_weights: str | None = None,
    ) -> DeepLabV3Plus:
        return DeepLabV3Plus(
            atom,
            input_size,
            width,
            aspp_channels,
            decoder_channels,
            low_level_channels,
            backbone_weights,
        )

    return build


# The paper's model, and a narrow one for the CPU presets (x0.35 backbone, 64-wide heads).
deeplabv3plus_mobilenet_v2 = register_model(
    "deeplabv3plus_mobilenet_v2", _variant(1.0, 256, 256, 48), task="fundus", atoms=SEG_ATOMS
)
deeplabv3plus_mobilenet_v2_x0_35 = register_model(
    "deeplabv3plus_mobilenet_v2_x0_35", _variant(0.35, 64, 64, 24), task="fundus", atoms=SEG_ATOMS
)
