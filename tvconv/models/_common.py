"""Building blocks and conventions shared by the backbones (face models and the segmenter)."""

from __future__ import annotations

from torch import nn

TOTAL_STRIDE = 16


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (at least ``divisor``), never more than
    10% below ``value`` (the MobileNet convention)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_input_size(input_size: int | tuple[int, int], model: str) -> tuple[int, int]:
    """(H, W) from an int or pair, each divisible by the backbones' total stride of 16."""
    if isinstance(input_size, int):
        size = (input_size, input_size)
    elif isinstance(input_size, (tuple, list)):
        size = tuple(input_size)
    else:
        size = ()  # a float, None, a string: refused below
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise ValueError(f"{model}: input_size must be an int or (H, W), got {input_size!r}")
    if min(size) < 1:
        raise ValueError(f"{model}: input_size must be positive, got {input_size!r}")
    if any(v % TOTAL_STRIDE for v in size):
        raise ValueError(
            f"{model}: input_size {input_size!r} must be divisible by the network's total stride "
            f"{TOTAL_STRIDE} (e.g. 32, 48, 96, 112)"
        )
    return size


class ConvBNAct(nn.Sequential):
    """Conv (no bias, 'same' padding) -> BatchNorm -> activation (None for none)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU6,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                (kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


def init_weights(model: nn.Module) -> None:
    """The official face models' init, used by the segmenter too: kaiming-normal (fan_out) convs,
    unit/zero norms, N(0, 0.01) linear layers."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
