"""The CUDA paths in one short run (a GPU machine's checks; CI has no GPU).

1. The core op on CUDA (the eager tap loop) against the CPU reference, fp32 forward and
   backward, and fp16 / bf16 forward against fp32; TVConv's training form equals its cached form.
2. ``fit()`` on CUDA for the smoke config with ``amp`` off, bf16 and fp16 (GradScaler): finite
   loss, complete status.
3. Timing, cached form against cuDNN's depthwise conv at MobileNetV2-face x0.1 layer shapes
   (batch 32 and 256; fp32 and bf16; eager and ``torch.compile``), and model images/s of the
   deployed TVConv x0.1 / x0.5 against depthwise x0.1 / x1.0.

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

from tvconv import models, profile
from tvconv.convert import deploy, find_depthwise_sites
from tvconv.ops import (
    TVConv,
    output_size,
    reference_translation_variant_conv,
    translation_variant_conv,
)
from tvconv.train import fit, smoke_config

CUDA = torch.device("cuda")


def correctness() -> dict:
    failures, worst = [], {}
    g = torch.Generator().manual_seed(0)
    for k, stride, with_bias in [(3, 1, False), (3, 2, True), (5, 1, True), (5, 2, False)]:
        size = 13
        out = output_size(size, k, stride)
        x = torch.randn(4, 8, size, size, generator=g)
        weight = torch.randn(8, k, k, out, out, generator=g)
        bias = torch.randn(8, out, out, generator=g) if with_bias else None
        grad = torch.randn(4, 8, out, out, generator=g)
        tensors = [t for t in (x, weight, bias) if t is not None]
        cpu = [t.clone().requires_grad_() for t in tensors]
        gpu = [t.to(CUDA).requires_grad_() for t in tensors]
        reference = reference_translation_variant_conv(
            cpu[0], cpu[1], cpu[2] if with_bias else None, stride
        )
        reference.backward(grad)
        result = translation_variant_conv(gpu[0], gpu[1], gpu[2] if with_bias else None, stride)
        result.backward(grad.to(CUDA))
        pairs = [(result, reference)] + [(a.grad, b.grad) for a, b in zip(gpu, cpu, strict=True)]
        error = max(float((a.cpu() - b).abs().max()) for a, b in pairs)
        worst[f"fp32 k{k} s{stride} bias{int(with_bias)}"] = error
        if error > 1e-4:
            failures.append(f"fp32 k{k} s{stride}: max error {error:.2e}")
        for dtype, tolerance in ((torch.float16, 1e-2), (torch.bfloat16, 5e-2)):
            low = translation_variant_conv(
                x.to(CUDA, dtype),
                weight.to(CUDA, dtype),
                bias.to(CUDA, dtype) if with_bias else None,
                stride,
            )
            scale = float(reference.abs().max())
            error = float((low.float().cpu() - reference.detach()).abs().max()) / scale
            worst[f"{dtype} k{k} s{stride} (relative)"] = error
            if error > tolerance:
                failures.append(f"{dtype} k{k} s{stride}: relative error {error:.2e}")
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
    compiled = torch.compile(reference_translation_variant_conv, dynamic=False)
    rows = []
    for number, (channels, side, stride) in enumerate(shapes):
        out = output_size(side, 3, stride)
        for batch in (32, 256):
            for dtype in (torch.float32, torch.bfloat16):
                x = torch.randn(batch, channels, side, side, device=CUDA, dtype=dtype)
                weight = torch.randn(channels, 3, 3, out, out, device=CUDA, dtype=dtype)
                dw = torch.randn(channels, 1, 3, 3, device=CUDA, dtype=dtype)
                with torch.no_grad():
                    depthwise = _median_ms(
                        lambda x=x, dw=dw, s=stride, c=channels: F.conv2d(x, dw, None, s, 1, 1, c)
                    )
                    eager = _median_ms(
                        lambda x=x, w=weight, s=stride: translation_variant_conv(x, w, None, s)
                    )
                    row = {
                        "shape": f"C{channels} {side}px s{stride}",
                        "batch": batch,
                        "dtype": str(dtype),
                        "depthwise_ms": depthwise,
                        "eager_ratio": eager / depthwise,
                    }
                    if number % 4 == 0 and batch == 256:  # about 10 s per compilation
                        fast = _median_ms(lambda x=x, w=weight, s=stride: compiled(x, w, None, s))
                        row["compiled_ratio"] = fast / depthwise
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
    for name, check in (
        ("correctness", correctness),
        ("training", training),
        ("layers", layer_timings),
        ("models", model_timings),
    ):
        started = time.perf_counter()
        try:
            report[name] = check()
        except Exception as error:  # report and go on: one broken part must not hide the rest
            report[name] = {"failures": [f"{type(error).__name__}: {error}"]}
        print(f"{name}: {time.perf_counter() - started:.1f} s", flush=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
    layers = report.get("layers")
    if isinstance(layers, list):
        for batch in (32, 256):
            for dtype in ("torch.float32", "torch.bfloat16"):
                chosen = [r for r in layers if r["batch"] == batch and r["dtype"] == dtype]
                eager = [r["eager_ratio"] for r in chosen]
                line = f"batch {batch} {dtype}: eager / depthwise median "
                line += f"{statistics.median(eager):.2f} (worst {max(eager):.2f})"
                compiled = [r["compiled_ratio"] for r in chosen if "compiled_ratio" in r]
                if compiled:
                    line += f"; compiled / depthwise median {statistics.median(compiled):.2f}"
                print(line)
    print(json.dumps(report, indent=1, default=str))
    failures = [f for part in ("correctness", "training") for f in report[part].get("failures", [])]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
