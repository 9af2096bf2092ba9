"""Launchers: a local process pool, and SLURM job arrays through submitit.

Local: ``jobs`` worker processes (spawned, so torch's thread pools start clean), torch threads
split evenly across them; ``jobs=1`` runs in this process. Training runs on CUDA (``device`` auto
or cuda on a machine with GPUs) run ``jobs`` at once on each GPU (``--gpus 0,1``, default every
GPU this process sees, ``CUDA_VISIBLE_DEVICES`` applies): each run goes to the GPU with the fewest
runs in flight, as ``device=cuda:N`` (the record's ``environment.device``), one process per run,
the CPU threads split over all of them (``choose_gpus``, ``GpuSlots``). A worker that dies (e.g.
killed by the OS) breaks the pool: the runs in flight are queued again once (a run lost twice is
recorded as failed) and the pool is rebuilt for the rest. Workers die with the runner (on Linux,
``die_with_parent``): a runner stopped with ``kill PID`` or killed outright leaves no worker
training a run nobody waits for. Sweep progress shows done / running /
failed / remaining and an ETA on a terminal, one line per finished run otherwise
(``_Progress``).

SLURM: one array job over the missing runs (``submitit.AutoExecutor``; ``cluster="local"`` runs
the same path on this machine, which the tests use). Each array task executes one run into the
shared store by run_id, under the same per-run lock as local runs.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from studies.config import TASKS
from studies.execute import duration, execute_run, new_record, threads_per_job
from studies.spec import Run, SpecError
from studies.store import Store
from tvconv._engine import device_problem, visible_gpus


class _Progress:
    """Sweep progress: a tqdm bar on a terminal; otherwise (a log file, CI, nohup, SLURM) one
    line per finished run: count, status, cell, seed, key metric (or why it failed), its time,
    the sweep's done / running / failed / remaining counts and its ETA."""

    def __init__(self, total: int, out, root: Path | None = None) -> None:
        self.counts = {"done": 0, "failed": 0, "running": 0}
        self.total, self.out, self.root, self.start = total, out, root, time.monotonic()
        self.terminal = getattr(out, "isatty", lambda: False)()
        self.bar = tqdm(
            total=total, unit="run", file=out, dynamic_ncols=True, disable=not self.terminal
        )

    def started(self, count: int = 1) -> None:
        self.counts["running"] += count
        self._show()

    def finished(self, status: str, run: Run | None = None) -> None:
        """A run left the running set: complete | failed | skipped, or requeued (not counted)."""
        self.counts["running"] -= 1
        if status != "requeued":
            self.counts["failed" if status == "failed" else "done"] += 1
            self.bar.update()
        if not self.terminal and run is not None:
            print(self.line(status, run), file=self.out, flush=True)
        self._show()

    def line(self, status: str, run: Run) -> str:
        finished = self.counts["done"] + self.counts["failed"]
        text = f"[{finished}/{self.total}] {status:8s} {run.cell} seed={run.seed}"
        record = Store(self.root, run.study, run.preset).read(run.run_id) if self.root else None
        if status == "complete" and record:
            key = TASKS[run.config.task].summary[0]
            value = (record.get("metrics") or {}).get(key)
            if isinstance(value, (int, float)):
                text += f"  {key}={value:.4g}"
        elif status == "failed" and record:
            reason = (record.get("error") or "").strip().splitlines()
            text += f"  ({reason[-1][:120]})" if reason else ""
        if status in ("complete", "failed") and record:
            started, ended = record.get("started"), record.get("finished")
            if isinstance(started, (int, float)) and isinstance(ended, (int, float)):
                text += f"  {duration(ended - started)}"
        left = self.total - finished
        running = self.counts["running"]
        text += (
            f"  [done {self.counts['done']}, running {running}, failed {self.counts['failed']}, "
            f"remaining {left - running}]"
        )
        if finished > 0 and left > 0:
            eta = (time.monotonic() - self.start) / finished * left
            text += f"  ETA {duration(eta)} for {left} run(s)"
        return text

    def _show(self) -> None:
        remaining = (
            self.total - self.counts["done"] - self.counts["failed"] - self.counts["running"]
        )
        self.bar.set_postfix(**self.counts, remaining=remaining)

    def close(self) -> None:
        self.bar.close()


