"""Vectorised soft-shape rasterisation on batches of images (torch, float32, CPU-friendly).

Coordinates are normalised: pixel centres span [-1, 1] along each axis (u to the right, v down),
so a shape renders the same at any resolution. Edges are anti-aliased over about one pixel by a
sigmoid of an approximate signed distance.
"""

from __future__ import annotations

import torch


def pixel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v), each (size, size): normalised coordinates of the pixel centres."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    return u, v


def col(values: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1) so per-image parameters broadcast over (B, H, W)."""
    return values.reshape(-1, 1, 1)


def soft_ellipse(
    x: torch.Tensor, y: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, edge: float
) -> torch.Tensor:
    """Coverage in [0, 1] of an axis-aligned ellipse centred at the origin of (x, y)."""
    radius = torch.sqrt((x / rx) ** 2 + (y / ry) ** 2 + 1e-12)
    # Signed distance to the rim (> 0 inside): the first-order estimate (1 - radius) / |grad
    # radius|, bounded by the distance to the bounding box, which holds far from a flat ellipse
    # too (a closed eye must not leak a band along its long axis).
    gradient = torch.sqrt((x / rx**2) ** 2 + (y / ry**2) ** 2 + 1e-12) / radius
    first_order = (1 - radius) / torch.maximum(gradient, 1 / torch.maximum(rx, ry))
    outside_box = torch.maximum(x.abs() - rx, y.abs() - ry)
    return torch.sigmoid(torch.minimum(first_order, -outside_box) / edge)


def soft_band(distance: torch.Tensor, half_width: torch.Tensor, edge: float) -> torch.Tensor:
    """Coverage of a stroke: points within ``half_width`` of a curve (``distance`` >= 0)."""
    return torch.sigmoid((half_width - distance) / edge)


def gaussian_blob(x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    return torch.exp(-(x**2 + y**2) / (2 * sigma**2))


def blend(image: torch.Tensor, colour: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Paint ``colour`` (B, 3) or (B, 3, H, W) over ``image`` (B, 3, H, W); coverage (B, H, W)."""
    if colour.dim() == 2:
        colour = colour[:, :, None, None]
    alpha = coverage.unsqueeze(1)
    return image * (1 - alpha) + colour * alpha


def smooth_field(coefficients: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample per-image low-resolution fields (B, g, g) bilinearly at coordinates (B, H, W)."""
    grid = torch.stack((x, y), dim=-1)  # (B, H, W, 2), in [-1, 1] where the field is defined
    sampled = torch.nn.functional.grid_sample(
        coefficients.unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return sampled.squeeze(1)  # (B, H, W)
