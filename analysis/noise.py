"""Where the seed-to-seed spread of a paired difference comes from: the benchmark draw or training.

``python -m analysis.noise STUDY --plus CELL --minus CELL [--preset quick] [--draws 4]`` takes the
saved models of two cells of a face study on the synthetic data
(``results/<study>/<preset>/models/<run_id>.pt``, written by the runner), pairs them by seed, and
scores each on ``draws`` fresh draws of the four synthetic benchmarks (new identities, images and
pairs from the runs' own generator settings; seeds ``DRAW_SEED + k``, disjoint from any run seed).
With ``d[s, k]`` the paired difference of the mean accuracy for seed ``s`` on draw ``k``, a one-way
variance-components split gives

- the benchmark-draw variance, ``within`` = the mean over seeds of the variance over draws: what a
  different set of test identities and pairs moves the difference by, for fixed models;
- the training variance, ``between - within / draws`` (``between``: the variance over seeds of the
  per-seed mean over draws): what a different training seed moves it by;

and the SD of the paired difference that benchmarks ``k`` times as large (identities and pairs)
would leave: ``sqrt(training + within / k)``. The SD of the recorded differences (the study's own
benchmarks) is printed beside it. Nothing is written; exit 2 for a bad study, cell or store.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from analysis.inspect import load_backbone
from studies.spec import PRESETS, SpecError, load_spec
from studies.store import DEFAULT_ROOT, Store
from tvconv.console import exit_with
from tvconv.convert import deploy
from tvconv.data.synthetic import SyntheticFacesConfig, make_face_benchmarks
from tvconv.train import EvalConfig, evaluate

DRAW_SEED = 1_000_000  # fresh benchmark draws: far from any run seed a study uses
SCALES = (1, 2, 4, 8)


@dataclass(frozen=True)
class NoiseSplit:
    """The variance components of a paired difference (points squared) and what they imply."""

    seeds: int
    draws: int
    recorded_sd: float  # SD over seeds of the differences on the study's own benchmarks
    draw_variance: float  # one benchmark draw, fixed models
    training_variance: float  # one training seed, benchmark noise removed

    def predicted_sd(self, scale: float) -> float:
        """The SD of the paired difference with benchmarks ``scale`` times as large."""
        return float(np.sqrt(self.training_variance + self.draw_variance / scale))


def split_variance(differences: np.ndarray, recorded: np.ndarray) -> NoiseSplit:
    """``differences``: (seeds, draws) paired differences on fresh draws; ``recorded``: (seeds,)
    the same pairs' differences as recorded. Needs two seeds and two draws at least."""
    seeds, draws = differences.shape
    if seeds < 2 or draws < 2:
        raise ValueError(f"need at least 2 seeds and 2 draws, got {seeds} and {draws}")
    within = float(differences.var(axis=1, ddof=1).mean())
    between = float(differences.mean(axis=1).var(ddof=1))
    return NoiseSplit(
        seeds=seeds,
        draws=draws,
        recorded_sd=float(np.std(recorded, ddof=1)),
        draw_variance=within,
        training_variance=max(between - within / draws, 0.0),
    )


def _cell_runs(store: Store, complete: list[dict], cell: str) -> dict[int, dict]:
    """The complete runs of ``cell`` by seed."""
    runs = {r["seed"]: r for r in complete if r.get("cell") == cell}
    if not runs:
        cells = sorted({r.get("cell") for r in complete})
        raise SpecError(
            f"{store.folder}: no complete run of cell {cell!r}; cells: {', '.join(cells) or 'none'}"
        )
    return runs


def _synthetic(record: dict) -> SyntheticFacesConfig:
    face = record["config"].get("face")
    if face is None or face["data"].get("train_root") is not None:
        raise SpecError(f"run {record['run_id']}: not a face run on the synthetic data")
    return SyntheticFacesConfig(**face["data"]["synthetic"])


