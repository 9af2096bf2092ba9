"""The tidy frame (failed, stale, unreadable runs listed) and the tables (md / tex / csv)."""

import pandas as pd
import pytest

from analysis.frame import baseline_key, load_records, load_study, sort_runs
from analysis.tables import face_table, latex_escape, number, profile_tables
from tests.analysis.conftest import AUG_VALUES, BENCHMARKS, aug_records, face_record
from tests.analysis.test_figures import precision_records, profile_records


def test_frame_has_one_row_per_run_with_config_and_metrics(aug_store):
    frame = load_study("aug", "quick", aug_store.root)
    runs = frame.runs
    assert len(runs) == 12
    assert {
        "run_id",
        "cell",
        "seed",
        "status",
        "model.atom",
        "data.augment",
        "mean_acc_pct",
    } <= set(runs.columns)
    assert set(runs["status"]) == {"complete"}
    assert runs["model.atom"].tolist()[:6] == ["dw"] * 6  # the baseline first
    assert frame.problems() == []


def test_failed_stale_and_unreadable_runs_are_listed_not_dropped(aug_store):
    failed = face_record(
        "aug", "atom=tvconv augment=shift10", 0, 0.0, status="failed", **{"data.augment": "shift10"}
    )
    aug_store.write(failed)
    stale = face_record(
        "aug", "atom=tvconv augment=shift20", 0, 70.0, **{"data.augment": "shift20"}
    )
    stale["results_version"] = -1
    stale["run_id"] = "0" * 16
    aug_store.write(stale)
    (aug_store.runs_dir / "broken.json").write_text("{not json")
    frame = load_study("aug", "quick", aug_store.root)
    statuses = frame.runs.set_index("run_id")["status"]
    assert statuses[failed["run_id"]] == "failed"
    assert statuses["0" * 16] == "stale"
    assert len(frame.complete) == 12
    problems = "\n".join(frame.problems())
    assert "broken.json" in problems
    assert "RuntimeError: boom" in problems
    assert "results_version -1" in problems


def test_baseline_key_ignores_atom_seed_and_tvconv_fields_only():
    dw = face_record("s", "c", 0, 1.0, **{"model.atom": "dw"})["config"]["face"]
    tv = face_record("s", "c", 1, 1.0, **{"model.init": "zeros", "model.inter_layers": 0})
    other_data = face_record("s", "c", 0, 1.0, **{"model.atom": "dw", "data.augment": "rot30"})
    assert baseline_key("face", dw) == baseline_key("face", tv["config"]["face"])
    assert baseline_key("face", dw) != baseline_key("face", other_data["config"]["face"])


def test_row_order_is_stable_and_meaningful():
    records = aug_records()
    forward = load_records(records)
    backward = load_records(list(reversed(records)))
    pd.testing.assert_frame_equal(forward, backward)
    shuffled = sort_runs(forward.sample(frac=1, random_state=0))
    pd.testing.assert_frame_equal(shuffled, forward)
    select = load_records(
        [
            face_record("depth", f"atom=tvconv select={s}", 0, 60.0, **{"model.select": s})
            for s in ("all", "last:4", "6-12", "first:6", "first:13")
        ]
    )
    assert list(select["model.select"]) == ["first:6", "first:13", "last:4", "6-12", "all"]


def test_face_table_values_bold_best_and_paired_column():
    table, numbers = face_table(load_records(aug_records()))
    assert table.header == [
        "cell",
        "n",
        "clean",
        "pose",
        "illumination",
        "age",
        "mean",
        "deployed params (M)",
        "Δ mean vs dw [95% CI, Holm over 2] (wins)",
    ]
    rows = {row[0]: row for row in table.rows}
    assert rows["atom=tvconv augment=hflip"][2:7] == [
        "63.0 ± 2.0",
        "64.0 ± 2.0",
        "62.0 ± 2.0",
        "65.0 ± 2.0",
        "63.5 ± 2.0",
    ]
    assert rows["atom=dw augment=hflip"][-1] == "baseline"
    # rot30: -1 on every seed (p = 0, first in Holm's order); hflip: 3, 0, 3 (p = 0.18): its
    # interval at the Holm level 0.95 is 2 -+ t(0.975, 2) * 1 = 2 -+ 4.30
    assert rows["atom=tvconv augment=rot30"][-1] == "-1.0 [-1.0, -1.0] p=<0.001 (0/3)"
    assert rows["atom=tvconv augment=hflip"][-1] == "+2.0 [-2.3, +6.3] p=0.18 (2/3)"
    best_row = [row[0] for row in table.rows].index("atom=tvconv augment=hflip")
    assert (best_row, 6) in table.bold  # best mean
    markdown = table.markdown()
    assert "| **63.5 ± 2.0** |" in markdown
    assert "Holm-adjusted over the 2 TVConv cells" in markdown
    assert set(numbers["metric"]) >= {"mean_acc_pct", "clean_acc_pct", "diff_mean_acc_pct"}


