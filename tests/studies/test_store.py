"""Results store: atomic records, tolerant reader, exclusive locks with stale recovery."""

import json
import os
import subprocess
import sys

import pytest

from studies.store import SCHEMA_VERSION, Store


def record(run_id, status="complete"):
    return {"run_id": run_id, "status": status, "metrics": {"mean_acc_pct": 70.0}}


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


def test_reader_reports_unreadable_files_and_goes_on(tmp_path):
    store = Store(tmp_path, "init", "smoke")
    store.write(record("a" * 16))
    (store.runs_dir / "broken.json").write_text('{"run_id": "x", "sta')
    (store.runs_dir / "other.json").write_text("[1, 2]")
    good, bad = store.records()
    assert [r["run_id"] for r in good] == ["a" * 16]
    assert sorted(path.name for path, _ in bad) == ["broken.json", "other.json"]
    assert store.status("broken") == "missing"


def test_lock_is_exclusive_and_stale_locks_are_recovered(tmp_path):
    store = Store(tmp_path, "init", "smoke")
    assert store.try_lock("r1")
    assert not store.try_lock("r1")  # held by this live process
    store.unlock("r1")
    assert store.try_lock("r1")
    store.unlock("r1")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lock = store.lock_path("r2")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout)}))
    assert store.try_lock("r2")  # the holder is gone: stale, taken over
    assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_events_are_appended(tmp_path):
    store = Store(tmp_path, "init", "smoke")
    store.log_event({"event": "start", "run_id": "r1"})
    store.log_event({"event": "start", "run_id": "r2"})
    assert [e["run_id"] for e in store.events()] == ["r1", "r2"]
