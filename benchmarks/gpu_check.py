"""The CUDA paths in one short run (a GPU machine's checks; CI has no GPU).

1. The core op on CUDA, each kernel (Triton, the default there, and the eager tap loop) against
   the CPU reference: fp32 forward and all gradients, fp16 / bf16 forward and gradients against
   fp32; TVConv's training form equals its cached form.
2. ``fit()`` on CUDA for the smoke config with ``amp`` off, bf16 and fp16 (GradScaler): finite
   loss, complete status.
3. Timing, cached form against cuDNN's depthwise conv at MobileNetV2-face x0.1 layer shapes
   (batch 32 and 256; fp32 and bf16; Triton and eager), the training step (forward, backward and
   SGD) of TVConv against depthwise at equal width (x0.1 and x0.5, 96 px, batch 256, fp32 and
   bf16 autocast), and model images/s of the deployed TVConv x0.1 / x0.5 against depthwise
   x0.1 / x1.0. The summary prints the issue's ratios (README, "Kernels").

Writes a JSON report to ``--out`` and prints it. Exit code 1 if a correctness check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from tvconv import kernels, models, profile
from tvconv.convert import deploy, find_depthwise_sites
from tvconv.ops import (
    TVConv,
    output_size,
    reference_translation_variant_conv,
    translation_variant_conv,
)
from tvconv.train import fit, smoke_config

CUDA = torch.device("cuda")


def _op_errors(kernel: str, x, weight, bias, grad, stride, failures: list, worst: dict) -> None:
    """One kernel on CUDA against the CPU reference: fp32 output and gradients, then fp16 and
    bf16 output and gradients relative to the fp32 reference's largest value."""
    k = weight.shape[1]
    tensors = [t for t in (x, weight, bias) if t is not None]
    cpu = [t.clone().requires_grad_() for t in tensors]
    reference = reference_translation_variant_conv(
        *cpu[:2], cpu[2] if bias is not None else None, stride
    )
    reference.backward(grad)
    wanted = [reference.detach(), *(t.grad for t in cpu)]
    for dtype, tolerance in ((torch.float32, None), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)):
        gpu = [t.to(CUDA, dtype).requires_grad_() for t in tensors]
        with kernels.forced(kernel):
            result = translation_variant_conv(
                *gpu[:2], gpu[2] if bias is not None else None, stride
            )
            result.backward(grad.to(CUDA, dtype))
        got = [result.detach(), *(t.grad for t in gpu)]
        for part, mine, theirs in zip(("out", "dx", "dw", "db"), got, wanted, strict=False):
            error = float((mine.float().cpu() - theirs).abs().max())
            name = f"{kernel} {dtype} k{k} s{stride} {part}"
            if tolerance is None:
                worst[name] = error
                if error > 1e-4:
                    failures.append(f"{name}: max error {error:.2e}")
            else:
                error /= float(theirs.abs().max())
                worst[name + " (relative)"] = error
                if error > tolerance:
                    failures.append(f"{name}: relative error {error:.2e}")


def correctness() -> dict:
    failures, worst = [], {}
    g = torch.Generator().manual_seed(0)
    for k, stride, with_bias in [
        (3, 1, False),
        (3, 2, True),
        (5, 1, True),
        (5, 2, False),
        (7, 1, True),
    ]:
        size = 13
        out = output_size(size, k, stride)
        x = torch.randn(4, 8, size, size, generator=g)
        weight = torch.randn(8, k, k, out, out, generator=g)
        bias = torch.randn(8, out, out, generator=g) if with_bias else None
        grad = torch.randn(4, 8, out, out, generator=g)
        for kernel in ("triton", "eager"):
            _op_errors(kernel, x, weight, bias, grad, stride, failures, worst)
    layer = TVConv(16, 12, 12, inter_channels=16, inter_layers=2).to(CUDA).eval()
    x = torch.randn(8, 16, 12, 12, device=CUDA)
    with torch.no_grad():
        error = float((layer(x) - layer.deploy()(x)).abs().max())
    worst["train form vs cached form"] = error
    if error > 1e-5:
        failures.append(f"training form vs cached form on CUDA: {error:.2e}")
    return {"max_errors": worst, "failures": failures}


def training() -> dict:
    results, failures = {}, []
    for amp in ("off", "bf16", "fp16"):
        config = replace(smoke_config(), device="cuda", amp=amp, progress=False)
        started = time.perf_counter()
        result = fit(config)
        results[amp] = {
            "status": result.status,
            "reason": result.reason,
            "loss": result.history[-1]["loss"] if result.history else None,
            "mean_acc_pct": result.metrics.get("mean_acc_pct"),
            "seconds": time.perf_counter() - started,
        }
        loss = results[amp]["loss"]
        if result.status != "complete" or loss is None or not math.isfinite(loss):
            failures.append(f"fit amp={amp}: {result.status} {result.reason}")
    return {"runs": results, "failures": failures}


def _median_ms(step) -> float:
    for _ in range(3):
        step()
    timer = benchmark.Timer(stmt="step()", globals={"step": step})
    return timer.blocked_autorange(min_run_time=0.2).median * 1e3


