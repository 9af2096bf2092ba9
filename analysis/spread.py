"""Seed-to-seed spread of one store's face runs, per configuration, and seed-paired steps along one
axis: the numbers a testbed calibration is decided on (README, "Where the paired noise comes
from").

``python -m analysis.spread NAME [--preset quick] [--metric mean_acc_pct] [--pair KEY]`` reads
``results/NAME/PRESET/runs`` (a study, or a calibration store such as ``noise_calib``) and prints,
per cell (one configuration, as the tables group them): n, the mean, the SD over seeds with its
chi-square 95% interval, the raw-pixel floor, and how steadily the seeds trained: the largest
fall of each run's training accuracy below its running peak over the epochs (the median seed's
and the worst seed's), which shows a run that slipped mid-training and recovered even when its
last epoch is at 100%. ``--pair optim.epochs`` adds, for every two neighbouring values of that
config key whose runs agree on everything else, the per-seed differences (larger value -
smaller), their mean with a Student-t 95% interval, and their SD with its chi-square interval:
the doubling check of a schedule, or any other paired step. ``--pair model.atom`` pairs each
TVConv run with the depthwise run of its seed and settings as the tables' Δ column does (a
depthwise run has no TVConv options, so a TVConv cell that sets a generator or its sites still
finds its partner): the paired TVConv - depthwise SD of every TVConv cell. Nothing is written;
exit 2 for a store without complete face runs, an unknown metric or key.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.frame import cell_order, complete_runs, load_study, varying_columns
from analysis.stats import paired_differences, sd_interval, summarise
from analysis.tables import number
from studies.spec import PRESETS
from studies.store import DEFAULT_ROOT
from tvconv.console import exit_with

FLOOR = "floor_pixels_mean_acc_pct"
ATOM = "model.atom"


def largest_fall(history: list[dict] | None) -> float:
    """The largest fall (points) of a run's training accuracy below its running peak over the
    epochs of its ``history``; NaN when no epoch recorded a training accuracy."""
    accuracies = np.array(
        [epoch["train_acc_pct"] for epoch in history or () if "train_acc_pct" in epoch]
    )
    if not accuracies.size:
        return math.nan
    return float((np.maximum.accumulate(accuracies) - accuracies).max())


def cell_spread(
    runs: pd.DataFrame, metric: str, records: dict[str, dict] | None = None
) -> pd.DataFrame:
    """Per cell: n, mean, sd, sd_low, sd_high (chi-square 95%), the raw-pixel floor's mean and,
    from the runs' ``records`` (by run_id), the median and the worst seed's ``largest_fall``."""
    rows = []
    for cell in cell_order(runs):
        chosen = runs[runs["cell"] == cell]
        summary = summarise(chosen[metric])
        low, high = sd_interval(chosen[metric])
        floor = chosen[FLOOR].mean() if FLOOR in chosen else math.nan
        falls = pd.Series(
            [
                largest_fall((records or {}).get(run_id, {}).get("history"))
                for run_id in chosen["run_id"]
            ],
            dtype=float,
        )
        rows.append(
            {
                "cell": cell,
                **summary,
                "sd_low": low,
                "sd_high": high,
                "floor": floor,
                "fall_median": falls.median(),
                "fall_worst": falls.max(),
            }
        )
    return pd.DataFrame(rows)


def _step(step: str, cells: str, seeds: list, differences: list[float]) -> dict:
    """One paired step: its seeds, per-seed differences, their mean with its Student-t interval
    and their SD with its chi-square interval."""
    sd_low, sd_high = sd_interval(differences)
    return {
        "step": step,
        "cells": cells,
        "seeds": seeds,
        "differences": differences,
        **summarise(differences),
        "sd_low": sd_low,
        "sd_high": sd_high,
    }


def paired_steps(runs: pd.DataFrame, metric: str, key: str) -> list[dict]:
    """For each two neighbouring values of ``key`` (sorted) among runs that agree on every other
    config column: the per-seed differences (larger value - smaller) and their statistics. Along
    ``model.atom``: ``atom_steps``."""
    varying = varying_columns(runs)
    choices = ", ".join(varying) or "none: every run has the same config"
    if key not in runs or "." not in key:
        raise ValueError(f"--pair {key!r} is not a config key of these runs (varying: {choices})")
    if key not in varying:
        raise ValueError(
            f"--pair {key}: every run has {key}={runs[key].iloc[0]}, nothing to pair along; "
            f"the keys that vary: {choices}"
        )
    steps = atom_steps(runs, metric) if key == ATOM else _key_steps(runs, metric, key)
    if not steps:
        unpaired = (
            "no TVConv run has a depthwise run of its seed and settings"
            if key == ATOM
            else f"no two runs of one seed differ only in {key}"
        )
        raise ValueError(f"--pair {key}: {unpaired}: nothing to pair")
    return steps


def _key_steps(runs: pd.DataFrame, metric: str, key: str) -> list[dict]:
    others = [c for c in runs.columns if "." in c and c != key]
    steps = []
    for _rest, group in runs.groupby(others, dropna=False, sort=False):
        values = sorted(group[key].dropna().unique())
        for low, high in itertools.pairwise(values):
            before = group[group[key] == low].set_index("seed")[metric]
            after = group[group[key] == high].set_index("seed")[metric]
            seeds = sorted(set(before.index) & set(after.index))
            if not seeds:
                continue
            cells = (
                f"{group.loc[group[key] == high, 'cell'].iloc[0]} - "
                f"{group.loc[group[key] == low, 'cell'].iloc[0]}"
            )
            differences = [float(after[s] - before[s]) for s in seeds]
            steps.append(_step(f"{key}: {low} -> {high}", cells, seeds, differences))
    return steps


def atom_steps(runs: pd.DataFrame, metric: str) -> list[dict]:
    """Per TVConv cell (in cell order): its runs minus the depthwise runs they are paired with
    (``analysis.stats.paired_differences``: same seed, same settings but the atom and the
    TVConv-only options), as the tables' Δ column pairs them."""
    pairs = paired_differences(runs, metric).sort_values("seed", kind="stable")
    cell_of = runs.set_index("run_id")["cell"]
    steps = []
    for cell in cell_order(runs):
        chosen = pairs[pairs["cell"] == cell]
        if chosen.empty:
            continue
        baselines = " / ".join(dict.fromkeys(cell_of[chosen["baseline_run_id"]]))
        seeds = [int(seed) for seed in chosen["seed"]]
        differences = [float(d) for d in chosen["diff"]]
        steps.append(_step(f"{ATOM}: dw -> tvconv", f"{cell} - {baselines}", seeds, differences))
    return steps


