"""TVConv kernels against PyTorch's depthwise conv, side by side in one run (`make bench-kernels`).

For every depthwise layer shape of MobileNetV2-face x0.1 at 96x96 (channels, input side, stride),
at batch 1 and 32 and 1 and 2 threads, prints the time ratio to ``F.conv2d(groups=C)`` of:

- ``cached``: the deployed core op (C++ kernel) and ``eager``: the PyTorch tap loop, forward;
- ``train``: a training step of the core op (forward + backward for input and weights, C++),
  against the depthwise conv's forward + backward, and the two steps' peak memory ratio;

then the medians and worst cases; the model-level training step (forward, backward and SGD
update, batch 32, channels-last as the training engine runs it) of TVConv against depthwise at
equal width, MobileNetV2-face x0.1 and x0.5 at 48 and 96 px, with the quick preset's generator
(inter 16 x 1), the paper's (64 x 3) and none (``generator=False``, the op's own cost), time and
peak-memory ratios; and the model-level images/s of the deployed TVConv x0.1 and x0.5 against the
depthwise x0.1 and x1.0 (the paper's throughput comparison). Ratios are measured in one run on
the same inputs, the steps taking turns (best of 3 rounds); absolute times depend on the
machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

from tvconv import kernels, models, profile
from tvconv.console import positive_float_arg, positive_int_arg
from tvconv.convert import find_depthwise_sites
from tvconv.ops import (
    _CppTranslationVariantConv,
    output_size,
    reference_translation_variant_conv,
)
from tvconv.train import channels_last

MODEL = "mobilenet_v2_x0_1"
INPUT = 96


def layer_shapes(model_name: str = MODEL, input_size: int = INPUT) -> list[tuple[int, int, int]]:
    """(channels, input side, stride) of every distinct depthwise site, shallow to deep."""
    model = models.create(model_name, atom="dw", input_size=input_size)
    shapes = []
    for site in find_depthwise_sites(model, input_size):
        shape = (site.channels, site.h * site.stride, site.stride)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


ROUNDS = 3


def _interleaved(steps: dict, threads: int, min_run_time: float, label: str) -> dict:
    """Each step's time: the best of ``ROUNDS`` medians, the steps taking turns, so that a burst
    of load from elsewhere on a shared machine hits one round, not one step."""
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(ROUNDS):
        for name, step in steps.items():
            median = profile.time_step(step, threads, min_run_time / ROUNDS, 1, label).median
            best[name] = min(best[name], median)
    return best


def _median_memory(step, repeats: int = 3) -> float:
    return statistics.median(profile.peak_memory_mib(step, "cpu")[0] for _ in range(repeats))


def _steps(extension, x, weight, dw_weight, stride, generator) -> dict:
    """The timed steps for one layer shape and batch, on shared inputs."""
    channels = x.shape[1]
    packed = extension.pack_weight(weight)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    # training inside a network: TVConv returns channels-last activations, so after the first
    # layer every layer sees channels-last inputs; both sides are timed that way
    x_train = x_cl.clone().requires_grad_()
    w_train, dw_train = weight.clone().requires_grad_(), dw_weight.clone().requires_grad_()
    grad = torch.randn(x.shape[0], *weight.shape[:1], *weight.shape[-2:], generator=generator)
    grad = grad.contiguous(memory_format=torch.channels_last)

    def no_grad(function, *args):
        def step():
            with torch.no_grad():
                return function(*args)

        return step

    def train():
        _CppTranslationVariantConv.apply(x_train, w_train, None, stride).backward(grad)
        x_train.grad = w_train.grad = None

    def depthwise_train():
        F.conv2d(x_train, dw_train, None, stride, 1, 1, channels).backward(grad)
        x_train.grad = dw_train.grad = None

    def depthwise_of(inputs):
        return no_grad(F.conv2d, inputs, dw_weight, None, stride, 1, 1, channels)

    return {
        "cached": no_grad(extension.forward, x, packed, None, stride),
        "cached_cl": no_grad(extension.forward, x_cl, packed, None, stride),
        "eager": no_grad(reference_translation_variant_conv, x, weight, None, stride),
        "depthwise": depthwise_of(x),
        "depthwise_cl": depthwise_of(x_cl),
        "train": train,
        "depthwise_train": depthwise_train,
    }


def layer_rows(batch_sizes, threads_list, min_run_time: float) -> list[dict]:
    extension = kernels.cpu_extension()
    if extension is None:
        raise SystemExit("the C++ kernel did not build here: nothing to benchmark against")
    generator = torch.Generator().manual_seed(0)
    rows = []
    for channels, side, stride in layer_shapes():
        out = output_size(side, 3, stride)
        weight = torch.randn(channels, 3, 3, out, out, generator=generator)
        dw_weight = torch.randn(channels, 1, 3, 3, generator=generator)
        for batch in batch_sizes:
            x = torch.randn(batch, channels, side, side, generator=generator)
            steps = _steps(extension, x, weight, dw_weight, stride, generator)
            torch.testing.assert_close(steps["cached"](), steps["eager"](), rtol=1e-5, atol=1e-5)
            memory = _median_memory(steps["train"]) / max(
                _median_memory(steps["depthwise_train"]), 1e-3
            )
            for threads in threads_list:
                label = f"C{channels} R{side} s{stride} N{batch} t{threads}"
                times = _interleaved(steps, threads, min_run_time, label)
                rows.append(
                    {
                        "shape": f"C{channels} {side}px s{stride}",
                        "batch": batch,
                        "threads": threads,
                        "cached": times["cached"] / times["depthwise"],
                        "cached_cl": times["cached_cl"] / times["depthwise_cl"],
                        "eager": times["eager"] / times["depthwise"],
                        "train": times["train"] / times["depthwise_train"],
                        "memory": memory,
                        "depthwise_ms": times["depthwise"] * 1e3,
                    }
                )
    return rows


GENERATORS = {  # TVConv options of the training-step rows
    "quick (16 x 1)": {"inter_channels": 16, "inter_layers": 1},
    "paper (64 x 3)": {"inter_channels": 64, "inter_layers": 3},
    "none": {"generator": False},
}


def _model_training_step(name: str, atom: str, size: int, batch: int, options: dict):
    """One SGD step of the backbone in channels-last layout (``tvconv.train.channels_last``)."""
    torch.manual_seed(0)
    model = channels_last(models.create(name, atom=atom, input_size=size, **options)).train()
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    return profile.training_step(model, x)


def training_rows(names, sizes, batch: int, threads: int, min_run_time: float) -> list[dict]:
    rows = []
    for name in names:
        for size in sizes:
            steps = {"dw": _model_training_step(name, "dw", size, batch, {})}
            for label, options in GENERATORS.items():
                steps[label] = _model_training_step(name, "tvconv", size, batch, options)
            label = f"{name} {size}px N{batch} t{threads}"
            times = _interleaved(steps, threads, min_run_time, label)
            memory = {key: _median_memory(step) for key, step in steps.items()}
            for generator in GENERATORS:
                rows.append(
                    {
                        "model": name,
                        "size": size,
                        "generator": generator,
                        "dw_ms": times["dw"] * 1e3,
                        "time": times[generator] / times["dw"],
                        "memory": memory[generator] / max(memory["dw"], 1e-3),
                    }
                )
    return rows


def _print_training(rows: list[dict], batch: int, threads: int) -> None:
    print(
        f"\nTraining step (forward, backward, SGD; batch {batch}, {threads} thread(s)), TVConv / "
        "depthwise at equal width (time; memory: peak RSS):"
    )
    print(f"{'model':20s} {'size':>4s} {'generator':16s} {'dw ms':>8s} {'time':>6s} {'memory':>7s}")
    for r in rows:
        print(
            f"{r['model']:20s} {r['size']:4d} {r['generator']:16s} {r['dw_ms']:8.1f} "
            f"{r['time']:6.2f} {r['memory']:7.2f}"
        )


def model_rows(batch_sizes, threads_list, min_run_time: float) -> list[dict]:
    rows = []
    for name, atom in profile.THROUGHPUT_MODELS:
        model = models.create(name, atom=atom, input_size=INPUT)
        macs = profile.count_macs(model)["macs"]
        for row in profile.measure_latency(
            model,
            batch_sizes=batch_sizes,
            threads=threads_list,
            form="deploy",
            min_run_time=min_run_time,
        ):
            rows.append({"model": f"{name} {atom}", "macs": macs, **row})
    return rows


def _print_layers(rows: list[dict]) -> None:
    print(
        f"\nCore op vs F.conv2d depthwise, per layer shape of {MODEL} at {INPUT}px "
        "(time ratios; memory: peak RSS of a training step, ratio):"
    )
    print(
        f"{'shape':18s} {'batch':>5s} {'thr':>3s} {'dw ms':>8s} {'cached':>7s} {'cl':>7s} "
        f"{'eager':>7s} {'train':>7s} {'memory':>7s}"
    )
    for r in rows:
        print(
            f"{r['shape']:18s} {r['batch']:5d} {r['threads']:3d} {r['depthwise_ms']:8.3f} "
            f"{r['cached']:7.2f} {r['cached_cl']:7.2f} {r['eager']:7.2f} {r['train']:7.2f} "
            f"{r['memory']:7.2f}"
        )
    for batch in sorted({r["batch"] for r in rows}):
        chosen = [r for r in rows if r["batch"] == batch]
        summary = ", ".join(
            f"{key} median {statistics.median(r[key] for r in chosen):.2f} "
            f"(worst {max(r[key] for r in chosen):.2f})"
            for key in ("cached", "cached_cl", "eager", "train", "memory")
        )
        print(f"batch {batch}: {summary}")


def _print_models(rows: list[dict]) -> None:
    print("\nDeployed models, images/s (fp32, eval, torch.utils.benchmark median):")
    print(f"{'model':28s} {'MMACs':>7s} {'batch':>5s} {'thr':>3s} {'images/s':>9s}")
    for r in rows:
        print(
            f"{r['model']:28s} {r['macs'] / 1e6:7.1f} {r['batch_size']:5d} {r['threads']:3d} "
            f"{r['images_per_s']:9.1f}"
        )
    by = {(r["model"], r["batch_size"], r["threads"]): r["images_per_s"] for r in rows}
    for tv, dw in (
        ("mobilenet_v2_x0_1 tvconv", "mobilenet_v2_x0_1 dw"),
        ("mobilenet_v2_x0_5 tvconv", "mobilenet_v2_x1_0 dw"),
        ("mobilenet_v2_x0_1 tvconv", "mobilenet_v2_x1_0 dw"),
    ):
        ratios = [by[(tv, b, t)] / by[(dw, b, t)] for (m, b, t) in by if m == tv]
        print(f"{tv} / {dw} throughput: {min(ratios):.2f}-{max(ratios):.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-sizes", type=positive_int_arg, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=positive_int_arg, nargs="+", default=[1, 2])
    parser.add_argument("--min-run-time", type=positive_float_arg, default=0.2)
    parser.add_argument("--no-models", action="store_true", help="no deployed-model images/s")
    parser.add_argument("--no-layers", action="store_true", help="no per-layer ratios")
    parser.add_argument(
        "--train-models",
        nargs="*",
        default=["mobilenet_v2_x0_1", "mobilenet_v2_x0_5"],
        help="backbones of the training-step rows (none: skip them)",
    )
    parser.add_argument("--train-sizes", type=positive_int_arg, nargs="+", default=[48, 96])
    parser.add_argument("--train-batch", type=positive_int_arg, default=32)
    parser.add_argument("--train-threads", type=positive_int_arg, default=2)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.train_models) - set(models.list_models()))
    if unknown:
        parser.error(f"--train-models: unknown {unknown}; available: {models.list_models()}")
    print(f"torch {torch.__version__}, {profile.cpu_model()}, kernel: {kernels.extension_name()}")
    if not args.no_layers:
        _print_layers(layer_rows(args.batch_sizes, args.threads, args.min_run_time))
    if args.train_models:
        rows = training_rows(
            args.train_models,
            args.train_sizes,
            args.train_batch,
            args.train_threads,
            max(args.min_run_time, 0.001) * 5,
        )
        _print_training(rows, args.train_batch, args.train_threads)
    if not args.no_models:
        _print_models(model_rows(args.batch_sizes, args.threads, args.min_run_time))
    return 0


if __name__ == "__main__":
    sys.exit(main())
