"""analysis.spread: the SD interval, seed-paired steps along one config key, the command."""

import math

import pandas as pd
import pytest

from analysis import spread
from analysis.frame import complete_runs, load_records
from analysis.stats import sd_interval
from studies.store import Store
from tests.analysis.conftest import face_record


def test_sd_interval_against_hand_values():
    # s = 1.2909944, 3 degrees of freedom; chi2(0.975, 3) = 9.3484036, chi2(0.025, 3) = 0.2157953
    low, high = sd_interval([1.0, 2.0, 3.0, 4.0])
    assert low == pytest.approx(1.2909944 * math.sqrt(3 / 9.3484036), abs=1e-6)
    assert high == pytest.approx(1.2909944 * math.sqrt(3 / 0.2157953), abs=1e-6)
    assert all(math.isnan(v) for v in sd_interval([5.0]))
    assert sd_interval([1.0, math.nan, 3.0]) == sd_interval([1.0, 3.0])
    with pytest.raises(ValueError, match="level"):
        sd_interval([1.0, 2.0], level=95)


def records():
    """dw at 1 and 2 epochs, seeds 0-2 (1 epoch: 70, 72, 74; 2 epochs: +1, +2, +3), and TVConv
    at 2 epochs only (nothing to pair with), and dw at 4 epochs for seed 0 alone."""
    dw = {"model.atom": "dw"}
    made = [
        face_record("s", "epochs=1", s, 70.0 + 2 * s, **dw, **{"optim.epochs": 1}) for s in range(3)
    ]
    made += [
        face_record("s", "epochs=2", s, 71.0 + 3 * s, **dw, **{"optim.epochs": 2}) for s in range(3)
    ]
    made.append(face_record("s", "epochs=4", 0, 90.0, **dw, **{"optim.epochs": 4}))
    made += [face_record("s", "atom=tvconv", s, 60.0, **{"optim.epochs": 2}) for s in range(3)]
    return made


def test_paired_steps_pair_by_seed_within_one_configuration():
    runs = complete_runs(load_records(records()))
    steps = spread.paired_steps(runs, "mean_acc_pct", "optim.epochs")
    by_step = {step["step"]: step for step in steps}
    assert set(by_step) == {"optim.epochs: 1 -> 2", "optim.epochs: 2 -> 4"}
    doubled = by_step["optim.epochs: 1 -> 2"]
    assert doubled["seeds"] == [0, 1, 2]
    assert doubled["differences"] == pytest.approx([1.0, 2.0, 3.0])
    assert doubled["mean"] == pytest.approx(2.0) and doubled["std"] == pytest.approx(1.0)
    assert (doubled["ci_low"], doubled["ci_high"]) == pytest.approx(
        (2 - 4.3026527 / math.sqrt(3), 2 + 4.3026527 / math.sqrt(3)), abs=1e-6
    )
    assert by_step["optim.epochs: 2 -> 4"]["differences"] == pytest.approx([90.0 - 71.0])
    with pytest.raises(ValueError, match="not a config key"):
        spread.paired_steps(runs, "mean_acc_pct", "optim.nothing")


def test_a_key_that_does_not_vary_or_pairs_nothing_is_refused_with_the_keys_that_vary():
    runs = complete_runs(load_records(records()))
    with pytest.raises(
        ValueError, match=r"not a config key .*\(varying: model.atom, optim.epochs\)"
    ):
        spread.paired_steps(runs, "mean_acc_pct", "seed")  # a column, not a config key
    with pytest.raises(ValueError, match=r"every run has optim\.lr=0\.1, nothing to pair along"):
        spread.paired_steps(runs, "mean_acc_pct", "optim.lr")
    dw_only = runs[runs["model.atom"] == "dw"]
    with pytest.raises(ValueError, match=r"every run has model\.atom=dw"):
        spread.paired_steps(dw_only, "mean_acc_pct", "model.atom")
    apart = runs[(runs["seed"] == 0) & (runs["optim.epochs"] == 1)]  # epochs 1: seed 0 only,
    apart = pd.concat([apart, runs[(runs["seed"] == 1) & (runs["optim.epochs"] == 2)]])  # 2: 1
    with pytest.raises(ValueError, match=r"no two runs of one seed differ only in optim\.epochs"):
        spread.paired_steps(apart, "mean_acc_pct", "optim.epochs")


