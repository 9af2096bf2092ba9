"""Seed statistics: Student-t intervals, paired t-tests, Holm, aggregates, paired differences."""

import math

import numpy as np
import pytest

from analysis.frame import load_records
from analysis.stats import (
    aggregate,
    aggregate_paired,
    holm,
    holm_levels,
    paired_differences,
    summarise,
    t_interval,
    t_quantile,
    t_test_p,
)
from tests.analysis.conftest import aug_records, face_record


def test_t_interval_against_hand_values():
    # mean 2.5, s = 1.2909944, t(0.975, 3) = 3.1824463: half-width 3.1824463 * s / 2 = 2.0542603
    low, high = t_interval([1.0, 2.0, 3.0, 4.0])
    assert low == pytest.approx(0.4457397, abs=1e-6)
    assert high == pytest.approx(4.5542603, abs=1e-6)
    # two values: t(0.975, 1) = 12.7062047, s = 1.4142136, half-width = 12.7062047
    low, high = t_interval([60.0, 62.0])
    assert (low, high) == pytest.approx((61 - 12.7062047, 61 + 12.7062047), abs=1e-6)
    assert t_quantile(0.90, 5) == pytest.approx(2.1318468, abs=1e-6)


def test_t_interval_edge_cases():
    assert all(math.isnan(v) for v in t_interval([5.0]))
    assert all(math.isnan(v) for v in t_interval([]))
    assert t_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert t_interval([1.0, np.nan, 3.0]) == t_interval([1.0, 3.0])  # NaNs ignored
    with pytest.raises(ValueError, match="level"):
        t_interval([1.0, 2.0], level=95)


def test_t_interval_covers_the_true_mean_95_percent_of_the_time_at_three_seeds():
    """Where a percentile bootstrap of 3 values covers about 75%."""
    rng = np.random.default_rng(1)
    trials, covered = 2000, 0
    for _ in range(trials):
        low, high = t_interval(rng.normal(10.0, 2.0, size=3))
        covered += low <= 10.0 <= high
    assert 0.93 <= covered / trials <= 0.97  # 2000 trials: +-1% sampling error


def test_summarise_known_values():
    stats = summarise([1.0, 2.0, 3.0, 4.0])
    assert stats["n"] == 4
    assert stats["mean"] == 2.5
    assert stats["std"] == pytest.approx(1.2909944, rel=1e-6)
    assert stats["ci_low"] == pytest.approx(0.4457397, abs=1e-6)


def test_paired_t_test_p_values():
    # diffs 3, 0, 3: mean 2, s = 1.7320508, t = 2 with 2 degrees of freedom: p = 0.1835034
    assert t_test_p([3.0, 0.0, 3.0]) == pytest.approx(0.1835034, abs=1e-6)
    assert t_test_p([-1.0, -1.0, -1.0]) == 0.0  # no spread, nonzero mean
    assert t_test_p([0.0, 0.0]) == 1.0
    assert math.isnan(t_test_p([2.0]))


def test_holm_adjusted_p_values_and_levels_against_hand_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # 0.005 <= 0.05/4 and 0.01 <= 0.05/3 are rejected; 0.03 > 0.05/2 stops: it and every later
    # comparison get the level 1 - 0.05/2
    assert holm_levels(p) == pytest.approx([1 - 0.05 / 3, 0.975, 0.975, 1 - 0.05 / 4])
    assert list(holm([0.2, math.nan])) == pytest.approx([0.2, math.nan], nan_ok=True)
    assert holm([]).size == 0


def test_holm_levels_agree_with_holm_decisions():
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = rng.uniform(0, 0.2, size=5)
        rejected_by_p = holm(p) <= 0.05
        # an interval at the assigned level excludes 0 exactly when the raw p-value <= 1 - level
        rejected_by_level = p <= 1 - holm_levels(p) + 1e-12
        assert list(rejected_by_p) == list(rejected_by_level)


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
    # t(0.975, 2) = 4.3026527: half-width 4.3026527 * 2 / sqrt(3)
    assert row["ci_high"] == pytest.approx(63.5 + 4.3026527 * 2 / math.sqrt(3), abs=1e-6)


def test_paired_differences_match_same_seed_and_same_data():
    runs = load_records(aug_records())
    pairs = paired_differences(runs, "mean_acc_pct")
    hflip = pairs[pairs["cell"] == "atom=tvconv augment=hflip"].sort_values("seed")
    assert list(hflip["diff"]) == [3.0, 0.0, 3.0]  # paired with dw hflip, not dw rot30
    rot = pairs[pairs["cell"] == "atom=tvconv augment=rot30"]
    assert list(rot["diff"]) == [-1.0, -1.0, -1.0]
    summary = aggregate_paired(runs, "mean_acc_pct").set_index("cell")
    hflip_row = summary.loc["atom=tvconv augment=hflip"]
    assert hflip_row["mean"] == pytest.approx(2.0)
    assert hflip_row["wins"] == 2
    assert hflip_row["p"] == pytest.approx(0.1835034, abs=1e-6)
    # Holm over the two cells: rot30 (p = 0, rejected at 0.05 / 2: level 0.975) first, then
    # hflip (p = 0.18 > 0.05 / 1: not rejected, level 0.95, p_holm = 1 x 0.18)
    assert hflip_row["p_holm"] == pytest.approx(0.1835034, abs=1e-6)
    assert hflip_row["level_holm"] == pytest.approx(0.95)
    assert hflip_row["ci_low_holm"] == pytest.approx(2.0 - 4.3026527)  # s / sqrt(n) = 1
    rot30 = summary.loc["atom=tvconv augment=rot30"]
    assert rot30["level_holm"] == pytest.approx(0.975)
    assert (rot30["ci_low_holm"], rot30["ci_high_holm"]) == (-1.0, -1.0)
    assert "atom=dw augment=hflip" not in summary.index


def test_failed_runs_are_not_aggregated_and_unpaired_runs_are_left_out():
    records = aug_records()[:6]  # dw hflip x3, tvconv hflip x3
    records.append(
        face_record(
            "aug",
            "atom=tvconv augment=shift10",
            0,
            99.0,
            status="failed",
            **{"model.atom": "tvconv", "data.augment": "shift10"},
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
    assert "atom=tvconv augment=shift10" not in set(table["cell"])
    paired = aggregate_paired(runs, "mean_acc_pct")
    assert list(paired["cell"]) == ["atom=tvconv augment=hflip"]  # crop has no dw partner