def _bracket(low: float, high: float) -> str:
    return f"[{number(low, 2)}, {number(high, 2)}]"


def report(spread: pd.DataFrame, steps: list[dict], metric: str) -> str:
    lines = [
        f"{metric} over seeds (SD: chi-square 95% interval; floor: raw pixels, mean accuracy; "
        "fall: the largest fall of a run's training accuracy below its running peak, in points, "
        "the median seed's and the worst seed's)",
        "| cell | n | mean | SD [95%] | floor | fall: median, worst |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in spread.to_dict("records"):
        sd = f"{number(row['std'], 2)} {_bracket(row['sd_low'], row['sd_high'])}"
        fall = f"{number(row['fall_median'], 1)}, {number(row['fall_worst'], 1)}"
        lines.append(
            f"| {row['cell']} | {row['n']} | {number(row['mean'], 2)} | {sd} "
            f"| {number(row['floor'], 1)} | {fall} |"
        )
    for step in steps:
        lines += [
            "",
            f"{step['step']} ({step['cells']}), paired by seed {step['seeds']}:",
            "  differences " + ", ".join(f"{d:+.2f}" for d in step["differences"]),
            f"  mean {step['mean']:+.2f} {_bracket(step['ci_low'], step['ci_high'])} "
            f"(Student-t 95%), SD {number(step['std'], 2)} "
            f"{_bracket(step['sd_low'], step['sd_high'])}",
        ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.spread", description=__doc__)
    parser.add_argument("name", help="a store under the results root, e.g. noise_calib")
    parser.add_argument("--preset", default="quick", choices=PRESETS)
    parser.add_argument("--metric", default="mean_acc_pct", help="a face metric")
    parser.add_argument("--pair", help="a config key to pair runs along, e.g. optim.epochs")
    parser.add_argument("--results", type=Path, default=DEFAULT_ROOT, help="results root")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    where = args.results / args.name / args.preset / "runs"
    try:
        frame = load_study(args.name, args.preset, args.results)
        runs = complete_runs(frame.runs)
        runs = runs[runs["task"] == "face"] if "task" in runs else runs
        if runs.empty:
            raise ValueError(f"no complete face runs in {where}")
        if args.metric not in runs:
            raise ValueError(f"--metric {args.metric!r} is not a metric of the runs in {where}")
        steps = paired_steps(runs, args.metric, args.pair) if args.pair else []
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(cell_spread(runs, args.metric, frame.records), steps, args.metric))
    return 0


if __name__ == "__main__":
    exit_with(main)
