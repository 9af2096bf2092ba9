"""MACs (analytic, and fvcore, ptflops and FlopCounterMode taught what TVConv costs) and
parameters (trainable, deployed); the conventions are in ``tvconv/profile/__init__.py``."""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

import torch
from torch import nn

from tvconv import kernels
from tvconv.convert import BiasedTVConv, probe_input, probe_shape
from tvconv.ops import TVConv, TVConvDeploy

FORMS = ("train", "deploy")
TRANSLATION_VARIANT = (TVConv, TVConvDeploy)
GENERATORS = ("weight_generator", "bias_generator")
# Modules that do multiply-accumulates but have no formula here: refused, never counted as zero.
NO_FORMULA = (
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.MultiheadAttention,
    nn.RNNBase,
    nn.RNNCellBase,
    nn.Bilinear,
)
# The ops ``translation_variant_conv`` emits per tap: one product per output element.
TAP_OPS = ("mul", "addcmul_", "addcmul")
# fvcore counts these element ops by default; our convention leaves them out.
FVCORE_ELEMENT_OPS = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)
# ptflops (pytorch backend) counts these modules' element ops as MACs; we ignore them.
PTFLOPS_ELEMENT_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.PReLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.GELU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Upsample,
)


# --------------------------------------------------------------------------- helpers


def input_shape(model: nn.Module, input_size: int | tuple[int, ...] | None) -> tuple[int, ...]:
    """(C, H, W) from ``input_size`` (tvconv.convert's convention) or ``model.input_size``."""
    if input_size is None:
        input_size = getattr(model, "input_size", None)
        if input_size is None:
            raise ValueError(
                f"{type(model).__name__} has no input_size attribute; pass input_size "
                "(an int for a square RGB image, (H, W) or (C, H, W))"
            )
    return probe_shape(input_size)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside, each module's own mode restored after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _translation_variant_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, TRANSLATION_VARIANT)]


def _inside_translation_variant(model: nn.Module) -> set[str]:
    """Names of the modules inside a TVConv or TVConvDeploy (its generators, their layers)."""
    inside = set()
    for name, module in model.named_modules():
        if isinstance(module, TRANSLATION_VARIANT):
            prefix = f"{name}." if name else ""
            inside.update(prefix + sub for sub, _ in module.named_modules() if sub)
    return inside


