"""Integrity: bad input refused before any run (exit 2, the culprit named, the results root
untouched), records whose label is their config, and a store that survives damaged records."""

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tvconv
from analysis.frame import load_study
from analysis.report import render
from studies.cli import main
from studies.runner import run_study
from studies.spec import load_spec
from studies.store import Store
from tests.analysis.conftest import face_record

ROOT = Path(__file__).resolve().parents[2]


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real-data layouts, good and bad: an identity tree, a flat folder, .bin files and pair
    lists."""
    root = tmp_path_factory.mktemp("data")
    for identity in range(2):
        (root / "tree" / f"id{identity}").mkdir(parents=True)
        for image in range(4):
            path = root / "tree" / f"id{identity}" / f"{image}.png"
            path.write_bytes(png(10 * identity + image))
    (root / "flat").mkdir()
    (root / "flat" / "a.png").write_bytes(png(0))
    blobs = [png(i) for i in range(40)]
    (root / "good.bin").write_bytes(pickle.dumps((blobs, [True, False] * 10)))
    (root / "nine.bin").write_bytes(pickle.dumps((blobs[:18], [True] * 9)))
    (root / "text.bin").write_bytes(b"this is not a pickle at all")
    (root / "images").mkdir()
    for image in range(4):
        (root / "images" / f"{image}.png").write_bytes(png(image))
    lines = [f"{i % 4}.png {(i + 1) % 4}.png {1 if i % 2 else -1}" for i in range(20)]
    (root / "pairs.txt").write_text("\n".join(lines))
    (root / "bad_pairs.txt").write_text("\n".join([*lines[:5], "0.png 1.png maybe", *lines[6:]]))
    (root / "odd_pairs.txt").write_text("\n".join(lines[:13]))
    return root


def tree_digest(root: Path) -> str:
    """Every file under ``root`` (names and bytes): what a refused command must not change."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def results(tmp_path):
    """A results root already holding a record (the refused commands must leave it as it is)."""
    store = Store(tmp_path / "results", "init", "smoke")
    store.write(face_record("init", "atom=dw", 0, 60.0, preset="smoke", **{"model.atom": "dw"}))
    return tmp_path / "results"


def studies_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "studies", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )


