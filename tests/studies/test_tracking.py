"""The W&B mirror as a reviewer sees it: offline runs of a tiny sweep read back from their
transaction logs (flat config, tags, group, axes), reused records, the sync command, the offline
fallback of a sweep without network, and the sweep's log lines off a terminal."""

import io
import re
import sys

import pytest

from studies import tracking
from studies.cli import main
from studies.runner import run_study
from studies.spec import load_spec
from tests.studies.conftest import TINY
from tests.wandb_log import offline_runs

LONGER = TINY.replace("optim.batch_size: 16", "optim.batch_size: 8\n      optim.epochs: 2")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(tracking, "STEP_EVERY", 2)


def sweep(spec_path, results, **kwargs):
    out = io.StringIO()
    code = run_study(load_spec(spec_path), "smoke", results, out=out, seeds=[0], **kwargs)
    assert code == 0, out.getvalue()
    return out.getvalue()


def test_training_runs_have_flat_config_tags_group_and_curves(write_spec, tmp_path, offline):
    results = tmp_path / "results"
    sweep(write_spec(LONGER), results)
    runs = {run.config["model.atom"]: run for run in offline_runs(results)}
    assert set(runs) == {"dw", "tvconv"}
    run = runs["tvconv"]
    assert run.group == "tiny/smoke" and run.job_type == "train"
    assert run.name == "smoke atom=tvconv seed=0"
    assert set(run.tags) == {"tiny", "smoke", "tvconv"}
    config = run.config
    assert {k: config[k] for k in ("study", "preset", "cell", "task", "seed")} == {
        "study": "tiny",
        "preset": "smoke",
        "cell": "atom=tvconv",
        "task": "face",
        "seed": 0,
    }
    assert re.fullmatch(r"[0-9a-f]{16}", config["run_id"])
    assert config["model.init"] and config["optim.epochs"] == 2 and config["data.image_size"] > 0
    assert not any(isinstance(v, dict) for v in config.values()) and "face" not in config
    assert run.metrics["train/*"] == "step" and run.metrics["epoch/*"] == "epoch"
    steps = [row for row in run.history if "train/loss" in row]
    assert [row["step"] for row in steps] == [2, 4, 6, 8]  # 4 steps an epoch, 2 epochs
    assert all(row["train/lr"] > 0 and row["train/images_per_s"] > 0 for row in steps)
    epochs = [row for row in run.history if "epoch/loss" in row]
    assert [row["epoch"] for row in epochs] == [1, 2]
    assert 0 < run.summary["mean_acc_pct"] < 100 and run.summary["macs"] > 0
    assert runs["dw"].tags == ["tiny", "smoke", "dw"]


def test_reused_records_are_mirrored_into_their_study(write_spec, tmp_path, offline):
    results = tmp_path / "results"
    sweep(write_spec(TINY, "tiny"), results)
    other = TINY.replace("[dw, tvconv]", "[dw]").replace("Tiny:", "Other:")
    sweep(write_spec(other, "other"), results)
    (reused,) = [run for run in offline_runs(results) if run.group == "other/smoke"]
    assert "reused" in reused.tags and reused.config["reused_from"] == "tiny/smoke"
    assert reused.config["study"] == "other" and 0 < reused.summary["mean_acc_pct"] < 100
    assert [row["epoch"] for row in reused.history if "epoch/loss" in row] == [1]


def test_a_run_executed_again_leaves_one_w_and_b_run(write_spec, tmp_path, offline):
    """A run resumed after a kill, or re-run with --force, keeps its fixed W&B id: its earlier
    offline run is replaced, not left beside the new one to be uploaded too."""
    results = tmp_path / "results"
    spec = write_spec()
    sweep(spec, results)
    first = {folder.name for folder in tracking.offline_runs(results)}
    sweep(spec, results, force=True)
    folders = tracking.offline_runs(results)
    assert len(folders) == 2 and not first & {folder.name for folder in folders}
    ids = {run.id for run in offline_runs(results)}
    assert all(re.fullmatch(r"tiny-smoke-[0-9a-f]{16}", run_id) for run_id in ids) and len(ids) == 2


def test_a_finished_run_is_on_disk_when_finish_returns(tmp_path, monkeypatch):
    """``run.finish`` only tells wandb-core the run is done and the core flushes the offline log
    later (read at once, a log once held only its 7-byte header): the tracker shuts the core
    down before it returns, so what it wrote can be read, synced or replaced at once."""
    import wandb

    from tests.wandb_log import read_run

    real_teardown = wandb.teardown
    calls = []
    monkeypatch.setattr(wandb, "teardown", lambda: calls.append(1) or real_teardown())
    monkeypatch.setenv("WANDB_MODE", "offline")
    for number in range(3):
        tracker = tracking.Tracker(
            tmp_path, group="g", job_type="train", name="n", config={"a": 1}, run_id=f"r{number}"
        )
        tracker.log({"x": 1.0})
        tracker.finish({"score": 2.5})
        assert len(calls) == number + 1
        (folder,) = tracking.offline_folder(tmp_path).glob(f"offline-run-*-r{number}")
        run = read_run(folder)
        assert run.id == f"r{number}" and run.config == {"a": 1}
        assert run.summary["score"] == 2.5


