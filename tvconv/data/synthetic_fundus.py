"""Embedded synthetic fundus images, generated from a seed (``tvconv.data.synthetic`` seeding).

RGB fundus ROIs centred near the optic disc: retinal background with vignetting, vessels
radiating from the disc, a bright disc and a brighter cup inside it, with (cup, disc) masks. Four
domains differ in colour, contrast, blur, illumination and disc size, mirroring the paper's
leave-one-domain-out setup (Drishti-GS, RIM-ONE-r3, REFUGE train, REFUGE val; default split sizes
are theirs). The same configuration and seed give bit-identical tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tvconv.data._cache import cache_key, cached
from tvconv.data._render import (
    blend,
    col,
    pixel_grid,
    smooth_field,
    soft_band,
    soft_ellipse,
)
from tvconv.data.datasets import FundusSet
from tvconv.data.synthetic import GENERATOR_VERSION, _uniform, stream

# ---------------------------------------------------------------------------------------------
# Fundus
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FundusDomainStyle:
    """Acquisition statistics of one fundus domain."""

    retina: tuple[float, float, float]
    disc: tuple[float, float, float]
    contrast: float
    blur_px: float
    vignette: float
    disc_radius: tuple[float, float]
    cup_ratio: tuple[float, float]
    train: int
    test: int


FUNDUS_DOMAINS = {
    1: FundusDomainStyle((0.62, 0.25, 0.10), (0.95, 0.80, 0.55), 1.0, 0.6, 0.35,
                         (0.30, 0.38), (0.45, 0.75), 50, 51),
    2: FundusDomainStyle((0.45, 0.22, 0.16), (0.85, 0.62, 0.50), 0.7, 1.6, 0.55,
                         (0.36, 0.46), (0.35, 0.65), 99, 60),
    3: FundusDomainStyle((0.70, 0.38, 0.18), (0.98, 0.90, 0.70), 1.15, 0.9, 0.25,
                         (0.24, 0.32), (0.30, 0.60), 320, 80),
    4: FundusDomainStyle((0.55, 0.30, 0.22), (0.92, 0.78, 0.66), 0.85, 1.2, 0.45,
                         (0.26, 0.34), (0.35, 0.60), 320, 80),
}  # fmt: skip
VESSELS = 7


def _blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma_px))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma_px**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    horizontal = F.conv2d(
        padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels
    )
    return F.conv2d(
        horizontal, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels
    )


def _render_fundus(
    count: int, style: FundusDomainStyle, size: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    u, v = pixel_grid(size)
    u, v = u.expand(count, size, size), v.expand(count, size, size)
    centre = _uniform(g, count, -0.08, 0.08, 2)
    du, dv = u - col(centre[:, 0]), v - col(centre[:, 1])
    disc_r = _uniform(g, count, *style.disc_radius)
    aspect = _uniform(g, count, 0.9, 1.1)
    cup_r = disc_r * _uniform(g, count, *style.cup_ratio)
    cup_shift = _uniform(g, count, -0.25, 0.25, 2) * col(disc_r - cup_r).reshape(-1, 1)
    edge = 1.0 / size
    disc = soft_ellipse(du, dv, col(disc_r), col(disc_r * aspect), edge)
    cu, cv = du - col(cup_shift[:, 0]), dv - col(cup_shift[:, 1])
    cup = soft_ellipse(cu, cv, col(cup_r), col(cup_r * aspect), edge * 2)

    retina = torch.tensor(style.retina) * (1 + _uniform(g, count, -0.12, 0.12, 3))
    field_ = smooth_field(torch.randn(count, 5, 5, generator=g) * 0.08, u, v)
    image = retina[:, :, None, None] * (1 + field_).unsqueeze(1)
    radius = torch.sqrt(u**2 + v**2)
    image = image * (1 - style.vignette * radius**2 / 2).unsqueeze(1)

    # Vessels: curves radiating from the disc centre, angle drifting with the radius.
    angle = torch.atan2(dv, du)
    rho = torch.sqrt(du**2 + dv**2)
    vessels = torch.zeros(count, size, size)
    for _ in range(VESSELS):
        start = _uniform(g, count, -math.pi, math.pi)
        drift = _uniform(g, count, -1.2, 1.2)
        wiggle = _uniform(g, count, 0.0, 0.25)
        course = col(start) + col(drift) * rho + col(wiggle) * torch.sin(7 * rho)
        gap = torch.remainder(angle - course + math.pi, 2 * math.pi) - math.pi
        width = 0.028 * (1.2 - rho).clamp(0.25, 1.0)
        vessels = torch.maximum(vessels, soft_band((gap * rho).abs(), width, edge))
    vessel_colour = torch.tensor([0.35, 0.06, 0.04])[None].expand(count, 3)
    image = blend(image, vessel_colour * retina / retina.mean(1, keepdim=True), vessels * 0.85)
    image = blend(image, torch.tensor(style.disc).expand(count, 3), disc * 0.9)
    image = blend(image, torch.tensor([1.0, 0.97, 0.85]).expand(count, 3), cup * 0.75)
    image = blend(image, vessel_colour, vessels * disc * 0.5)

    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * style.contrast + mean
    image = _blur(image, style.blur_px * size / 128)
    image = image + torch.randn(image.shape, generator=g) * 0.015
    images = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    masks = torch.stack([cup > 0.5, (disc > 0.5) | (cup > 0.5)], dim=1)
    return images, masks


def split_size(domain: int, split: str, scale: float) -> int:
    """Images in one synthetic split: the paper's size times ``scale``, at least one."""
    return max(1, round(getattr(FUNDUS_DOMAINS[domain], split) * scale))


def make_fundus_domains(
    size: int = 128, seed: int = 0, scale: float = 1.0
) -> dict[int, dict[str, FundusSet]]:
    """Four synthetic fundus domains, each with ``train`` and ``test`` splits.

    ``scale`` multiplies every split size (1.0 = the paper's sizes: 50/51, 99/60, 320/80, 320/80).
    """
    if size < 32:
        raise ValueError(f"fundus image size must be >= 32, got {size}")
    if scale <= 0:
        raise ValueError(f"fundus scale must be > 0, got {scale}")

    def build() -> dict:
        data = {}
        for domain, style in FUNDUS_DOMAINS.items():
            for split in ("train", "test"):
                count = split_size(domain, split, scale)
                g = stream(seed, f"fundus-{domain}-{split}")
                images, masks = _render_fundus(count, style, size, g)
                data[f"{domain}-{split}"] = {"images": images, "masks": masks}
        return data

    config = {"size": size, "seed": seed, "scale": scale}
    data = cached(cache_key("fundus", GENERATOR_VERSION, config), build)
    return {
        domain: {
            split: FundusSet(**data[f"{domain}-{split}"], domain=domain, split=split)
            for split in ("train", "test")
        }
        for domain in FUNDUS_DOMAINS
    }