def _generator_names(model: nn.Module) -> list[str]:
    """Qualified names of every TVConv weight/bias generator of ``model``."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, TVConv) and module.generator:
            prefix = f"{name}." if name else ""
            names += [prefix + g for g in GENERATORS if getattr(module, g, None) is not None]
    return names


def _refuse_modules_without_formula(model: nn.Module) -> None:
    refused = [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if isinstance(m, NO_FORMULA)
    ]
    if refused:
        raise ValueError(
            f"no MAC formula for {', '.join(refused)}; supported: Conv1d/2d/3d, Linear, TVConv, "
            "TVConvDeploy (element ops such as norms, activations and pooling count zero)"
        )


def _conv_macs(conv: nn.modules.conv._ConvNd, output_spatial: Sequence[int]) -> int:
    """k_h * k_w * (in / groups) * out * H_out * W_out for one image."""
    return (
        math.prod(conv.kernel_size)
        * (conv.in_channels // conv.groups)
        * conv.out_channels
        * math.prod(output_spatial)
    )


def _tvconv_macs(layer: TVConv | TVConvDeploy) -> int:
    return layer.kernel_size * layer.kernel_size * layer.channels * layer.h * layer.w


def _folded_bias_layers(model: nn.Module) -> frozenset[int]:
    """The ids of the TVConvs a ``BiasedTVConv`` adds a per-channel bias to (the bias of the
    depthwise conv it replaced): their cached form holds it as a per-position bias."""
    return frozenset(id(m.tvconv) for m in model.modules() if isinstance(m, BiasedTVConv))


def _tvconv_has_bias(layer: TVConv | TVConvDeploy, folded: frozenset[int] = frozenset()) -> bool:
    own = layer.has_bias if isinstance(layer, TVConv) else layer.bias is not None
    return own or id(layer) in folded


def _cached_params(layer: TVConv, folded: frozenset[int] = frozenset()) -> int:
    """Parameters of the layer's cached form: W (c, k, k, h, w) and the bias (c, h, w) if any
    (its own, or a ``BiasedTVConv``'s folded into it: one per-position bias either way)."""
    bias = layer.channels * layer.h * layer.w if _tvconv_has_bias(layer, folded) else 0
    return layer.channels * layer.kernel_size * layer.kernel_size * layer.h * layer.w + bias


def _generator_macs(layer: TVConv) -> int:
    """MACs of one evaluation of the layer's weight (and bias) generator: once per step."""
    if not layer.generator:
        return 0
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    return sum(_conv_macs(conv, (layer.h, layer.w)) for conv in convs)


# --------------------------------------------------------------------------- analytic MACs


def count_macs(model: nn.Module, input_size: int | tuple[int, ...] | None = None) -> dict:
    """Analytic per-image inference MACs of ``model``, per layer and in total.

    ``input_size``: an int (square RGB), (H, W) or (C, H, W); defaults to ``model.input_size``.
    Output sizes come from one probe forward (batch 1, eval mode); each layer's MACs from its
    formula (see the module docstring). Returns ``macs``, ``flops`` (= 2 * macs),
    ``generator_macs`` (TVConv weight generators, once per training step, not per image),
    ``bias_adds``, ``input_size`` (C, H, W) and ``layers``: one row per conv, linear and TVConv
    layer in execution order, with name, type, output_shape, macs, generator_macs, bias_adds and
    calls (a module the forward runs twice counts twice).
    """
    _refuse_modules_without_formula(model)
    shape = input_shape(model, input_size)
    names = {module: name for name, module in model.named_modules()}
    inside_tvconv = _inside_translation_variant(model)
    folded = _folded_bias_layers(model)
    rows: dict[str, dict] = {}

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        name = names[module]
        if isinstance(module, TRANSLATION_VARIANT):
            macs = _tvconv_macs(module)
            generator = _generator_macs(module) if isinstance(module, TVConv) else 0
            bias_adds = output[0].numel() if _tvconv_has_bias(module, folded) else 0
        elif isinstance(module, nn.Linear):
            rows_per_image = math.prod(output.shape[1:-1])
            macs = module.in_features * module.out_features * rows_per_image
            generator = 0
            bias_adds = output[0].numel() if module.bias is not None else 0
        else:
            macs = _conv_macs(module, output.shape[2:])
            generator = 0
            bias_adds = output[0].numel() if module.bias is not None else 0
        row = rows.setdefault(
            name,
            {
                "name": name,
                "type": type(module).__name__,
                "output_shape": tuple(output.shape[1:]),
                "macs": 0,
                "generator_macs": 0,
                "bias_adds": 0,
                "calls": 0,
            },
        )
        row["calls"] += 1
        row["macs"] += macs
        row["generator_macs"] += generator
        row["bias_adds"] += bias_adds

    counted = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, *TRANSLATION_VARIANT)
    handles = [
        module.register_forward_hook(record)
        for name, module in model.named_modules()
        if isinstance(module, counted) and name not in inside_tvconv
    ]
    try:
        with _eval_mode(model), torch.no_grad():
            model(probe_input(model, shape))
    finally:
        for handle in handles:
            handle.remove()
    layers = list(rows.values())
    macs = sum(row["macs"] for row in layers)
    return {
        "macs": macs,
        "flops": 2 * macs,
        "generator_macs": sum(row["generator_macs"] for row in layers),
        "bias_adds": sum(row["bias_adds"] for row in layers),
        "input_size": shape,
        "layers": layers,
    }


# --------------------------------------------------------------------------- the three tools


def _fvcore() -> ModuleType:
    with warnings.catch_warnings():
        # fvcore.nn's package init jit-scripts its focal losses; torch deprecates jit.script.
        warnings.simplefilter("ignore", DeprecationWarning)
        import fvcore.nn
        import fvcore.nn.jit_handles
    return fvcore.nn


def _products_handle(_inputs: list, outputs: list) -> int:
    """fvcore handle: one MAC per element of a tensor product's output. Scalar (0-dim) outputs
    count zero: the trace records the core op's shape arithmetic as 0-dim products."""
    shape = _fvcore().jit_handles.get_shape(outputs[0])
    return math.prod(shape) if shape else 0


