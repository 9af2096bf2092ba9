"""Results store: atomic records, tolerant reader, exclusive locks with stale recovery."""

import json
import os
import signal
import subprocess
import sys

import pytest

from studies.store import SCHEMA_VERSION, Store


def record(run_id, status="complete"):
    config = {"task": "face", "face": {}}  # of no RESULTS_VERSION: not checked against run_id
    return {"run_id": run_id, "status": status, "metrics": {"mean_acc_pct": 70.0}, "config": config}


def test_write_read_status(tmp_path):
    store = Store(tmp_path, "init", "smoke")
    assert store.status("a" * 16) == "missing"
    store.write(record("a" * 16))
    store.write(record("b" * 16, "failed"))
    assert store.status("a" * 16) == "done" and store.status("b" * 16) == "failed"
    assert store.read("a" * 16)["metrics"]["mean_acc_pct"] == 70.0
    assert sorted(p.name for p in store.runs_dir.iterdir()) == [
        "a" * 16 + ".json",
        "b" * 16 + ".json",
    ]
    assert SCHEMA_VERSION == 1
    with pytest.raises(ValueError, match="record status must be one of"):
        store.write(record("c" * 16, "running"))


def test_a_record_is_readable_by_whoever_may_read_the_users_files(tmp_path):
    """Written through a temp file (0600), the record takes the umask's mode like any file the
    user creates: a store shared by a group stays readable; no temp file is left."""
    store = Store(tmp_path, "init", "smoke")
    path = store.write(record("a" * 16))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask != 0o600
    assert [p.name for p in store.runs_dir.iterdir()] == ["a" * 16 + ".json"]


def test_reader_reports_unreadable_files_and_goes_on(tmp_path):
    store = Store(tmp_path, "init", "smoke")
    store.write(record("a" * 16))
    (store.runs_dir / "broken.json").write_text('{"run_id": "x", "sta')
    (store.runs_dir / "other.json").write_text("[1, 2]")
    good, bad = store.records()
    assert [r["run_id"] for r in good] == ["a" * 16]
    assert sorted(path.name for path, _ in bad) == ["broken.json", "other.json"]
    assert store.status("broken") == "missing"


HOLD_LOCK = """
import sys, time
from studies.store import Store
assert Store(sys.argv[1], "init", "smoke").try_lock("r1")
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_is_exclusive_and_released_when_its_holder_dies(tmp_path):
    store = Store(tmp_path, "init", "smoke")
    assert store.try_lock("r0") and not store.is_unlocked("r0")
    store.unlock("r0")
    assert store.is_unlocked("r0") and store.try_lock("r0")
    store.unlock("r0")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    assert not store.try_lock("r1") and not store.is_unlocked("r1")
    assert json.loads(store.lock_path("r1").read_text())["pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)  # killed without unlocking
    holder.wait()
    assert store.is_unlocked("r1") and store.try_lock("r1")
    store.unlock("r1")


def test_events_are_appended(tmp_path):
    store = Store(tmp_path, "init", "smoke")
    store.log_event({"event": "start", "run_id": "r1"})
    store.log_event({"event": "start", "run_id": "r2"})
    assert [e["run_id"] for e in store.events()] == ["r1", "r2"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"config": None}, "required field 'config' is missing or null"),
        ({"config": {"task": "face", "face": []}}, "its config holds no object under its task"),
        ({"config": {"face": {}}}, "its config holds no object under its task None"),
        ({"history": [1, 2]}, "history row 1 is a int, expected an object"),
        ({"history": [{"train_acc_pct": "x"}]}, "history row 1: 'train_acc_pct' is 'x'"),
        ({"history": {"epoch": 1}}, "field 'history' is dict, expected list"),
    ],
)
def test_records_the_runner_or_the_analysis_cannot_read_are_damaged(tmp_path, change, why):
    store = Store(tmp_path, "init", "smoke")
    broken = {**record("a" * 16), **change}
    store.runs_dir.mkdir(parents=True)
    store.record_path("a" * 16).write_text(json.dumps(broken))
    assert store.status("a" * 16) == "missing"  # re-run
    assert why in store.damaged("a" * 16)
    missing_config = {k: v for k, v in record("b" * 16).items() if k != "config"}
    store.record_path("b" * 16).write_text(json.dumps(missing_config))
    assert "required field 'config'" in store.damaged("b" * 16)


def test_a_record_nested_past_the_parser_is_damaged_not_a_crash(tmp_path):
    store = Store(tmp_path, "init", "smoke")
    store.runs_dir.mkdir(parents=True)
    store.record_path("a" * 16).write_text("[" * 100_000)
    assert store.damaged("a" * 16).startswith("not readable as JSON")
    assert store.records() == ([], [(store.record_path("a" * 16), store.damaged("a" * 16))])
