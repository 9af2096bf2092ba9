"""A whole sweep into the store (``run_study``); one run is ``studies.execute.execute_run``.

``run_study`` checks every run's config first (``check_runs``), plans the sweep (skip completed
runs; ``retry_failed`` and ``force`` as named), copies what other studies hold, launches the
missing runs (``studies.launch``), shows sweep progress and prints a summary table (mean +/- std
over seeds per cell). Exit codes: 0 all runs complete, 1 some failed (the others finished).
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import is_dataclass
from pathlib import Path

from studies.config import TASKS
from studies.execute import git_sha
from studies.launch import check_devices, choose_gpus, launch_local, launch_slurm
from studies.spec import Run, Spec, SpecError, seeds_text, select_cells
from studies.store import Store
from studies.tracking import sweep_fallback, track_run
from tvconv import profile, segment
from tvconv._engine import check_batch_size
from tvconv._files import write_atomically
from tvconv.config import to_dict
from tvconv.train import check_data, check_model


def plan(runs: list[Run], store: Store, force: bool, retry_failed: bool) -> list[Run]:
    """The runs to execute: missing ones, failed ones with ``retry_failed``, all with ``force``."""
    todo = []
    for run in runs:
        status = store.status(run.run_id)
        if force or status == "missing" or (status == "failed" and retry_failed):
            todo.append(run)
    return todo


def _copy_atomically(source: Path, target: Path) -> None:
    """Copy through a temp file beside ``target``: a kill never leaves half a file."""
    with source.open("rb") as original:
        write_atomically(target, lambda handle: shutil.copyfileobj(original, handle))


def reuse_records(todo: list[Run], store: Store) -> list[Run]:
    """Copy into ``store`` the complete records other studies of the preset hold for these
    run_ids (e.g. the depthwise baseline every face study shares), relabelled with this run's
    study and cell, with the trained model and examples that were kept; returns the runs still to
    execute."""
    remaining = []
    for run in todo:
        found = store.find_elsewhere(run.run_id)
        if found is None or not store.try_lock(run.run_id):
            remaining.append(run)
            continue
        try:
            if store.status(run.run_id) != "done":  # missing, or failed with --retry-failed
                source = f"{found['study']}/{found['preset']}"
                for folder in ("models", "examples"):  # files first, the record last
                    saved = Path(store.root) / source / folder / f"{run.run_id}.pt"
                    if saved.is_file():
                        _copy_atomically(saved, store.folder / folder / saved.name)
                store.write({**found, "study": run.study, "cell": run.cell, "reused_from": source})
                mirror_reused(run, found, store.root, source)
        finally:
            store.unlock(run.run_id)
    return remaining


def mirror_reused(run: Run, record: dict, root: Path, source: str) -> None:
    """A copied record on W&B too (tagged ``reused``): its study's group then holds every run."""
    tracker = track_run(Path(root), run, reused_from=source)
    for row in record.get("history") or []:
        tracker.epoch(row)
    tracker.finish(record.get("metrics") or {})


def check_runs(runs: list[Run], out=None) -> None:
    """Every run's config checked as far as it can be without training, before any run starts
    (also by ``--dry-run``): the data opened and its layout checked (nothing decoded), the batch
    size against the training set, the model built and probed at its input size. Checks shared by
    several runs (the same data, the same model) run once. Raises SpecError naming the run."""
    checked: dict[str, object] = {}

    def once(kind: str, settings: object, check) -> object:
        key = kind + json.dumps(to_dict(settings) if is_dataclass(settings) else settings)
        if key not in checked:
            checked[key] = check()
        return checked[key]

    started = time.perf_counter()
    for number, run in enumerate(runs, start=1):
        config = run.config
        try:
            if config.task == "face":
                face = config.face
                images = once("data", face.data, lambda face=face: check_data(face.data))
                check_batch_size(face.optim.batch_size, images)
                shape = {k: v for k, v in to_dict(face.model).items() if k != "init"}
                probed = {"model": shape, "size": face.data.image_size}
                once("model", probed, lambda face=face: check_model(face))
            elif config.task == "fundus":
                fundus = config.fundus
                segment.check_paths(fundus)
                images = once("data", fundus.data, lambda d=fundus.data: segment.training_images(d))
                check_batch_size(fundus.optim.batch_size, images)
                probed = {"model": to_dict(fundus.model), "size": fundus.data.image_size}
                once("model", probed, lambda fundus=fundus: segment.check_model(fundus))
            else:
                once("model", to_dict(config.profile), lambda c=config.profile: profile.check(c))
        except ValueError as error:
            raise SpecError(f"run {run.cell} seed={run.seed}: {error}") from None
        if out is not None and time.perf_counter() - started > 5 and number % 10 == 0:
            print(f"checked {number}/{len(runs)} runs", file=out, flush=True)


def _mean_std(values: list[float]) -> str:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return "-"
    mean = statistics.fmean(finite)
    if abs(mean) >= 1e5:
        return f"{mean:,.0f}"
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}" if len(finite) > 1 else f"{mean:.2f}"