def _convolution_mode_handle(inputs: list, outputs: list) -> int:
    """fvcore handle for ``aten::_convolution_mode`` (a conv with ``padding="same"`` or
    ``"valid"``), which fvcore leaves uncounted: its MACs as fvcore counts any conv."""
    jit_handles = _fvcore().jit_handles
    x_shape, w_shape, out_shape = (
        jit_handles.get_shape(v) for v in (inputs[0], inputs[1], outputs[0])
    )
    return jit_handles.conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def _zero_handle(_inputs: list, _outputs: list) -> int:
    """fvcore handle for element ops our convention leaves out (fvcore's ``None`` handle does not
    override a default handle)."""
    return 0


def count_macs_fvcore(model: nn.Module, input_size: int | tuple[int, ...] | None = None) -> dict:
    """Per-image inference MACs from fvcore's ``FlopCountAnalysis`` (jit trace, batch 1).

    fvcore counts one fused multiply-add as one "flop", i.e. MACs. Its norm and pooling handles are
    switched off; ``mul``/``addcmul_`` get a handle (one MAC per output element) and count only
    inside TVConv layers. Returns ``macs``, ``generator_macs``, ``products_outside_tvconv`` and
    ``layers`` ({name: macs} for the layers of ``count_macs``, generators excluded).
    """
    shape = input_shape(model, input_size)
    with _eval_mode(model), torch.no_grad(), kernels.forced("eager"):
        analysis = _fvcore().FlopCountAnalysis(model, probe_input(model, shape))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        analysis.set_op_handle(**dict.fromkeys(FVCORE_ELEMENT_OPS, _zero_handle))
        analysis.set_op_handle(**{f"aten::{op}": _products_handle for op in TAP_OPS})
        analysis.set_op_handle("aten::_convolution_mode", _convolution_mode_handle)
        total = analysis.total()
        by_module = analysis.by_module()
        by_module_and_operator = analysis.by_module_and_operator()
    tvconv_names = _translation_variant_names(model)
    products = sum(analysis.by_operator()[op] for op in TAP_OPS)
    products_inside = sum(by_module_and_operator[n][op] for n in tvconv_names for op in TAP_OPS)
    generator_names = _generator_names(model)
    generator_macs = sum(by_module[name] for name in generator_names)
    layers = {}
    for row in count_macs(model, shape)["layers"]:
        name = row["name"]
        prefix = f"{name}." if name else ""
        generators = [g for g in generator_names if g.startswith(prefix)]
        layers[name] = by_module[name] - sum(by_module[g] for g in generators)
    return {
        "macs": total - generator_macs - (products - products_inside),
        "generator_macs": generator_macs,
        "products_outside_tvconv": products - products_inside,
        "layers": layers,
    }


