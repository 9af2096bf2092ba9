"""The training engine both tasks run (``tvconv.train`` faces, ``tvconv.segment`` fundus).

A task supplies its data, model, optimizer, loss and evaluation (``TrainingTask``); the engine
owns what is the same for every task: the runtime (device, threads, torchrun/DDP), the epoch
batches drawn from the seed, the learning-rate schedule, the epoch loop (non-finite loss stops
the run on every rank, progress bar, per-step and per-epoch callbacks), atomic epoch checkpoints
and resuming from them, the result type and the one-run command line.

Reproducibility: the data order and the augmentation come from generators derived from the seed
and the epoch (``epoch_batches``), and torch is reseeded every epoch, so a resumed run continues
exactly as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from tvconv import affinity
from tvconv._files import write_atomically, write_text_atomically
from tvconv.config import (
    check_runtime,
    fail,
    override,
    refuse_repeated_keys,
    result_hash,
    to_dict,
)
from tvconv.console import output_problem
from tvconv.data._images import ImageError
from tvconv.data.datasets import to_model_input
from tvconv.data.synthetic import stream

SCHEDULES = ("multistep", "cosine")
CHECKPOINT = "checkpoint.pt"


# ------------------------------------------------------------------------------------ results


@dataclass
class FitResult:
    status: str
    metrics: dict
    history: list[dict]
    timings: dict
    environment: dict
    config: dict
    reason: str | None = None
    model: nn.Module | None = field(default=None, repr=False)
    examples: dict | None = field(default=None, repr=False)  # fundus: test images + predictions

    def to_record(self) -> dict:
        """Everything but the model and the examples, JSON-ready."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record.pop("model")
        record.pop("examples")
        return record


@dataclass(frozen=True)
class RunSettings:
    """The top-level keys of every training config (``TrainConfig``, ``FundusConfig`` inherit
    them): the seed, and how the run executes (not part of its result: ``result_fields``)."""

    TASK: ClassVar[str] = ""  # the task whose config this is (face, fundus)

    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    threads: int | None = None
    progress: bool | None = None
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        check_runtime(self)

    def fingerprint(self) -> str:
        """The checkpoint fingerprint: the result hash of the config (``tvconv.config``)."""
        return result_hash(self.TASK, to_dict(self))


# ------------------------------------------------------------------------------------ runtime


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def check_batch_size(batch_size: int, images: int) -> None:
    """A batch larger than the training set would make no step."""
    if batch_size > images:
        fail("optim.batch_size", batch_size, f"at most the {images} training images")


def visible_gpus() -> int:
    """The CUDA devices this process sees (after ``CUDA_VISIBLE_DEVICES``)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_problem(device: str, visible: int) -> str | None:
    """Why a machine with ``visible`` GPUs cannot run on ``device`` (``cuda[:N]`` without that
    GPU), or None."""
    if not device.startswith("cuda") or int(device.partition(":")[2] or 0) < visible:
        return None
    seen = f"GPUs 0-{visible - 1}" if visible else "no CUDA device"
    return f"device={device} but this machine has {seen}"


def check_machine(config: object) -> None:
    """What a run asks of this machine, checked before it starts (a ValueError naming the key):
    its device, mixed precision that needs CUDA (fp16 trains without loss scaling elsewhere) and
    a checkpoint folder it can write."""
    if problem := device_problem(config.device, visible_gpus()):
        raise ValueError(problem)
    on_cuda = config.device.startswith("cuda") or (
        config.device == "auto" and torch.cuda.is_available()
    )
    if config.amp == "fp16" and not on_cuda:
        fail("amp", config.amp, "bf16 or off on the CPU (fp16 needs CUDA for its loss scaling)")
    folder = config.checkpoint_dir
    if folder is not None and (
        problem := output_problem(Path(folder) / CHECKPOINT, "checkpoint_dir")
    ):
        raise ValueError(problem)
    check_ranks(config.optim.batch_size, int(os.environ.get("WORLD_SIZE", "1")))


def check_ranks(batch_size: int, world_size: int) -> None:
    """Under torchrun the global batch is split evenly between the ranks."""
    if batch_size % world_size:
        fail(
            "optim.batch_size",
            batch_size,
            f"a multiple of the {world_size} ranks torchrun started (each takes an equal share)",
        )


def start_runtime(config: object) -> Runtime:
    """Threads, device and (under torchrun) the process group of a run."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={config.device!r} but CUDA is not available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Runtime(device)
    check_ranks(config.optim.batch_size, world_size)  # before any rank joins the group
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size)


