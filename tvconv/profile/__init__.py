"""Profiling: MACs (analytic, cross-checked by fvcore, ptflops and FlopCounterMode), parameters,
latency and memory of the face backbones in the training and the deployed (cached) form.

Off-the-shelf counters see TVConv's core op (pad, strided slices, ``mul`` and in-place
``addcmul_``) as zero MACs. ``count_macs`` is the ground truth, a formula per layer over the
layer shapes of one probe forward; ``count_macs_fvcore``, ``count_macs_ptflops`` and
``count_macs_flop_counter`` get the same numbers out of each tool, taught what TVConv costs;
``cross_check_macs`` runs all four and says whether they agree (the analytic count and ptflops
see modules only: a foreign model's functional ``F.conv2d`` counts zero there, not in the other
two, so a disagreement shows it).

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
shape. The package: ``counting`` (MACs, parameters), ``timing`` (latency, memory, the layer
grid), ``runs`` (``ProfileConfig`` and ``run(config)``, the studies' profiling task) and the CLI,
``python -m tvconv.profile mobilenet_v2_x0_1 --atom tvconv --form deploy``.
"""

from tvconv.profile.cli import main
from tvconv.profile.counting import (
    FORMS,
    count_macs,
    count_macs_flop_counter,
    count_macs_fvcore,
    count_macs_ptflops,
    count_macs_stock,
    count_params,
    cross_check_macs,
    input_shape,
)
from tvconv.profile.runs import ProfileConfig, check, run
from tvconv.profile.timing import (
    THROUGHPUT_MODELS,
    benchmark_layer_grid,
    cpu_model,
    environment,
    measure_latency,
    peak_memory_mib,
    time_step,
    training_step,
)

__all__ = [
    "FORMS",
    "THROUGHPUT_MODELS",
    "ProfileConfig",
    "benchmark_layer_grid",
    "check",
    "count_macs",
    "count_macs_flop_counter",
    "count_macs_fvcore",
    "count_macs_ptflops",
    "count_macs_stock",
    "count_params",
    "cpu_model",
    "cross_check_macs",
    "environment",
    "input_shape",
    "main",
    "measure_latency",
    "peak_memory_mib",
    "run",
    "time_step",
    "training_step",
]