def _ptflops_tvconv_hook(folded: frozenset[int]) -> Callable:
    """ptflops hook for TVConv/TVConvDeploy: k*k*c*h*w per image, plus one per bias add (as
    ptflops counts a conv's bias; a ``BiasedTVConv``'s bias, in ``folded``, counts as the
    layer's, as in its cached form)."""

    def hook(layer: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
        batch_size = inputs[0].shape[0]
        has_bias = _tvconv_has_bias(layer, folded)
        bias_adds = layer.channels * layer.h * layer.w if has_bias else 0
        layer.__flops__ += batch_size * (_tvconv_macs(layer) + bias_adds)

    return hook


def _ptflops(model: nn.Module, shape: tuple[int, ...], folded: frozenset[int] = frozenset()) -> int:
    from ptflops import get_model_complexity_info

    macs, _params = get_model_complexity_info(
        model,
        tuple(shape),
        print_per_layer_stat=False,
        as_strings=False,
        backend="pytorch",
        ignore_modules=list(PTFLOPS_ELEMENT_MODULES),
        custom_modules_hooks=dict.fromkeys(TRANSLATION_VARIANT, _ptflops_tvconv_hook(folded)),
        backend_specific_config={"count_functional": False},
    )
    if macs is None:
        raise RuntimeError(f"ptflops failed on {type(model).__name__} with input {shape}")
    return int(macs)


def count_macs_ptflops(model: nn.Module, input_size: int | tuple[int, ...] | None = None) -> dict:
    """Per-image inference MACs from ptflops' ``get_model_complexity_info`` (pytorch backend).

    Runs on a copy (ptflops sets eval mode and attaches counters). Element-op modules are ignored,
    functional counting is off, TVConv layers get a custom hook. ptflops counts a bias add as a
    MAC: ``raw_macs`` is its number, ``macs`` = ``raw_macs`` - ``bias_adds`` (bias adds counted
    by output hooks on the biased layers). ``generator_macs``: ptflops run on every generator.
    """
    shape = input_shape(model, input_size)
    subject = copy.deepcopy(model)
    folded = _folded_bias_layers(subject)
    bias_adds = 0

    def count_bias_adds(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal bias_adds
        biased = (
            _tvconv_has_bias(module, folded)
            if isinstance(module, TRANSLATION_VARIANT)
            else module.bias is not None
        )
        if biased:
            bias_adds += output[0].numel()

    inside_tvconv = _inside_translation_variant(subject)
    handles = [
        module.register_forward_hook(count_bias_adds)
        for name, module in subject.named_modules()
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, *TRANSLATION_VARIANT))
        and name not in inside_tvconv
    ]
    with torch.no_grad():
        try:
            raw_macs = _ptflops(subject, shape, folded)
        finally:
            for handle in handles:
                handle.remove()
        generator_macs = 0
        for name in _generator_names(subject):
            generator = subject.get_submodule(name)
            layer = subject.get_submodule(name.rpartition(".")[0]) if "." in name else subject
            generator_macs += _ptflops(generator, (layer.affinity_maps.shape[0], layer.h, layer.w))
    return {
        "macs": raw_macs - bias_adds,
        "raw_macs": raw_macs,
        "bias_adds": bias_adds,
        "generator_macs": generator_macs,
    }


def count_macs_flop_counter(
    model: nn.Module, input_size: int | tuple[int, ...] | None = None
) -> dict:
    """Per-image inference MACs from ``torch.utils.flop_counter.FlopCounterMode`` (eager, batch 1).

    FlopCounterMode counts FLOPs (2 per MAC) for convs and matmuls only; ``mul``/``addcmul_`` get
    a custom formula (2 FLOPs per output element) and count only inside TVConv layers. Returns
    ``macs``, ``generator_macs`` and ``products_outside_tvconv`` (all in MACs).
    """
    from torch.utils.flop_counter import FlopCounterMode

    def products_flops(*_args, out_shape: Sequence[int], **_kwargs) -> int:
        return 2 * math.prod(out_shape)

    aten = torch.ops.aten
    tap_ops = {aten.mul, aten.addcmul_, aten.addcmul}
    shape = input_shape(model, input_size)
    counter = FlopCounterMode(display=False, custom_mapping=dict.fromkeys(tap_ops, products_flops))
    # FlopCounterMode's module tracker needs autograd on (it hooks gradients), so no no_grad here.
    with _eval_mode(model), counter, kernels.forced("eager"):
        model(probe_input(model, shape))
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def flops_of(name: str, ops: set | None = None) -> int:
        key = f"{root}.{name}" if name else root
        return sum(v for op, v in counts.get(key, {}).items() if ops is None or op in ops)

    products = sum(v for op, v in counts.get("Global", {}).items() if op in tap_ops)
    products_inside = sum(flops_of(name, tap_ops) for name in _translation_variant_names(model))
    generator_flops = sum(flops_of(name) for name in _generator_names(model))
    macs_flops = counter.get_total_flops() - generator_flops - (products - products_inside)
    return {
        "macs": macs_flops // 2,
        "generator_macs": generator_flops // 2,
        "products_outside_tvconv": (products - products_inside) // 2,
    }


