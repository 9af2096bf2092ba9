"""The runner end to end on tiny specs: store, resume, failures, locks, pools, SLURM, CLI, W&B."""

import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch

from studies import execute, tracking
from studies.cli import main, parse_seeds
from studies.execute import threads_per_job
from studies.runner import run_study
from studies.spec import SpecError, load_spec, seeds_text
from studies.store import Store
from tests.studies.conftest import TINY

FAILING = """
    description: "Failing: one cell diverges"
    task: face
    base:
      data.synthetic.train_identities: 8
      data.synthetic.images_per_identity: 4
      optim.batch_size: 16
    grid:
      - optim.lr: [0.1, 1.0e30]
    presets:
      smoke: {base: smoke, seeds: [0]}
"""


def run(spec_path, results, **kwargs):
    out = io.StringIO()
    code = run_study(load_spec(spec_path), "smoke", results, out=out, **kwargs)
    return code, out.getvalue()


def test_sweep_writes_records_skips_done_and_forces(write_spec, tmp_path):
    spec, results = write_spec(), tmp_path / "results"
    code, out = run(spec, results)
    assert code == 0
    store = Store(results, "tiny", "smoke")
    records, bad = store.records()
    assert len(records) == 6 and not bad
    first = records[0]
    assert first["schema_version"] == 1 and first["status"] == "complete"
    assert first["study"] == "tiny" and first["preset"] == "smoke" and first["task"] == "face"
    assert first["environment"]["threads"] >= 1 and "git_sha" in first["environment"]
    assert first["metrics"]["macs"] > 0 and first["metrics"]["deployed_params"] > 0
    assert 0 < first["metrics"]["mean_acc_pct"] < 100 and len(first["history"]) == 1
    assert "atom=dw" in out and "atom=tvconv" in out and "mean_acc_pct" in out
    assert "3  0" in out  # n complete, n failed per cell
    code, out = run(spec, results)
    assert code == 0 and "6 runs, 0 to run" in out
    assert len(store.events()) == 6
    code, out = run(spec, results, force=True)
    assert code == 0 and "6 runs, 6 to run" in out and len(store.events()) == 12


def test_a_run_another_study_completed_is_reused_not_executed(write_spec, tmp_path):
    """Same run_id = same config, seed and results version: the record is copied (relabelled,
    with where it came from), nothing is trained; --force executes it anyway."""
    results = tmp_path / "results"
    first = write_spec(TINY, "tiny")
    assert run(first, results)[0] == 0
    # a second study whose dw cell is the same run as tiny's, and a TVConv cell of its own
    other = write_spec(TINY.replace("[dw, tvconv]", "[dw]").replace("Tiny:", "Other:"), "other")
    code, out = run(other, results, dry_run=True)
    assert code == 0 and out.count("(reused from tiny/smoke)") == 3
    code, out = run(other, results)
    assert code == 0 and "3 run(s) reused from other studies" in out
    store = Store(results, "other", "smoke")
    assert store.events() == []  # nothing executed
    records, _ = store.records()
    original = {r["run_id"]: r for r in Store(results, "tiny", "smoke").records()[0]}
    for record in records:
        assert record["study"] == "other" and record["reused_from"] == "tiny/smoke"
        assert record["metrics"] == original[record["run_id"]]["metrics"]
    assert run(other, results, force=True)[0] == 0
    assert len(store.events()) == 3


def test_failed_run_is_recorded_and_retried(write_spec, tmp_path):
    spec, results = write_spec(FAILING, "failing"), tmp_path / "results"
    code, out = run(spec, results)
    assert code == 1
    assert "1 run(s) did not complete" in out and "non-finite loss" in out
    store = Store(results, "failing", "smoke")
    statuses = Counter(r["status"] for r in store.records()[0])
    assert statuses == {"complete": 1, "failed": 1}
    code, out = run(spec, results)
    assert code == 1 and "0 to run" in out
    code, out = run(spec, results, retry_failed=True)
    assert code == 1 and "1 to run" in out