BAD_OVERRIDES = [
    (["data.image_size=40"], "input_size 40 must be divisible by the network's total stride 16"),
    (["model.select=first:999"], "select='first:999' is not valid for a model with 17"),
    (["model.select=40"], "site indices must be distinct ints in [0, 16]; invalid: [40]"),
    (["model.select=3-1"], "the range 3-1 is reversed"),
    (["model.select=middle"], "model.select='middle' is invalid"),
    (["optim.batch_size=100000"], "at most the 64 training images"),
    (["data.benchmarks={d}/good.bin"], "no benchmarks without data.train_root"),
    (["data.train_root={d}/tree", "data.benchmarks={d}/nine.bin"], "number of pairs (9) must be"),
    (["data.train_root={d}/tree", "data.benchmarks={d}/text.bin"], "is not a valid pickle"),
    (["data.train_root={d}/flat", "data.benchmarks={d}/good.bin"], "no identity folders in"),
    (
        ["data.train_root={d}/tree", "data.benchmarks={d}/bad_pairs.txt:{d}/images"],
        "bad_pairs.txt:6: malformed pair line '0.png 1.png maybe'",
    ),
    (
        ["data.train_root={d}/tree", "data.benchmarks={d}/odd_pairs.txt:{d}/images"],
        "the number of pairs (13) must be a positive multiple of 10",
    ),
    (
        ["data.train_root={d}/tree", "data.benchmarks={d}/pairs.txt:{d}/missing"],
        "missing ['",
    ),
    (
        ["data.train_root={d}/tree", "data.benchmarks={d}/pairs.txt"],
        "[name=]pairs.txt:image_root",
    ),
    (
        ["data.train_root={d}/tree", "data.benchmarks={d}/good.bin,good={d}/pairs.txt:{d}/images"],
        "two benchmarks are named 'good'",
    ),
    (["model.atom=tvconv"], "sets a key the init grid varies (model.atom: dw, tvconv)"),
    (["face.model.init=zeros"], "sets a key the init grid varies"),
    (["seed=0"], "the seeds are chosen with --seeds"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_OVERRIDES)
@pytest.mark.parametrize("dry_run", [False, True])
def test_bad_input_is_refused_before_any_run(data, results, overrides, message, dry_run, capsys):
    before = tree_digest(results)
    args = [o.format(d=data) for o in overrides]
    options = ["--preset", "smoke", "--results", str(results), *(["--dry-run"] if dry_run else [])]
    assert main(["run", "init", *options, *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "run_id" not in captured.out  # refused before the plan is shown
    assert tree_digest(results) == before


def test_real_data_that_passes_the_checks_trains(data, tmp_path):
    out = io.StringIO()
    overrides = {
        "data.train_root": str(data / "tree"),
        "data.benchmarks": f"{data}/good.bin,listed={data}/pairs.txt:{data}/images",
        "optim.batch_size": 4,
    }
    code = run_study(
        load_spec("init"), "smoke", tmp_path, out=out, overrides=overrides, cells=["atom=dw"]
    )
    assert code == 0, out.getvalue()
    (record,) = Store(tmp_path, "init", "smoke").records()[0]
    assert {"good_acc_pct", "listed_acc_pct"} <= set(record["metrics"])


def test_an_empty_data_root_is_named_with_what_it_must_hold(tmp_path):
    env = {**os.environ, "DATA_ROOT": ""}
    completed = studies_cli(
        "run", "init", "--preset", "paper", "--results", str(tmp_path / "r"), env=env
    )
    assert completed.returncode == 2
    assert "needs an environment variable that is not set: DATA_ROOT (it is empty)" in (
        completed.stderr
    )
    assert "$DATA_ROOT/casia_webface_frontal" in completed.stderr
    assert "make ablation-init PRESET=paper DATA_ROOT=/path/to/data" in completed.stderr
    assert not (tmp_path / "r").exists()


def test_make_passes_data_root_only_when_given():
    def dry(*args):
        return subprocess.run(
            ["make", "-n", "ablation-init", "PY=python", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "DATA_ROOT"},
        ).stdout

    assert "DATA_ROOT=" not in dry()
    assert "DATA_ROOT=/data python -m studies run" in dry("DATA_ROOT=/data")
    assert "--cells 'atom=tvconv*'" in dry("CELLS=atom=tvconv*")
    # key=value given to make itself: make reads them as variables; they reach the runs too
    direct = dry("optim.epochs=2", "task=fundus", "PRESET=smoke")
    (run_line,) = [line for line in direct.splitlines() if "studies run" in line]
    assert {"optim.epochs=2", "task=fundus", "PRESET=smoke"} & set(run_line.split()) == {
        "optim.epochs=2",
        "task=fundus",
    }
    assert "analysis --preset smoke --results results init --task fundus" in direct


# ------------------------------------------------------------------ labels that are their config


def test_cells_runs_a_subset_under_true_labels(tmp_path):
    out = io.StringIO()
    spec = load_spec("init")
    code = run_study(spec, "smoke", tmp_path, dry_run=True, out=out, cells=["atom=tvconv*"])
    assert code == 0
    lines = [line for line in out.getvalue().splitlines() if "missing" in line]
    assert [line.split(maxsplit=3)[3] for line in lines] == [
        "atom=tvconv init=ones",
        "atom=tvconv init=stats",
    ]
    completed = studies_cli("run", "init", "--preset", "smoke", "--cells", "nope*", "--dry-run")
    assert completed.returncode == 2
    assert "--cells 'nope*' matches no cell; the cells: atom=dw; atom=tvconv" in completed.stderr


def test_the_mislabelling_scenario_is_refused_by_the_analysis(tmp_path):
    """A TVConv run labelled ``atom=dw`` (what a grid-key override used to write) makes the
    analysis refuse the store, naming the file, instead of averaging it into the dw row."""
    store = Store(tmp_path, "init", "quick")
    for seed in range(2):
        store.write(face_record("init", "atom=dw", seed, 60.0, **{"model.atom": "dw"}))
        store.write(
            face_record("init", "atom=tvconv init=ones", seed, 62.0, **{"model.init": "ones"})
        )
    assert len(load_study("init", "quick", tmp_path).runs) == 4
    liar = face_record("init", "atom=dw", 5, 70.0, **{"model.atom": "tvconv"})
    store.write(liar)
    with pytest.raises(ValueError, match=r"says atom=dw but its config has model.atom=tvconv"):
        load_study("init", "quick", tmp_path)
    with pytest.raises(ValueError, match=liar["run_id"]):
        render("init", "quick", tmp_path, wandb=False)


def test_rows_are_grouped_by_config_not_by_label(tmp_path):
    store = Store(tmp_path, "init", "quick")
    for seed in range(2):
        store.write(face_record("init", "atom=dw", seed, 60.0, **{"model.atom": "dw"}))
        store.write(
            face_record("init", "atom=dw", seed, 40.0, **{"model.atom": "dw", "optim.epochs": 2})
        )
    cells = load_study("init", "quick", tmp_path).runs.groupby("cell")["mean_acc_pct"].mean()
    assert cells.to_dict() == {"atom=dw [epochs=1]": 60.5, "atom=dw [epochs=2]": 40.5}


def test_runs_of_one_config_under_other_labels_are_one_cell(tmp_path):
    """A record relabelled by hand (``x``), or with a label that names less of its config, is
    the same configuration: one cell under the label most of its runs carry."""
    store = Store(tmp_path, "init", "quick")
    for seed, label in enumerate(["atom=tvconv init=ones"] * 3 + ["x", "atom=tvconv"]):
        store.write(face_record("init", label, seed, 60.0 + seed, **{"model.atom": "tvconv"}))
    runs = load_study("init", "quick", tmp_path).runs
    assert runs.groupby("cell")["mean_acc_pct"].mean().to_dict() == {"atom=tvconv init=ones": 62.5}


# ------------------------------------------------------------------ a store that survives damage

TINY_DW = """
description: "Tiny: test study"
task: face
base:
  data.synthetic.train_identities: 8
  data.synthetic.images_per_identity: 4
  optim.batch_size: 16
  model.atom: dw
grid:
  - optim.lr: [0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001, 0.00005,
              0.00002]
presets:
  smoke: {base: smoke, seeds: [0]}
"""

DAMAGE = {
    "a JSON list": lambda record: "[]",
    "a JSON string": lambda record: '"complete"',
    "null metrics": lambda record: json.dumps({**record, "metrics": None}),
    "no metrics": lambda record: json.dumps({k: v for k, v in record.items() if k != "metrics"}),
    "no status": lambda record: json.dumps({k: v for k, v in record.items() if k != "status"}),
    "truncated": lambda record: json.dumps(record)[:100],
    "empty metrics": lambda record: json.dumps({**record, "metrics": {}}),
    "a metric as text": lambda record: json.dumps(
        {**record, "metrics": {**record["metrics"], "mean_acc_pct": "high"}}
    ),
    "an edited seed": lambda record: json.dumps({**record, "seed": 7}),
    "an edited version": lambda record: json.dumps({**record, "results_version": 4}),
    "an edited config": lambda record: json.dumps(
        {
            **record,
            "config": {
                **record["config"],
                "face": {
                    **record["config"]["face"],
                    "optim": {**record["config"]["face"]["optim"], "epochs": 99},
                },
            },
        }
    ),
}


def test_damaged_records_are_rerun_with_a_warning_and_listed(tmp_path):
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(TINY_DW)
    results = tmp_path / "results"
    assert run_study(load_spec(spec_path), "smoke", results, out=io.StringIO()) == 0
    store = Store(results, "tiny", "smoke")
    records, bad = store.records()
    assert len(records) == 12 and not bad
    damaged = {}
    for (kind, damage), record in zip(DAMAGE.items(), records[:11], strict=True):
        path = store.record_path(record["run_id"])
        path.write_text(damage(record))
        damaged[path] = kind
    report = render("tiny", "smoke", results, wandb=False)  # the intact run
    problems = (results / "tiny" / "smoke" / "tables" / "problems.txt").read_text()
    assert all(str(path) in problems for path in damaged)
    assert len(report.problems) == 11
    assert "metric 'mean_acc_pct' is a str ('high'), expected a number" in problems
    assert "its seed 7 is not its config's seed 0" in problems
    assert "(edited after the run?)" in problems
    assert f"its results_version 4 is not the {tvconv.RESULTS_VERSION} its run_id" in problems
    out = io.StringIO()
    assert run_study(load_spec(spec_path), "smoke", results, out=out) == 0
    text = out.getvalue()
    assert "12 runs, 11 to run" in text
    assert all(f"warning: {path} is damaged" in text for path in damaged)
    records, bad = store.records()
    assert len(records) == 12 and not bad


def test_the_plan_check_decodes_nothing_and_a_run_reads_benchmarks_first(data, monkeypatch):
    from tvconv.data import faces
    from tvconv.train import DataConfig, load_data

    decoded = []
    monkeypatch.setenv("DATA_ROOT", str(data))  # the paper preset's paths, overridden below
    monkeypatch.setattr(faces, "decode_all", lambda items, *_: decoded.append(len(items)))
    overrides = {
        "data.train_root": str(data / "tree"),
        "data.benchmarks": f"{data}/good.bin,{data}/pairs.txt:{data}/images",
        "optim.batch_size": 4,
    }
    out = io.StringIO()
    spec = load_spec("init")
    assert run_study(spec, "paper", data / "r", dry_run=True, out=out, overrides=overrides) == 0
    assert decoded == [] and not (data / "r").exists()
    bad = DataConfig(
        image_size=32, train_root=str(data / "tree"), benchmarks=(str(data / "nine.bin"),)
    )
    with pytest.raises(ValueError, match=r"nine\.bin"):
        load_data(bad)
    assert decoded == []  # refused before the training tree was decoded