def count_macs_stock(model: nn.Module, input_size: int | tuple[int, ...] | None = None) -> int:
    """Per-image MACs as ``FlopCounterMode`` reports them out of the box (convs and matmuls only,
    FLOPs / 2): TVConv's taps count zero, which is what an unpatched counter tells its user."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with _eval_mode(model), counter, kernels.forced("eager"):
        model(probe_input(model, input_shape(model, input_size)))
    return counter.get_total_flops() // 2


def cross_check_macs(model: nn.Module, input_size: int | tuple[int, ...] | None = None) -> dict:
    """The analytic count and the three tools' counts side by side, like for like.

    Returns ``analytic``, ``fvcore``, ``ptflops``, ``flop_counter`` (each the counter's dict),
    ``agree``: every tool's ``macs`` and ``generator_macs`` equal the analytic ones, fvcore's per
    layer too, and ptflops' ``raw_macs`` equals analytic MACs + bias adds; and ``disagreements``:
    one line per layer whose fvcore count differs from the analytic one, and per tool whose
    totals differ (empty when they agree; a warning lists them).
    """
    analytic = count_macs(model, input_size)
    fvcore = count_macs_fvcore(model, input_size)
    ptflops = count_macs_ptflops(model, input_size)
    flop_counter = count_macs_flop_counter(model, input_size)
    per_layer = {row["name"]: row["macs"] for row in analytic["layers"]}
    disagreements = [
        f"layer {name or '<model>'} ({row['type']}): analytic {per_layer[name]:,} MACs, fvcore "
        f"{fvcore['layers'].get(name, 0):,}"
        for row in analytic["layers"]
        if fvcore["layers"].get((name := row["name"]), 0) != per_layer[name]
    ]
    # a tool that counts a module once per model, not once per call, differs on these layers
    repeated = ", ".join(
        f"{row['name']} ({row['calls']} calls)" for row in analytic["layers"] if row["calls"] > 1
    )
    for tool, counts in (("fvcore", fvcore), ("ptflops", ptflops), ("flop_counter", flop_counter)):
        for key in ("macs", "generator_macs"):
            if counts[key] != analytic[key]:
                disagreements.append(
                    f"{tool} total {key}: {counts[key]:,}, analytic {analytic[key]:,}"
                    + (f" (layers the forward runs more than once: {repeated})" if repeated else "")
                )
    if ptflops["raw_macs"] != analytic["macs"] + analytic["bias_adds"]:
        disagreements.append(
            f"ptflops raw_macs: {ptflops['raw_macs']:,}, analytic MACs + bias adds "
            f"{analytic['macs'] + analytic['bias_adds']:,}"
        )
    if disagreements:
        warnings.warn("MAC counters disagree: " + "; ".join(disagreements), stacklevel=2)
    return {
        "analytic": analytic,
        "fvcore": fvcore,
        "ptflops": ptflops,
        "flop_counter": flop_counter,
        "agree": not disagreements,
        "disagreements": disagreements,
    }


# --------------------------------------------------------------------------- parameters


def count_params(model: nn.Module) -> dict:
    """Parameters of the model as given (trainable) and of its deployed form, with their bytes.

    Deployed: every TVConv becomes its cached form, W (c, k, k, h, w) plus the bias (c, h, w) if
    any, in place of the affinity maps and generators; everything else is kept. Returns
    ``trainable_params``, ``trainable_bytes``, ``deployed_params``, ``deployed_bytes`` and
    ``layers``: one row per module owning parameters (a TVConv as one row) with name, type,
    trainable_params, trainable_bytes, deployed_params and deployed_bytes; the totals are the
    rows' sums. Shared parameters count once.
    """
    seen: set[int] = set()
    layers = []
    inside_tvconv = _inside_translation_variant(model)
    folded = _folded_bias_layers(model)
    for name, module in model.named_modules():
        if name in inside_tvconv:
            continue
        if isinstance(module, TVConv):
            owned = [p for p in module.parameters() if id(p) not in seen]
            deployed = _cached_params(module, folded)
            deployed_bytes = deployed * next(module.parameters()).element_size()
        elif isinstance(module, BiasedTVConv):  # its bias deploys inside its layer's
            owned = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            deployed = deployed_bytes = 0
        else:
            owned = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            deployed = sum(p.numel() for p in owned)
            deployed_bytes = sum(p.numel() * p.element_size() for p in owned)
        if not owned:
            continue
        seen.update(id(p) for p in owned)
        trainable = [p for p in owned if p.requires_grad]
        layers.append(
            {
                "name": name,
                "type": type(module).__name__,
                "trainable_params": sum(p.numel() for p in trainable),
                "trainable_bytes": sum(p.numel() * p.element_size() for p in trainable),
                "deployed_params": deployed,
                "deployed_bytes": deployed_bytes,
            }
        )
    totals = ("trainable_params", "trainable_bytes", "deployed_params", "deployed_bytes")
    return {**{key: sum(row[key] for row in layers) for key in totals}, "layers": layers}