def test_sync_dry_run_lists_exactly_the_offline_runs(write_spec, tmp_path, offline, capfd):
    results = tmp_path / "results"
    assert main(["sync", "--results", str(results), "--dry-run"]) == 0
    assert "nothing to sync" in capfd.readouterr().out
    sweep(write_spec(), results)
    folders = tracking.offline_runs(results)
    assert len(folders) == 2
    command = tracking.sync_command(folders, dry_run=True)
    assert command[:4] == [sys.executable, "-m", "wandb", "sync"] and "--dry-run" in command
    assert main(["sync", "--results", str(results), "--dry-run"]) == 0
    out = capfd.readouterr()
    text = out.out + out.err
    assert "would upload 2 offline run(s)" in text
    assert "Would sync 2 run(s)" in text
    for folder in folders:
        assert folder.name in text


def test_a_sweep_without_network_goes_offline_after_the_first_failure(
    write_spec, tmp_path, monkeypatch, capfd
):
    import wandb

    real_init = wandb.init
    modes = []

    def init(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise TimeoutError("init timed out after 30 s")
        return real_init(**kwargs)

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "init", init)
    results = tmp_path / "results"
    sweep(write_spec(), results)
    assert modes == ["online", "offline", "offline"]  # one wait, then offline at once
    assert len(offline_runs(results)) == 2
    err = capfd.readouterr().err
    assert err.count("this sweep goes on offline") == 1
    assert not list((results / "wandb").glob(".offline-fallback-*"))  # the marker is the sweep's


def test_progress_is_one_line_per_finished_run_off_a_terminal(write_spec, tmp_path):
    out = sweep(write_spec(), tmp_path / "results")
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(lines) == 2
    assert re.match(
        r"\[1/2\] complete +atom=dw seed=0  mean_acc_pct=[\d.]+  \d+s  "
        r"\[done 1, running 0, failed 0, remaining 1\]  ETA \d+s",
        lines[0],
    )
    assert re.match(
        r"\[2/2\] complete +atom=tvconv seed=0  mean_acc_pct=[\d.]+  \d+s  "
        r"\[done 2, running 0, failed 0, remaining 0\]$",
        lines[1],
    )


def test_a_saved_view_per_study_groups_its_runs_by_cell(capsys):
    from studies.views import study_view

    view = study_view("aug", "quick", "face", entity="team")
    model = view._to_model().model_dump()  # the spec W&B saves, built without the network
    text = str(model)
    assert model["project"] == "tvconv-ablations" and model["entity"] == "team"
    assert "Config(\"study\") == 'aug'" in view.runset_settings.filters
    assert "Config(\"preset\") == 'quick'" in view.runset_settings.filters
    grouping = model["spec"]["section"]["run_sets"][0]["grouping"]
    assert grouping == [{"section": "config", "name": "cell.value"}]
    for metric in ("mean_acc_pct", "pose_acc_pct", "train/loss", "macs"):
        assert metric in text
    assert main(["views", "--entity", "team", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would save aug/quick: TVConv vs depthwise" in out and "profile/" not in out
    assert "would save convergence/quick: depthwise runs" in out  # the depthwise-only check
    assert "would save seg/quick: TVConv vs ASPP and depthwise" in out
    assert main(["views", "--dry-run"]) == 2  # no entity


@pytest.mark.slow
def test_the_run_whose_online_init_failed_is_tracked_offline(tmp_path, monkeypatch, capfd):
    """A real failed online init (a refused port, a short timeout): wandb still holds the run's
    id, so the offline retry of that same run once failed ("run ID is in use") and only the
    sweep's later runs were tracked."""
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(tracking, "INIT_TIMEOUT_S", 5)
    with tracking.sweep_fallback(tmp_path):
        for number in range(2):
            tracker = tracking.Tracker(
                tmp_path, group="g", job_type="train", name="n", config={}, run_id=f"r{number}"
            )
            assert tracker.run is not None
            tracker.finish({"score": 1.0})
    assert sorted(run.id for run in offline_runs(tmp_path)) == ["r0", "r1"]
    assert capfd.readouterr().err.count("this sweep goes on offline") == 1


def test_profile_runs_are_tagged_with_their_atom():
    from studies.spec import load_spec

    runs = load_spec("profile").runs("smoke")
    atoms = {run.config.section.atom for run in runs}
    assert {tuple(tracking.run_tags(run)) for run in runs} == {
        ("profile", "smoke", atom) for atom in atoms
    }


def test_a_run_shorter_than_the_step_window_still_has_a_training_curve(tmp_path, monkeypatch):
    from tests.wandb_log import read_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = tracking.Tracker(
        tmp_path, group="g", job_type="train", name="n", config={}, run_id="r"
    )
    for step in (1, 2, 3):  # fewer than STEP_EVERY, as a smoke run's epoch
        tracker.step({"step": step, "epoch": step / 3, "loss": float(step), "lr": 0.1, "images": 8})
    tracker.epoch({"epoch": 1, "loss": 2.0})
    tracker.finish({})
    (folder,) = tracking.offline_folder(tmp_path).glob("offline-run-*-r")
    curve = [row for row in read_run(folder).history if "train/loss" in row]
    assert [(row["step"], row["train/loss"]) for row in curve] == [(3, 2.0)]


def test_a_real_data_view_charts_the_benchmarks_its_runs_log():
    from studies.views import study_views

    (paper,) = [v for v in study_views("team", "paper") if v.name.startswith("aug/paper")]
    assert [panel.metrics for panel in paper.sections[0].panels][1:] == [
        ["lfw_acc_pct"],
        ["cfp_ff_acc_pct"],
        ["agedb_30_acc_pct"],
        ["calfw_acc_pct"],
    ]
