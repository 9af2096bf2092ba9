"""Latency and peak memory of a forward or a training step (``torch.utils.benchmark``), with the
environment recorded on every row, and the single-layer grid: cached TVConv against depthwise."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import math
import os
import platform
from collections.abc import Callable, Iterator, Sequence
from functools import cache

import torch
from torch import nn
from torch.utils import benchmark

from tvconv.convert import deploy
from tvconv.ops import TVConvDeploy, output_size
from tvconv.profile.counting import FORMS, input_shape

# Training-step optimiser: the paper's SGD (momentum 0.9, weight decay 5e-4) with a tiny learning
# rate, so that thousands of timed steps on a surrogate loss do not drift the weights (same work).
TRAIN_STEP_LR = 1e-6

# The paper's throughput comparison (a narrower TVConv model against a wider depthwise one), as
# the kernels benchmark and the GPU check time it: (model name, atom).
THROUGHPUT_MODELS = (
    ("mobilenet_v2_x0_1", "dw"),
    ("mobilenet_v2_x1_0", "dw"),
    ("mobilenet_v2_x0_1", "tvconv"),
    ("mobilenet_v2_x0_5", "tvconv"),
)

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


def time_step(
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
    if not isinstance(values, (int, list, tuple, range)):
        raise ValueError(f"{name} must be a positive int or a list of them, got {values!r}")
    values = (values,) if isinstance(values, int) else tuple(values)
    if not values or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise ValueError(f"{name} must be positive ints, got {values!r}")
    return values


def default_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:  # torch's own message lists every backend it knows
        raise ValueError(
            f"device {str(device)!r} is invalid: expected cpu, cuda or cuda:N"
        ) from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is invalid: expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but no CUDA device is available")
    return device


def training_step(net: nn.Module, x: torch.Tensor) -> Callable[[], None]:
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


def check_timing(min_run_time: float, warmup_runs: int) -> None:
    """``min_run_time`` a finite number of seconds > 0 (NaN or inf would time forever) and
    ``warmup_runs`` an int >= 0; ValueError otherwise."""
    number = isinstance(min_run_time, (int, float)) and not isinstance(min_run_time, bool)
    if not number or not 0 < min_run_time < math.inf:
        raise ValueError(
            f"min_run_time must be a finite number of seconds > 0, got {min_run_time!r}"
        )
    if not isinstance(warmup_runs, int) or isinstance(warmup_runs, bool) or warmup_runs < 0:
        raise ValueError(f"warmup_runs must be an int >= 0, got {warmup_runs!r}")


def check_latency_args(
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
    check_timing(min_run_time, warmup_runs)
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
    dtype: torch.dtype = torch.float32,
) -> list[dict]:
    """Latency, throughput and peak memory of ``model`` per (threads, batch size), in ``dtype``
    (parameters and input; float32 by default).

    ``form="deploy"``: forward in eval mode under no_grad, on a deployed copy (every TVConv cached).
    ``form="train"``: a full training step (forward, backward on a surrogate loss, SGD step) in
    train mode on a copy; the model passed in is never changed. ``threads``: one count or several
    (the paper's grid is 1, 2, 4, 8); ``device`` defaults to CUDA when present. Timing:
    ``warmup_runs`` calls, then ``torch.utils.benchmark``'s ``blocked_autorange(min_run_time)``.

    One row per configuration: form, batch_size, threads, latency_ms (median), latency_iqr_ms,
    images_per_s (= batch_size / median), peak_memory_mib and memory_method (see
    ``peak_memory_mib``), measurements, channels_last, torch_compile, device and environment.
    """
    batch_sizes, threads = check_latency_args(
        model, form, batch_sizes, threads, min_run_time, warmup_runs
    )
    shape = input_shape(model, input_size)
    device = default_device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = copy.deepcopy(model)
    net = deploy(net).eval() if form == "deploy" else net.train()
    net = net.to(device=device, dtype=dtype)
    if channels_last:  # 4-d conv weights only: TVConv's 5-d weights have no channels_last layout
        for conv in (m for m in net.modules() if isinstance(m, nn.Conv2d)):
            conv.to(memory_format=memory_format)
    runnable = torch.compile(net) if torch_compile else net
    rows = []
    for thread_count in threads:
        env = environment(device, thread_count)
        for batch_size in batch_sizes:
            x = torch.randn(batch_size, *shape, device=device, dtype=dtype)
            x = x.to(memory_format=memory_format)
            make_step = training_step if form == "train" else _inference_step
            step = make_step(runnable, x)
            label = f"{type(model).__name__} {form} batch {batch_size}"
            measurement = time_step(step, thread_count, min_run_time, warmup_runs, label)
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
                    "dtype": str(dtype).removeprefix("torch."),
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
    dtype: torch.dtype = torch.float32,
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
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
    check_timing(min_run_time, warmup_runs)
    device = default_device(device)
    env = environment(device, threads)
    generator = torch.Generator().manual_seed(seed)
    padding = (kernel_size - 1) // 2
    rows = []
    for c in channels:
        for resolution in resolutions:
            for stride in strides:
                out = output_size(resolution, kernel_size, stride)
                weight = torch.randn(c, kernel_size, kernel_size, out, out, generator=generator)
                tvconv = TVConvDeploy.from_tensors(weight, stride=stride)
                tvconv = tvconv.to(device=device, dtype=dtype).eval()
                depthwise = nn.Conv2d(
                    c, c, kernel_size, stride, padding, groups=c, bias=False, device=device
                )
                depthwise = depthwise.to(dtype=dtype).eval()
                for batch_size in batch_sizes:
                    x = torch.randn(batch_size, c, resolution, resolution, generator=generator)
                    x = x.to(device=device, dtype=dtype)
                    label = f"C{c} R{resolution} s{stride} N{batch_size}"
                    timed = {
                        name: time_step(
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
                            "dtype": str(dtype).removeprefix("torch."),
                            "environment": env,
                        }
                    )
    return rows