def environment(runtime: Runtime) -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(runtime.device),
        "cuda_device": torch.cuda.get_device_name(runtime.device)
        if runtime.device.type == "cuda"
        else None,
        "threads": torch.get_num_threads(),
        "world_size": runtime.world_size,
    }


def finite_everywhere(loss: torch.Tensor, runtime: Runtime) -> bool:
    """Whether the loss is finite on every rank (so that all ranks stop together)."""
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if runtime.world_size > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def autocast(config: object, device: torch.device) -> contextlib.AbstractContextManager:
    if config.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def begin(config: object, load: Callable[[], object]) -> tuple[float, Runtime, object, float]:
    """A run's start: (start time, runtime, ``load()``'s data, seconds the data took), with
    torch seeded from the config before the data is made."""
    start = time.perf_counter()
    runtime = start_runtime(config)
    torch.manual_seed(config.seed)
    data = load()
    return start, runtime, data, time.perf_counter() - start


def initialise_affinity(
    config: object,
    module: nn.Module,
    images: int,
    sample: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
) -> None:
    """Affinity maps from data statistics (``model.init`` data-driven, TVConv only): 256
    training images drawn from the seed (``sample(indices)``: uint8 images)."""
    if config.model.atom != "tvconv" or not affinity.is_data_driven(config.model.init):
        return
    order = torch.randperm(images, generator=stream(config.seed, "affinity-sample"))
    affinity.initialise_from_data(module, to_model_input(sample(order[:256])).to(device))


# ------------------------------------------------------------------------------------ schedule


def check_schedule(schedule: str, milestones: tuple[float, ...]) -> None:
    if schedule not in SCHEDULES:
        fail("optim.schedule", schedule, f"one of {', '.join(SCHEDULES)}")
    if not all(0 < m <= 1 for m in milestones) or list(milestones) != sorted(milestones):
        fail("optim.milestones", milestones, "increasing fractions in (0, 1]")


def lr_at(optim: object, step: int, steps_per_epoch: int) -> float:
    """Learning rate of global step ``step`` (0-based): cosine per step, or ``gamma`` at each
    milestone (fractions of the epochs, rounded to whole epochs)."""
    if optim.schedule == "cosine":
        total = optim.epochs * steps_per_epoch
        return optim.lr * 0.5 * (1 + math.cos(math.pi * step / total))
    passed = sum(step >= m * steps_per_epoch for m in milestone_epochs(optim))
    return optim.lr * optim.gamma**passed


def milestone_epochs(optim: object) -> list[int]:
    """The epochs at which a multistep schedule multiplies the lr by ``gamma``."""
    return [round(m * optim.epochs) for m in optim.milestones]


def steps_per_epoch(images: int, batch_size: int) -> int:
    steps = images // batch_size
    if steps == 0:
        raise ValueError(f"optim.batch_size={batch_size} exceeds the {images} training images")
    return steps


def epoch_batches(
    seed: int, epoch: int, images: int, batch_size: int, runtime: Runtime
) -> tuple[torch.Tensor, torch.Generator]:
    """This rank's sample indices of every step of ``epoch`` (steps, local batch) and the
    epoch's augmentation generator; reseeds torch (dropout: the same stream when resumed)."""
    torch.manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(images, generator=stream(seed, f"order-{epoch}"))
    augment_rng = stream(seed, f"augment-{epoch}-rank{runtime.rank}")
    steps = steps_per_epoch(images, batch_size)
    local_batch = batch_size // runtime.world_size
    global_batches = order[: steps * batch_size].view(steps, -1)
    local = global_batches[:, runtime.rank * local_batch : (runtime.rank + 1) * local_batch]
    return local, augment_rng


# ------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic (``tvconv._files``): a kill never leaves half a checkpoint."""
    write_atomically(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path, expected: str) -> dict | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["fingerprint"] != expected:
        raise ValueError(
            f"checkpoint {path} belongs to another configuration ({state['fingerprint']}, this "
            f"run is {expected}); remove it or use another checkpoint_dir"
        )
    return state


