"""W&B mirror of the run records (DESIGN.md conventions); never on the critical path.

Project ``tvconv-ablations``, group = study, job_type = train | profile | analysis, run name = the
readable cell label and seed, config = the run's config, per-epoch history, summary = final
metrics. The mode comes from ``WANDB_MODE`` (default ``offline``, runs under
``<results>/wandb/``; ``disabled`` skips W&B entirely). Any W&B error, or an init slower than
``INIT_TIMEOUT_S``, degrades to no tracking with one warning; the run itself never fails for it.
``make wandb-sync`` uploads the offline runs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

PROJECT = "tvconv-ablations"
INIT_TIMEOUT_S = 30


def wandb_mode() -> str:
    return os.environ.get("WANDB_MODE", "offline")


class Tracker:
    """One W&B run; every method is a no-op once tracking is off."""

    def __init__(self, root: Path, group: str, job_type: str, name: str, config: dict) -> None:
        self.run = None
        if wandb_mode() == "disabled":
            return
        try:
            import wandb

            directory = Path(root) / "wandb"
            directory.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=PROJECT,
                group=group,
                job_type=job_type,
                name=name,
                config=config,
                dir=directory,
                mode=wandb_mode(),
                settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, silent=True, console="off"),
            )
        except Exception as error:  # W&B must never fail a run
            self._disable(error)

    def _disable(self, error: Exception) -> None:
        warnings.warn(f"W&B tracking disabled: {type(error).__name__}: {error}", stacklevel=3)
        self.run = None

    def log(self, row: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float))})
        except Exception as error:
            self._disable(error)

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
        if self.run is None:
            return
        try:
            self.run.summary.update(
                {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
            )
            self.run.finish(exit_code=1 if failed else 0)
        except Exception as error:
            self._disable(error)
        self.run = None
