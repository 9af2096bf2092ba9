"""Seed statistics: bootstrap CI, its coverage, aggregates and paired differences."""

import math

import numpy as np
import pytest

from analysis.frame import load_records
from analysis.stats import aggregate, aggregate_paired, bootstrap_ci, paired_differences, summarise
from tests.analysis.conftest import aug_records, face_record


def test_summarise_known_values():
    stats = summarise([1.0, 2.0, 3.0, 4.0])
    assert stats["n"] == 4
    assert stats["mean"] == 2.5
    assert stats["std"] == pytest.approx(1.2909944, rel=1e-6)
    assert 1.0 <= stats["ci_low"] < 2.5 < stats["ci_high"] <= 4.0


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([5.0]))
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert bootstrap_ci([60.0, 62.0]) == (60.0, 62.0)  # two seeds: the interval is their range
    assert bootstrap_ci([1.0, np.nan, 3.0]) == (1.0, 3.0)  # NaNs ignored
    assert bootstrap_ci([1.0, 2.0, 7.0]) == bootstrap_ci([1.0, 2.0, 7.0])  # deterministic
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=95)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    true_mean, trials = 10.0, 300
    covered = 0
    for trial in range(trials):
        sample = rng.normal(true_mean, 2.0, size=30)
        low, high = bootstrap_ci(sample, resamples=2000, seed=trial)
        covered += low <= true_mean <= high
    # percentile bootstrap at n=30 covers ~93-95%; 300 trials give +-2.6% sampling error
    assert 0.88 <= covered / trials <= 0.99


def test_narrower_level_gives_narrower_interval():
    values = np.arange(20.0)
    low90, high90 = bootstrap_ci(values, level=0.90)
    low95, high95 = bootstrap_ci(values, level=0.95)
    assert low95 < low90 < 9.5 < high90 < high95


def test_aggregate_per_cell_in_table_order():
    runs = load_records(aug_records())
    table = aggregate(runs, "mean_acc_pct")
    assert list(table["cell"]) == [
        "atom=dw augment=hflip",
        "atom=dw augment=rot30",
        "atom=tvconv augment=hflip",
        "atom=tvconv augment=rot30",
    ]
    row = table.set_index("cell").loc["atom=tvconv augment=hflip"]
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(63.5)  # (63 + 61 + 65) / 3 + 0.5
    assert row["std"] == pytest.approx(2.0)


def test_paired_differences_match_same_seed_and_same_data():
    runs = load_records(aug_records())
    pairs = paired_differences(runs, "mean_acc_pct")
    hflip = pairs[pairs["cell"] == "atom=tvconv augment=hflip"].sort_values("seed")
    assert list(hflip["diff"]) == [3.0, 0.0, 3.0]  # paired with dw hflip, not dw rot30
    rot = pairs[pairs["cell"] == "atom=tvconv augment=rot30"]
    assert list(rot["diff"]) == [-1.0, -1.0, -1.0]
    summary = aggregate_paired(runs, "mean_acc_pct").set_index("cell")
    assert summary.loc["atom=tvconv augment=hflip", "mean"] == pytest.approx(2.0)
    assert summary.loc["atom=tvconv augment=hflip", "wins"] == 2
    assert summary.loc["atom=tvconv augment=rot30", "ci_low"] == pytest.approx(-1.0)
    assert "atom=dw augment=hflip" not in summary.index


def test_failed_runs_are_not_aggregated_and_unpaired_runs_are_left_out():
    records = aug_records()[:6]  # dw hflip x3, tvconv hflip x3
    records.append(
        face_record(
            "aug",
            "atom=tvconv augment=shift4",
            0,
            99.0,
            status="failed",
            **{"model.atom": "tvconv", "data.augment": "shift4"},
        )
    )
    records.append(
        face_record(
            "aug",
            "atom=tvconv augment=crop",
            0,
            70.0,
            **{"model.atom": "tvconv", "data.augment": "crop"},
        )
    )
    runs = load_records(records)
    table = aggregate(runs, "mean_acc_pct")
    assert "atom=tvconv augment=shift4" not in set(table["cell"])
    paired = aggregate_paired(runs, "mean_acc_pct")
    assert list(paired["cell"]) == ["atom=tvconv augment=hflip"]  # crop has no dw partner
