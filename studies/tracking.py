"""W&B mirror of the run records; never on the critical path.

Project ``tvconv-ablations``. A training or profiling run is one W&B run: group
``<study>/<preset>``, name ``<preset> <cell> seed=<seed>``, tags study, preset and atom, job_type
``train`` | ``profile``, a flat config (``run_config``: ``study``, ``preset``, ``cell``, ``task``,
``seed``, ``run_id`` and the task's keys as ``model.atom``, ``optim.lr``, ...). Training curves
are logged every ``STEP_EVERY`` steps (``train/loss``, ``train/lr``, ``train/images_per_s``
against ``step``) and once per epoch (``epoch/*`` against ``epoch``); the final metrics are the
summary. A record copied from another study (the shared depthwise baseline) is mirrored too,
tagged ``reused``, with its epoch history. The analysis writes one summary run per (study,
preset) under a fixed id (``summary_id``): a re-render replaces it.

The mode comes from ``WANDB_MODE`` (default ``offline``: runs under
``<results>/wandb/wandb/offline-run-*``, uploaded by ``python -m studies sync`` / ``make
wandb-sync``; ``disabled`` skips W&B). When an online init fails (no network: W&B waits
``INIT_TIMEOUT_S``), the run is tracked offline instead and a marker named by
``FALLBACK_ENV`` tells the sweep's later runs to go offline at once; the sweep says so once. Any
other W&B error degrades to no tracking with one warning: the run itself never fails for it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from studies.config import config_columns

PROJECT = "tvconv-ablations"
INIT_TIMEOUT_S = 30
STEP_EVERY = 10
FALLBACK_ENV = "TVCONV_WANDB_FALLBACK"


def wandb_mode() -> str:
    return os.environ.get("WANDB_MODE", "offline")


def offline_folder(root: str | Path) -> Path:
    """Where offline runs are written: ``<root>/wandb/wandb``."""
    return Path(root) / "wandb" / "wandb"


def offline_runs(root: str | Path) -> list[Path]:
    """The offline run folders under ``root``."""
    return sorted(offline_folder(root).glob("offline-run-*"))


def sync_command(folders: list[Path], dry_run: bool = False) -> list[str]:
    """The ``wandb sync`` command that uploads exactly ``folders`` to the project."""
    command = [sys.executable, "-m", "wandb", "sync", "--project", PROJECT]
    return command + (["--dry-run"] if dry_run else []) + [str(f) for f in folders]


def sync_offline_runs(root: str | Path, dry_run: bool = False) -> int:
    """Upload (or with ``dry_run`` list) the offline runs under ``root``; the exit code of
    ``wandb sync`` (0 when there is nothing to upload)."""
    folders = offline_runs(root)
    if not folders:
        print(f"no offline W&B runs under {offline_folder(root)}: nothing to sync", flush=True)
        return 0
    verb = "would upload" if dry_run else "uploading"
    print(f"{verb} {len(folders)} offline run(s) from {offline_folder(root)}", flush=True)
    return subprocess.run(sync_command(folders, dry_run), check=False).returncode


def group_name(study: str, preset: str) -> str:
    return f"{study}/{preset}"


def summary_id(study: str, preset: str) -> str:
    """The fixed W&B id of the analysis summary run of a study and preset."""
    return "summary-" + re.sub(r"[^A-Za-z0-9_-]", "-", f"{study}-{preset}")


@contextlib.contextmanager
def sweep_fallback(root: str | Path) -> Iterator[None]:
    """Scope of one sweep: its runs share one offline-fallback marker (inherited by the worker
    processes through ``FALLBACK_ENV``), removed when the sweep ends."""
    marker = Path(root) / "wandb" / f".offline-fallback-{os.getpid()}-{time.time_ns()}"
    previous = os.environ.get(FALLBACK_ENV)
    os.environ[FALLBACK_ENV] = str(marker)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FALLBACK_ENV, None)
        else:
            os.environ[FALLBACK_ENV] = previous
        marker.unlink(missing_ok=True)


def _fallen_back() -> bool:
    marker = os.environ.get(FALLBACK_ENV)
    return bool(marker) and Path(marker).exists()


def _announce_fallback(error: Exception, root: Path) -> None:
    """Mark the sweep offline; the first run to do so says it (once per sweep)."""
    marker = os.environ.get(FALLBACK_ENV)
    if marker:
        try:
            Path(marker).parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    print(
        f"W&B: online init failed ({type(error).__name__}: {str(error)[:200]}); this sweep goes on "
        f"offline: runs are written under {offline_folder(root)}, `make wandb-sync` uploads them",
        file=sys.stderr,
        flush=True,
    )


def run_config(run) -> dict:
    """A run's W&B config: identity keys, then the task's config as flat dotted keys (the
    analysis' columns, ``studies.config.config_columns``)."""
    identity = {
        "study": run.study,
        "preset": run.preset,
        "cell": run.cell,
        "task": run.config.task,
        "seed": run.seed,
        "run_id": run.run_id,
    }
    return {**identity, **config_columns(run.config.task, run.config.to_dict()[run.config.task])}


def run_tags(run) -> list[str]:
    section = run.config.section
    # a training section holds the atom in its model, a profile section beside its model's name
    atom = getattr(getattr(section, "model", None), "atom", None) or getattr(section, "atom", None)
    return [tag for tag in (run.study, run.preset, atom) if tag]


class Tracker:
    """One W&B run; every method is a no-op once tracking is off."""

    def __init__(
        self,
        root: Path,
        group: str,
        job_type: str,
        name: str,
        config: dict,
        tags: list[str] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.run = None
        self._window: dict[str, float] = {}
        mode = wandb_mode()
        if mode == "disabled":
            return
        arguments = {
            "project": PROJECT,
            "group": group,
            "job_type": job_type,
            "name": name,
            "config": config,
            "tags": tags or [],
            "id": run_id,
        }
        if mode == "online" and _fallen_back():
            mode = "offline"
        try:
            self.run = self._init(Path(root), mode, arguments)
        except Exception as error:  # W&B must never fail a run
            if mode != "online":
                self._disable(error)
                return
            _announce_fallback(error, Path(root))
            try:
                import wandb

                wandb.teardown()  # the failed online run still holds its id: free it
                self.run = self._init(Path(root), "offline", arguments)
            except Exception as offline_error:
                self._disable(offline_error)
                return
        self._define_axes()

    @staticmethod
    def _init(root: Path, mode: str, arguments: dict):
        import wandb

        directory = root / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        if mode == "offline" and arguments["id"]:  # a fixed id replaces its earlier offline run
            for old in offline_folder(root).glob(f"offline-run-*-{arguments['id']}"):
                shutil.rmtree(old, ignore_errors=True)
        return wandb.init(
            dir=directory,
            mode=mode,
            resume="allow" if arguments["id"] and mode == "online" else None,
            settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, silent=True, console="off"),
            **arguments,
        )

    def _define_axes(self) -> None:
        try:
            self.run.define_metric("step")
            self.run.define_metric("epoch")
            self.run.define_metric("train/*", step_metric="step")
            self.run.define_metric("epoch/*", step_metric="epoch")
        except Exception as error:
            self._disable(error)

    def _disable(self, error: Exception) -> None:
        warnings.warn(f"W&B tracking disabled: {type(error).__name__}: {error}", stacklevel=3)
        self.run = None

    def _log(self, row: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.log(row)
        except Exception as error:
            self._disable(error)

    def step(self, row: dict) -> None:
        """One training step (``step``, ``epoch``, ``loss``, ``lr``, ``images``): logged as the
        mean loss and the images/s of the last ``STEP_EVERY`` steps (fewer at an epoch's end)."""
        if self.run is None:
            return
        window = self._window
        window.setdefault("start", time.perf_counter())
        window["loss"] = window.get("loss", 0.0) + row["loss"]
        window["images"] = window.get("images", 0.0) + row["images"]
        window["steps"] = window.get("steps", 0.0) + 1
        window["last"] = row
        if row["step"] % STEP_EVERY == 0:
            self._log_steps()

    def _log_steps(self) -> None:
        """The steps since the last logged one, as one row (nothing when there are none)."""
        window, now = self._window, time.perf_counter()
        if not window.get("steps"):
            return
        last, seconds = window["last"], now - window["start"]
        self._log(
            {
                "step": last["step"],
                "epoch": last["epoch"],
                "train/loss": window["loss"] / window["steps"],
                "train/lr": last["lr"],
                **({"train/images_per_s": window["images"] / seconds} if seconds > 0 else {}),
            }
        )
        self._window = {"start": now}

    def epoch(self, row: dict) -> None:
        """One epoch's history row (numbers only) under ``epoch/``, after the epoch's last steps
        (a run shorter than ``STEP_EVERY`` steps still has a training curve)."""
        self._log_steps()
        numbers = {
            f"epoch/{k}": v
            for k, v in row.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self._log({"epoch": row["epoch"], **numbers})

    def log(self, row: dict) -> None:
        """Numbers of ``row`` as they are (e.g. a profiling run's measurements)."""
        self._log({k: v for k, v in row.items() if isinstance(v, (int, float))})

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})
        except Exception as error:
            self._disable(error)

    def log_images(self, images: dict[str, Path]) -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Image(str(path)) for key, path in images.items()})
        except Exception as error:
            self._disable(error)

    def finish(self, summary: dict, failed: bool = False) -> None:
        """Close the run with ``summary`` and wait until W&B has written all of it: ``finish``
        only tells wandb-core the run is done, and the core flushes the offline log later (a log
        read at once could hold nothing, and an earlier run's late writes could re-create the
        folder a re-run just replaced), so the core is shut down here; the next run starts it
        again (about 0.2 s)."""
        if self.run is None:
            return
        try:
            import wandb

            self.run.summary.update(
                {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
            )
            self.run.finish(exit_code=1 if failed else 0)
            wandb.teardown()
        except Exception as error:
            self._disable(error)
        self.run = None


def track_run(root: Path, run, reused_from: str | None = None) -> Tracker:
    """The tracker of one training or profiling run (``reused_from``: the store a copied record
    came from), under its fixed W&B id (``training_run_id``)."""
    tags = run_tags(run) + (["reused"] if reused_from else [])
    config = run_config(run) | ({"reused_from": reused_from} if reused_from else {})
    return Tracker(
        root,
        group=group_name(run.study, run.preset),
        job_type="profile" if run.config.task == "profile" else "train",
        name=f"{run.preset} {run.cell} seed={run.seed}",
        config=config,
        tags=tags,
        run_id=training_run_id(run),
    )


def training_run_id(run) -> str:
    """The W&B id of a run's execution in one study and preset: fixed, so a run resumed after a
    kill (or re-run with ``--force``) replaces its earlier offline W&B run, or (online) goes on
    in it, instead of leaving a second, partial one: one W&B run per record."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{run.study}-{run.preset}-{run.run_id}")