def layer_timings() -> list[dict]:
    model = models.create("mobilenet_v2_x0_1", atom="dw", input_size=96)
    shapes = []
    for site in find_depthwise_sites(model, 96):
        shape = (site.channels, site.h * site.stride, site.stride)
        if shape not in shapes:
            shapes.append(shape)
    rows = []
    for channels, side, stride in shapes:
        out = output_size(side, 3, stride)
        for batch in (32, 256):
            for dtype in (torch.float32, torch.bfloat16):
                x = torch.randn(batch, channels, side, side, device=CUDA, dtype=dtype)
                weight = torch.randn(channels, 3, 3, out, out, device=CUDA, dtype=dtype)
                dw = torch.randn(channels, 1, 3, 3, device=CUDA, dtype=dtype)
                row = {
                    "shape": f"C{channels} {side}px s{stride}",
                    "batch": batch,
                    "dtype": str(dtype),
                }
                with torch.no_grad():
                    depthwise = _median_ms(
                        lambda x=x, dw=dw, s=stride, c=channels: F.conv2d(x, dw, None, s, 1, 1, c)
                    )
                    row["depthwise_ms"] = depthwise
                    for kernel in ("triton", "eager"):
                        with kernels.forced(kernel):
                            ms = _median_ms(
                                lambda x=x, w=weight, s=stride: translation_variant_conv(
                                    x, w, None, s
                                )
                            )
                        row[f"{kernel}_ratio"] = ms / depthwise
                rows.append(row)
    return rows


def training_step_timings() -> list[dict]:
    """ms per SGD step (forward, backward, update) of the backbone, TVConv / depthwise at equal
    width, batch 256 at 96 px."""
    rows = []
    for name in ("mobilenet_v2_x0_1", "mobilenet_v2_x0_5"):
        for amp in ("off", "bf16"):
            row = {"model": name, "amp": amp}
            for atom in ("dw", "tvconv"):
                net = models.create(name, atom=atom, input_size=96).to(CUDA).train()
                net = net.to(memory_format=torch.channels_last)
                optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
                x = torch.randn(256, 3, 96, 96, device=CUDA).contiguous(
                    memory_format=torch.channels_last
                )

                def step(net=net, optimizer=optimizer, x=x, amp=amp):
                    with torch.autocast("cuda", torch.bfloat16, enabled=amp == "bf16"):
                        loss = net(x).float().square().mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

                torch.cuda.reset_peak_memory_stats()
                row[f"{atom}_ms"] = _median_ms(step)
                row[f"{atom}_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
            row["ratio"] = row["tvconv_ms"] / row["dw_ms"]
            row["memory_ratio"] = row["tvconv_peak_mib"] / row["dw_peak_mib"]
            rows.append(row)
    return rows


def model_timings() -> list[dict]:
    rows = []
    for name, atom in profile.THROUGHPUT_MODELS:
        net = deploy(models.create(name, atom=atom, input_size=96)).to(CUDA).eval()
        for dtype in (torch.float32, torch.bfloat16):
            net = net.to(dtype)
            for batch in (32, 256):
                x = torch.randn(batch, 3, 96, 96, device=CUDA, dtype=dtype)
                with torch.no_grad():
                    ms = _median_ms(lambda net=net, x=x: net(x))
                rows.append(
                    {
                        "model": f"{name} {atom}",
                        "dtype": str(dtype),
                        "batch": batch,
                        "images_per_s": batch / ms * 1e3,
                    }
                )
    return rows


def summary(report: dict) -> list[str]:
    """The issue's ratios: per-layer Triton (and eager) / cuDNN depthwise, median and worst per
    batch and dtype; training step TVConv / depthwise; deployed TVConv x0.5 / depthwise x1.0."""
    lines = []
    layers = report.get("layers")
    if isinstance(layers, list):
        for batch in (32, 256):
            for dtype in ("torch.float32", "torch.bfloat16"):
                chosen = [r for r in layers if r["batch"] == batch and r["dtype"] == dtype]
                parts = []
                for kernel in ("triton", "eager"):
                    ratios = [r[f"{kernel}_ratio"] for r in chosen]
                    parts.append(
                        f"{kernel} median {statistics.median(ratios):.2f} (worst {max(ratios):.2f})"
                    )
                lines.append(f"layers batch {batch} {dtype}, / depthwise: " + "; ".join(parts))
    steps = report.get("training_step")
    if isinstance(steps, list):
        for row in steps:
            lines.append(
                f"training step {row['model']} amp={row['amp']}: TVConv / depthwise "
                f"{row['ratio']:.2f} (peak memory {row['memory_ratio']:.2f})"
            )
    rows = report.get("models")
    if isinstance(rows, list):
        speed = {(r["model"], r["dtype"], r["batch"]): r["images_per_s"] for r in rows}
        for dtype in ("torch.float32", "torch.bfloat16"):
            tv = speed.get(("mobilenet_v2_x0_5 tvconv", dtype, 256))
            dw = speed.get(("mobilenet_v2_x1_0 dw", dtype, 256))
            if tv and dw:
                ratio = tv / dw
                lines.append(
                    f"deployed batch 256 {dtype}: TVConv x0.5 / dw x1.0 images/s {ratio:.2f}"
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
    for name, check in (
        ("correctness", correctness),
        ("training", training),
        ("layers", layer_timings),
        ("training_step", training_step_timings),
        ("models", model_timings),
    ):
        started = time.perf_counter()
        try:
            report[name] = check()
        except Exception as error:  # report and go on: one broken part must not hide the rest
            report[name] = {"failures": [f"{type(error).__name__}: {error}"]}
        print(f"{name}: {time.perf_counter() - started:.1f} s", flush=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
    for line in summary(report):
        print(line)
    print(json.dumps(report, indent=1, default=str))
    failures = [f for part in ("correctness", "training") for f in report[part].get("failures", [])]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
