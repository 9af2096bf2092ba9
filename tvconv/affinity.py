"""Affinity-map initialisers for TVConv, looked up by name.

An initialiser is a function ``(channels, h, w) -> Tensor`` of shape (channels, h, w). The paper's
default is ``ones`` (every position starts equal, so the generated kernel starts translation
invariant, like the depthwise conv it replaces). Random initialisers draw from torch's global RNG,
so a seeded run is reproducible.

Data-driven initialisers cannot be computed from the shape alone. ``register_data_driven(name,
from_inputs)`` registers one: layers built with it start from ``ones``, and
``initialise_from_data(model, images)`` then runs one probe forward in which every such layer
computes its maps from the features entering it (``from_inputs(inputs, channels, h, w)``), in
order, shallow to deep, so each layer sees the features its already-initialised predecessors make.
``stats`` is the paper's "dataset statistics" option: per-position mean and cross-image standard
deviation of the layer's input features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

AffinityInit = Callable[[int, int, int], torch.Tensor]
DataDrivenInit = Callable[[torch.Tensor, int, int, int], torch.Tensor]

_INITIALISERS: dict[str, AffinityInit] = {}
_DATA_DRIVEN: dict[str, DataDrivenInit] = {}


def register(name: str) -> Callable[[AffinityInit], AffinityInit]:
    """Decorator registering ``fn(channels, h, w) -> Tensor`` under ``name``."""

    def decorator(fn: AffinityInit) -> AffinityInit:
        if name in _INITIALISERS:
            raise ValueError(f"affinity initialiser {name!r} is already registered")
        _INITIALISERS[name] = fn
        return fn

    return decorator


def register_data_driven(name: str) -> Callable[[DataDrivenInit], DataDrivenInit]:
    """Decorator registering ``fn(inputs (N, C, H_in, W_in), channels, h, w) -> (channels, h, w)``;
    until ``initialise_from_data`` runs, such layers hold ``ones``."""

    def decorator(fn: DataDrivenInit) -> DataDrivenInit:
        register(name)(ones)
        _DATA_DRIVEN[name] = fn
        return fn

    return decorator


def list_initialisers() -> list[str]:
    return sorted(_INITIALISERS)


def is_data_driven(name: str) -> bool:
    return name in _DATA_DRIVEN


@torch.no_grad()
def initialise_from_data(model: nn.Module, images: torch.Tensor) -> int:
    """Fill the affinity maps of every layer with a data-driven init from one probe forward of
    ``images`` (model inputs, eval mode). Returns the number of layers initialised."""
    layers = [m for m in model.modules() if hasattr(m, "affinity_maps") and is_data_driven(m.init)]

    def fill(layer: nn.Module, inputs: tuple) -> None:
        maps = _DATA_DRIVEN[layer.init](inputs[0], *layer.affinity_maps.shape)
        layer.set_affinity_maps(maps.to(layer.affinity_maps))

    handles = [layer.register_forward_pre_hook(fill) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return len(layers)


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


def _standardise(maps: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std over positions, per map (a constant map becomes zeros)."""
    centred = maps - maps.mean(dim=(-2, -1), keepdim=True)
    return centred / centred.std(dim=(-2, -1), keepdim=True, unbiased=False).clamp_min(1e-6)


@register_data_driven("stats")
def stats(inputs: torch.Tensor, channels: int, h: int, w: int) -> torch.Tensor:
    """Per-position mean (over images and channels) and cross-image std (averaged over channels)
    of the layer's input, resized to (h, w), standardised, alternating over the c_A maps."""
    mean = inputs.mean(dim=(0, 1))  # (H_in, W_in)
    spread = inputs.std(dim=0, unbiased=False).mean(dim=0)  # (H_in, W_in)
    both = torch.stack([mean, spread]).unsqueeze(0).float()  # (1, 2, H_in, W_in)
    if both.shape[-2:] != (h, w):
        both = F.interpolate(both, size=(h, w), mode="bilinear", antialias=True)
    both = _standardise(both.squeeze(0))  # (2, h, w)
    return both.repeat((channels + 1) // 2, 1, 1)[:channels]