def test_exception_in_a_run_is_recorded_with_its_traceback(write_spec, tmp_path, monkeypatch):
    import dataclasses

    from studies.config import TASKS

    def explode(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setitem(TASKS, "face", dataclasses.replace(TASKS["face"], run=explode))
    code, _ = run(write_spec(), tmp_path / "results")
    assert code == 1
    record = Store(tmp_path / "results", "tiny", "smoke").records()[0][0]
    assert record["status"] == "failed" and "RuntimeError: boom" in record["error"]
    assert "Traceback" in record["error"]


def test_dry_run_lists_status_and_writes_nothing(write_spec, tmp_path):
    code, out = run(write_spec(), tmp_path / "results", dry_run=True)
    assert code == 0 and out.count("missing") == 6
    assert not (tmp_path / "results").exists()


def run_command(spec, results):
    return [
        sys.executable,
        "-m",
        "studies",
        "run",
        str(spec),
        "--preset",
        "smoke",
        "--results",
        str(results),
    ]


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "studies", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "ablate"], "no study 'ablate'"),
        (["run", "init", "--preset", "smoke", "model.widht=2"], "unknown key 'widht'"),
        (["run", "init", "--preset", "smoke", "optim.epochs=two"], "expected a value of type int"),
        (["run", "init", "--preset", "smoke", "model.init=random"], "model.init='random'"),
        (["run", "init", "--preset", "smoke", "epochs"], "not of the form key=value"),
        (
            ["run", "init", "--preset", "smoke", "optim.epochs=2", "optim.epochs=3"],
            "optim.epochs given more than once",
        ),
        (
            ["run", "init", "--preset", "smoke", "threads=1"],
            "the runner sets threads for every run",
        ),
        (
            ["run", "seg", "--preset", "smoke", "optim.batch_size=100000"],
            "optim.batch_size=100000 is invalid: expected at most the 69 training images",
        ),
        (["run", "init", "--preset", "smoke", "--jobs", "0"], "--jobs=0 is invalid"),
        (["run", "init", "--preset", "smoke", "--slurm-cpus", "0"], "--slurm-cpus=0 is invalid"),
        (["run", "init", "--preset", "smoke", "--slurm-gpus", "-1"], "--slurm-gpus=-1 is invalid"),
        (["run", "init", "--slurm-time-min", "0"], "--slurm-time-min=0 is invalid"),
        (["run", "init", "--slurm-mem-gb", "0"], "--slurm-mem-gb=0 is invalid: expected an int"),
        (
            [
                "run",
                "init",
                "--preset",
                "smoke",
                "data.train_root=/no/such/dir",
                "data.benchmarks=/no/lfw.bin",
            ],
            "data.train_root='/no/such/dir' does not exist",
        ),
        (["run", "init", "--preset", "paper"], "DATA_ROOT"),
    ],
)
def test_bad_input_exits_2_before_any_run(tmp_path, args, message):
    env_free = [*args, "--results", str(tmp_path / "results")]
    completed = subprocess.run(
        [sys.executable, "-m", "studies", *env_free],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "DATA_ROOT"},
    )
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    assert not (tmp_path / "results").exists()


def test_task_override_runs_a_question_as_its_own_study(tmp_path):
    out = io.StringIO()
    spec = load_spec("depth")
    assert (
        run_study(spec, "smoke", tmp_path, dry_run=True, overrides={"task": "fundus"}, out=out) == 0
    )
    text = out.getvalue()
    assert text.startswith("depth-fundus / smoke (") and "atom=tvconv select=first:1" in text
    assert not (tmp_path / "depth").exists()


def test_yaml_syntax_error_exits_2(write_spec, tmp_path):
    path = write_spec("task: face\ngrid: [\n", "broken")
    assert main(["run", str(path), "--preset", "smoke", "--results", str(tmp_path / "r")]) == 2


