"""Verdicts: contrasts paired by seed, Holm across a study's contrasts, the three outcomes."""

import math

import pytest

from analysis.frame import load_records
from analysis.tables import verdict_table
from analysis.verdicts import (
    contrast_values,
    decide,
    planned_by,
    planned_cells,
    planned_seeds,
    resolve,
    seeds_needed,
    study_contrasts,
    verdicts,
)
from studies.spec import Contrast, load_spec
from tests.analysis.conftest import aug_records

TV_HFLIP = {"model.atom": "tvconv", "data.augment": "hflip"}
DW_HFLIP = {"model.atom": "dw", "data.augment": "hflip"}
TV_ROT = {"model.atom": "tvconv", "data.augment": "rot30"}
DW_ROT = {"model.atom": "dw", "data.augment": "rot30"}
GAP = Contrast("TVConv - dw (flip)", (TV_HFLIP,), (DW_HFLIP,), "positive")


def test_decide_covers_the_three_outcomes_for_each_claim():
    assert decide("positive", 0.2, 3.0, 1.0) == "reproduced"
    assert decide("positive", -2.0, 0.5, 1.0) == "contradicted"  # no gain of 1 point
    assert decide("positive", -3.0, -1.0, 1.0) == "contradicted"
    assert decide("positive", -1.0, 2.0, 1.0) == "undecided"
    assert decide("negative", -3.0, -0.1, 1.0) == "reproduced"
    assert decide("negative", -0.5, 2.0, 1.0) == "contradicted"
    assert decide("negative", -2.0, 1.0, 1.0) == "undecided"
    assert decide("none", 0.1, 2.0, 1.0) == "contradicted"  # it does help
    assert decide("none", -2.0, 0.8, 1.0) == "reproduced"  # no gain of 1 point
    assert decide("none", -2.0, 1.5, 1.0) == "undecided"
    assert decide("equal", -0.6, 0.9, 1.0) == "reproduced"  # within a point either way
    assert decide("equal", 1.2, 3.0, 1.0) == "contradicted"
    assert decide("equal", -4.0, -1.5, 1.0) == "contradicted"
    assert decide("equal", 0.2, 1.6, 1.0) == "undecided"
    assert decide("positive", math.nan, math.nan, 1.0) == "undecided"
    with pytest.raises(ValueError, match="claim"):
        decide("bigger", 0.0, 1.0, 1.0)


def test_seeds_needed_against_hand_values():
    # room = max(1, 1 - 1) = 1: n = 18 is the first with t(n-1) * 2 / sqrt(n) < 1
    # (t(0.975, 16) * 2 / sqrt(17) = 1.028, t(0.975, 17) * 2 / sqrt(18) = 0.995)
    assert seeds_needed("positive", 1.0, 2.0, 0.95, 1.0) == 18
    assert seeds_needed("negative", -1.0, 2.0, 0.95, 1.0) == 18  # mirrored
    assert seeds_needed("positive", 5.0, 0.0, 0.95, 1.0) == 2
    assert math.isnan(seeds_needed("positive", 0.5, math.nan, 0.95, 1.0))  # one seed: unknown
    # equal: mean 0.5 inside the margin: the half-width must drop below 0.5 (with SD 1: n = 18)
    assert seeds_needed("equal", 0.5, 1.0, 0.95, 1.0) == 18
    assert seeds_needed("equal", 1.0, 1.0, 0.95, 1.0) > 10_000  # on the bound: never


@pytest.mark.parametrize(
    ("tvconv", "verdict"),
    [
        ([62.0, 63.0, 64.5, 62.0, 63.5], "reproduced"),  # +2 to +3.5 over dw, every seed
        ([57.0, 58.5, 57.5, 58.0, 57.0], "contradicted"),  # about -2.6
        ([64.0, 57.0, 65.0, 56.0, 61.0], "undecided"),  # mean +0.6, SD about 4
    ],
)
def test_verdicts_on_synthetic_records(tvconv, verdict):
    dw = [60.0, 60.5, 61.0, 59.5, 60.0]
    runs = load_records(aug_records({("dw", "hflip"): dw, ("tvconv", "hflip"): tvconv}))
    found = verdicts(runs, [GAP], "mean_acc_pct").set_index("name")
    row = found.loc[GAP.name]
    diffs = [t - d for t, d in zip(tvconv, dw, strict=True)]
    assert row["n"] == 5
    assert row["mean"] == pytest.approx(sum(diffs) / 5)
    assert row["verdict"] == verdict
    assert row["level_holm"] == pytest.approx(0.95)  # a family of one
    if verdict == "undecided":
        assert row["seeds_needed"] > 5
    else:
        assert row["seeds_needed"] <= 5