def _record_failure(run: Run, root: Path, error: BaseException) -> None:
    """A failed record for a run whose worker died or raised outside the run, unless another
    process holds the run (then it is theirs to finish)."""
    store = Store(root, run.study, run.preset)
    if store.status(run.run_id) == "missing" and store.is_unlocked(run.run_id):
        store.write(
            new_record(run, {}, status="failed", metrics={}, error=f"worker failed: {error!r}")
        )


def check_devices(runs: list[Run]) -> None:
    """Refuse, before anything runs, runs on ``device=cuda[:N]`` where no such GPU is visible
    (the ``gpu`` presets on a CPU machine): every run would fail at its start."""
    visible = visible_gpus()
    for run in runs:
        if problem := device_problem(getattr(run.config.section, "device", "auto"), visible):
            message = f"{run.cell} seed={run.seed}: {problem}"
            if run.preset == "gpu":
                message += "; the gpu preset needs a GPU (on the CPU: --preset quick)"
            raise SpecError(message)


def choose_gpus(runs: list[Run], requested: list[int] | None) -> list[int] | None:
    """The GPUs (indices among the visible ones) the local runs spread over, or None to run
    them as configured. ``requested`` (``--gpus``) must name visible GPUs and training runs whose
    device is auto or cuda; without it, training runs on auto / cuda use every visible GPU.
    Raises SpecError before anything runs."""
    training = [run for run in runs if TASKS[run.config.task].trains]
    devices = sorted({run.config.section.device for run in training})
    if requested is None:
        count = visible_gpus() if training and set(devices) <= {"auto", "cuda"} else 0
        return list(range(count)) or None
    if len(training) < len(runs):
        raise SpecError("--gpus schedules training runs; this study's runs do not train")
    pinned = [device for device in devices if device not in ("auto", "cuda")]
    if pinned:
        raise SpecError(
            f"--gpus with device={pinned[0]}: the GPUs are chosen per run; leave device=auto or "
            "device=cuda"
        )
    count = visible_gpus()
    if count == 0:
        raise SpecError(f"--gpus {','.join(map(str, requested))}: no CUDA device is visible here")
    absent = [gpu for gpu in requested if gpu >= count]
    if absent:
        raise SpecError(
            f"--gpus: GPU {absent[0]} is not visible here (visible: 0-{count - 1}; "
            "CUDA_VISIBLE_DEVICES renumbers them from 0)"
        )
    return requested


class GpuSlots:
    """``per_gpu`` run slots on each of ``gpus``: ``take`` gives the GPU with the fewest runs in
    flight (the lowest index on a tie), ``give_back`` frees one."""

    def __init__(self, gpus: list[int], per_gpu: int) -> None:
        self.per_gpu = per_gpu
        self.in_flight = dict.fromkeys(gpus, 0)

    def take(self) -> str:
        gpu = min(self.in_flight, key=lambda g: (self.in_flight[g], g))
        if self.in_flight[gpu] >= self.per_gpu:
            raise RuntimeError("every GPU slot is taken")
        self.in_flight[gpu] += 1
        return f"cuda:{gpu}"

    def give_back(self, device: str) -> None:
        self.in_flight[int(device.split(":")[1])] -= 1


PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def die_with_parent(parent: int) -> None:
    """Worker initializer: on Linux, have the kernel send this worker SIGTERM when its parent
    (the runner, pid ``parent``) dies; exit at once if it already has. Elsewhere a no-op (a
    worker then finishes its run after the runner is gone, as before). The run it loses is
    lost as with SIGKILL: its lock dies with it and its epoch checkpoint stays for the rerun."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the runner died before the request was in place
        os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's workers now (SIGTERM, as when the runner dies): leaving the pool would
    otherwise wait for every run in flight to finish, up to an hour on the quick preset. Their
    runs are lost as with a kill: no record, the lock freed, the epoch checkpoint kept."""
    pool.shutdown(wait=False, cancel_futures=True)
    for child in multiprocessing.active_children():
        child.terminate()


