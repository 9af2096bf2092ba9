"""Profiling: MACs (analytic, cross-checked by fvcore, ptflops and FlopCounterMode), parameters,
latency and memory of the face backbones in the training and the deployed (cached) form.

Off-the-shelf counters see TVConv's core op (pad, strided slices, ``mul`` and in-place
``addcmul_``) as zero MACs. ``count_macs`` is the ground truth, a formula per layer over the
layer shapes of one probe forward; ``count_macs_fvcore``, ``count_macs_ptflops`` and
``count_macs_flop_counter`` get the same numbers out of each tool, taught what TVConv costs;
``cross_check_macs`` runs all four and says whether they agree.

Convention (all counters, like for like):
- Units are MACs (multiply-accumulates) per image at inference; FLOPs = 2 x MACs.
- Conv: k_h * k_w * (in / groups) * out * H_out * W_out. Linear: in * out per row.
  TVConv and TVConvDeploy: k * k * c * h * w, the same as the depthwise conv they replace.
- Element ops are not MACs: BatchNorm, LayerNorm, activations, pooling, residual adds and bias
  adds are left out (fvcore's norm and pooling handles and ptflops' norm, activation and pooling
  hooks are switched off). Bias adds are reported separately as ``bias_adds``.
- ptflops counts one MAC per bias add (Conv2d, Linear; our TVConv hook follows it); its own number
  is kept as ``raw_macs`` = MACs + bias adds, and ``macs`` takes the bias adds out.
- The weight generator B of the training form runs once per step whatever the batch size: its
  MACs (sum over its convs of 9 * in * out * h * w) are ``generator_macs``, never part of ``macs``.
- Element-wise products (``mul``, ``addcmul``) count one MAC per output element inside a TVConv
  and are left out elsewhere (reported as ``products_outside_tvconv``).

``count_params`` gives trainable parameters (the model as given) and deployed ones (every TVConv
replaced by its cached W and bias). ``measure_latency`` times a deployed forward (eval mode) or a
full training step with ``torch.utils.benchmark`` and records peak memory and the environment with
every row; ``benchmark_layer_grid`` times one cached TVConv against the depthwise conv of the same
shape. CLI: ``python -m tvconv.profile mobilenet_v2_x0_1 --atom tvconv --form deploy``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import ctypes.util
import math
import os
import platform
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from types import ModuleType

import torch
from torch import nn
from torch.utils import benchmark

from tvconv import affinity, kernels, models
from tvconv.convert import deploy, probe_input, probe_shape
from tvconv.models import TVCONV_OPTIONS
from tvconv.ops import NORMS, TVConv, TVConvDeploy, output_size

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
# Training-step optimiser: the paper's SGD (momentum 0.9, weight decay 5e-4) with a tiny learning
# rate, so that thousands of timed steps on a surrogate loss do not drift the weights (same work).
TRAIN_STEP_LR = 1e-6


# --------------------------------------------------------------------------- helpers


# The paper's throughput comparison (a narrower TVConv model against a wider depthwise one), as
# the kernels benchmark and the GPU check time it: (model name, atom).
THROUGHPUT_MODELS = (
    ("mobilenet_v2_x0_1", "dw"),
    ("mobilenet_v2_x1_0", "dw"),
    ("mobilenet_v2_x0_1", "tvconv"),
    ("mobilenet_v2_x0_5", "tvconv"),
)


def _input_shape(model: nn.Module, input_size: int | tuple[int, ...] | None) -> tuple[int, ...]:
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


def _tvconv_has_bias(layer: TVConv | TVConvDeploy) -> bool:
    return layer.has_bias if isinstance(layer, TVConv) else layer.bias is not None


def _cached_params(layer: TVConv) -> int:
    """Parameters of the layer's cached form: W (c, k, k, h, w) and the bias (c, h, w) if any."""
    bias = layer.channels * layer.h * layer.w if layer.has_bias else 0
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
    layer in execution order, with name, type, output_shape, macs, generator_macs and bias_adds.
    """
    _refuse_modules_without_formula(model)
    shape = _input_shape(model, input_size)
    names = {module: name for name, module in model.named_modules()}
    inside_tvconv = _inside_translation_variant(model)
    rows: dict[str, dict] = {}

    def record(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        name = names[module]
        if isinstance(module, TRANSLATION_VARIANT):
            macs = _tvconv_macs(module)
            generator = _generator_macs(module) if isinstance(module, TVConv) else 0
            bias_adds = output[0].numel() if _tvconv_has_bias(module) else 0
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
            },
        )
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
    shape = _input_shape(model, input_size)
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


def _ptflops_tvconv_hook(layer: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
    """ptflops hook for TVConv/TVConvDeploy: k*k*c*h*w per image, plus one per bias add (as
    ptflops counts a conv's bias)."""
    batch_size = inputs[0].shape[0]
    bias_adds = layer.channels * layer.h * layer.w if _tvconv_has_bias(layer) else 0
    layer.__flops__ += batch_size * (_tvconv_macs(layer) + bias_adds)


def _ptflops(model: nn.Module, shape: tuple[int, ...]) -> int:
    from ptflops import get_model_complexity_info

    macs, _params = get_model_complexity_info(
        model,
        tuple(shape),
        print_per_layer_stat=False,
        as_strings=False,
        backend="pytorch",
        ignore_modules=list(PTFLOPS_ELEMENT_MODULES),
        custom_modules_hooks=dict.fromkeys(TRANSLATION_VARIANT, _ptflops_tvconv_hook),
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
    shape = _input_shape(model, input_size)
    subject = copy.deepcopy(model)
    bias_adds = 0

    def count_bias_adds(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal bias_adds
        biased = (
            _tvconv_has_bias(module)
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
            raw_macs = _ptflops(subject, shape)
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
    shape = _input_shape(model, input_size)
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
        model(probe_input(model, _input_shape(model, input_size)))
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
    for tool, counts in (("fvcore", fvcore), ("ptflops", ptflops), ("flop_counter", flop_counter)):
        for key in ("macs", "generator_macs"):
            if counts[key] != analytic[key]:
                disagreements.append(
                    f"{tool} total {key}: {counts[key]:,}, analytic {analytic[key]:,}"
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
    trainable_params and deployed_params. Shared parameters count once.
    """
    seen: set[int] = set()
    layers = []
    trainable_bytes = deployed_bytes = 0
    inside_tvconv = _inside_translation_variant(model)
    for name, module in model.named_modules():
        if name in inside_tvconv:
            continue
        if isinstance(module, TVConv):
            owned = [p for p in module.parameters() if id(p) not in seen]
            deployed = _cached_params(module)
            deployed_bytes += deployed * next(module.parameters()).element_size()
        else:
            owned = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            deployed = sum(p.numel() for p in owned)
            deployed_bytes += sum(p.numel() * p.element_size() for p in owned)
        if not owned:
            continue
        seen.update(id(p) for p in owned)
        trainable = [p for p in owned if p.requires_grad]
        trainable_bytes += sum(p.numel() * p.element_size() for p in trainable)
        layers.append(
            {
                "name": name,
                "type": type(module).__name__,
                "trainable_params": sum(p.numel() for p in trainable),
                "deployed_params": deployed,
            }
        )
    return {
        "trainable_params": sum(row["trainable_params"] for row in layers),
        "trainable_bytes": trainable_bytes,
        "deployed_params": sum(row["deployed_params"] for row in layers),
        "deployed_bytes": deployed_bytes,
        "layers": layers,
    }


# --------------------------------------------------------------------------- latency and memory


@cache
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def environment(device: torch.device | str, threads: int) -> dict:
    """What a timing depends on, stored with every measurement."""
    device = torch.device(device)
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "threads": threads,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    library = ctypes.util.find_library("c")
    libc = ctypes.CDLL(library) if library else None
    return getattr(libc, "malloc_trim", None)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field} line")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        _proc_status_kib("VmHWM")
    except OSError:
        return False
    return True


def peak_memory_mib(step: Callable[[], object], device: torch.device | str) -> tuple[float, str]:
    """Peak memory one call of ``step`` adds, in MiB, and how it was measured.

    CUDA: ``max_memory_allocated`` minus the allocation before the step ("cuda_max_allocated").
    CPU (Linux): peak resident set size during the step minus the RSS before it
    ("rss_peak_delta"), after returning freed heap memory to the OS (glibc ``malloc_trim``) so that
    reused free memory does not hide the step's own. Includes allocator overhead; NaN with method
    "unavailable" where /proc/self/clear_refs cannot be written (non-Linux, restricted).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "cuda_max_allocated"
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    if not _reset_peak_rss():
        return math.nan, "unavailable"
    before = _proc_status_kib("VmRSS")
    step()
    return max(0, _proc_status_kib("VmHWM") - before) / 1024, "rss_peak_delta"


def _time_step(
    step: Callable[[], object], threads: int, min_run_time: float, warmup_runs: int, label: str
) -> benchmark.Measurement:
    """Warm up, then ``blocked_autorange`` with the thread count pinned (the Timer synchronises
    CUDA around every block)."""
    with _torch_threads(threads):
        for _ in range(warmup_runs):
            step()
    timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=threads, label=label)
    return timer.blocked_autorange(min_run_time=min_run_time)


def _check_positive_ints(name: str, values: int | Sequence[int]) -> tuple[int, ...]:
    values = (values,) if isinstance(values, int) else tuple(values)
    if not values or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise ValueError(f"{name} must be positive ints, got {values!r}")
    return values


def _default_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but no CUDA device is available")
    return device


def _training_step(net: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Forward + backward + SGD step on a surrogate loss (mean square of the output)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=TRAIN_STEP_LR, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
        optimizer.step()

    return step


def _inference_step(net: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            net(x)

    return step


def _check_latency_args(
    model: nn.Module,
    form: str,
    batch_sizes: Sequence[int],
    threads: int | Sequence[int],
    min_run_time: float,
    warmup_runs: int,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validated (batch_sizes, threads) for ``measure_latency``; ValueError on bad arguments."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    batch_sizes = _check_positive_ints("batch_sizes", batch_sizes)
    threads = _check_positive_ints("threads", threads)
    if min_run_time <= 0 or warmup_runs < 0:
        raise ValueError(
            f"min_run_time must be > 0 and warmup_runs >= 0, got {min_run_time!r}, {warmup_runs!r}"
        )
    if form == "train":
        if any(isinstance(m, TVConvDeploy) for m in model.modules()):
            raise ValueError(
                "form='train' needs the training form; this model holds TVConvDeploy layers "
                "(already deployed)"
            )
        if min(batch_sizes) < 2 and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            raise ValueError(
                f"form='train' with batch_sizes {batch_sizes}: BatchNorm needs more than one "
                "image per batch in training mode; use batch sizes >= 2"
            )
    return batch_sizes, threads


def measure_latency(
    model: nn.Module,
    input_size: int | tuple[int, ...] | None = None,
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16),
    threads: int | Sequence[int] = 1,
    form: str = "deploy",
    device: torch.device | str | None = None,
    channels_last: bool = False,
    torch_compile: bool = False,
    min_run_time: float = 0.2,
    warmup_runs: int = 3,
) -> list[dict]:
    """Latency, throughput and peak memory of ``model`` per (threads, batch size), fp32.

    ``form="deploy"``: forward in eval mode under no_grad, on a deployed copy (every TVConv cached).
    ``form="train"``: a full training step (forward, backward on a surrogate loss, SGD step) in
    train mode on a copy; the model passed in is never changed. ``threads``: one count or several
    (the paper's grid is 1, 2, 4, 8); ``device`` defaults to CUDA when present. Timing:
    ``warmup_runs`` calls, then ``torch.utils.benchmark``'s ``blocked_autorange(min_run_time)``.

    One row per configuration: form, batch_size, threads, latency_ms (median), latency_iqr_ms,
    images_per_s (= batch_size / median), peak_memory_mib and memory_method (see
    ``peak_memory_mib``), measurements, channels_last, torch_compile, device and environment.
    """
    batch_sizes, threads = _check_latency_args(
        model, form, batch_sizes, threads, min_run_time, warmup_runs
    )
    shape = _input_shape(model, input_size)
    device = _default_device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = copy.deepcopy(model)
    net = deploy(net).eval() if form == "deploy" else net.train()
    net = net.to(device=device)
    if channels_last:  # 4-d conv weights only: TVConv's 5-d weights have no channels_last layout
        for conv in (m for m in net.modules() if isinstance(m, nn.Conv2d)):
            conv.to(memory_format=memory_format)
    runnable = torch.compile(net) if torch_compile else net
    rows = []
    for thread_count in threads:
        env = environment(device, thread_count)
        for batch_size in batch_sizes:
            x = torch.randn(batch_size, *shape, device=device).to(memory_format=memory_format)
            make_step = _training_step if form == "train" else _inference_step
            step = make_step(runnable, x)
            label = f"{type(model).__name__} {form} batch {batch_size}"
            measurement = _time_step(step, thread_count, min_run_time, warmup_runs, label)
            with _torch_threads(thread_count):
                memory, method = peak_memory_mib(step, device)
            rows.append(
                {
                    "form": form,
                    "batch_size": batch_size,
                    "threads": thread_count,
                    "latency_ms": measurement.median * 1e3,
                    "latency_iqr_ms": measurement.iqr * 1e3,
                    "images_per_s": batch_size / measurement.median,
                    "peak_memory_mib": memory,
                    "memory_method": method,
                    "measurements": len(measurement.times),
                    "channels_last": channels_last,
                    "torch_compile": torch_compile,
                    "device": str(device),
                    "environment": env,
                }
            )
    return rows


def benchmark_layer_grid(
    channels: Sequence[int],
    resolutions: Sequence[int],
    batch_sizes: Sequence[int],
    strides: Sequence[int] = (1,),
    kernel_size: int = 3,
    threads: int = 1,
    device: torch.device | str | None = None,
    min_run_time: float = 0.2,
    warmup_runs: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Time a cached TVConv (TVConvDeploy) against ``nn.Conv2d`` depthwise of the same shape.

    For every channels x resolution (square input size) x batch size x stride: a forward under
    no_grad of both layers on the same random input. One row each: channels, resolution,
    output_size, stride, kernel_size, batch_size, threads, macs (per image, equal for both),
    tvconv_ms, tvconv_iqr_ms, depthwise_ms, depthwise_iqr_ms, ratio (tvconv_ms / depthwise_ms),
    device and environment.

    Measured (2-core Xeon, torch 2.13 CPU, 1 thread, 32 channels): the shift-and-accumulate core
    op takes 1.2-5x the time of the depthwise conv, the gap widest at 96x96 (5.2x at batch 1).
    """
    channels = _check_positive_ints("channels", channels)
    resolutions = _check_positive_ints("resolutions", resolutions)
    batch_sizes = _check_positive_ints("batch_sizes", batch_sizes)
    strides = _check_positive_ints("strides", strides)
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    device = _default_device(device)
    env = environment(device, threads)
    generator = torch.Generator().manual_seed(seed)
    padding = (kernel_size - 1) // 2
    rows = []
    for c in channels:
        for resolution in resolutions:
            for stride in strides:
                out = output_size(resolution, kernel_size, stride)
                weight = torch.randn(c, kernel_size, kernel_size, out, out, generator=generator)
                tvconv = TVConvDeploy.from_tensors(weight, stride=stride).to(device).eval()
                depthwise = nn.Conv2d(
                    c, c, kernel_size, stride, padding, groups=c, bias=False, device=device
                ).eval()
                for batch_size in batch_sizes:
                    x = torch.randn(batch_size, c, resolution, resolution, generator=generator)
                    x = x.to(device)
                    label = f"C{c} R{resolution} s{stride} N{batch_size}"
                    timed = {
                        name: _time_step(
                            _inference_step(layer, x), threads, min_run_time, warmup_runs, label
                        )
                        for name, layer in (("tvconv", tvconv), ("depthwise", depthwise))
                    }
                    rows.append(
                        {
                            "channels": c,
                            "resolution": resolution,
                            "output_size": out,
                            "stride": stride,
                            "kernel_size": kernel_size,
                            "batch_size": batch_size,
                            "threads": threads,
                            "macs": kernel_size * kernel_size * c * out * out,
                            "tvconv_ms": timed["tvconv"].median * 1e3,
                            "tvconv_iqr_ms": timed["tvconv"].iqr * 1e3,
                            "depthwise_ms": timed["depthwise"].median * 1e3,
                            "depthwise_iqr_ms": timed["depthwise"].iqr * 1e3,
                            "ratio": timed["tvconv"].median / timed["depthwise"].median,
                            "device": str(device),
                            "environment": env,
                        }
                    )
    return rows


# --------------------------------------------------------------------------- CLI


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tvconv.profile",
        description="MACs (analytic, fvcore, ptflops, FlopCounterMode), parameters and latency "
        "of a registry model.",
    )
    parser.add_argument("model", help="registry name, e.g. mobilenet_v2_x0_1")
    parser.add_argument("--atom", choices=("dw", "tvconv"), default="dw")
    parser.add_argument(
        "--form",
        choices=FORMS,
        default="deploy",
        help="deploy: cached TVConv, eval-mode forward; train: training form, full training step",
    )
    parser.add_argument("--input-size", type=_positive_int, default=96, help="square input side")
    parser.add_argument(
        "--batch-sizes",
        type=_positive_int,
        nargs="+",
        help="default: 1 2 4 8 16 (deploy), 2 4 8 16 (train: BatchNorm needs 2+)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        nargs="+",
        default=[1],
        help="thread counts to time (the paper's grid: 1 2 4 8)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    parser.add_argument(
        "--min-run-time", type=_positive_float, default=0.2, help="seconds per configuration"
    )
    parser.add_argument("--no-latency", action="store_true", help="counts only, no timing")
    parser.add_argument("--per-layer", action="store_true", help="print the per-layer MAC table")
    tv = parser.add_argument_group("TVConv options (atom tvconv; defaults: the paper's)")
    tv.add_argument("--select", help="sites: all, first:K, last:K or comma-separated indices")
    tv.add_argument("--affinity-channels", type=_positive_int)
    tv.add_argument("--inter-channels", type=_positive_int)
    tv.add_argument("--inter-layers", type=int)
    tv.add_argument("--norm", choices=NORMS)
    tv.add_argument("--init", choices=affinity.list_initialisers())
    tv.add_argument("--bias", action="store_true", default=None, help="generated bias branch")
    tv.add_argument(
        "--no-generator",
        dest="generator",
        action="store_false",
        default=None,
        help="learn W directly (the control without B)",
    )
    return parser


def _build_model(args: argparse.Namespace) -> nn.Module:
    options = {key: getattr(args, key) for key in TVCONV_OPTIONS if getattr(args, key) is not None}
    if args.select is not None:
        select = args.select
        if select.replace(",", "").isdigit():
            select = [int(index) for index in select.split(",")]
        options["select"] = select
    return models.create(args.model, atom=args.atom, input_size=args.input_size, **options)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str) -> str:
    """A plain-text table; ``align`` holds one "l" or "r" per column."""
    cells = [list(map(str, header)), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if side == "l" else cell.rjust(width)
            for cell, width, side in zip(row, widths, align, strict=True)
        ).rstrip()
        for row in cells
    )


def _print_macs(checked: dict, per_layer: bool) -> None:
    analytic, ptflops = checked["analytic"], checked["ptflops"]
    bias_note = (
        f"ptflops' own count {ptflops['raw_macs']:,} includes {ptflops['bias_adds']:,} bias adds"
    )
    rows = [
        ("analytic", analytic, ""),
        ("fvcore", checked["fvcore"], ""),
        ("ptflops", ptflops, bias_note),
        ("FlopCounterMode", checked["flop_counter"], ""),
    ]
    print("\nMACs per image, inference (FLOPs = 2 x MACs; generator: once per training step)")
    print(
        _table(
            ("counter", "macs", "generator_macs", "note"),
            [(name, f"{c['macs']:,}", f"{c['generator_macs']:,}", note) for name, c, note in rows],
            "lrrl",
        )
    )
    print("all counters agree" if checked["agree"] else "COUNTERS DISAGREE:")
    for line in checked["disagreements"]:
        print(f"  {line}")
    if per_layer:
        layers = [
            (
                row["name"],
                row["type"],
                "x".join(map(str, row["output_shape"])),
                f"{row['macs']:,}",
                f"{row['generator_macs']:,}",
            )
            for row in analytic["layers"]
        ]
        print()
        print(_table(("layer", "type", "output", "macs", "generator_macs"), layers, "llrrr"))


def _print_params(params: dict) -> None:
    rows = [
        (form, f"{params[f'{form}_params']:,}", f"{params[f'{form}_bytes'] / 2**20:.2f}")
        for form in ("trainable", "deployed")
    ]
    print("\nParameters")
    print(_table(("", "params", "MiB"), rows, "lrr"))


def _print_latency(rows: list[dict], form: str) -> None:
    first = rows[0]
    env = first["environment"]
    knobs = "".join(f", {knob}" for knob in ("channels_last", "torch_compile") if first[knob])
    step = "training step" if form == "train" else "forward, eval mode"
    print(
        f"\nLatency ({step}, fp32, {env['device']} {env['device_name']}, "
        f"torch {env['torch_version']}{knobs})"
    )
    table = [
        (
            row["batch_size"],
            row["threads"],
            f"{row['latency_ms']:.2f}",
            f"{row['latency_iqr_ms']:.2f}",
            f"{row['images_per_s']:.1f}",
            f"{row['peak_memory_mib']:.1f}",
        )
        for row in rows
    ]
    header = ("batch", "threads", "latency_ms", "iqr_ms", "images_per_s", "peak_memory_mib")
    print(_table(header, table, "rrrrrr"))
    print(
        "latency_ms: median over torch.utils.benchmark blocks, iqr_ms: their interquartile "
        f"range; peak_memory_mib: {first['memory_method']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; exit status 0 when the counters agree, 1 when they do not, 2 on bad arguments."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = [2, 4, 8, 16] if args.form == "train" else [1, 2, 4, 8, 16]
    try:
        model = _build_model(args)
        device = _default_device(args.device)
        if not args.no_latency:
            _check_latency_args(
                model, args.form, args.batch_sizes, args.threads, args.min_run_time, 0
            )
    except ValueError as error:
        parser.error(str(error))
    if args.form == "deploy":
        deploy(model)
    shape = _input_shape(model, args.input_size)
    print(f"{args.model}, atom {args.atom}, form {args.form}, input {'x'.join(map(str, shape))}")
    checked = cross_check_macs(model, shape)
    _print_macs(checked, args.per_layer)
    _print_params(count_params(model))
    if not args.no_latency:
        rows = measure_latency(
            model,
            shape,
            batch_sizes=args.batch_sizes,
            threads=args.threads,
            form=args.form,
            device=device,
            channels_last=args.channels_last,
            torch_compile=args.compile,
            min_run_time=args.min_run_time,
        )
        _print_latency(rows, args.form)
    return 0 if checked["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
