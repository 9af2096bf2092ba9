"""Model surgery: swap depthwise convs for TVConv, and TVConv for its cached form.

``find_depthwise_sites`` locates the depthwise convs a TVConv can replace, in execution order
(shallow to deep) with their output sizes, found by one probe forward. ``replace_depthwise`` swaps a
selection of them; ``deploy`` turns every TVConv of a model into a ``TVConvDeploy``.

A site is an ``nn.Conv2d`` with groups == in_channels == out_channels, a square odd kernel, padding
(k - 1) / 2, dilation 1 and stride 1 or 2. Depthwise convs outside that family (dilated, other
padding) are skipped with a warning naming them. A site's bias, if any, is not carried over: pass
``bias=True`` to give the TVConv its own (generated) bias branch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from tvconv.ops import TVConv


@dataclass(frozen=True)
class DepthwiseSite:
    """One replaceable depthwise conv: its index (shallow to deep), module name and shape."""

    index: int
    name: str
    channels: int
    h: int
    w: int
    stride: int
    kernel_size: int


def _is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


def _unsupported_reason(conv: nn.Conv2d) -> str | None:
    k_h, k_w = conv.kernel_size
    if k_h != k_w or k_h % 2 == 0:
        return f"kernel {conv.kernel_size} is not square and odd"
    if conv.dilation != (1, 1):
        return f"dilation {conv.dilation}"
    if conv.padding != ((k_h - 1) // 2,) * 2 or conv.padding_mode != "zeros":
        return f"padding {conv.padding} ({conv.padding_mode}) is not zero 'same' padding"
    if conv.stride[0] != conv.stride[1] or conv.stride[0] not in (1, 2):
        return f"stride {conv.stride}"
    return None


def probe_shape(input_size: int | tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of one probe image from an int (square, RGB), (H, W) or (C, H, W)."""
    size = (input_size,) if isinstance(input_size, int) else tuple(input_size)
    if len(size) == 1:
        size = (3, size[0], size[0])
    elif len(size) == 2:
        size = (3, *size)
    if len(size) != 3 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W), got {input_size!r}")
    return size


def probe_input(model: nn.Module, shape: tuple[int, ...], batch_size: int = 1) -> torch.Tensor:
    """Zeros of (batch_size, *shape) on the model's device and dtype."""
    reference = next(iter(model.parameters()), None)
    return torch.zeros(
        batch_size,
        *shape,
        device=None if reference is None else reference.device,
        dtype=None if reference is None else reference.dtype,
    )


def find_depthwise_sites(
    model: nn.Module, input_size: int | tuple[int, ...]
) -> list[DepthwiseSite]:
    """All replaceable depthwise convs of ``model``, ordered by execution (shallow to deep)."""
    names = {module: name for name, module in model.named_modules()}
    seen: dict[str, DepthwiseSite] = {}
    skipped: dict[str, str] = {}

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        name = names[module]
        reason = _unsupported_reason(module)
        if reason is not None:
            skipped[name] = reason
        elif name not in seen:
            seen[name] = DepthwiseSite(
                index=len(seen),
                name=name,
                channels=module.out_channels,
                h=output.shape[-2],
                w=output.shape[-1],
                stride=module.stride[0],
                kernel_size=module.kernel_size[0],
            )

    handles = [m.register_forward_hook(record) for m in model.modules() if _is_depthwise(m)]
    probe = probe_input(model, probe_shape(input_size))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if skipped:
        listed = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        warnings.warn(f"depthwise convs not replaceable by TVConv: {listed}", stacklevel=2)
    return list(seen.values())


def select_sites(
    sites: list[DepthwiseSite], select: str | int | Iterable[int]
) -> list[DepthwiseSite]:
    """Sites chosen by "all", "none", "first:K", "last:K", an index, a list of indices, or a
    string of indices and ranges such as "0,3-5"."""
    count = len(sites)
    if isinstance(select, str) and select and set(select) <= set("0123456789,-"):
        select = _parse_indices(select)
    if isinstance(select, str):
        if select == "all":
            return list(sites)
        if select == "none":
            return []
        mode, _, k_text = select.partition(":")
        if mode in ("first", "last") and k_text.isdigit() and int(k_text) <= count:
            k = int(k_text)
            return list(sites[:k]) if mode == "first" else list(sites[count - k :])
        raise ValueError(
            f"select={select!r} is not valid for a model with {count} depthwise sites; expected "
            f"'all', 'none', 'first:K' or 'last:K' with 0 <= K <= {count}, or site indices"
        )
    indices = [select] if isinstance(select, int) else list(select)
    bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < count]
    if bad or len(set(indices)) != len(indices):
        raise ValueError(
            f"select={select!r}: site indices must be distinct ints in [0, {count - 1}]"
            + (f"; invalid: {bad}" if bad else "; duplicates given")
        )
    return [sites[i] for i in sorted(indices)]


def _parse_indices(text: str) -> list[int]:
    indices = []
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"select={text!r}: expected indices and ranges such as '0,3-5'")
        indices += list(range(int(low), int(high) + 1)) if dash else [int(low)]
    return indices


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child_name = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child_name, module)


def replace_depthwise(
    model: nn.Module,
    input_size: int | tuple[int, ...],
    select: str | int | Iterable[int] = "all",
    **tvconv_kwargs,
) -> tuple[nn.Module, list[DepthwiseSite]]:
    """Swap the selected depthwise convs of ``model`` for TVConv, in place.

    ``input_size`` is the model's input (int for a square RGB image, (H, W) or (C, H, W)); the
    sites' output sizes come from a probe forward. ``tvconv_kwargs`` go to every new ``TVConv``
    (channels, h, w, kernel_size and stride come from the replaced conv). Returns the model and
    the replaced sites, shallow to deep.
    """
    fixed = {"channels", "h", "w", "kernel_size", "stride"} & tvconv_kwargs.keys()
    if fixed:
        raise ValueError(
            f"replace_depthwise takes {sorted(fixed)} from each replaced conv; do not pass them"
        )
    if isinstance(model, nn.Conv2d):
        raise ValueError("replace_depthwise needs a model containing depthwise convs, not a conv")
    chosen = select_sites(find_depthwise_sites(model, input_size), select)
    for site in chosen:
        conv = model.get_submodule(site.name)
        layer = TVConv(
            site.channels,
            site.h,
            site.w,
            kernel_size=site.kernel_size,
            stride=site.stride,
            **tvconv_kwargs,
        )
        _set_submodule(model, site.name, layer.to(device=conv.weight.device))
    return model, chosen


def deploy(model: nn.Module) -> nn.Module:
    """Replace every TVConv in ``model`` by its cached form (in place); returns the model."""
    if isinstance(model, TVConv):
        return model.deploy()
    for name, module in list(model.named_modules()):
        if isinstance(module, TVConv):
            _set_submodule(model, name, module.deploy())
    return model