def test_a_difference_of_differences_is_paired_by_seed_and_holm_adjusted():
    values = {
        ("dw", "hflip"): [60.0, 62.0, 61.0],
        ("tvconv", "hflip"): [63.0, 65.0, 64.5],
        ("dw", "rot30"): [55.0, 57.0, 56.0],
        ("tvconv", "rot30"): [55.5, 57.0, 56.0],
    }
    runs = load_records(aug_records(values))
    shrink = Contrast("gap(flip) - gap(rot30)", (TV_HFLIP, DW_ROT), (DW_HFLIP, TV_ROT), "positive")
    terms = resolve(runs, shrink)
    assert sorted(terms) == sorted(
        [
            (1.0, "atom=tvconv augment=hflip"),
            (1.0, "atom=dw augment=rot30"),
            (-1.0, "atom=dw augment=hflip"),
            (-1.0, "atom=tvconv augment=rot30"),
        ]
    )
    per_seed = contrast_values(runs, terms, "mean_acc_pct")
    assert list(per_seed) == pytest.approx([2.5, 3.0, 3.5])  # (3 - 0.5, 3 - 0, 3.5 - 0)
    found = verdicts(runs, [GAP, shrink], "mean_acc_pct").set_index("name")
    # gap diffs 3, 3, 3.5 (t = 19.0, p = 0.0028) rank first: x 2; the contrast (t = 10.4,
    # p = 0.0091) second: x 1
    assert found.loc[GAP.name, "p"] == pytest.approx(0.00276, abs=5e-5)
    assert found.loc[shrink.name, "p"] == pytest.approx(0.00913, abs=5e-5)
    assert found.loc[GAP.name, "p_holm"] == pytest.approx(2 * found.loc[GAP.name, "p"])
    assert found.loc[shrink.name, "p_holm"] == pytest.approx(found.loc[shrink.name, "p"])
    assert found.loc[GAP.name, "level_holm"] == pytest.approx(0.975)
    assert found.loc[shrink.name, "verdict"] == "reproduced"


def test_contrasts_whose_cells_were_not_run_are_skipped_and_ambiguous_ones_refused():
    runs = load_records(aug_records({("dw", "hflip"): [60.0, 61.0], ("tvconv", "hflip"): [62, 63]}))
    missing = Contrast("rotation", (TV_ROT,), (DW_ROT,), "positive")
    assert resolve(runs, missing) is None
    assert list(verdicts(runs, [missing, GAP], "mean_acc_pct")["name"]) == [GAP.name]
    vague = Contrast("vague", ({"data.augment": "hflip"},), (DW_HFLIP,), "positive")
    with pytest.raises(ValueError, match="matches several cells"):
        resolve(runs, vague)


def test_a_planned_contrast_without_runs_is_listed_as_pending():
    runs = load_records(aug_records({("dw", "hflip"): [60.0, 61.0], ("tvconv", "hflip"): [62, 63]}))
    rotation = Contrast("rotation", (TV_ROT,), (DW_ROT,), "positive")
    unplanned = Contrast(
        "crop", ({"model.atom": "tvconv", "data.augment": "crop"},), (DW_HFLIP,), "positive"
    )
    planned = [
        {"model.atom": atom, "data.augment": augment}
        for atom in ("dw", "tvconv")
        for augment in ("hflip", "rot30")
    ]
    assert planned_by(planned, rotation)
    assert not planned_by(planned, unplanned)
    found = verdicts(runs, [GAP, rotation, unplanned], "mean_acc_pct", planned).set_index("name")
    assert list(found.index) == [GAP.name, rotation.name]  # the crop cell is not planned
    pending = found.loc[rotation.name]
    assert pending["n"] == 0
    assert pending["verdict"] == "undecided"
    assert math.isnan(pending["mean"]) and math.isnan(pending["seeds_needed"])
    assert found.loc[GAP.name, "level_holm"] == pytest.approx(0.95)  # the family: GAP alone
    table = verdict_table(found.reset_index(), "mean accuracy")
    assert table.rows[1][2:4] == ["0", "–"]
    assert any("n = 0" in note for note in table.notes)


def test_a_verdict_on_fewer_seeds_than_planned_is_marked_provisional():
    dw, tvconv = [60.0, 60.5, 61.0, 59.5], [62.0, 63.0, 64.5, 62.0]
    runs = load_records(aug_records({("dw", "hflip"): dw, ("tvconv", "hflip"): tvconv}))
    early = verdicts(runs, [GAP], "mean_acc_pct", seeds_planned=5)
    assert early.loc[0, "verdict"] == "reproduced" and early.loc[0, "seeds_planned"] == 5
    table = verdict_table(early, "mean accuracy")
    assert table.rows[0][5] == "**reproduced** (provisional: 4 of 5 seeds)"
    assert any(note.startswith("Provisional:") for note in table.notes)
    for planned in (4, 3, None):  # every planned seed done, more done than planned, unknown
        found = verdicts(runs, [GAP], "mean_acc_pct", seeds_planned=planned)
        table = verdict_table(found, "mean accuracy")
        assert table.rows[0][5] == "**reproduced**"
        assert not any(note.startswith("Provisional:") for note in table.notes)
    older_csv = early.drop(columns="seeds_planned")  # rendered before the column existed
    assert verdict_table(older_csv, "mean accuracy").rows[0][5] == "**reproduced**"


def test_planned_seeds_read_the_preset():
    assert planned_seeds("init", "quick") == len(load_spec("init").seeds("quick")) == 5
    assert planned_seeds("depth", "gpu") == 30
    assert planned_seeds("init-fundus", "quick") == len(load_spec("init").seeds("quick"))
    assert planned_seeds("nonsense", "quick") is None
    assert planned_seeds("init", "no-such-preset") is None


def test_planned_cells_expand_the_preset_like_the_runner():
    cells = planned_cells("init", "quick")
    assert len(cells) == len(load_spec("init").cells("quick"))
    assert {cell["model.init"] for cell in cells if cell["model.atom"] == "tvconv"} == {
        "ones",
        "stats",
    }
    assert planned_cells("nonsense", "quick") == []
    assert planned_cells("init", "no-such-preset") == []


def test_every_face_study_declares_its_primary_contrasts():
    for study in ("aug", "init", "weightgen", "depth", "tradeoff"):
        contrasts = load_spec(study).contrasts
        assert contrasts, study
        assert study_contrasts(study) == contrasts
    assert study_contrasts("init-fundus") == load_spec("init").contrasts
    assert study_contrasts("profile") == ()
    assert study_contrasts("nonsense") == ()
