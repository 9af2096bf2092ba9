"""``python -m analysis``: files written, deterministic tables, clear errors, W&B summary run."""

import json

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.report import render
from studies.store import Store
from tests.analysis.conftest import face_record
from tests.analysis.test_figures import profile_records
from tests.wandb_log import read_run
from tvconv.config import result_hash


def test_cli_writes_tables_and_figures_and_prints_markdown(aug_store, capsys):
    root = aug_store.root
    assert main(["aug", "--results", str(root), "--no-wandb"]) == 0
    out = capsys.readouterr().out
    assert "## aug / quick" in out and "| atom=tvconv augment=hflip | 3 |" in out
    folder = root / "aug" / "quick"
    for name in (
        "tables/aug.md",
        "tables/aug.tex",
        "tables/aug.csv",
        "figures/aug.png",
        "figures/aug.pdf",
    ):
        assert (folder / name).stat().st_size > 0, name
    first = {p.name: p.read_bytes() for p in (folder / "tables").iterdir()}
    assert main(["aug", "--results", str(root), "--no-wandb", "--quiet"]) == 0
    second = {p.name: p.read_bytes() for p in (folder / "tables").iterdir()}
    assert first == second


def test_cli_all_renders_every_study_with_records(aug_store, capsys):
    from studies.store import Store

    profile = Store(aug_store.root, "profile", "quick")
    for record in profile_records():
        profile.write(record)
    assert main(["--all", "--results", str(aug_store.root), "--no-wandb", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "aug / quick: wrote" in out and "profile / quick: wrote" in out
    tables = aug_store.root / "profile" / "quick" / "tables"
    assert (
        "| mobilenet_v2_x0_1 | 96 | tvconv | deploy | 18.00 |"
        in (tables / "profile_models.md").read_text()
    )
    assert "| 48 | 24 | 2 | 2.00 | 3.00 |" in (tables / "profile_layers.md").read_text()


def test_cli_errors(tmp_path, capsys):
    assert main(["init", "--results", str(tmp_path), "--no-wandb"]) == 2
    assert "no complete runs of init/quick" in capsys.readouterr().err
    with pytest.raises(SystemExit) as error:
        main(["nosuchstudy"])
    assert error.value.code == 2
    assert "unknown study nosuchstudy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
    with pytest.raises(SystemExit):
        main(["layout", "--real", str(tmp_path / "missing")])


def test_every_named_study_is_checked_before_any_is_written(aug_store, capsys):
    """``aug init``: init has no runs, so nothing is written, aug's tables included."""
    argv = ["aug", "init", "--results", str(aug_store.root), "--no-wandb", "--quiet"]
    assert main(argv) == 2
    assert "no complete runs of init/quick" in capsys.readouterr().err
    assert not (aug_store.root / "aug" / "quick" / "tables").exists()


def test_a_study_with_only_failed_runs_says_so_and_how_to_re_run_them(aug_store, capsys):
    failed = face_record("init", "atom=dw", 0, 0.0, status="failed", **{"model.atom": "dw"})
    Store(aug_store.root, "init", "quick").write(failed)
    assert main(["init", "--results", str(aug_store.root), "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert "no complete runs of init/quick" in err and ": 1 failed;" in err
    assert "python -m studies run init --preset quick --retry-failed" in err
    assert "RuntimeError: boom" in err  # why it failed


def test_nothing_to_render_is_an_error_not_a_silent_success(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["--all", "--results", str(missing), "--no-wandb"]) == 2
    assert f"no study has records under {missing}" in capsys.readouterr().err
    a_file = tmp_path / "results.txt"
    a_file.write_text("")
    with pytest.raises(SystemExit) as error:
        main(["aug", "--results", str(a_file)])
    assert error.value.code == 2
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as error:
        main(["init", "--task", "bogus", "--results", str(tmp_path)])
    assert error.value.code == 2
    assert "unknown task bogus; expected one a study's spec asks of: fundus" in (
        capsys.readouterr().err
    )


def test_a_spec_that_does_not_load_is_reported_in_one_line(tmp_path, capsys, monkeypatch):
    from studies import spec

    specs = tmp_path / "specs"
    specs.mkdir()
    for path in spec.SPEC_DIR.glob("*.yaml"):
        (specs / path.name).write_text(path.read_text())
    (specs / "broken.yaml").write_text("name: [unclosed\n")
    monkeypatch.setattr(spec, "SPEC_DIR", specs)
    assert main(["init", "--results", str(tmp_path), "--no-wandb"]) == 2
    assert "broken.yaml: YAML syntax error" in capsys.readouterr().err


def test_a_store_the_verdicts_refuse_is_refused_before_any_file_and_the_readme_kept(
    aug_store, tmp_path, capsys
):
    """Runs of one cell at two training lengths make a contrast's selector match two cells:
    the study is refused before its tables are written, and --readme keeps the old block."""
    from analysis.report import README_BEGIN, README_END

    longer = face_record(
        "aug",
        "atom=tvconv augment=hflip",
        0,
        70.0,
        **{"data.augment": "hflip", "optim.epochs": 9},
    )
    aug_store.write(longer)
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\nkept\n{README_END}\n")
    argv = ["aug", "--results", str(aug_store.root), "--no-wandb", "--readme", str(readme)]
    assert main(argv) == 2
    assert "matches several cells" in capsys.readouterr().err
    assert not (aug_store.root / "aug" / "quick" / "tables").exists()
    assert not (aug_store.root / "aug" / "quick" / "figures").exists()
    assert readme.read_text() == f"{README_BEGIN}\nkept\n{README_END}\n"
    argv = ["--all", "--results", str(aug_store.root), "--no-wandb", "--readme", str(readme)]
    assert main(argv) == 2
    assert "is left as it was" in capsys.readouterr().err
    assert readme.read_text() == f"{README_BEGIN}\nkept\n{README_END}\n"


def test_a_run_without_its_headline_is_named_in_the_problems(aug_store):
    record = face_record("aug", "atom=dw augment=rot30", 2, 57.0, **{"model.atom": "dw"})
    record = {**record, "metrics": {**record["metrics"], "mean_acc_pct": float("nan")}}
    record["config"]["face"]["data"]["augment"] = "rot30"
    record["run_id"] = result_hash("face", record["config"]["face"])
    aug_store.write(record)
    report = render("aug", "quick", aug_store.root, wandb=False)
    assert any(
        line.startswith(f"no mean_acc_pct: {record['run_id']} atom=dw augment=rot30 seed=2")
        for line in report.problems
    )


def test_failed_runs_are_reported_in_problems_file(aug_store):
    from tests.analysis.conftest import face_record

    aug_store.write(
        face_record(
            "aug",
            "atom=tvconv augment=shift10",
            0,
            0.0,
            status="failed",
            **{"data.augment": "shift10"},
        )
    )
    report = render("aug", "quick", aug_store.root, wandb=False)
    assert len(report.problems) == 1
    problems = aug_store.root / "aug" / "quick" / "tables" / "problems.txt"
    assert "RuntimeError: boom" in problems.read_text()
    (failed,) = [p for p in aug_store.runs_dir.glob("*.json") if "boom" in p.read_text()]
    failed.unlink()  # the run is gone: a re-render lists no problem, and leaves no stale list
    assert render("aug", "quick", aug_store.root, wandb=False).problems == []
    assert not problems.exists()


def test_wandb_summary_run_offline_is_one_run_with_numeric_tables(aug_store, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    render("aug", "quick", aug_store.root, wandb=True)
    render("aug", "quick", aug_store.root, wandb=True)  # a re-render replaces the summary run
    (folder,) = (aug_store.root / "wandb" / "wandb").glob("offline-run-*")
    run = read_run(folder)
    assert run.id == "summary-aug-quick" and run.group == "aug/quick"
    assert run.job_type == "analysis" and set(run.tags) == {"aug", "quick", "summary"}
    assert list(folder.glob("files/media/images/aug_*.png"))
    (cells,) = folder.glob("files/media/table/cells_*.table.json")
    table = json.loads(cells.read_text())
    columns = table["columns"]
    assert columns[:7] == ["cell", "metric", "n", "mean", "std", "ci_low", "ci_high"]
    assert {"diff", "diff_ci_low", "diff_ci_high", "diff_p_holm", "diff_wins"} <= set(columns)
    rows = [dict(zip(columns, row, strict=True)) for row in table["data"]]
    for row in rows:
        assert isinstance(row["mean"], float) and isinstance(row["n"], int)
    tvconv = [row for row in rows if row["cell"].startswith("atom=tvconv")]
    assert tvconv and all(isinstance(row["diff"], float) for row in tvconv)
    assert all(row["diff"] is None for row in rows if "atom=dw" in row["cell"])
    (numbers,) = folder.glob("files/media/table/numbers_*.table.json")
    numeric = json.loads(numbers.read_text())
    assert all(not isinstance(v, str) for row in numeric["data"] for v in row[2:])
    assert run.summary["problems"] == 0


def test_cell_summary_of_a_study_without_paired_cells():
    """A depthwise-only study (``convergence``) has no ``diff_`` rows or columns: its summary
    keeps the diff columns, empty."""
    from analysis.report import cell_summary

    numbers = pd.DataFrame(
        {
            "cell": ["epochs=320", "epochs=640"],
            "metric": ["mean_acc_pct"] * 2,
            "n": [5, 5],
            "mean": [77.1, 77.4],
            "std": [1.3, 1.4],
            "ci_low": [75.5, 75.7],
            "ci_high": [78.7, 79.1],
        }
    )
    summary = cell_summary(numbers, "mean_acc_pct")
    assert list(summary["cell"]) == ["epochs=320", "epochs=640"]
    assert list(summary["mean"]) == [77.1, 77.4]
    assert summary["diff"].isna().all() and summary["diff_wins"].isna().all()


def test_readme_results_block_is_regenerated_from_the_rendered_files(aug_store, tmp_path, capsys):
    from analysis.report import README_BEGIN, README_END

    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{README_BEGIN}\nold text\n{README_END}\n\n## After\n")
    root = str(aug_store.root)
    assert main(["aug", "--results", root, "--no-wandb", "--quiet", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old text" not in text and text.startswith("# Title\n") and text.endswith("## After\n")
    assert "### Question 1: robustness to augmentation (`aug`, quick preset)" in text
    assert "![aug: aug](results/aug/quick/figures/aug.png)" in text  # from the README's folder
    assert "| atom=tvconv augment=hflip | 3 |" in text
    assert "Trained on: 16 synthetic identities x 4 images, 4 steps.\n" in text
    assert main(["--results", root, "--readme", str(readme)]) == 0
    assert "results block unchanged" in capsys.readouterr().out
    readme.write_text("# no markers\n")
    assert main(["--results", root, "--readme", str(readme)]) == 2
    assert "has no results block" in capsys.readouterr().err
    readme.write_text(f"{README_END}\n{README_BEGIN}\n")  # in the wrong order
    assert main(["--results", root, "--readme", str(readme)]) == 2
    assert "has no results block" in capsys.readouterr().err
    readme.write_text(f"{README_BEGIN}\nkept\n{README_END}\n")
    empty = str(tmp_path / "no_results")  # a mistyped --results must not empty the block
    assert main(["--results", empty, "--readme", str(readme)]) == 2
    assert "no rendered results of the quick preset" in capsys.readouterr().err
    assert readme.read_text() == f"{README_BEGIN}\nkept\n{README_END}\n"


def test_a_readme_that_cannot_take_the_results_fails_before_any_table_is_rendered(
    aug_store, tmp_path, capsys
):
    tables = aug_store.root / "aug" / "quick" / "tables"
    assert not tables.exists()
    missing = tmp_path / "missing.md"
    argv = ["aug", "--results", str(aug_store.root), "--no-wandb", "--quiet"]
    assert main([*argv, "--readme", str(missing)]) == 2
    assert "cannot be read" in capsys.readouterr().err and not tables.exists()
    assert not missing.exists()


def test_verdicts_are_rendered_printed_and_in_the_readme(tmp_path, capsys, monkeypatch):
    """The aug study's declared contrasts judged on records with a known answer: TVConv +2 on
    every seed under the flip, no gain under shift20 (its gap shrinks: reproduced)."""
    from analysis.report import README_BEGIN, README_END

    root = tmp_path / "results"
    store = Store(root, "aug", "quick")
    values = {("dw", "hflip"): 60.0, ("tvconv", "hflip"): 62.0}
    values |= {("dw", "shift20"): 57.0, ("tvconv", "shift20"): 57.0}
    for (atom, augment), accuracy in values.items():
        for seed in range(5):
            store.write(
                face_record(
                    "aug",
                    f"atom={atom} augment={augment}",
                    seed,
                    accuracy + (0.3 * seed if atom == "tvconv" else 0.0),
                    **{"model.atom": atom, "data.augment": augment},
                )
            )
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    assert main(["aug", "--results", str(root), "--no-wandb", "--readme", str(readme)]) == 0
    out = capsys.readouterr().out
    assert "TVConv - dw gap: flip minus shift20" in out and "**reproduced**" in out
    verdicts = pd.read_csv(root / "aug" / "quick" / "tables" / "aug_verdicts.csv")
    row = verdicts.set_index("name").loc["TVConv - dw gap: flip minus shift20"]
    assert row["n"] == 5 and row["mean"] == pytest.approx(2.0)  # (2 + 0.3 s) - (0 + 0.3 s)
    assert row["verdict"] == "reproduced" and row["seeds_needed"] == 2
    assert "TVConv - dw gap: aligned minus layout-free" not in set(verdicts["name"])  # not run
    text = readme.read_text()
    assert "### Verdicts at a glance (quick preset)" in text
    assert "| `aug` | TVConv - dw gap: flip minus shift20 |" in text
    monkeypatch.setenv("WANDB_MODE", "offline")  # the summary run holds them as numbers
    render("aug", "quick", root, wandb=True)
    (run,) = (root / "wandb" / "wandb").glob("offline-run-*")
    assert list(run.glob("files/media/table/verdicts_*.table.json"))


def test_a_question_asked_of_the_fundus_task_names_the_command_that_writes_it(tmp_path, capsys):
    assert main(["aug", "--task", "fundus", "--results", str(tmp_path), "--no-wandb"]) == 2
    error = capsys.readouterr().err
    assert "no complete runs of aug-fundus/quick" in error
    assert "python -m studies run aug task=fundus --preset quick" in error


def test_training_text_tells_apart_the_training_sets_and_lengths_a_store_holds():
    """The README line under a face study's heading reads the records: one setting when every
    complete run agrees, each setting with its run count when they differ; failed runs and
    other tasks do not count."""
    from analysis.frame import load_records
    from analysis.report import training_text

    def runs(*records):
        return load_records(list(records))

    base = face_record("tradeoff", "atom=dw", 0, 70.0)
    assert training_text(runs(base)) == "16 synthetic identities x 4 images, 4 steps"
    longer = face_record("tradeoff", "atom=dw", 1, 70.0, **{"optim.epochs": 2})
    assert training_text(runs(base, longer)) == (
        "16 synthetic identities x 4 images; 4 steps (1 run), 8 steps (1 run)"
    )
    wider = [
        face_record("tradeoff", "atom=dw", seed, 70.0, **{"data.synthetic.train_identities": 64})
        for seed in (2, 3)
    ]
    failed = face_record("tradeoff", "atom=dw", 4, 70.0, status="failed")
    assert training_text(runs(base, *wider, failed)) == (
        "16 synthetic identities x 4 images, 4 steps (1 run); "
        "64 synthetic identities x 4 images, 16 steps (2 runs)"
    )
    real = face_record("tradeoff", "atom=dw", 5, 70.0, **{"data.train_root": "/data/casia"})
    assert training_text(runs(real)) == "the images under `/data/casia`, 1 epoch"
    assert training_text(runs(failed)) is None