def _resume(
    checkpoint: Path | None, expected: str, model: nn.Module, optimizer, scaler
) -> tuple[list[dict], int]:
    """Load the state of an interrupted run into model, optimizer and scaler; returns its
    history and the epoch to continue from (([], 0) when there is none)."""
    if checkpoint is None or not (state := load_checkpoint(checkpoint, expected)):
        return [], 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return state["history"], state["epoch"]


def _save_epoch(
    checkpoint: Path, expected: str, epoch: int, model: nn.Module, optimizer, scaler, history
) -> None:
    save_checkpoint(
        checkpoint,
        {
            "fingerprint": expected,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "history": history,
        },
    )


# ------------------------------------------------------------------------------------ the loop


class TrainingTask(Protocol):
    """What a task gives the epoch loop."""

    def batches(self, local: torch.Tensor) -> Iterable:
        """One batch per row of ``local`` (this rank's sample indices of each step)."""

    def inputs(self, batch: object, augment_rng: torch.Generator) -> tuple[tuple, object, int]:
        """(the network's arguments, the targets, the number of images): augmented, on the
        device."""

    def loss(self, output: torch.Tensor, targets: object) -> torch.Tensor:
        """The step's loss (a float32 scalar) of the network's output."""

    def after_step(self, output: torch.Tensor, targets: object) -> None:
        """Accumulate the epoch's own statistics once the step is taken."""

    def epoch_metrics(self) -> dict:
        """The epoch's own statistics for its history row (then start the next epoch's)."""

    def evaluate_epoch(self) -> dict:
        """Metrics evaluated after every epoch (empty when not asked for)."""


class DivergedError(Exception):
    """A model whose output is not finite: the run fails with this reason (a loss can stay
    finite while the last update sent the parameters to inf, or the output overflows)."""


def check_finite(output: torch.Tensor, what: str) -> torch.Tensor:
    """``output`` unchanged; raises DivergedError if it holds NaN or inf."""
    if not torch.isfinite(output).all():
        raise DivergedError(f"non-finite {what} (the model diverged)")
    return output


@dataclass
class Trained:
    status: str
    reason: str | None
    history: list[dict]
    seconds: float


