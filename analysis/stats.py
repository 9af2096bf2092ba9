"""Seed statistics: mean, std, n and a 95% bootstrap CI per cell; paired differences to the
depthwise baseline (same seed, same config apart from the TVConv-only fields).

The CI is a percentile bootstrap of the mean over seeds (``RESAMPLES`` resamples from a fixed
generator, so the same values always give the same interval). With a handful of seeds it is
narrow for its nominal level (with 2 seeds it spans the two values): tables say so with a
footnote (``FEW_SEEDS``). A single seed has no interval (NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.frame import cell_order, complete_runs

LEVEL = 0.95
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
FEW_SEEDS = 5  # below this many seeds a bootstrap CI under-covers noticeably


def bootstrap_ci(
    values: np.ndarray | list[float],
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs ignored); (nan, nan) for
    fewer than two values."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (float(low), float(high))


def summarise(values: np.ndarray | list[float]) -> dict:
    """n, mean, std (ddof 1; NaN for one value), ci_low, ci_high of finite ``values``."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    low, high = bootstrap_ci(data)
    return {
        "n": int(data.size),
        "mean": float(data.mean()) if data.size else float("nan"),
        "std": float(data.std(ddof=1)) if data.size > 1 else float("nan"),
        "ci_low": low,
        "ci_high": high,
    }


def aggregate(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per cell (in ``cell_order``): ``n, mean, std, ci_low, ci_high`` of ``metric`` over
    the complete runs."""
    usable = complete_runs(runs)
    rows = []
    for cell in cell_order(usable):
        values = usable.loc[usable["cell"] == cell, metric] if metric in usable else []
        rows.append({"cell": cell, "metric": metric, **summarise(values)})
    return pd.DataFrame(rows)


def _atom_column(runs: pd.DataFrame) -> str | None:
    for column in ("model.atom", "profile.atom"):
        if column in runs:
            return column
    return None


def paired_differences(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per TVConv run: ``metric`` minus that of its depthwise baseline run with the same seed
    (``baseline_key``). Columns: cell, seed, run_id, baseline_run_id, value, baseline, diff.
    Runs without a baseline partner are left out (``aggregate_paired`` reports pairs found)."""
    usable = complete_runs(runs)
    atom = _atom_column(usable)
    columns = ["cell", "seed", "run_id", "baseline_run_id", "value", "baseline", "diff"]
    if atom is None or metric not in usable:
        return pd.DataFrame(columns=columns)
    partner = {
        (row["baseline_key"], row["seed"]): row
        for row in usable[usable[atom] == "dw"].to_dict("records")
    }
    rows = []
    for row in usable[usable[atom] != "dw"].to_dict("records"):
        base = partner.get((row["baseline_key"], row["seed"]))
        if base is None:
            continue
        rows.append(
            {
                "cell": row["cell"],
                "seed": row["seed"],
                "run_id": row["run_id"],
                "baseline_run_id": base["run_id"],
                "value": row[metric],
                "baseline": base[metric],
                "diff": row[metric] - base[metric],
            }
        )
    return pd.DataFrame(rows, columns=columns)


def aggregate_paired(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per TVConv cell: ``n`` pairs, mean/std/CI of the paired difference, ``wins`` (pairs where
    TVConv is higher). Cells in ``cell_order``."""
    pairs = paired_differences(runs, metric)
    rows = []
    for cell in cell_order(complete_runs(runs)):
        diffs = pairs.loc[pairs["cell"] == cell, "diff"]
        if diffs.empty:
            continue
        rows.append(
            {
                "cell": cell,
                "metric": metric,
                **summarise(diffs),
                "wins": int((diffs > 0).sum()),
            }
        )
    columns = ["cell", "metric", "n", "mean", "std", "ci_low", "ci_high", "wins"]
    return pd.DataFrame(rows, columns=columns)
