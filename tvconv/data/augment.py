"""Train-time augmentation: batched tensor ops, deterministic under a ``torch.Generator``.

An augmentation is written as a spec string of comma-separated operations, each ``name`` or
``name:strength`` and applied in the order given, e.g. ``"hflip,shift:0.1,rotate:10"`` (``none``
alone or in a list adds nothing). Every strength is relative to the frame, so an augmentation is
equally strong at any image size:

| op     | strength                        | what it does (per image, at random)               |
|--------|---------------------------------|---------------------------------------------------|
| hflip  | probability (default 0.5)       | horizontal flip (the paper's only augmentation)   |
| shift  | max fraction f (default 0.1)    | translate by whole pixels, up to round(f * side)  |
|        |                                 | along each axis: pad, crop                        |
| crop   | min area fraction (default 0.5) | random resized crop, aspect in [3/4, 4/3]; or an  |
|        | or an area range lo-hi          | area range (``crop:0.3-0.8``)                     |
| rotate | max degrees (default 15)        | in-plane rotation about the centre                |
| color  | jitter amount s (default 0.4)   | brightness, contrast, saturation x U(1-s, 1+s)    |
|        |                                 | (also spelled ``colour``)                         |
| cutout | side fraction (default 0.3)     | one square of round(f * side) pixels set to the   |
|        |                                 | mean value (0)                                    |

shift and cutout work in whole pixels, so a fraction is as strong at any size only up to that
rounding (``shift:0.05`` is 2 px, 6.3% of a 32 px frame, and 5 px, 5.2% of a 96 px one);
``Augmentation.check_size`` refuses a non-zero strength that rounds to no pixel at all. Both
also take a strength in pixels (``shift:4px``: +/-4 px at any size; ``cutout:8px``), which is
then not the same strength at another size.

Images are model inputs in [-1, 1] (``to_model_input``); geometric ops fill uncovered pixels with
-1 (black, as zero-padding a uint8 image). ``LEVELS`` names the ladder of the
augmentation-robustness study, from layout-preserving to layout-destroying.

``mean_displacement(spec)`` measures how far a spec moves image content (the ladder's order).

Segmentation (``Augmentation.with_masks``): the geometric ops (``GEOMETRIC``) move the masks with
their image (same random draw per sample, bilinear then thresholded at one half, uncovered pixels
background); the photometric ops (color, cutout) change the image only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FILL = -1.0

LEVELS = {
    "none": "",
    "hflip": "hflip",
    "shift5": "hflip,shift:0.05",
    "shift10": "hflip,shift:0.1",
    "shift20": "hflip,shift:0.2",
    "crop": "hflip,crop:0.5",
    "rot10": "hflip,rotate:10",
    "rot30": "hflip,rotate:30",
    "color": "hflip,color:0.4",
    "cutout": "hflip,cutout:0.3",
}


def _hflip(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=g) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class Pixels(int):
    """A whole-pixel op's strength given in pixels (``shift:4px``), not as a fraction."""


def _pixels(strength: float, side: int) -> int:
    """Pixels of a whole-pixel op's strength along a side of ``side`` pixels."""
    return int(strength) if isinstance(strength, Pixels) else round(strength * side)


def _shift(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    ky, kx = _pixels(fraction, h), _pixels(fraction, w)  # the same fraction at any size
    padded = F.pad(x, (kx, kx, ky, ky), value=FILL)
    dy = torch.randint(0, 2 * ky + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * kx + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n)[:, None, None, None]
    channel = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, channel, rows, cols]


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample x through per-image affine maps theta (N, 2, 3) (output -> input coordinates)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    shifted = F.grid_sample(
        x - FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return shifted + FILL


def _crop(x: torch.Tensor, area: float | tuple[float, float], g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    low, high = area if isinstance(area, tuple) else (area, 1.0)
    area = torch.rand(n, generator=g) * (high - low) + low
    log_ratio = (torch.rand(n, generator=g) * 2 - 1) * math.log(4 / 3)
    ratio = torch.exp(log_ratio)
    sx = torch.sqrt(area * ratio).clamp(max=1)  # crop width / image width
    sy = torch.sqrt(area / ratio).clamp(max=1)
    cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - sx)
    cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - sy)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
    return _warp(x, theta)