def step_row(global_step: int, per_epoch: int, loss: float, optimizer, images: int) -> dict:
    """What ``on_step`` receives: the step (from 1), the epoch as a fraction, the loss, the
    learning rate and the images of the step (on every rank)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    return {
        "step": global_step + 1,
        "epoch": (global_step + 1) / per_epoch,
        "loss": loss,
        "lr": optimizer.param_groups[0]["lr"],
        "images": images * world,
    }


def _progress(config: object, runtime: Runtime, total: int, initial: int) -> tqdm:
    enabled = sys.stderr.isatty() if config.progress is None else config.progress
    return tqdm(
        total=total,
        initial=initial,
        disable=not (enabled and runtime.is_main),
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )


def train(
    config: object,
    runtime: Runtime,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    task: TrainingTask,
    images: int,
    on_epoch_end: Callable[[dict], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> Trained:
    """The epoch loop of one run (resumed from its checkpoint when there is one)."""
    scaler = torch.amp.GradScaler(enabled=config.amp == "fp16")
    expected = config.fingerprint()
    checkpoint = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None
    history, first_epoch = _resume(checkpoint, expected, model, optimizer, scaler)
    net = (
        nn.parallel.DistributedDataParallel(model, device_ids=None)
        if runtime.world_size > 1
        else model
    )
    optim = config.optim
    per_epoch = steps_per_epoch(images, optim.batch_size)
    status, reason = "complete", None
    progress = _progress(config, runtime, optim.epochs * per_epoch, first_epoch * per_epoch)
    start = time.perf_counter()
    for epoch in range(first_epoch, optim.epochs):
        epoch_start = time.perf_counter()
        local, augment_rng = epoch_batches(config.seed, epoch, images, optim.batch_size, runtime)
        net.train()
        loss_sum = seen = 0.0
        for step, batch in enumerate(task.batches(local)):
            global_step = epoch * per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = lr_at(optim, global_step, per_epoch)
            arguments, targets, size = task.inputs(batch, augment_rng)
            with autocast(config, runtime.device):
                output = net(*arguments)
            loss = task.loss(output, targets)
            if not finite_everywhere(loss, runtime):
                status = "failed"
                reason = f"non-finite loss at epoch {epoch + 1}, step {step + 1}"
                break
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_value = loss.item()
            loss_sum += loss_value * size
            seen += size
            if on_step is not None and runtime.is_main:
                on_step(step_row(global_step, per_epoch, loss_value, optimizer, size))
            task.after_step(output, targets)
            progress.update()
            progress.set_postfix(epoch=epoch + 1, loss=f"{loss_value:.3f}")
        if status == "failed":
            break
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            # the epoch's last update diverged: no later loss would show it (DDP ranks hold
            # the same parameters, so they all stop here)
            status = "failed"
            reason = f"non-finite parameters after epoch {epoch + 1} (the last update diverged)"
            break
        seconds = time.perf_counter() - epoch_start
        row = {
            "epoch": epoch + 1,
            "loss": loss_sum / seen,
            **task.epoch_metrics(),
            "lr": lr_at(optim, (epoch + 1) * per_epoch - 1, per_epoch),
            "seconds": seconds,
            "images_per_s": seen * runtime.world_size / seconds,
        }
        if runtime.is_main:
            try:
                row.update(task.evaluate_epoch())
            except DivergedError as error:
                status, reason = "failed", f"{error} at epoch {epoch + 1}"
                break
        history.append(row)
        if checkpoint is not None and runtime.is_main:
            _save_epoch(checkpoint, expected, epoch + 1, model, optimizer, scaler, history)
        if on_epoch_end is not None and runtime.is_main:
            on_epoch_end(row)
    progress.close()
    return Trained(status, reason, history, time.perf_counter() - start)


def timings(start: float, data_seconds: float, train_seconds: float, eval_start: float) -> dict:
    return {
        "data_seconds": data_seconds,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - eval_start,
        "total_seconds": time.perf_counter() - start,
    }


def result(
    config: object,
    runtime: Runtime,
    trained: Trained,
    metrics: dict,
    start: float,
    data_seconds: float,
    eval_start: float,
    model: nn.Module,
    examples: dict | None = None,
) -> FitResult:
    """The run's FitResult (after every rank finished evaluating)."""
    if runtime.world_size > 1:
        dist.barrier()
    return FitResult(
        status=trained.status,
        reason=trained.reason,
        metrics=metrics,
        history=trained.history,
        timings=timings(start, data_seconds, trained.seconds, eval_start),
        environment=environment(runtime),
        config=to_dict(config),
        model=model,
        examples=examples,
    )


# ------------------------------------------------------------------------------------ cli


def run_cli(
    argv: list[str] | None,
    prog: str,
    description: str,
    presets: dict[str, Callable[[], object]],
    example: str,
    check: Callable[[object], None],
    fit: Callable[[object], FitResult],
    summary_keys: Callable[[dict], list[str]],
) -> int:
    """One run from the command line: a preset, ``key=value`` overrides, ``check`` before
    training, the record to ``--out``, a one-line JSON summary of ``summary_keys(metrics)``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--preset", choices=sorted(presets), default="quick")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. {example}")
    parser.add_argument("--out", type=Path, help="write the run record (JSON) here")
    args = parser.parse_args(argv)
    try:
        refuse_repeated_keys(args.overrides)
        config = presets[args.preset]()
        for assignment in args.overrides:
            config = override(config, assignment)
        check(config)
        check_machine(config)
    except ValueError as error:
        parser.error(str(error))
    if args.out is not None and (problem := output_problem(args.out, "--out")):
        parser.error(problem)
    try:
        outcome = fit(config)
    except ImageError as error:  # a damaged image, found when the data is loaded
        parser.error(str(error))
    if int(os.environ.get("RANK", "0")) == 0:
        record = outcome.to_record()
        if args.out is not None:
            write_text_atomically(args.out, json.dumps(record, indent=2))
        summary = {
            key: round(outcome.metrics.get(key, math.nan), 2)
            for key in summary_keys(outcome.metrics)
        }
        print(
            json.dumps(
                {
                    "status": outcome.status,
                    "reason": outcome.reason,
                    **summary,
                    "train_seconds": round(outcome.timings["train_seconds"], 1),
                }
            )
        )
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0 if outcome.status == "complete" else 1
