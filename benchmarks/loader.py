"""The real-data loader at CASIA-WebFace scale, side by side in one run (`make bench-loader`).

Generates a CASIA-like tree (identity folders of 250x250 JPEGs, ``--images`` of them; tens of
thousands are enough to extrapolate to CASIA's 494,414), then reads it the ways a run can, each in
a child process of its own so that its peak memory is its own:

- ``in-memory``: every image decoded into one tensor before the first step (the old path);
- ``cache (first run)``: ``cached_image_folder`` decoding the tree once into the data cache with
  ``--workers`` DataLoader processes, then training batches from the memory-mapped copy;
- ``cache (later runs)``: the same call once the copy exists (every later run and job);
- ``lazy``: the cache off (``TVCONV_CACHE=off``), each batch decoded by ``--workers`` workers.

For each: seconds to the first batch, loader images/s over random training batches of
``--batch`` images (as ``tvconv.train`` draws them), and peak resident memory. Then the training
step's images/s of the paper's model at the same batch size and input size, measured in this
process, and the ratio of each loader to it (above 1: the loader is not the bottleneck), and
what the time to the first step and the memory would be at CASIA's size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tvconv.console import nonnegative_int_arg, positive_int_arg

CASIA_IMAGES = 494_414
SIDE = 250
MODES = ("in-memory", "cache (first run)", "cache (later runs)", "lazy")


def generate_tree(root: Path, images: int, per_identity: int = 40, seed: int = 0) -> None:
    """``images`` distinct 250x250 JPEGs (quality 90) in folders of ``per_identity``."""
    rng = np.random.default_rng(seed)
    for index in range(images):
        identity = root / f"{index // per_identity:07d}"
        identity.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((SIDE, SIDE), Image.BICUBIC)
        image.save(identity / f"{index % per_identity:03d}.jpg", quality=90)


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def anonymous_memory_gib() -> float:
    """Resident memory that is not a file's pages (what the OS cannot reclaim): Linux only."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def measure(mode: str, root: Path, image_size: int, batch: int, batches: int, workers: int) -> dict:
    """One mode, in this (child) process: time to the first batch, batches/s, peak memory."""
    from tvconv.data.faces import cached_image_folder, load_image_folder
    from tvconv.train import batch_images

    start = time.perf_counter()
    if mode == "in-memory":
        train = load_image_folder(root, image_size)
    else:
        train = cached_image_folder(root, image_size, workers)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    count = min(batches, len(train) // batch)
    chunks = order[: count * batch].view(count, batch)
    seen, first = 0, None
    for images, _labels in batch_images(train, chunks, workers):
        if first is None:
            first = time.perf_counter()
        seen += images.shape[0]
    end = time.perf_counter()
    steady = (seen - batch) / (end - first) if count > 1 else float("nan")
    return {
        "first_batch_s": first - start,
        "images_per_s": steady,
        "peak_gib": peak_memory_gib(),
        "anonymous_gib": anonymous_memory_gib(),
    }


def step_images_per_s(image_size: int, batch: int, threads: int, steps: int = 3) -> float:
    """Training steps of the paper preset's model (forward, AM-Softmax loss, backward, SGD)."""
    from tvconv.config import override
    from tvconv.train import TrainConfig, build_model

    torch.set_num_threads(threads)
    config = override(TrainConfig(), f"data.image_size={image_size}")  # the model's input too
    model = build_model(config, num_classes=10_575).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(batch, 3, image_size, image_size).contiguous(
        memory_format=torch.channels_last
    )
    labels = torch.randint(0, 10_575, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(images, labels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up (and the C++ kernel build, if any)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def child(mode: str, args: argparse.Namespace, root: Path, cache: Path) -> dict:
    env = dict(os.environ, TVCONV_CACHE="off" if mode == "lazy" else str(cache))
    command = [sys.executable, __file__, "--measure", mode, "--root", str(root)]
    command += ["--image-size", str(args.image_size), "--batch", str(args.batch)]
    command += ["--batches", str(args.batches), "--workers", str(args.workers)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    count = positive_int_arg
    parser.add_argument("--images", type=count, default=20_000, help="size of the generated tree")
    parser.add_argument("--image-size", type=count, default=96, help="input size (the paper's 96)")
    parser.add_argument("--batch", type=count, default=512, help="training batch (the paper's)")
    parser.add_argument("--batches", type=count, default=20, help="batches read per loader")
    parser.add_argument("--workers", type=nonnegative_int_arg, default=2, help="data.workers")
    parser.add_argument("--threads", type=count, default=2, help="torch threads of the step")
    parser.add_argument("--keep", type=Path, help="generate (or reuse) the tree here")
    parser.add_argument("--measure", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.image_size % 16:
        parser.error(f"--image-size {args.image_size}: the models need a multiple of 16")
    if args.images < 2 * args.batch and not args.measure:
        parser.error(
            f"--images {args.images} holds fewer than two batches of --batch {args.batch}: "
            "no steady rate can be measured"
        )
    if args.measure:
        numbers = measure(
            args.measure, args.root, args.image_size, args.batch, args.batches, args.workers
        )
        print(json.dumps(numbers))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-loader-") as scratch:
        root = args.keep or Path(scratch) / "casia_like"
        if not root.is_dir():
            started = time.perf_counter()
            print(f"generating {args.images} {SIDE}x{SIDE} JPEGs under {root} ...", flush=True)
            generate_tree(root, args.images)
            print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        images = sum(1 for _ in root.glob("*/*.jpg"))
        size_mib = sum(p.stat().st_size for p in root.glob("*/*.jpg")) / 2**20
        print(
            f"tree: {images} images ({size_mib:.0f} MiB of JPEG), input {args.image_size} px, "
            f"batch {args.batch}, {args.workers} workers, {os.cpu_count()} cores\n",
            flush=True,
        )
        cache = Path(scratch) / "cache"
        results = {}
        for mode in MODES:
            results[mode] = child(mode, args, root, cache)
            print(f"  measured {mode}", flush=True)
        step = step_images_per_s(args.image_size, args.batch, args.threads)

    print(f"\ntraining step (paper model, {args.threads} threads): {step:,.0f} images/s\n")
    header = (
        f"{'loader':20s} {'first batch':>12s} {'images/s':>10s} {'/ step':>7s} {'peak RSS':>9s} "
        f"{'anon':>9s}"
    )
    print(header + f"   at CASIA scale ({CASIA_IMAGES:,} images): first batch, anon memory")
    print("-" * len(header))
    scale = CASIA_IMAGES / images
    for mode, numbers in results.items():
        first, rate = numbers["first_batch_s"], numbers["images_per_s"]
        peak, anonymous = numbers["peak_gib"], numbers["anonymous_gib"]
        at_scale_s = first * scale if mode in ("in-memory", "cache (first run)") else first
        baseline = results["lazy"]["anonymous_gib"]  # the process without any tree in memory
        held = anonymous - baseline if mode == "in-memory" else 0.0  # grows with the tree
        at_scale_gib = anonymous + held * (scale - 1)
        print(
            f"{mode:20s} {first:10.1f} s {rate:10,.0f} {rate / step:6.1f}x {peak:5.2f} GiB "
            f"{anonymous:5.2f} GiB   {at_scale_s / 60:6.1f} min, {at_scale_gib:5.1f} GiB"
        )
    cache_gib = CASIA_IMAGES * 3 * args.image_size**2 / 2**30
    print(
        f"\npeak RSS counts the memory-mapped copy's pages a run has touched: they are the "
        f"file's (the OS reclaims them), unlike 'anon'. The decoded copy of CASIA at "
        f"{args.image_size} px takes {cache_gib:.1f} GiB of disk in the data cache, once for "
        "every run and job; in-memory decoding holds the whole tree in every run and job."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
