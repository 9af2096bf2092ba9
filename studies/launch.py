"""Launchers: a local process pool, and SLURM job arrays through submitit.

Local: ``jobs`` worker processes (spawned, so torch's thread pools start clean), torch threads
split evenly across them; ``jobs=1`` runs in this process. A worker that dies (e.g. killed by
the OS) fails only its run; the pool is rebuilt for the rest. Sweep progress shows done / running /
failed / remaining and an ETA.

SLURM: one array job over the missing runs (``submitit.AutoExecutor``; ``cluster="local"`` runs
the same path on this machine, which the tests use). Each array task executes one run into the
shared store by run_id, under the same per-run lock as local runs.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from studies.runner import execute_run, record_base, threads_per_job
from studies.spec import Run
from studies.store import Store


class _Progress:
    def __init__(self, total: int, out) -> None:
        self.counts = {"done": 0, "failed": 0, "running": 0}
        self.bar = tqdm(
            total=total,
            unit="run",
            file=out,
            dynamic_ncols=True,
            disable=not getattr(out, "isatty", lambda: False)(),
        )

    def started(self, count: int = 1) -> None:
        self.counts["running"] += count
        self._show()

    def finished(self, status: str) -> None:
        self.counts["running"] -= 1
        self.counts["failed" if status == "failed" else "done"] += 1
        self.bar.update()
        self._show()

    def _show(self) -> None:
        remaining = self.bar.total - self.bar.n - self.counts["running"]
        self.bar.set_postfix(**self.counts, remaining=remaining)

    def close(self) -> None:
        self.bar.close()


def _record_worker_death(run: Run, root: Path, error: BaseException) -> None:
    store = Store(root, run.study, run.preset)
    if store.status(run.run_id) == "missing":
        record = record_base(run, {})
        record.update(status="failed", metrics={}, error=f"worker process died: {error!r}")
        store.write(record)
        store.unlock(run.run_id)


def launch_local(
    runs: list[Run], root: Path, jobs: int, force: bool, sha: str | None, out=sys.stdout
) -> None:
    threads = threads_per_job(jobs)
    progress = _Progress(len(runs), out)
    try:
        if jobs <= 1:
            for run in runs:
                progress.started()
                progress.finished(execute_run(run, root, threads, force, sha))
            return
        pending = list(runs)
        while pending:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                futures = {}
                try:
                    while pending or futures:
                        while pending and len(futures) < jobs:
                            run = pending.pop(0)
                            futures[pool.submit(execute_run, run, root, threads, force, sha)] = run
                            progress.started()
                        finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                        for future in finished:
                            run = futures.pop(future)
                            progress.finished(future.result())
                except BrokenProcessPool as error:
                    for run in futures.values():
                        _record_worker_death(run, root, error)
                        progress.finished("failed")
    finally:
        progress.close()


def launch_slurm(
    runs: list[Run], root: Path, force: bool, sha: str | None, options: dict, out=sys.stdout
) -> None:
    """Submit one array job over ``runs`` and wait for it. ``options``: cluster (None = auto,
    "local" for this machine), partition, time_min, gpus, cpus, mem_gb, parallelism."""
    import submitit

    if not runs:
        return
    study, preset = runs[0].study, runs[0].preset
    folder = Store(root, study, preset).folder / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=options.get("cluster"))
    cpus = int(options.get("cpus", 2))
    parameters = {
        "timeout_min": int(options.get("time_min", 60)),
        "cpus_per_task": cpus,
        "gpus_per_node": int(options.get("gpus", 0)),
        "name": f"tvconv-{study}-{preset}",
    }
    if options.get("mem_gb"):
        parameters["mem_gb"] = int(options["mem_gb"])
    if executor.cluster == "slurm":
        parameters["slurm_array_parallelism"] = int(options.get("parallelism", 64))
        if options.get("partition"):
            parameters["slurm_partition"] = options["partition"]
    executor.update_parameters(**parameters)
    jobs = executor.map_array(
        execute_run,
        runs,
        [root] * len(runs),
        [cpus] * len(runs),
        [force] * len(runs),
        [sha] * len(runs),
    )
    print(
        f"submitted {len(jobs)} job(s) to {executor.cluster}: {jobs[0].job_id.split('_')[0]}",
        file=out,
    )
    progress = _Progress(len(jobs), out)
    progress.started(len(jobs))
    for job in jobs:
        try:
            status = job.result()
        except Exception as error:
            _record_worker_death(runs[jobs.index(job)], root, error)
            status = "failed"
        progress.finished(status)
    progress.close()