def _rotate(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    return _warp(x, theta)


def _color(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]

    def factor() -> torch.Tensor:
        return (1 + (torch.rand(n, generator=g) * 2 - 1) * s)[:, None, None, None]

    img = (x + 1) / 2  # [0, 1]
    img = img * factor()
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    img = (img - mean) * factor() + mean
    gray = img.mean(dim=1, keepdim=True)
    img = (img - gray) * factor() + gray
    return img.clamp(0, 1) * 2 - 1


def _cutout(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    side_h, side_w = min(_pixels(fraction, h), h), min(_pixels(fraction, w), w)  # 0: no hole
    top = torch.randint(0, h - side_h + 1, (n,), generator=g)[:, None, None]
    left = torch.randint(0, w - side_w + 1, (n,), generator=g)[:, None, None]
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    hole = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
    return x.masked_fill(hole.unsqueeze(1), 0.0)


@dataclass(frozen=True)
class _Op:
    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
    default: float
    low: float
    high: float
    unit: str


OPS = {
    "hflip": _Op(_hflip, 0.5, 0.0, 1.0, "probability"),
    "shift": _Op(_shift, 0.1, 0.0, 0.5, "fraction of the frame"),
    "crop": _Op(_crop, 0.5, 0.05, 1.0, "minimum area fraction"),
    "rotate": _Op(_rotate, 15, 0, 180, "degrees"),
    "color": _Op(_color, 0.4, 0.0, 1.0, "jitter amount"),
    "cutout": _Op(_cutout, 0.3, 0.0, 1.0, "side fraction"),
}


GEOMETRIC = frozenset({"hflip", "shift", "crop", "rotate"})
WHOLE_PIXELS = frozenset({"shift", "cutout"})  # strength x side, rounded to whole pixels


class Augmentation:
    """A parsed spec (or a named level of ``LEVELS``); call with (images, generator)."""

    def __init__(self, spec: str = "") -> None:
        if not isinstance(spec, str):
            raise ValueError(
                f"augmentation must be a spec string such as 'hflip,shift:0.1' or a level "
                f"({', '.join(LEVELS)}), got {spec!r}"
            )
        self.spec = LEVELS.get(spec, spec)
        self.steps = [
            parse_op(token) for token in self.spec.split(",") if token.strip() not in ("", "none")
        ]

    def check_size(self, side: int) -> None:
        """Refuse a whole-pixel op (``WHOLE_PIXELS``) whose non-zero strength rounds to 0 pixels
        on a ``side``-pixel frame: it would silently do nothing. Raises ValueError."""
        for name, strength in self.steps:
            if isinstance(strength, Pixels):
                if name == "shift" and 2 * strength > side:
                    raise ValueError(
                        f"augmentation 'shift:{strength}px' moves more than half of a {side} px "
                        f"image; expected at most {side // 2}px"
                    )
                if name == "cutout" and strength > side:
                    raise ValueError(
                        f"augmentation 'cutout:{strength}px' is larger than a {side} px image"
                    )
                continue
            if name in WHOLE_PIXELS and strength > 0 and round(strength * side) == 0:
                raise ValueError(
                    f"augmentation '{name}:{strength:g}' is 0 pixels on a {side} px image "
                    f"({strength:g} x {side} rounds to 0) and would do nothing; expected at "
                    f"least {1 / side:.3g} (one pixel), or {name}:0 / no {name} for none"
                )

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for name, strength in self.steps:
            images = OPS[name].apply(images, strength, generator)
        return images

    def with_masks(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment images (N, C, H, W) in [-1, 1] and their bool masks (N, M, H, W) together."""
        channels = images.shape[1]
        for name, strength in self.steps:
            if name in GEOMETRIC:
                # masks as -1 / +1: the fill value -1 is background, the threshold 0 is one half
                joint = torch.cat([images, masks.to(images.dtype) * 2 - 1], dim=1)
                joint = OPS[name].apply(joint, strength, generator)
                images, masks = joint[:, :channels], joint[:, channels:] > 0
            else:
                images = OPS[name].apply(images, strength, generator)
        return images, masks

    def __repr__(self) -> str:
        return f"Augmentation({self.spec!r})"


ALIASES = {"colour": "color"}


def parse_op(token: str) -> tuple[str, float | tuple[float, float]]:
    """``(name, strength)`` of one ``name[:strength]`` token: a number in the op's range, a
    ``Pixels`` count for ``shift`` / ``cutout`` given as ``<k>px``, a (low, high) area range for
    ``crop`` given as ``lo-hi``. Raises ValueError naming the token and what is expected."""
    name, colon, value = token.strip().partition(":")
    name = ALIASES.get(name, name)
    if name not in OPS:
        raise ValueError(
            f"unknown augmentation {name!r} in {token!r}; expected one of {', '.join(OPS)} "
            f"(or a level: {', '.join(LEVELS)})"
        )
    op = OPS[name]
    if not colon:
        return name, float(op.default)
    if not value.strip():
        raise ValueError(
            f"augmentation {token.strip()!r}: no strength after ':'; expected {op.unit} in "
            f"[{op.low}, {op.high}], or {name!r} alone for the default {op.default:g}"
        )
    value = value.strip()
    if name in WHOLE_PIXELS and value.endswith("px"):
        if not value[:-2].isdigit():
            raise ValueError(f"augmentation {token!r}: expected a whole number of pixels, e.g. 4px")
        return name, Pixels(int(value[:-2]))
    if name == "crop" and "-" in value.lstrip("-"):
        return name, _area_range(token, value)
    try:
        strength = float(value)
    except ValueError:
        strength = math.nan
    if not op.low <= strength <= op.high:
        raise ValueError(
            f"augmentation {token!r}: strength must be {op.unit} in [{op.low}, {op.high}], "
            f"got {value!r}"
        )
    return name, strength


def _area_range(token: str, value: str) -> tuple[float, float]:
    """``crop:lo-hi``: the area fraction range of the random resized crop."""
    low_text, _, high_text = value.partition("-")
    try:
        low, high = float(low_text), float(high_text)
    except ValueError:
        low = high = math.nan
    op = OPS["crop"]
    if not op.low <= low <= high <= op.high:
        raise ValueError(
            f"augmentation {token!r}: an area range must be lo-hi with {op.low} <= lo <= hi <= "
            f"{op.high}, e.g. crop:0.3-0.8"
        )
    return low, high


def mean_displacement(spec: str, size: int = 32, samples: int = 2000, seed: int = 0) -> float:
    """How far an augmentation's geometric ops move image content, on average, as a fraction of
    the frame side: a frame holding each pixel's own coordinates is augmented and every covered
    pixel's source compared with where it lands. Mirror-invariant (a horizontal flip of a
    symmetric face moves nothing); photometric ops move nothing. ``shift20``: 0.14."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    frame = torch.stack([u, v, torch.ones_like(u)]).expand(samples, 3, size, size).clone()
    generator = torch.Generator().manual_seed(seed)
    for name, strength in Augmentation(spec).steps:
        if name in GEOMETRIC:
            frame = OPS[name].apply(frame, strength, generator)
    covered = frame[:, 2] > 0  # uncovered pixels hold the fill value -1
    moved_u = frame[:, 0].abs() - u.abs()
    moved_v = frame[:, 1] - v
    distance = torch.sqrt(moved_u**2 + moved_v**2)[covered]
    return float(distance.mean() / 2) if distance.numel() else 0.0  # the frame spans 2
