"""Model registry: entry points by name, ``create`` with the atom (dw | tvconv) and TVConv options.

An entry point builds the depthwise (``atom="dw"``) network from keyword arguments such as
``input_size``, ``embedding_size`` and ``dropout``. ``create(..., atom="tvconv")`` then swaps
the selected depthwise sites for TVConv through ``replace_depthwise``, so the TVConv model is
exactly the dw model with its depthwise convs replaced; the replaced sites are kept on
``model.tvconv_sites``.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterable

from torch import nn

from tvconv.convert import replace_depthwise

ATOMS = ("dw", "tvconv")
TVCONV_OPTIONS = (
    "affinity_channels",
    "inter_channels",
    "inter_layers",
    "norm",
    "bias",
    "init",
    "generator",
)

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, entry_point: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = entry_point
    return entry_point


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard, sorted."""
    return sorted(fnmatch.filter(_MODELS, pattern))


def create(
    name: str,
    atom: str = "dw",
    input_size: int | tuple[int, int] = 96,
    embedding_size: int = 512,
    select: str | int | Iterable[int] = "all",
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    ``select`` picks the TVConv sites (see ``replace_depthwise``); the TVConv options
    (affinity_channels, inter_channels, inter_layers, norm, bias, init, generator) go to every
    TVConv; other keyword arguments go to the model's entry point (e.g. ``dropout``).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if atom not in ATOMS:
        raise ValueError(f"atom must be one of {', '.join(ATOMS)}, got {atom!r}")
    tvconv_kwargs = {key: kwargs.pop(key) for key in TVCONV_OPTIONS if key in kwargs}
    if atom == "dw" and (tvconv_kwargs or select != "all"):
        given = sorted(tvconv_kwargs) + ([] if select == "all" else ["select"])
        raise ValueError(f"TVConv options {given} were given for {name} with atom='dw'")
    entry_point = _MODELS[name]
    accepted = inspect.signature(entry_point).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        allowed = sorted({*accepted, *TVCONV_OPTIONS, "atom", "select"})
        raise ValueError(f"unknown option(s) {unknown} for {name}; expected some of {allowed}")
    model = entry_point(input_size=input_size, embedding_size=embedding_size, **kwargs)
    if atom == "tvconv":
        model, sites = replace_depthwise(model, model.input_size, select=select, **tvconv_kwargs)
        model.tvconv_sites = sites
    return model
