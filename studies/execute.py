"""One run into the store (``execute_run``): what a worker (local process, SLURM job) does.

Take the run's lock, re-check the store (another runner may have finished it meanwhile), log a
start event, train or profile through the task's ``run`` (``studies.config.TASKS``), write the
record (``new_record``) atomically, release the lock. An exception becomes a ``failed`` record
with its traceback; KeyboardInterrupt propagates (the lock is released, no record is written).
A training run says where it is on stdout as it goes (``Heartbeat``): after its first epoch,
then at most every ``HEARTBEAT_SECONDS``, so a log shows a run of many minutes moving.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

import tvconv
from studies.config import TASKS, with_runtime
from studies.spec import Run
from studies.store import SCHEMA_VERSION, Store
from studies.tracking import Tracker, track_run
from tvconv import profile
from tvconv._engine import save_checkpoint

HEARTBEAT_SECONDS = 300.0  # a training run in progress prints where it is at most this often


def duration(seconds: float) -> str:
    """``42s``, ``6m05s``, ``1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Heartbeat:
    """An ``on_epoch_end`` callback that prints where a training run is: after the first epoch
    this process trains, then whenever ``every`` seconds have passed since the last line, never
    after the last epoch (the run's finished line follows). A line: the run's cell and seed, the
    epoch of ``epochs``, the epoch's loss and training accuracy when recorded, the time so far
    and the run's ETA: the epochs left at the median time of the epochs this process trained
    (their rows' ``seconds``: the median, so that an epoch stretched by a paused or starved
    process does not inflate it; without them, the time so far per epoch, which counts the data
    and model set-up too). A resumed run counts from its checkpoint."""

    def __init__(
        self,
        run: Run,
        epochs: int,
        out=None,
        every: float = HEARTBEAT_SECONDS,
        clock=time.monotonic,
    ) -> None:
        self.run, self.epochs, self.out, self.every, self.clock = run, epochs, out, every, clock
        self.start = self.last = clock()
        self.trained = 0  # epochs this process has trained
        self.epoch_seconds: list[float] | None = []  # None once a row lacks its time

    def __call__(self, row: dict) -> None:
        now = self.clock()
        self.trained += 1
        if self.epoch_seconds is not None and isinstance(row.get("seconds"), (int, float)):
            self.epoch_seconds.append(row["seconds"])
        else:
            self.epoch_seconds = None
        epoch = int(row.get("epoch", 0))
        if epoch >= self.epochs or (self.trained > 1 and now - self.last < self.every):
            return
        self.last = now
        text = f"  running {self.run.cell} seed={self.run.seed}: epoch {epoch}/{self.epochs}"
        if isinstance(row.get("loss"), (int, float)):
            text += f", loss {row['loss']:.4g}"
        if isinstance(row.get("train_acc_pct"), (int, float)):
            text += f", train acc {row['train_acc_pct']:.1f}%"
        elapsed = now - self.start
        pace = (
            statistics.median(self.epoch_seconds) if self.epoch_seconds else elapsed / self.trained
        )
        text += f"; {duration(elapsed)} so far, ETA {duration(pace * (self.epochs - epoch))}"
        out = self.out or sys.stdout
        tqdm.write(text, file=out)  # above the sweep's progress bar when it is this process's
        out.flush()


def git_sha() -> str | None:
    """The repository's commit (with ``+dirty`` for uncommitted changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty.strip() else "")


# ------------------------------------------------------------------------------------ one run


def new_record(run: Run, environment: dict, started: float | None = None, **outcome) -> dict:
    """The run record, the one place it is assembled (its schema: ``results/README.md``,
    checked by ``studies.store``): the run's identity and config, where it ran, when it started
    (default now) and ``outcome`` (status, metrics, error, history, finished, ...)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "results_version": tvconv.RESULTS_VERSION,
        "run_id": run.run_id,
        "study": run.study,
        "preset": run.preset,
        "cell": run.cell,
        "seed": run.seed,
        "task": run.config.task,
        "config": run.config.to_dict(),
        "environment": environment,
        "started": time.time() if started is None else started,
        **outcome,
    }


def execute_run(
    run: Run,
    root: str | Path,
    threads: int,
    force: bool = False,
    sha: str | None = None,
    retry_failed: bool = False,
    device: str | None = None,
) -> str:
    """Execute one run into the store; returns complete | failed | skipped (locked by another
    runner, or finished by one since the sweep was planned). ``device`` (``cuda:N``, from the
    launcher's GPU slots) replaces the config's; it is made the process's current CUDA device."""
    store = Store(Path(root), run.study, run.preset)
    if not store.try_lock(run.run_id):
        return "skipped"
    try:
        status = store.status(run.run_id)
        if not (force or status == "missing" or (status == "failed" and retry_failed)):
            return "skipped"
        store.log_event(
            {
                "event": "start",
                "run_id": run.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )
        torch.set_num_threads(threads)
        environment = {"git_sha": sha, "host": socket.gethostname(), "threads": threads}
        if device is not None:
            environment["device"] = device
        started = time.time()
        tracker = track_run(Path(root), run)
        try:
            if device is not None and device.startswith("cuda:"):
                torch.cuda.set_device(torch.device(device))  # Triton launches on the current one
            outcome = _execute(run, store, threads, tracker, device)
        except Exception:
            outcome = {"status": "failed", "error": traceback.format_exc(), "metrics": {}}
        record = new_record(run, environment, started, **outcome, finished=time.time())
        store.write(record)
        tracker.finish(record.get("metrics", {}), failed=record["status"] == "failed")
        return record["status"]
    finally:
        store.unlock(run.run_id)


def _execute(run: Run, store: Store, threads: int, tracker: Tracker, device: str | None) -> dict:
    config = run.config
    task = TASKS[config.task]
    if not task.trains:
        measured = task.run(config.section)
        tracker.log(measured["metrics"])
        return {"status": "complete", **measured, "error": None}
    checkpoints = store.folder / "checkpoints" / run.run_id
    settings = replace(
        with_runtime(config, threads, device).section,
        progress=False,
        checkpoint_dir=str(checkpoints),
    )
    heartbeat = Heartbeat(run, settings.optim.epochs)

    def on_epoch_end(row: dict) -> None:
        tracker.epoch(row)
        heartbeat(row)

    result = task.run(settings, on_epoch_end=on_epoch_end, on_step=tracker.step)
    if result.status == "complete":
        # the face task keeps the backbone (the head holds the training identities)
        network = result.model.backbone if config.task == "face" else result.model
        for folder, content in (("models", network.state_dict()), ("examples", result.examples)):
            if content is not None:  # atomic: a reader never sees half a file
                save_checkpoint(store.folder / folder / f"{run.run_id}.pt", content)
        shutil.rmtree(checkpoints, ignore_errors=True)
        params = profile.count_params(network)
        result.metrics.update(
            macs=profile.count_macs(tvconv.deploy(copy.deepcopy(network)))["macs"],
            generator_macs=profile.count_macs(network)["generator_macs"],
            trainable_params=params["trainable_params"],
            deployed_params=params["deployed_params"],
        )
    return {
        "status": result.status,
        "error": result.reason,
        "metrics": result.metrics,
        "history": result.history,
        "timings": result.timings,
        "environment_run": result.environment,
    }


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the platform has one (a SLURM
    allocation, ``taskset``, a container's cpuset), else every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """The torch threads of each of ``jobs`` local workers (the usable cores split evenly)."""
    return max(1, usable_cores() // jobs)
