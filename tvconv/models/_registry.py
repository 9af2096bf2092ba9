"""Model registry: entry points by name, ``create`` with the atom (dw | tvconv) and TVConv options.

An entry point builds the depthwise (``atom="dw"``) network from keyword arguments such as
``input_size``, ``embedding_size`` and ``dropout``. ``create(..., atom="tvconv")`` then swaps
the selected depthwise sites for TVConv through ``replace_depthwise``, so the TVConv model is
exactly the dw model with its depthwise convs replaced; the replaced sites are kept on
``model.tvconv_sites`` (names relative to the model). A model may narrow where TVConv goes with
``tvconv_target()`` (a submodule and its input shape; the segmenter's ASPP), and declare other
atoms than dw / tvconv (the segmenter's ``aspp``), which its entry point receives as ``atom``.
Each model belongs to a task (``face`` or ``fundus``).
"""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torch import nn

from tvconv import kernels
from tvconv.convert import replace_depthwise
from tvconv.ops import OPTION_NAMES as TVCONV_OPTIONS

ATOMS = ("dw", "tvconv")

TASKS = ("face", "fundus")


@dataclass(frozen=True)
class _Entry:
    build: Callable[..., nn.Module]
    task: str
    atoms: tuple[str, ...]


_MODELS: dict[str, _Entry] = {}


def register_model(
    name: str,
    entry_point: Callable[..., nn.Module],
    task: str = "face",
    atoms: tuple[str, ...] = ATOMS,
) -> Callable[..., nn.Module]:
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    if task not in TASKS:
        raise ValueError(f"model {name!r}: task must be one of {TASKS}, got {task!r}")
    if "tvconv" not in atoms:
        raise ValueError(f"model {name!r}: atoms must include tvconv, got {tuple(atoms)}")
    _MODELS[name] = _Entry(entry_point, task, tuple(atoms))
    return entry_point


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered model names matching a shell-style wildcard (and of ``task``, if given),
    sorted."""
    names = [n for n, e in _MODELS.items() if task is None or e.task == task]
    return sorted(fnmatch.filter(names, pattern))


def model_atoms(name: str) -> tuple[str, ...]:
    """The atoms model ``name`` can be built with (dw, tvconv for the face backbones)."""
    return _entry(name).atoms


def model_task(name: str) -> str:
    return _entry(name).task


def _entry(name: str) -> _Entry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def create(
    name: str,
    atom: str = "dw",
    input_size: int | tuple[int, int] = 96,
    embedding_size: int | None = None,
    select: str | int | Iterable[int] = "all",
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    ``select`` picks the TVConv sites (see ``replace_depthwise``); the TVConv options
    (affinity_channels, inter_channels, inter_layers, norm, bias, init, generator) go to every
    TVConv; other keyword arguments go to the model's entry point (e.g. ``dropout``).
    ``embedding_size`` (face models; their default is 512) is an entry-point option too.
    """
    entry = _entry(name)
    if atom not in entry.atoms:
        raise ValueError(f"atom for {name} must be one of {', '.join(entry.atoms)}, got {atom!r}")
    tvconv_kwargs = {key: kwargs.pop(key) for key in TVCONV_OPTIONS if key in kwargs}
    if atom != "tvconv" and (tvconv_kwargs or select != "all"):
        given = sorted(tvconv_kwargs) + ([] if select == "all" else ["select"])
        raise ValueError(f"TVConv options {given} were given for {name} with atom={atom!r}")
    if embedding_size is not None:
        valid = isinstance(embedding_size, int) and not isinstance(embedding_size, bool)
        if not valid or embedding_size < 1:
            raise ValueError(f"embedding_size must be a positive int, got {embedding_size!r}")
        kwargs["embedding_size"] = embedding_size
    accepted = inspect.signature(entry.build).parameters
    unknown = sorted(set(kwargs) - set(accepted) - {"atom"})
    if unknown:
        allowed = sorted({*accepted, *TVCONV_OPTIONS, "select"} - {"atom"})
        raise ValueError(f"unknown option(s) {unknown} for {name}; expected some of {allowed}")
    if "atom" in accepted:
        kwargs["atom"] = "dw" if atom == "tvconv" else atom
    model = entry.build(input_size=input_size, **kwargs)
    if atom == "tvconv":
        target, target_input = (
            model.tvconv_target() if hasattr(model, "tvconv_target") else (model, model.input_size)
        )
        _, sites = replace_depthwise(target, target_input, select=select, **tvconv_kwargs)
        prefix = next(n for n, m in model.named_modules() if m is target)  # "" for the model
        model.tvconv_sites = [
            replace(site, name=f"{prefix}.{site.name}" if prefix else site.name)
            for site in sites
            if site.replaceable
        ]
        if not model.tvconv_sites:
            raise ValueError(
                f"select={select!r} chooses no depthwise site of {name}: atom='tvconv' would be "
                "the depthwise model under another label; use atom='dw', or select a site"
            )
    return model


def check_buildable(name: str, atom: str, input_size: int, select: str = "all", **kwargs) -> None:
    """Build model ``name`` and probe it at ``input_size`` (a TVConv model through the surgery's
    probe of its depthwise form) on the eager kernel, without warnings: what a sweep's plan check
    runs for every model. Raises ValueError naming the model, atom, select and size."""
    try:
        with kernels.forced("eager"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped-conv warning comes again in the run
            model = create(name, atom=atom, input_size=input_size, select=select, **kwargs)
            if atom != "tvconv":
                with torch.no_grad():
                    model.eval()(torch.zeros(1, 3, input_size, input_size))
    except (ValueError, RuntimeError) as error:
        raise ValueError(
            f"model.name={name!r} (atom={atom}, select={select}) at data.image_size="
            f"{input_size}: {error}"
        ) from None
