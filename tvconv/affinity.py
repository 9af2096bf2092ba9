"""Affinity-map initialisers for TVConv, looked up by name.

An initialiser is a function ``(channels, h, w) -> Tensor`` of shape (channels, h, w). The paper's
default is ``ones`` (every position starts equal, so the generated kernel starts translation
invariant, like the depthwise conv it replaces). Random initialisers draw from torch's global RNG,
so a seeded run is reproducible.

Data-driven initialisers (e.g. per-position dataset statistics) cannot be computed from the shape
alone: they register a shape-only fallback here with ``data_driven=True`` and fill the maps after a
probe forward through ``TVConv.set_affinity_maps``; ``is_data_driven(name)`` tells callers that this
second step is needed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

AffinityInit = Callable[[int, int, int], torch.Tensor]

_INITIALISERS: dict[str, AffinityInit] = {}
_DATA_DRIVEN: set[str] = set()


def register(name: str, *, data_driven: bool = False) -> Callable[[AffinityInit], AffinityInit]:
    """Decorator registering ``fn(channels, h, w) -> Tensor`` under ``name``."""

    def decorator(fn: AffinityInit) -> AffinityInit:
        if name in _INITIALISERS:
            raise ValueError(f"affinity initialiser {name!r} is already registered")
        _INITIALISERS[name] = fn
        if data_driven:
            _DATA_DRIVEN.add(name)
        return fn

    return decorator


def list_initialisers() -> list[str]:
    return sorted(_INITIALISERS)


def is_data_driven(name: str) -> bool:
    return name in _DATA_DRIVEN


def check_name(name: str) -> None:
    if name not in _INITIALISERS:
        raise ValueError(
            f"unknown affinity init {name!r}; expected one of {', '.join(list_initialisers())}"
        )


def create(name: str, channels: int, h: int, w: int) -> torch.Tensor:
    """Affinity maps of shape (channels, h, w) from the initialiser ``name``."""
    check_name(name)
    maps = _INITIALISERS[name](channels, h, w)
    if maps.shape != (channels, h, w):
        raise ValueError(
            f"affinity initialiser {name!r} returned shape {tuple(maps.shape)}, "
            f"expected {(channels, h, w)}"
        )
    return maps.float()


@register("ones")
def ones(channels: int, h: int, w: int) -> torch.Tensor:
    return torch.ones(channels, h, w)


@register("zeros")
def zeros(channels: int, h: int, w: int) -> torch.Tensor:
    return torch.zeros(channels, h, w)


@register("normal")
def normal(channels: int, h: int, w: int) -> torch.Tensor:
    """Standard normal, i.i.d. per entry."""
    return torch.randn(channels, h, w)


@register("uniform")
def uniform(channels: int, h: int, w: int) -> torch.Tensor:
    """Uniform on [-1, 1), i.i.d. per entry."""
    return torch.rand(channels, h, w) * 2 - 1


@register("coords")
def coords(channels: int, h: int, w: int) -> torch.Tensor:
    """Normalised coordinate grids: even channels hold x, odd channels y, both spanning [-1, 1]."""
    ys = torch.linspace(-1, 1, h) if h > 1 else torch.zeros(1)
    xs = torch.linspace(-1, 1, w) if w > 1 else torch.zeros(1)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    grids = torch.stack([grid_x, grid_y])  # (2, h, w)
    return grids.repeat((channels + 1) // 2, 1, 1)[:channels]