def test_a_tvconv_cell_without_a_depthwise_partner_is_not_called_the_baseline():
    values = {k: v for k, v in AUG_VALUES.items() if k != ("dw", "rot30")}
    table, _ = face_table(load_records(aug_records(values)))
    rows = {row[0]: row for row in table.rows}
    assert rows["atom=dw augment=hflip"][-1] == "baseline"
    assert rows["atom=tvconv augment=rot30"][-1] == "– (no dw run of its seeds and settings)"
    tvconv_only = {k: v for k, v in AUG_VALUES.items() if k[0] == "tvconv"}
    table, _ = face_table(load_records(aug_records(tvconv_only)))
    assert not any(h.startswith("Δ") for h in table.header)
    assert any(note.startswith("No Δ column: no run of these cells") for note in table.notes)


def test_floor_rows_follow_the_cells_with_what_each_floor_depends_on():
    """Raw pixels and mean colour depend on the data only (one row here: augmentation changes
    the training, not the benchmarks); the untrained network on the data and the model (one
    row per atom); each seed counted once."""
    table, numbers = face_table(load_records(aug_records()))
    labels = [row[0] for row in table.rows]
    floors = labels[4:]
    assert floors == [
        "floor: raw pixels",
        "floor: mean colour",
        "floor: untrained atom=dw",
        "floor: untrained atom=tvconv",
    ]
    rows = {row[0]: row for row in table.rows}
    assert rows["floor: raw pixels"][1:7] == ["3", *["59.0 ± 1.0"] * 5]  # 58 + seed 0, 1, 2
    assert rows["floor: mean colour"][6] == "52.0 ± 0.0"
    assert rows["floor: untrained atom=tvconv"][6] == "55.0 ± 1.0"
    assert rows["floor: untrained atom=dw"][-1] == ""  # no costs, no paired difference
    assert not any(r >= 4 for r, _c in table.bold)  # floors are never the best
    floor_numbers = numbers[numbers["cell"] == "floor: raw pixels"]
    assert set(floor_numbers["metric"]) == {f"{b}_acc_pct" for b in BENCHMARKS} | {"mean_acc_pct"}


def test_floor_rows_name_the_data_variant_when_it_varies():
    records = [
        face_record(
            "aug",
            f"atom={atom} layout={layout}",
            seed,
            60.0,
            **{"model.atom": atom, "data.synthetic.layout": layout},
        )
        for atom in ("dw", "tvconv")
        for layout in ("aligned", "free")
        for seed in (0, 1)
    ]
    table, _ = face_table(load_records(records))
    labels = [row[0] for row in table.rows]
    assert "floor: raw pixels layout=aligned" in labels
    assert "floor: raw pixels layout=free" in labels
    assert "floor: untrained atom=tvconv layout=free" in labels
    assert (
        face_table(load_records([face_record("s", "c", 0, 60.0, floors=False)]))[0].rows[-1][0]
        == "c"
    )  # records without floors: no floor rows


def test_free_shift_does_not_split_or_label_aligned_floors():
    """How far the layout-free control moves its images says nothing about aligned data: the
    aligned runs share one floor row whatever their ``free_shift``, the free ones get one each."""
    settings = [("aligned", 0.5), ("aligned", 0.25), ("free", 0.5), ("free", 0.25)]
    records = [
        face_record(
            "aug",
            f"atom=dw layout={layout} free_shift={shift}",
            seed,
            60.0,
            **{
                "model.atom": "dw",
                "data.synthetic.layout": layout,
                "data.synthetic.free_shift": shift,
            },
        )
        for layout, shift in settings
        for seed in (0, 1)
    ]
    labels = [row[0] for row in face_table(load_records(records))[0].rows]
    pixels = [label for label in labels if label.startswith("floor: raw pixels")]
    assert sorted(pixels) == [
        "floor: raw pixels layout=aligned",
        "floor: raw pixels layout=free free_shift=0.25",
        "floor: raw pixels layout=free free_shift=0.5",
    ]


def test_a_tvconv_without_generator_has_one_floor_row_named_without_generator_options():
    """A TVConv without a weight generator never reads the generator's width and depth: the
    untrained floor of such runs is one row whatever those options say, and its label does not
    name them (it would read as a generator of that size). A generator's row names its options
    but not ``generator=True``, which they imply, as its trained cell's label does."""
    cells = [
        ("atom=tvconv generator=False", {"model.generator": False, "model.inter_channels": 16}),
        ("atom=tvconv generator=False", {"model.generator": False, "model.inter_channels": 32}),
        ("atom=tvconv inter_channels=8", {"model.inter_channels": 8}),
        ("atom=tvconv inter_channels=64", {"model.inter_channels": 64}),
    ]
    records = [
        face_record("weightgen", cell, seed, 60.0, **fields)
        for cell, fields in cells
        for seed in (0, 1)
    ]
    labels = [row[0] for row in face_table(load_records(records))[0].rows]
    untrained = [label for label in labels if label.startswith("floor: untrained")]
    assert untrained == [
        "floor: untrained generator=False",
        "floor: untrained inter_channels=8",
        "floor: untrained inter_channels=64",
    ]


