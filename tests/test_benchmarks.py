"""The benchmark scripts run and print what the README quotes (their numbers are machine-bound:
only that they run, and the shape of what they print, are checked)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_kernels_prints_layer_and_training_step_ratios():
    completed = subprocess.run(
        [sys.executable, "benchmarks/kernels.py", "--batch-sizes", "2", "--threads", "1",
         "--min-run-time", "0.001", "--no-models", "--train-models", "mobilenet_v2_x0_1",
         "--train-sizes", "32", "--train-batch", "4", "--train-threads", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = completed.stdout
    assert "batch 2: cached median" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("mobilenet_v2_x0_1   ")]
    assert {" ".join(row[2:-3]) for row in rows} == {"quick (16 x 1)", "paper (64 x 3)", "none"}
    assert all(float(row[-2]) > 0 and float(row[-1]) > 0 for row in rows)


def test_gpu_check_summary_states_the_issue_ratios():
    gpu_check = _script("gpu_check")
    layers = [
        {"batch": b, "dtype": d, "triton_ratio": t, "eager_ratio": 10 * t}
        for b in (32, 256)
        for d in ("torch.float32", "torch.bfloat16")
        for t in (1.0, 1.5, 3.0)
    ]
    report = {
        "layers": layers,
        "training_step": [{"model": "m", "amp": "bf16", "ratio": 1.4, "memory_ratio": 1.1}],
        "models": [
            {"model": "mobilenet_v2_x0_5 tvconv", "dtype": "torch.bfloat16", "batch": 256,
             "images_per_s": 300.0},
            {"model": "mobilenet_v2_x1_0 dw", "dtype": "torch.bfloat16", "batch": 256,
             "images_per_s": 200.0},
        ],
    }  # fmt: skip
    lines = gpu_check.summary(report)
    assert (
        "layers batch 32 torch.float32, / depthwise: triton median 1.50 (worst 3.00); "
        "eager median 15.00 (worst 30.00)"
    ) in lines
    assert "training step m amp=bf16: TVConv / depthwise 1.40 (peak memory 1.10)" in lines
    assert lines[-1] == "deployed batch 256 torch.bfloat16: TVConv x0.5 / dw x1.0 images/s 1.50"
    assert gpu_check.summary({"layers": {"failures": ["x"]}}) == []  # a failed part prints nothing
    assert torch.cuda.is_available() or gpu_check.main([]) == 2  # no GPU: says so, exit 2


def test_bench_loader_runs_at_any_model_size_and_refuses_a_tree_smaller_than_two_batches():
    command = [sys.executable, "benchmarks/loader.py", "--batch", "16", "--batches", "3",
               "--threads", "1", "--workers", "0"]  # fmt: skip
    completed = subprocess.run(
        [*command, "--images", "64", "--image-size", "32"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "training step (paper model, 1 threads)" in completed.stdout
    assert {line.split(maxsplit=1)[0] for line in completed.stdout.splitlines() if line} >= {
        "in-memory",
        "lazy",
    }
    too_few = subprocess.run(
        [*command, "--images", "20"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert too_few.returncode == 2 and "fewer than two batches" in too_few.stderr