def summary_table(spec: Spec, runs: list[Run], store: Store) -> str:
    """Markdown-like table: per cell, n complete / failed and mean +/- std over seeds."""
    metrics = TASKS[spec.task].summary
    cells: dict[str, list[dict]] = {}
    for run in runs:
        cells.setdefault(run.cell, []).append(store.read(run.run_id) or {})
    header = ["cell", "n", "failed", *metrics]
    lines = [header]
    for cell, records in cells.items():
        complete = [r for r in records if r.get("status") == "complete"]
        failed = sum(r.get("status") == "failed" for r in records)
        values = [_mean_std([r["metrics"].get(m, math.nan) for r in complete]) for m in metrics]
        lines.append([cell, str(len(complete)), str(failed), *values])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def status_lines(runs: list[Run], store: Store) -> str:
    """One line per run; a missing run another study of the preset has completed says where
    from (it is copied, not trained)."""
    lines = [f"{'run_id':16s}  {'status':7s}  seed  cell"]
    for run in runs:
        status = store.status(run.run_id)
        line = f"{run.run_id}  {status:7s}  {run.seed:4d}  {run.cell}"
        if status == "missing" and (found := store.find_elsewhere(run.run_id)) is not None:
            line += f"  (reused from {found['study']}/{found['preset']})"
        lines.append(line)
    return "\n".join(lines)


def wait_for_other_runners(runs: list[Run], store: Store, out, poll_s: float = 2.0) -> None:
    """Wait while runs this runner skipped are still executed (locked) by another runner."""
    announced = False
    while True:
        busy = [
            run
            for run in runs
            if store.status(run.run_id) == "missing" and not store.is_unlocked(run.run_id)
        ]
        if not busy:
            return
        if not announced:
            print(f"waiting for {len(busy)} run(s) executed by another runner", file=out)
            announced = True
        time.sleep(poll_s)


def run_study(
    spec: Spec,
    preset: str,
    root: Path,
    jobs: int = 1,
    launcher: str = "local",
    dry_run: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    overrides: dict | None = None,
    slurm: dict | None = None,
    out=sys.stdout,
    seeds: list[int] | None = None,
    cells: list[str] | None = None,
    gpus: list[int] | None = None,
) -> int:
    """Run (or show, with ``dry_run``) a study's preset; returns the exit code (0 or 1).
    ``seeds`` replaces the preset's seeds; ``cells`` (shell-style patterns of cell labels) keeps
    the matching cells only; ``gpus`` (local launcher) spreads training runs over these GPUs,
    ``jobs`` on each (default: every visible GPU when the runs train on auto / cuda)."""
    overrides = dict(overrides or {})
    spec = spec.for_task(str(overrides.pop("task", spec.task)))
    runs = spec.runs(preset, overrides, seeds)
    if cells:
        runs = select_cells(runs, cells)
    check_runs(runs, out)
    if gpus is not None and launcher != "local":
        raise SpecError("--gpus is for the local launcher (SLURM: --slurm-gpus per run)")
    if launcher == "slurm" and (slurm or {}).get("cluster") is None and not shutil.which("sbatch"):
        raise SpecError(
            "--launcher slurm: no SLURM here (sbatch is not on PATH), and submitit would run the "
            "jobs on this machine instead; use --launcher local, or --slurm-cluster local to "
            "run them through submitit's local executor on purpose"
        )
    gpus = choose_gpus(runs, gpus) if launcher == "local" else None
    store = Store(root, spec.name, preset)
    for run in runs:
        why = store.damaged(run.run_id)
        if why is not None:
            print(
                f"warning: {store.record_path(run.run_id)} is damaged ({why}); run {run.cell} "
                f"seed={run.seed} counts as missing and runs again",
                file=out,
            )
    todo = plan(runs, store, force, retry_failed)
    title = spec.description.split(":")[0].replace("\n", " ")
    if TASKS[spec.task].trains:
        seed_note = f"seeds {seeds_text([run.seed for run in runs])}"
    else:  # measurements: no seed, one run per cell
        seed_note = "no seeds (measurements)" + (", --seeds ignored" if seeds is not None else "")
    print(
        f"{spec.name} / {preset} ({title}): {len(runs)} runs, {len(todo)} to run, "
        f"{len(runs) - len(todo)} done or skipped; {seed_note}",
        file=out,
    )
    if dry_run:
        print(status_lines(runs, store), file=out)
        return 0
    if launcher == "local":
        check_devices(todo)
    with sweep_fallback(root):
        todo = _launch(
            spec, todo, store, root, jobs, launcher, force, retry_failed, slurm, out, gpus
        )
    wait_for_other_runners(todo, store, out)
    print(summary_table(spec, runs, store), file=out)
    failed = [run for run in runs if store.status(run.run_id) != "done"]
    if failed:
        print(f"{len(failed)} run(s) did not complete:", file=out)
        for run in failed:
            record = store.read(run.run_id) or {}
            reason = (record.get("error") or "missing").strip().splitlines()[-1]
            print(f"  {run.run_id}  {run.cell} seed={run.seed}: {reason}", file=out)
        return 1
    return 0


def _launch(
    spec: Spec,
    todo: list[Run],
    store: Store,
    root: Path,
    jobs: int,
    launcher: str,
    force: bool,
    retry_failed: bool,
    slurm: dict | None,
    out,
    gpus: list[int] | None = None,
) -> list[Run]:
    """Copy what other studies hold, execute the rest; returns the runs executed."""
    if not force:
        executed = reuse_records(todo, store)
        if len(executed) < len(todo):
            print(
                f"{len(todo) - len(executed)} run(s) reused from other studies (same run_id: the "
                "same config, seed and results version)",
                file=out,
            )
        todo = executed
    sha = git_sha()
    options = {"force": force, "sha": sha, "retry_failed": retry_failed}
    if launcher == "slurm":
        launch_slurm(todo, root, options, slurm or {}, out)
    else:
        if spec.task == "profile" and jobs > 1 and todo:
            # Timings taken while another job shares the cores measure the contention, not the
            # model (2-thread latencies came out up to 100x too slow with --jobs 2).
            print("profile runs time themselves: running them one at a time (--jobs 1)", file=out)
            jobs = 1
        launch_local(todo, root, jobs, options, out, gpus)
    return todo