def test_a_generator_floor_row_says_generator_true_where_nothing_else_tells_it_apart():
    records = [
        face_record("weightgen", f"atom=tvconv generator={flag}", seed, 60.0, **fields)
        for flag, fields in (("False", {"model.generator": False}), ("True", {}))
        for seed in (0, 1)
    ]
    labels = [row[0] for row in face_table(load_records(records))[0].rows]
    assert [label for label in labels if label.startswith("floor: untrained")] == [
        "floor: untrained generator=False",
        "floor: untrained generator=True",
    ]
    records = [  # the generator the same everywhere, one of its options varies
        face_record("init", f"atom=tvconv init={init}", seed, 60.0, **{"model.init": init})
        for init in ("ones", "stats")
        for seed in (0, 1)
    ]
    labels = [row[0] for row in face_table(load_records(records))[0].rows]
    assert [label for label in labels if label.startswith("floor: untrained")] == [
        "floor: untrained init=ones",
        "floor: untrained init=stats",
    ]


def test_cost_columns_appear_only_when_they_vary():
    table, _ = face_table(load_records(aug_records()))
    assert "deployed params (M)" in table.header  # dw 0.100 vs tvconv 0.150
    assert "MMACs" not in table.header  # equal for every cell
    rows = {row[0]: row for row in table.rows}
    column = table.header.index("deployed params (M)")
    assert rows["atom=dw augment=hflip"][column] == "0.100"


def test_tables_are_byte_identical_for_the_same_records():
    first, first_numbers = face_table(load_records(aug_records()))
    second, second_numbers = face_table(load_records(list(reversed(aug_records()))))
    assert first.markdown() == second.markdown()
    assert first.latex() == second.latex()
    assert first_numbers.to_csv(index=False) == second_numbers.to_csv(index=False)


def test_latex_is_booktabs_and_escaped():
    table, _ = face_table(load_records(aug_records()))
    tex = table.latex()
    assert tex.startswith("\\begin{tabular}{lrrrrrrrr}\n\\toprule\n")
    assert "\\midrule" in tex and tex.rstrip().splitlines()[-1].startswith("%")
    assert "\\bottomrule\n\\end{tabular}" in tex
    assert "63.5 $\\pm$ 2.0" in tex and "\\textbf{63.5 $\\pm$ 2.0}" in tex
    assert latex_escape("a_b 50% & $x") == "a\\_b 50\\% \\& \\$x"


@pytest.mark.parametrize(
    ("value", "sign", "text"), [(1.25, False, "1.2"), (-0.04, True, "0.0"), (2.0, True, "+2.0")]
)
def test_number_format(value, sign, text):
    assert number(value, sign=sign) == text


def test_profile_tables_name_device_and_dtype_only_where_they_vary():
    models, layers, long = profile_tables(load_records(precision_records()))
    assert models.header[:6] == ["model", "input", "atom", "form", "device", "dtype"]
    assert sorted((row[2], *row[4:6]) for row in models.rows) == [
        ("dw", "auto", "float32"),
        ("dw", "cuda", "bfloat16"),
        ("tvconv", "auto", "float32"),
        ("tvconv", "cuda", "bfloat16"),
    ]
    assert layers.header[3:5] == ["device", "dtype"] and layers.rows[0][3:5] == ["auto", "bfloat16"]
    assert set(long["profile.dtype"]) == {"float32", "bfloat16"}
    same, _layers, _long = profile_tables(load_records(profile_records()))
    assert "dtype" not in same.header and "device" not in same.header


def test_face_table_shows_last_epoch_training_accuracy_and_its_lowest_seed():
    records = []
    for seed, (dw, tv) in enumerate(((99.0, 98.0), (100.0, 3.0), (98.0, 96.0))):
        for atom, train_acc in (("dw", dw), ("tvconv", tv)):
            record = face_record("tradeoff", f"atom={atom}", seed, 80.0, **{"model.atom": atom})
            record["metrics"]["train_acc_pct"] = train_acc
            records.append(record)
    table, _ = face_table(load_records(records))
    column = table.header.index("train acc, last epoch (lowest seed)")
    rows = {row[0]: row for row in table.rows}
    assert rows["atom=dw"][column] == "99.0 ± 1.0 (98.0)"
    assert rows["atom=tvconv"][column] == "65.7 ± 54.3 (3.0)"  # seed 1 collapsed
    assert all(row[column] == "" for name, row in rows.items() if name.startswith("floor"))
    assert any("training collapsed" in note for note in table.notes)


def test_face_table_leaves_out_training_accuracy_when_no_run_recorded_it():
    table, _ = face_table(load_records(aug_records()))
    assert "train acc, last epoch (lowest seed)" not in table.header
