"""Model surgery: swap depthwise convs for TVConv, and TVConv for its cached form.

``find_depthwise_sites`` locates the depthwise convs a TVConv can replace, in execution order
(shallow to deep) with their output sizes, found by one probe forward. ``replace_depthwise`` swaps a
selection of them; ``deploy`` turns every TVConv of a model into a ``TVConvDeploy``.

A site is an ``nn.Conv2d`` with groups == in_channels == out_channels, a square odd kernel, zero
padding (k - 1) / 2 on every side (explicit or ``padding="same"``), dilation 1 and stride 1 or 2,
called at one resolution. Depthwise convs outside that family (a channel multiplier, dilation,
other or asymmetric padding, reuse at several resolutions) are left as they are, reported with
their reason in the returned site list and in one warning. A replaced conv's bias is kept: the
TVConv is wrapped in ``BiasedTVConv`` (its own per-channel bias, initialised to the conv's), and
the cached form folds it into the per-position bias. ``bias=True`` adds TVConv's own generated
bias branch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from tvconv.ops import OPTION_NAMES, TVConv, TVConvDeploy


@dataclass(frozen=True)
class DepthwiseSite:
    """One depthwise conv: its index among the replaceable ones (shallow to deep), module name,
    shape, and ``reason`` it is not replaced (None for a replaceable site; its index is then -1).
    """

    index: int
    name: str
    channels: int
    h: int
    w: int
    stride: int
    kernel_size: int
    reason: str | None = None

    @property
    def replaceable(self) -> bool:
        return self.reason is None


def _is_depthwise(module: nn.Module) -> bool:
    """A conv with one group per input channel (out_channels a multiple of it: a channel
    multiplier > 1 is depthwise too, though TVConv cannot replace it)."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels
        and module.out_channels % module.in_channels == 0
    )


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """The conv's padding as (top/bottom, left/right) ints (``"same"`` / ``"valid"`` resolved)."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":  # torch pads (d * (k - 1)) / 2 each side, the odd one at the end
        return tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size, strict=True))
    return tuple(conv.padding)


def _unsupported_reason(conv: nn.Conv2d) -> str | None:
    k_h, k_w = conv.kernel_size
    if conv.out_channels != conv.in_channels:
        multiplier = conv.out_channels // conv.in_channels
        return f"channel multiplier {multiplier} ({conv.in_channels} -> {conv.out_channels})"
    if k_h != k_w or k_h % 2 == 0:
        return f"kernel {conv.kernel_size} is not square and odd"
    if conv.dilation != (1, 1):
        return f"dilation {conv.dilation}"
    if conv.padding_mode != "zeros":
        return f"padding mode {conv.padding_mode!r} (TVConv pads with zeros)"
    padding = _padding(conv)
    if padding[0] != padding[1]:
        return f"asymmetric padding {padding}"
    if padding[0] != (k_h - 1) // 2:
        return f"padding {padding[0]} (TVConv pads (k - 1) / 2 = {(k_h - 1) // 2} for k = {k_h})"
    if conv.stride[0] != conv.stride[1] or conv.stride[0] not in (1, 2):
        return f"stride {conv.stride}"
    return None


class BiasedTVConv(nn.Module):
    """A TVConv plus the per-channel bias of the depthwise conv it replaced (a learnable
    parameter, initialised to that bias), so surgery keeps what the conv added. Its cached
    form folds the bias into a ``TVConvDeploy``'s per-position bias."""

    def __init__(self, tvconv: TVConv, bias: torch.Tensor) -> None:
        super().__init__()
        self.tvconv = tvconv
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tvconv(x) + self.bias.view(1, -1, 1, 1)

    @torch.no_grad()
    def deploy(self) -> TVConvDeploy:
        cached = self.tvconv.deploy()
        per_position = self.bias.detach().view(-1, 1, 1).expand(-1, cached.h, cached.w)
        if cached.bias is not None:
            per_position = per_position + cached.bias
        return TVConvDeploy.from_tensors(
            cached.weight.detach(), per_position.to(cached.weight.dtype), cached.stride
        )