def test_list_shows_studies_presets_and_counts(tmp_path):
    completed = cli("list", "--results", str(tmp_path))
    assert completed.returncode == 0
    rows = [line.split()[:3] for line in completed.stdout.splitlines()]
    assert ["init", "quick", "15"] in rows and ["convergence", "quick", "18"] in rows
    header, *lines = completed.stdout.splitlines()
    offset = header.index("preset")  # the study column fits the longest name: columns line up
    assert all(line[offset:].split()[0] in ("smoke", "quick", "gpu", "paper") for line in lines)
    assert "needs DATA_ROOT" in completed.stdout


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_executes_only_the_missing_runs(write_spec, tmp_path):
    spec, results = write_spec(), tmp_path / "results"
    store = Store(results, "tiny", "smoke")
    process = subprocess.Popen(
        run_command(spec, results), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while len(list(store.runs_dir.glob("*.json"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p.stem for p in store.runs_dir.glob("*.json")}
    assert 2 <= len(done_before) < 6
    completed = subprocess.run(run_command(spec, results), capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert f"6 runs, {6 - len(done_before)} to run" in completed.stdout
    records, bad = store.records()
    assert not bad and len(records) == 6 and len({r["run_id"] for r in records}) == 6
    starts = Counter(e["run_id"] for e in store.events())
    assert all(starts[run_id] == 1 for run_id in done_before)  # finished runs never re-ran
    for path in store.runs_dir.glob("*.json"):
        json.loads(path.read_text())  # nothing truncated


@pytest.mark.slow
def test_two_runners_at_once_execute_each_run_exactly_once(write_spec, tmp_path):
    spec, results = write_spec(), tmp_path / "results"
    command = run_command(spec, results)
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.wait(timeout=600) == 0 and second.wait(timeout=600) == 0
    store = Store(results, "tiny", "smoke")
    starts = Counter(e["run_id"] for e in store.events())
    assert len(starts) == 6 and set(starts.values()) == {1}
    assert len(store.records()[0]) == 6


def test_jobs_split_the_cores_the_process_may_use(monkeypatch):
    """Under a CPU affinity mask (a SLURM allocation, taskset) the workers' threads split the
    allowed cores, not every core of the machine."""
    monkeypatch.setattr(execute.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(
        execute.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False
    )
    assert [threads_per_job(jobs) for jobs in (1, 2, 4, 8)] == [6, 3, 1, 1]
    monkeypatch.delattr(execute.os, "sched_getaffinity")
    assert threads_per_job(2) == 32


@pytest.mark.slow
def test_local_process_pool_with_two_jobs(write_spec, tmp_path):
    code, _ = run(write_spec(), tmp_path / "results", jobs=2)
    assert code == 0
    records = Store(tmp_path / "results", "tiny", "smoke").records()[0]
    assert len(records) == 6 and {r["environment"]["threads"] for r in records} == {
        threads_per_job(2)
    }
    assert len({r["environment"]["host"] for r in records}) == 1


@pytest.mark.slow
def test_slurm_launcher_through_submitit_local_executor(write_spec, tmp_path):
    code, out = run(
        write_spec(),
        tmp_path / "results",
        launcher="slurm",
        slurm={"cluster": "local", "cpus": 1, "time_min": 10},
    )
    assert code == 0, out
    assert "submitted 6 job(s) to local" in out
    assert len(Store(tmp_path / "results", "tiny", "smoke").records()[0]) == 6


def test_wandb_offline_run_writes_its_directory_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = tracking.Tracker(
        tmp_path, group="tiny", job_type="analysis", name="t", config={"a": 1}
    )
    assert tracker.run is not None
    tracker.log({"epoch": 1, "loss": 2.5, "note": "skipped: not a number"})
    tracker.log_table("summary", ["cell", "acc"], [["dw", 60.0], ["tvconv", 65.0]])
    tracker.finish({"mean_acc_pct": 65.0})
    runs = list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("files/media/table/summary_*.table.json"))
    assert list(runs[0].glob("*.wandb"))


def test_wandb_failure_degrades_to_no_tracking(tmp_path, monkeypatch):
    import wandb

    def broken_init(**_kwargs):
        raise TimeoutError("no network")

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "init", broken_init)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = tracking.Tracker(tmp_path, "g", "train", "n", {})
    assert tracker.run is None
    assert any("W&B tracking disabled: TimeoutError: no network" in str(w.message) for w in caught)
    tracker.log({"loss": 1.0})
    tracker.finish({})


def test_cli_runs_a_spec_path(write_spec, tmp_path):
    spec = write_spec()
    assert (
        main(
            [
                "run",
                str(spec),
                "--preset",
                "smoke",
                "--results",
                str(tmp_path / "r"),
                "optim.lr=0.05",
            ]
        )
        == 0
    )
    records = Store(tmp_path / "r", "tiny", "smoke").records()[0]
    assert {r["config"]["face"]["optim"]["lr"] for r in records} == {0.05}
    assert Path(tmp_path / "r" / "tiny" / "smoke" / "models").is_dir()


@pytest.mark.slow
@pytest.mark.parametrize(
    "study", ["aug", "depth", "init", "profile", "seg", "tradeoff", "weightgen"]
)
def test_smoke_preset_of_every_shipped_study(study, tmp_path):
    spec = load_spec(study)
    code = run_study(spec, "smoke", tmp_path, out=io.StringIO())
    assert code == 0
    records, bad = Store(tmp_path, study, "smoke").records()
    assert not bad and len(records) == len(spec.runs("smoke"))
    assert {r["status"] for r in records} == {"complete"}
    if spec.task == "profile":
        model_runs = [r for r in records if "macs" in r["metrics"]]
        assert all(r["metrics"]["macs"] > 0 and r["latency"] for r in model_runs)
        for record in model_runs:  # every counter, taught what TVConv costs, agrees
            metrics = record["metrics"]
            assert metrics["counters_agree"] is True
            assert metrics["macs_fvcore"] == metrics["macs_ptflops"] == metrics["macs"]
            assert metrics["macs_flop_counter"] == metrics["macs"]
            settings = record["config"]["profile"]
            if (settings["atom"], settings["form"]) == ("tvconv", "deploy"):
                assert metrics["macs_stock"] < metrics["macs"]  # stock: TVConv counted as 0
        assert any("ratio_b1_t1" in r["metrics"] for r in records)
    if spec.task == "fundus":
        folder = tmp_path / study / "smoke"
        for record in records:
            metrics = record["metrics"]
            assert 0 <= metrics["dice_cup_pct"] <= 100 and metrics["macs"] > 0
            examples = torch.load(folder / "examples" / f"{record['run_id']}.pt")
            assert examples["probabilities"].shape == examples["masks"].shape
            assert (folder / "models" / f"{record['run_id']}.pt").is_file()


PROFILE_TINY = """
    description: "Tiny profile"
    task: profile
    base:
      profile.batch_sizes: [1]
      profile.threads: [1]
      profile.min_run_time: 0.01
    grid:
      - profile.layer_channels: [4, 8]
        profile.input_size: 8
    presets:
      smoke: {seeds: [0]}
"""


def test_profile_runs_one_at_a_time_whatever_jobs(write_spec, tmp_path):
    code, out = run(write_spec(PROFILE_TINY, "tinyprofile"), tmp_path / "results", jobs=2)
    assert code == 0, out
    assert "running them one at a time (--jobs 1)" in out
    records = Store(tmp_path / "results", "tinyprofile", "smoke").records()[0]
    assert sorted(r["config"]["profile"]["layer_channels"] for r in records) == [4, 8]
    assert all(r["metrics"]["ratio_b1_t1"] > 0 for r in records)


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("10", list(range(10))),
        ("3", [0, 1, 2]),
        ("0-9", list(range(10))),
        ("5-7", [5, 6, 7]),
        ("4-4", [4]),
        ("0,3,7", [0, 3, 7]),
        ("0-2,10", [0, 1, 2, 10]),
        ("10000", list(range(10000))),
        ("4294967295-4294967295", [4294967295]),
        (" 1 , 2-3 ", [1, 2, 3]),
    ],
)
def test_seeds_parse_counts_ranges_and_lists(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("seeds", "text"),
    [
        ([0, 1, 2, 3], "0-3"),
        ([4], "4-4"),
        ([0], "0-0"),
        ([3, 5], "3,5"),
        ([7, 0, 1, 2, 9, 8], "0-2,7-9"),
    ],
)
def test_seeds_text_is_what_the_seeds_option_reads_back(seeds, text):
    assert seeds_text(seeds) == text
    assert parse_seeds(text) == sorted(seeds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "a count of seeds must be >= 1"),
        ("", "is not a seed or a range"),
        ("abc", "'abc' is not a seed or a range"),
        ("-1", "'-1' is not a seed or a range"),
        ("1.5", "'1.5' is not a seed or a range"),
        ("5-3", "the range 5-3 is reversed"),
        ("0-", "'0-' is not a seed or a range"),
        ("1,,2", "'' is not a seed or a range"),
        ("0-3,2", "seed(s) [2] given more than once"),
        ("\u00b2", "'\u00b2' is not a seed or a range"),  # str.isdigit() says yes
        ("10001", "a count of seeds must be at most 10000"),
        ("0-99999999999999", "seed 99999999999999 is above the largest seed, 4294967295"),
        ("4294967296", "a count of seeds must be at most 10000"),
        ("4294967296-4294967296", "seed 4294967296 is above the largest seed"),
        ("0-9999,20000", "10001 seeds, more than the 10000 allowed"),
    ],
)
def test_bad_seeds_are_refused(text, message):
    with pytest.raises(SpecError) as caught:
        parse_seeds(text)
    assert message in str(caught.value)