def test_pairing_along_the_atom_finds_the_depthwise_partner_of_every_tvconv_cell():
    # dw seeds 0-2 (80, 81, 82); TVConv with the paper's generator and TVConv in the first 6
    # sites set TVConv-only options a dw run does not have: each still pairs with dw by seed,
    # as the tables' delta column pairs them; a TVConv run at other epochs has no partner.
    dw = [face_record("s", "atom=dw", s, 80.0 + s, **{"model.atom": "dw"}) for s in range(3)]
    wide = {"model.inter_channels": 64, "model.inter_layers": 3}
    made = dw + [face_record("s", "wide", s, (79.0, 81.5, 79.0)[s], **wide) for s in range(3)]
    made += [face_record("s", "first", s, 82.0 + s, **{"model.select": "first:6"}) for s in (0, 2)]
    made.append(face_record("s", "longer", 0, 70.0, **{"optim.epochs": 9}))
    runs = complete_runs(load_records(made))
    steps = {
        step["cells"]: step for step in spread.paired_steps(runs, "mean_acc_pct", "model.atom")
    }
    assert set(steps) == {"wide - atom=dw", "first - atom=dw"}
    wide_step = steps["wide - atom=dw"]
    assert wide_step["step"] == "model.atom: dw -> tvconv"
    assert wide_step["seeds"] == [0, 1, 2]
    assert wide_step["differences"] == pytest.approx([-1.0, +0.5, -3.0])
    assert wide_step["std"] == pytest.approx(1.7559423, abs=1e-6)  # sd of -1, 0.5, -3
    assert (wide_step["sd_low"], wide_step["sd_high"]) == pytest.approx(
        sd_interval([-1.0, 0.5, -3.0])
    )
    assert steps["first - atom=dw"]["seeds"] == [0, 2]
    assert steps["first - atom=dw"]["differences"] == pytest.approx([2.0, 2.0])


def test_cell_spread_reports_sd_interval_and_floor():
    runs = complete_runs(load_records(records()))
    table = spread.cell_spread(runs, "mean_acc_pct").set_index("cell")
    row = table.loc["epochs=1"]
    assert (row["n"], row["mean"], row["std"]) == pytest.approx((3, 72.5, 2.0))
    assert (row["sd_low"], row["sd_high"]) == pytest.approx(sd_interval([70.0, 72.0, 74.0]))
    assert row["floor"] == pytest.approx(59.0)  # raw pixels 58 + seed, seeds 0-2


def curve(*accuracies):
    return [{"epoch": i + 1, "train_acc_pct": a} for i, a in enumerate(accuracies)]


def test_largest_fall_measures_from_the_running_peak():
    assert spread.largest_fall(curve(1.0, 5.0, 20.0, 60.0, 100.0)) == 0.0  # never fell
    # peaks 66 then 100: falls 66 - 2 = 64 (the largest) and 100 - 97 = 3; recovered to 100
    assert spread.largest_fall(curve(10.0, 66.0, 30.0, 2.0, 80.0, 100.0, 97.0, 100.0)) == 64.0
    assert spread.largest_fall(curve(27.0, 0.0, 3.7)) == 27.0  # collapsed: never came back
    assert spread.largest_fall(curve(50.0)) == 0.0
    assert math.isnan(spread.largest_fall([]))
    assert math.isnan(spread.largest_fall(None))
    assert math.isnan(spread.largest_fall([{"epoch": 1, "loss": 3.0}]))  # no accuracy recorded


def test_cell_spread_reports_the_median_and_worst_fall_per_cell():
    made = records()
    falls = {"epochs=1": (0.0, 10.0, 40.0), "epochs=2": (1.0, 1.0, 3.0)}
    for record in made:
        if record["cell"] in falls:
            drop = falls[record["cell"]][record["seed"]]
            record["history"] = curve(50.0, 90.0, 90.0 - drop, 100.0)
    runs = complete_runs(load_records(made))
    by_id = {record["run_id"]: record for record in made}
    table = spread.cell_spread(runs, "mean_acc_pct", by_id).set_index("cell")
    assert (table.loc["epochs=1", "fall_median"], table.loc["epochs=1", "fall_worst"]) == (
        10.0,
        40.0,
    )
    assert (table.loc["epochs=2", "fall_median"], table.loc["epochs=2", "fall_worst"]) == (1.0, 3.0)
    assert math.isnan(table.loc["atom=tvconv", "fall_worst"])  # histories without epochs
    without_records = spread.cell_spread(runs, "mean_acc_pct")
    assert without_records["fall_worst"].isna().all()


def test_command_prints_the_spread_and_refuses_bad_input(tmp_path, capsys):
    store = Store(tmp_path, "calib", "quick")
    for record in records():
        if record["cell"] == "epochs=1":
            record["history"] = curve(50.0, 80.0, 65.0, 100.0)
        store.write(record)
    argv = ["calib", "--results", str(tmp_path)]
    assert spread.main([*argv, "--pair", "optim.epochs"]) == 0
    out = capsys.readouterr().out
    assert "| epochs=1 | 3 | 72.50 | 2.00 [" in out
    assert "| 59.0 | 15.0, 15.0 |" in out  # floor, then the falls (80 -> 65) of every seed
    assert "| atom=tvconv | 3 | 60.50 | 0.00 [0.00, 0.00] | 59.0 | –, – |" in out
    assert "differences +1.00, +2.00, +3.00" in out
    assert spread.main([*argv, "--pair", "optim.nothing"]) == 2
    assert "not a config key" in capsys.readouterr().err
    assert spread.main([*argv, "--metric", "nothing_pct"]) == 2
    assert "not a metric" in capsys.readouterr().err
    assert spread.main(["empty", "--results", str(tmp_path)]) == 2
    assert "no complete face runs" in capsys.readouterr().err