def probe_shape(input_size: int | tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of one probe image from an int (square, RGB), (H, W) or (C, H, W)."""
    problem = ValueError(f"input_size must be an int, (H, W) or (C, H, W), got {input_size!r}")
    if isinstance(input_size, int):
        size = (input_size,)
    elif isinstance(input_size, (tuple, list, torch.Size)):
        size = tuple(input_size)
    else:
        raise problem
    if len(size) == 1:
        size = (3, size[0], size[0])
    elif len(size) == 2:
        size = (3, *size)
    if len(size) != 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size
    ):
        raise problem
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


def survey_depthwise(
    model: nn.Module, input_size: int | tuple[int, ...]
) -> tuple[list[DepthwiseSite], list[DepthwiseSite]]:
    """(replaceable sites, skipped depthwise convs with their reasons), both in execution order,
    found by one probe forward. A conv is skipped for its shape (channel multiplier, kernel,
    dilation, padding, stride) or for being called at more than one resolution (one TVConv holds
    the kernels of one resolution)."""
    names = {module: name for name, module in model.named_modules()}
    calls: dict[str, list[tuple[nn.Conv2d, int, int]]] = {}

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        calls.setdefault(names[module], []).append((module, output.shape[-2], output.shape[-1]))

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
    sites, skipped = [], []
    for name, seen in calls.items():
        conv, h, w = seen[0]
        reason = _unsupported_reason(conv)
        sizes = list(dict.fromkeys(f"{h}x{w}" for _conv, h, w in seen))
        if reason is None and len(sizes) > 1:
            reason = f"called at {len(sizes)} resolutions ({', '.join(sizes)})"
        site = DepthwiseSite(
            index=-1 if reason else len(sites),
            name=name,
            channels=conv.out_channels,
            h=h,
            w=w,
            stride=conv.stride[0],
            kernel_size=conv.kernel_size[0],
            reason=reason,
        )
        (skipped if reason else sites).append(site)
    for module in model.modules():  # depthwise, but the forward never ran it: no size known
        if _is_depthwise(module) and names[module] not in calls:
            skipped.append(
                DepthwiseSite(
                    index=-1,
                    name=names[module],
                    channels=module.out_channels,
                    h=0,
                    w=0,
                    stride=module.stride[0],
                    kernel_size=module.kernel_size[0],
                    reason="not called by the forward (no output size to build a TVConv for)",
                )
            )
    return sites, skipped


def _warn_skipped(skipped: list[DepthwiseSite]) -> None:
    if skipped:
        listed = "; ".join(f"{site.name}: {site.reason}" for site in skipped)
        warnings.warn(f"depthwise convs not replaceable by TVConv: {listed}", stacklevel=3)


def find_depthwise_sites(
    model: nn.Module, input_size: int | tuple[int, ...]
) -> list[DepthwiseSite]:
    """All replaceable depthwise convs of ``model``, ordered by execution (shallow to deep); one
    warning lists the depthwise convs skipped and why."""
    sites, skipped = survey_depthwise(model, input_size)
    _warn_skipped(skipped)
    return sites


def select_sites(
    sites: list[DepthwiseSite], select: str | int | Iterable[int]
) -> list[DepthwiseSite]:
    """Sites chosen by "all", "none", "first:K", "last:K", an index, a list of indices, or a
    string of indices and ranges such as "0,3-5"."""
    if not isinstance(select, str):  # a bool, a float, None are not site indices
        check_select(select)
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


SELECT_FORMS = "'all', 'none', 'first:K', 'last:K', or site indices and ranges such as '0,3-5'"


def check_select(select: object) -> None:
    """Raise ValueError unless ``select`` has one of the forms ``select_sites`` takes (whether
    its indices exist depends on the model: checked when it is built)."""
    if isinstance(select, str):
        if select in ("all", "none"):
            return
        mode, _, k_text = select.partition(":")
        if mode in ("first", "last") and k_text.isdigit():
            return
        if select and set(select) <= set("0123456789,-"):
            _parse_indices(select)
            return
    elif isinstance(select, (int, list, tuple, range)) and all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0
        for i in (select if isinstance(select, (list, tuple, range)) else [select])
    ):
        return
    raise ValueError(f"select={select!r} is invalid: expected {SELECT_FORMS}")


def _parse_indices(text: str) -> list[int]:
    indices = []
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"select={text!r}: expected indices and ranges such as '0,3-5'")
        if dash and int(high) < int(low):
            raise ValueError(
                f"select={text!r}: the range {part} is reversed (it would select no site); "
                f"write {high}-{low}"
            )
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
    (channels, h, w, kernel_size and stride come from the replaced conv). A replaced conv's bias
    is kept (``BiasedTVConv``). Returns the model and the sites: the replaced ones, shallow to
    deep, then every depthwise conv left as it was for a reason (``site.reason``: channel
    multiplier, dilation, padding, several resolutions ...), which one warning also lists.
    """
    fixed = {"channels", "h", "w", "kernel_size", "stride"} & tvconv_kwargs.keys()
    if fixed:
        raise ValueError(
            f"replace_depthwise takes {sorted(fixed)} from each replaced conv; do not pass them"
        )
    unknown = sorted(set(tvconv_kwargs) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(
            f"unknown TVConv option(s) {unknown}; expected some of {', '.join(OPTION_NAMES)}"
        )
    if isinstance(model, nn.Conv2d):
        raise ValueError("replace_depthwise needs a model containing depthwise convs, not a conv")
    sites, skipped = survey_depthwise(model, input_size)
    chosen = select_sites(sites, select)
    _warn_skipped(skipped)
    for site in chosen:
        conv = model.get_submodule(site.name)
        layer: nn.Module = TVConv(
            site.channels,
            site.h,
            site.w,
            kernel_size=site.kernel_size,
            stride=site.stride,
            **tvconv_kwargs,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        if conv.bias is not None:
            layer = BiasedTVConv(layer, conv.bias)
        layer.train(conv.training)  # a model in eval mode stays in eval mode
        for name in _references(model, conv):  # a module shared by several parents: all of them
            _set_submodule(model, name, layer)
    return model, [*chosen, *skipped]


def _references(model: nn.Module, module: nn.Module) -> list[str]:
    """Every name under which ``module`` sits in ``model`` (a shared module has several)."""
    return [n for n, m in model.named_modules(remove_duplicate=False) if m is module]


def deploy(model: nn.Module) -> nn.Module:
    """Replace every TVConv (and ``BiasedTVConv``) in ``model`` by its cached form (in place);
    returns the model."""
    if isinstance(model, (TVConv, BiasedTVConv)):
        return model.deploy()
    cached: dict[int, nn.Module] = {}  # a layer shared by several parents is deployed once
    replaced: list[str] = []
    for name, module in list(model.named_modules(remove_duplicate=False)):
        inside = any(name.startswith(f"{outer}.") for outer in replaced)  # a BiasedTVConv's own
        if isinstance(module, (TVConv, BiasedTVConv)) and not inside:
            if id(module) not in cached:
                cached[id(module)] = module.deploy()
            _set_submodule(model, name, cached[id(module)])
            replaced.append(name)
    return model