def test_seeds_option_replaces_the_presets_seeds(write_spec, tmp_path):
    path = str(write_spec())
    completed = cli("run", path, "--preset", "smoke", "--seeds", "0-4", "--dry-run")
    assert completed.returncode == 0, completed.stderr
    assert "10 runs, 10 to run" in completed.stdout  # 2 cells x 5 seeds (the preset has 3)
    assert completed.stdout.splitlines()[0].endswith("; seeds 0-4")
    lines = completed.stdout.splitlines()
    assert {int(line.split()[2]) for line in lines if "missing" in line} == {0, 1, 2, 3, 4}
    code, out = run(path, tmp_path / "results", dry_run=True, seeds=[7])
    assert code == 0 and "2 runs, 2 to run" in out
    twice = cli("run", path, "--preset", "smoke", "--seeds", "0-4", "--seeds", "5", "--dry-run")
    assert twice.returncode == 2 and "--seeds given more than once" in twice.stderr


def test_the_profile_study_says_it_has_no_seeds():
    """Measurements carry no seed: the header named one no run used (``seeds 5-5``)."""
    out = io.StringIO()
    code = run_study(load_spec("profile"), "smoke", "unused", out=out, dry_run=True, seeds=[5, 6])
    assert code == 0
    assert out.getvalue().splitlines()[0].endswith("; no seeds (measurements), --seeds ignored")