def fresh_draw_differences(
    store: Store, plus: str, minus: str, draws: int, progress=print
) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, draws) mean-accuracy differences plus - minus on fresh benchmark draws, and the
    recorded differences of the same seeds (the seeds with both models saved)."""
    complete = [r for r in store.records()[0] if r.get("status") == "complete"]
    plus_runs, minus_runs = _cell_runs(store, complete, plus), _cell_runs(store, complete, minus)
    first_plus, first_minus = next(iter(plus_runs.values())), next(iter(minus_runs.values()))
    synthetic = _synthetic(first_plus)  # the data first: no models pair cells that differ
    if replace(_synthetic(first_minus), seed=None) != replace(synthetic, seed=None):
        raise SpecError(f"cells {plus!r} and {minus!r} differ in their data: no paired benchmark")
    seeds = [
        s
        for s in sorted(set(plus_runs) & set(minus_runs))
        if all(
            (store.folder / "models" / f"{runs[s]['run_id']}.pt").exists()
            for runs in (plus_runs, minus_runs)
        )
    ]
    if len(seeds) < 2:
        raise SpecError(
            f"{store.folder}: {len(seeds)} seed(s) with both cells' models saved under models/; "
            "need 2 (train them with `python -m studies run`)"
        )
    networks = {}
    for side, runs in (("plus", plus_runs), ("minus", minus_runs)):
        for s in seeds:
            record = runs[s]
            model = load_backbone(record, store.folder / "models" / f"{record['run_id']}.pt")
            networks[side, s] = (
                deploy(model).eval(),
                EvalConfig(**record["config"]["face"]["eval"]),
            )
    differences = np.zeros((len(seeds), draws))
    for k in range(draws):
        benchmarks = make_face_benchmarks(replace(synthetic, seed=DRAW_SEED + k))
        with torch.no_grad():
            for i, s in enumerate(seeds):
                accuracy = {}
                for side in ("plus", "minus"):
                    network, eval_config = networks[side, s]
                    accuracy[side] = evaluate(network, benchmarks, eval_config)["mean_acc_pct"]
                differences[i, k] = accuracy["plus"] - accuracy["minus"]
        progress(f"draw {k + 1}/{draws}: differences {np.round(differences[:, k], 2).tolist()}")
    recorded = np.array(
        [
            plus_runs[s]["metrics"]["mean_acc_pct"] - minus_runs[s]["metrics"]["mean_acc_pct"]
            for s in seeds
        ]
    )
    return differences, recorded


def report(split: NoiseSplit) -> str:
    lines = [
        f"{split.seeds} seeds x {split.draws} fresh benchmark draws (paired difference, points)",
        f"  SD recorded (the study's benchmarks):  {split.recorded_sd:.2f}",
        f"  SD from the benchmark draw:            {np.sqrt(split.draw_variance):.2f}",
        f"  SD from training (draw noise removed): {np.sqrt(split.training_variance):.2f}",
        "  SD expected with benchmarks k times as large: "
        + ", ".join(f"k={k}: {split.predicted_sd(k):.2f}" for k in SCALES),
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.noise", description=__doc__)
    parser.add_argument("study", help="a face study with saved models, e.g. tradeoff")
    parser.add_argument("--plus", required=True, help="cell label, e.g. 'atom=tvconv'")
    parser.add_argument("--minus", required=True, help="cell label of the baseline")
    parser.add_argument("--preset", default="quick", choices=PRESETS)
    parser.add_argument("--draws", type=int, default=4, help="fresh benchmark draws (>= 2)")
    parser.add_argument("--results", type=Path, default=DEFAULT_ROOT, help="results root")
    parser.add_argument("--json", action="store_true", help="print the split as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.draws < 2:
        print(f"error: --draws must be >= 2, got {args.draws}", file=sys.stderr)
        return 2
    if args.plus.strip() == args.minus.strip():
        print(
            f"error: --plus and --minus name the same cell ({args.plus!r}): their difference is "
            "0 on every draw; name two cells of the study",
            file=sys.stderr,
        )
        return 2
    try:
        load_spec(args.study)
        store = Store(args.results, args.study, args.preset)
        differences, recorded = fresh_draw_differences(
            store, args.plus, args.minus, args.draws, lambda line: print(line, file=sys.stderr)
        )
    except (SpecError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    split = split_variance(differences, recorded)
    if args.json:
        print(json.dumps({**split.__dict__, "differences": differences.round(3).tolist()}))
    else:
        print(report(split))
    return 0


if __name__ == "__main__":
    exit_with(main)