def launch_local(
    runs: list[Run],
    root: Path,
    jobs: int,
    options: dict,
    out=sys.stdout,
    gpus: list[int] | None = None,
) -> None:
    """Execute ``runs`` with ``jobs`` local workers, or ``jobs`` per GPU on ``gpus``.
    ``options``: force, sha, retry_failed.

    When a worker dies the pool breaks for every run in flight: those runs are queued again once
    (a second loss records them as failed), so an innocent run is not failed for another's crash.
    """
    workers = jobs * len(gpus) if gpus else jobs
    threads = threads_per_job(workers)
    slots = GpuSlots(gpus, jobs) if gpus else None
    progress = _Progress(len(runs), out, root)
    if gpus:
        print(
            f"{jobs} run(s) at once on each of GPU(s) {','.join(map(str, gpus))}, "
            f"{threads} CPU thread(s) each",
            file=out,
        )

    try:
        if workers <= 1:
            for run in runs:
                progress.started()
                device = slots.take() if slots else None
                status = execute_run(run, root, threads, **options, device=device)
                if slots:
                    slots.give_back(device)
                progress.finished(status, run)
            return
        pending = list(runs)
        losses: dict[str, int] = {}
        while pending:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=workers,
                mp_context=context,
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            ) as pool:
                in_flight: dict = {}  # future -> (run, device)
                try:
                    while pending or in_flight:
                        while pending and len(in_flight) < workers:
                            run = pending.pop(0)
                            device = slots.take() if slots else None
                            future = pool.submit(
                                execute_run, run, root, threads, **options, device=device
                            )
                            in_flight[future] = (run, device)
                            progress.started()
                        finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                        for future in finished:
                            run, device = in_flight[future]
                            try:
                                status = future.result()
                            except BrokenProcessPool:
                                raise
                            except Exception as error:
                                _record_failure(run, root, error)
                                status = "failed"
                            del in_flight[future]
                            if slots:
                                slots.give_back(device)
                            progress.finished(status, run)
                except KeyboardInterrupt:  # Ctrl-C, or SIGINT sent to the runner alone
                    _stop_workers(pool)
                    raise
                except BrokenProcessPool as error:
                    for run, device in in_flight.values():
                        if slots:
                            slots.give_back(device)
                        progress.finished("requeued", run)
                        losses[run.run_id] = losses.get(run.run_id, 0) + 1
                        if losses[run.run_id] >= 2:
                            _record_failure(run, root, error)
                        else:
                            pending.append(run)
    finally:
        progress.close()


def launch_slurm(runs: list[Run], root: Path, options: dict, slurm: dict, out=sys.stdout) -> None:
    """Submit one array job over ``runs`` and wait for it. ``slurm``: cluster (None = auto,
    "local" for this machine), partition, time_min, gpus, cpus, mem_gb, parallelism."""
    import submitit

    if not runs:
        return
    study, preset = runs[0].study, runs[0].preset
    folder = Store(root, study, preset).folder / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=slurm.get("cluster"))
    cpus = int(slurm.get("cpus", 2))
    parameters = {
        "timeout_min": int(slurm.get("time_min", 60)),
        "cpus_per_task": cpus,
        "gpus_per_node": int(slurm.get("gpus", 0)),
        "name": f"tvconv-{study}-{preset}",
    }
    if slurm.get("mem_gb"):
        parameters["mem_gb"] = int(slurm["mem_gb"])
    if executor.cluster == "slurm":
        parameters["slurm_array_parallelism"] = int(slurm.get("parallelism", 64))
        if slurm.get("partition"):
            parameters["slurm_partition"] = slurm["partition"]
    executor.update_parameters(**parameters)
    count = len(runs)
    jobs = executor.map_array(
        execute_run,
        runs,
        [root] * count,
        [cpus] * count,
        [options["force"]] * count,
        [options["sha"]] * count,
        [options["retry_failed"]] * count,
    )
    print(
        f"submitted {count} job(s) to {executor.cluster}: {jobs[0].job_id.split('_')[0]}", file=out
    )
    progress = _Progress(count, out, root)
    progress.started(count)
    for run, job in zip(runs, jobs, strict=True):
        try:
            status = job.result()
        except Exception as error:
            _record_failure(run, root, error)
            status = "failed"
        progress.finished(status, run)
    progress.close()