def test_seed_given_to_make_reaches_the_runner_and_its_refusal():
    completed = subprocess.run(
        ["make", "-n", "ablation-init", "PY=python", "seed=3"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    (line,) = [line for line in completed.stdout.splitlines() if "studies run" in line]
    assert "init seed=3 ;" in " ".join(line.split())  # the runner refuses it: seeds are --seeds


@pytest.mark.parametrize("value", ["0", "two", "3-1", "1,1", "0-10000000000"])
def test_bad_seeds_exit_2_before_any_run(tmp_path, value):
    completed = cli(
        "run", "init", "--preset", "smoke", "--seeds", value, "--results", str(tmp_path / "r")
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.startswith("error: --seeds ")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("seeds", ["0-9", "0, 3, 7"])
def test_make_passes_seeds_to_the_runner_as_one_argument(seeds):
    dry = subprocess.run(
        ["make", "-n", "ablation-init", f"SEEDS={seeds}", "PY=python"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert f"--seeds '{seeds}'" in dry.stdout


@pytest.mark.parametrize(
    ("runner", "analysis", "recipe"),
    [(0, 0, None), (1, 0, 1), (1, 2, 1), (0, 2, 2), (2, 0, 2)],
)
def test_make_ends_with_the_runners_exit_code_or_the_analysis_when_every_run_finished(
    tmp_path, runner, analysis, recipe
):
    """Some runs failed (1) stays 1 when the analysis then finds no complete run (2); a bad spec
    (2) skips the analysis; the analysis's own failure shows after a clean run."""
    fake = tmp_path / "python"
    fake.write_text(
        f'#!/bin/sh\necho "$2" >> {tmp_path}/calls\n'
        f'[ "$2" = studies ] && exit {runner}\nexit {analysis}\n'
    )
    fake.chmod(0o755)
    done = subprocess.run(
        ["make", "-o", "setup", "ablation-init", f"PY={fake}", f"RESULTS={tmp_path / 'r'}"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    calls = (tmp_path / "calls").read_text().split()
    assert calls == (["studies"] if runner == 2 else ["studies", "analysis"])
    if recipe is None:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0 and f"Error {recipe}" in done.stderr


def test_a_closed_pipe_ends_the_listing_quietly():
    completed = subprocess.run(
        f"{sys.executable} -m studies run aug --seeds 0-299 --dry-run | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.stdout.startswith("aug / quick") and len(completed.stdout.splitlines()) == 1
    assert completed.stderr == ""  # no BrokenPipeError traceback


@pytest.mark.slow
def test_sigint_to_the_runner_alone_stops_its_workers_and_exits_130(write_spec, tmp_path):
    """Ctrl-C reaches the whole process group; a SIGINT sent to the runner alone (kill -INT)
    must stop the runs in flight too, not wait for them to finish, and say it was interrupted
    (130, not 1: no run failed)."""
    spec, results = write_spec(), tmp_path / "results"
    store = Store(results, "tiny", "smoke")
    runner = subprocess.Popen(
        [*run_command(spec, results), "--jobs", "2", "optim.epochs=2000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while len(store.events()) < 2 and time.time() < deadline:  # two runs in flight
        time.sleep(0.2)
    runner.send_signal(signal.SIGINT)
    try:
        _out, err = runner.communicate(timeout=30)
    finally:
        runner.kill()
    assert runner.returncode == 130
    assert "interrupted: the runs in flight stopped" in err and "Traceback" not in err
    assert not list(store.runs_dir.glob("*.json"))  # no run was recorded as done or failed


RUNNER_STAND_IN = """
import os, sys, time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from studies.launch import die_with_parent

if __name__ == "__main__":
    pool = ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 120)  # a run in flight
    time.sleep(120)
"""


def _alive(pid):
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_workers_die_with_the_runner(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER_STAND_IN)
    runner = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    worker = int(runner.stdout.readline())
    assert _alive(worker)
    runner.send_signal(signal.SIGKILL)  # no handler runs: only the kernel can stop the worker
    runner.wait()
    deadline = time.time() + 20
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    survived = _alive(worker)
    if survived:
        os.kill(worker, signal.SIGKILL)  # leave no sleeper behind when the test fails
    assert not survived


@pytest.mark.parametrize("command", [["list"], ["sync", "--dry-run"], ["run", "init", "--dry-run"]])
def test_a_results_root_that_is_a_file_or_under_one_is_refused(command, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main([*command, "--results", str(afile)]) == 2
    assert f"--results {afile}: not a folder" in capsys.readouterr().err
    if command[0] == "run":  # would be created: its nearest existing folder is a file
        assert main([*command, "--results", str(afile / "sub")]) == 2
        assert "cannot be created under" in capsys.readouterr().err


def test_force_and_retry_failed_together_are_refused(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["run", "init", "--preset", "smoke", "--dry-run", "--force", "--retry-failed"])
    assert caught.value.code == 2
    assert "not allowed with argument --force" in capsys.readouterr().err
