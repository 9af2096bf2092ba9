"""Seed statistics: mean, std, n and a Student-t confidence interval per cell; paired differences
to the depthwise baseline (same seed, same config apart from the TVConv-only fields) with paired
t-tests, Holm-adjusted across the cells of a study.

Why Student-t: a study has a handful of seeds per cell. The t-interval ``mean ± t(n-1) * s/√n``
holds its level at small n when seed-to-seed variation is roughly normal, and tends to it
anyway as n grows; a percentile bootstrap of 2-5 values spans little more than their range
(coverage about 52% at n = 2, 75% at 3, 84% at 5), so it is not used. One value has no interval.

Holm (1979) over a family of m comparisons (the TVConv cells of a study, or the study's declared
contrasts): adjusted p-values ``p_holm`` (step-down, monotone), and for each comparison the
confidence level that agrees with Holm's decisions: the k-th smallest p-value gets level
``1 - alpha / (m - k + 1)``, and every comparison from the first one Holm does not reject on gets
that one's level, so an adjusted interval excludes 0 exactly when Holm rejects.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis.frame import cell_order, complete_runs

LEVEL = 0.95
ALPHA = 1 - LEVEL


def _finite(values: np.ndarray | list[float] | pd.Series) -> np.ndarray:
    data = np.asarray(values, dtype=float)
    return data[np.isfinite(data)]


def t_quantile(level: float, n: int) -> float:
    """The two-sided Student-t critical value for ``n`` values (n - 1 degrees of freedom)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 2:
        return math.nan
    return float(scipy_stats.t.ppf(0.5 + level / 2, n - 1))


def t_interval(values: np.ndarray | list[float], level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (NaNs ignored); (nan, nan) below 2 values."""
    data = _finite(values)
    quantile = t_quantile(level, data.size)
    if data.size < 2:
        return (math.nan, math.nan)
    half = quantile * data.std(ddof=1) / math.sqrt(data.size)
    mean = float(data.mean())
    return (mean - half, mean + half)


def sd_interval(values: np.ndarray | list[float], level: float = LEVEL) -> tuple[float, float]:
    """Chi-square interval of the standard deviation of normal ``values`` (NaNs ignored):
    ``s * sqrt((n - 1) / chi2(1 - a/2, n - 1))`` to ``s * sqrt((n - 1) / chi2(a/2, n - 1))``;
    (nan, nan) below 2 values."""
    data = _finite(values)
    if data.size < 2:
        return (math.nan, math.nan)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    dof = data.size - 1
    s = float(data.std(ddof=1))
    upper_quantile = scipy_stats.chi2.ppf(0.5 + level / 2, dof)
    lower_quantile = scipy_stats.chi2.ppf(0.5 - level / 2, dof)
    return (s * math.sqrt(dof / upper_quantile), s * math.sqrt(dof / lower_quantile))


def t_test_p(values: np.ndarray | list[float]) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0 (for paired differences); NaN below
    2 values; 0 or 1 when all values are equal (nonzero or zero)."""
    data = _finite(values)
    if data.size < 2:
        return math.nan
    if data.std(ddof=1) == 0:  # scipy answers NaN here
        return 1.0 if data.mean() == 0 else 0.0
    return float(scipy_stats.ttest_1samp(data, 0.0).pvalue)


def summarise(values: np.ndarray | list[float], level: float = LEVEL) -> dict:
    """n, mean, std (ddof 1; NaN for one value), ci_low, ci_high (Student-t) of finite
    ``values``."""
    data = _finite(values)
    low, high = t_interval(data, level)
    return {
        "n": int(data.size),
        "mean": float(data.mean()) if data.size else math.nan,
        "std": float(data.std(ddof=1)) if data.size > 1 else math.nan,
        "ci_low": low,
        "ci_high": high,
    }


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (NaNs stay NaN and do not count towards m)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(np.isfinite(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def holm_levels(p_values: list[float] | np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Per comparison, the confidence level consistent with Holm's step-down decisions at
    ``alpha`` (see the module docstring); NaN where the p-value is NaN."""
    p = np.asarray(p_values, dtype=float)
    levels = np.full(p.shape, math.nan)
    valid = np.flatnonzero(np.isfinite(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, stopped_at = len(order), None
    for rank, index in enumerate(order):
        if stopped_at is None and p[index] > alpha / (m - rank):
            stopped_at = rank
        divisor = m - (rank if stopped_at is None else stopped_at)
        levels[index] = 1 - alpha / divisor
    return levels


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


PAIRED_COLUMNS = [
    "cell",
    "metric",
    "n",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "level_holm",
    "ci_low_holm",
    "ci_high_holm",
    "wins",
]


def adjust_family(frame: pd.DataFrame, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Add ``p_holm``, ``level_holm`` and the Holm-consistent interval (``ci_low_holm``,
    ``ci_high_holm``) to ``frame`` (one row per comparison, column ``p``); ``values`` maps each
    row's ``cell`` (or ``name``) to its paired values."""
    frame = frame.copy()
    frame["p_holm"] = holm(frame["p"].to_numpy())
    frame["level_holm"] = holm_levels(frame["p"].to_numpy())
    key = "cell" if "cell" in frame else "name"
    lows, highs = [], []
    for row in frame.itertuples():
        level, series = row.level_holm, values[getattr(row, key)]
        low, high = t_interval(series, level) if math.isfinite(level) else (math.nan, math.nan)
        lows.append(low)
        highs.append(high)
    frame["ci_low_holm"], frame["ci_high_holm"] = lows, highs
    return frame


def aggregate_paired(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per TVConv cell: ``n`` pairs, mean/std/95% t-interval of the paired difference, its
    two-sided paired t-test ``p``, Holm over the study's TVConv cells (``p_holm``,
    ``level_holm``, ``ci_low_holm``, ``ci_high_holm``) and ``wins`` (pairs where TVConv is
    higher). Cells in ``cell_order``."""
    pairs = paired_differences(runs, metric)
    rows, values = [], {}
    for cell in cell_order(complete_runs(runs)):
        diffs = pairs.loc[pairs["cell"] == cell, "diff"].to_numpy(dtype=float)
        if diffs.size == 0:
            continue
        values[cell] = diffs
        rows.append(
            {
                "cell": cell,
                "metric": metric,
                **summarise(diffs),
                "p": t_test_p(diffs),
                "wins": int((diffs > 0).sum()),
            }
        )
    if not rows:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    return adjust_family(pd.DataFrame(rows), values)[PAIRED_COLUMNS]
