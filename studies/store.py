"""The results store: one JSON record per run, the single source of truth.

Layout under the results root (default ``results/``)::

    <study>/<preset>/runs/<run_id>.json    one record per run, written atomically
    <study>/<preset>/locks/<run_id>.lock   held while a runner executes the run
    <study>/<preset>/events.jsonl          append-only log: one "start" line per execution

A record is written to a temp file in the same folder, fsynced and renamed, so a killed process
never leaves half a record. A run's lock is an exclusive ``flock`` on its lock file (which also
names the holder, host and pid, for people): the kernel releases it when its process dies (on
NFS, when the lease ends), so a killed runner never leaves a run locked. A record file that is
not a complete, well-formed record (unreadable, truncated, not a JSON object, a required field
missing or of the wrong type, a complete record without numeric metrics, a record of this
``RESULTS_VERSION`` whose config no longer hashes to its run_id or whose seed is not its
config's: ``damage``) counts as missing, so the runner re-runs it, and ``records`` reports it
with the reason instead of failing on it. The record schema is documented
in results/README.md (``SCHEMA_VERSION``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import tvconv
from tvconv._files import write_text_atomically
from tvconv.config import result_hash

SCHEMA_VERSION = 1
DEFAULT_ROOT = Path("results")
STATUSES = ("complete", "failed")
# Fields a record must hold, and the JSON types of those it holds (``record_base`` writes them
# all; the analysis reads every other field with a default).
REQUIRED_FIELDS = ("run_id", "status", "config")
FIELD_TYPES = {
    "run_id": str,
    "status": str,
    "study": str,
    "preset": str,
    "cell": str,
    "seed": int,
    "task": str,
    "config": dict,
    "history": list,
}


def damage(record: object, run_id: str | None = None) -> str | None:
    """Why ``record`` (parsed JSON) is not a usable run record, or None when it is one: not an
    object, a required field missing or null, a field of the wrong type (null included), an
    unknown status, a complete record without its metrics object or with a metric that is not a
    number, a history that is not a list of epoch rows of numbers, a config without its task's
    section or that does not match its run_id, seed or task. With ``run_id`` (its file's name),
    the record must carry that run_id."""
    if not isinstance(record, dict):
        return f"holds a JSON {type(record).__name__}, not a record object"
    for key in REQUIRED_FIELDS:
        if record.get(key) is None:
            return f"required field {key!r} is missing or null"
    for key, kind in FIELD_TYPES.items():
        value = record.get(key, kind())
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            found = "null" if value is None else type(value).__name__
            return f"field {key!r} is {found}, expected {kind.__name__}"
    if record["status"] not in STATUSES:
        return f"status {record['status']!r} is not one of {', '.join(STATUSES)}"
    if record["status"] == "complete" and not isinstance(record.get("metrics"), dict):
        return "a complete record whose 'metrics' is missing or not an object"
    if record["status"] == "complete" and (why := _metrics_damage(record["metrics"])):
        return why
    if why := _history_damage(record.get("history", [])):
        return why
    if run_id is not None and record["run_id"] != run_id:
        return f"holds run_id {record['run_id']!r}, not its file's {run_id!r}"
    return _config_damage(record)


def _history_damage(history: list) -> str | None:
    """Why a record's history (one row per epoch) cannot be read: a row that is not an object,
    or a value in it that is not a number."""
    for number, row in enumerate(history, start=1):
        if not isinstance(row, dict):
            return f"history row {number} is a {type(row).__name__}, expected an object"
        if found := _not_a_number(row):
            return f"history row {number}: {found[0]!r} is {found[1]!r}, expected a number"
    return None


def _metrics_damage(metrics: dict) -> str | None:
    """Why a complete record's metrics cannot be used: none at all, or a value that is not a
    number (null, a NaN and a bool such as ``counters_agree`` are numbers here)."""
    if not metrics:
        return "a complete record with no metrics"
    if found := _not_a_number(metrics):
        key, value = found
        return f"metric {key!r} is a {type(value).__name__} ({value!r}), expected a number"
    return None


def _not_a_number(row: dict) -> tuple[str, object] | None:
    """The first (key, value) of ``row`` that is not a number (null, NaN and bools are)."""
    return next(
        ((k, v) for k, v in row.items() if v is not None and not isinstance(v, (int, float))), None
    )


def _config_damage(record: dict) -> str | None:
    """Why a record does not belong to its run_id: one of this ``RESULTS_VERSION`` whose config
    no longer hashes to it, or whose seed or task differ from its config's; one of another
    version that carries this version's run_id (a record edited after its run). Records without
    config without its task's section is damaged; a genuinely stale record is not (the
    analysis lists it)."""
    config = record["config"]
    task = config.get("task")
    section = config.get(task) if isinstance(task, str) else None
    if not isinstance(section, dict):
        return f"its config holds no object under its task {task!r}"
    if record.get("results_version") != tvconv.RESULTS_VERSION:
        try:  # a stale record of this version's run_id: its results_version was edited
            current = result_hash(task, section) == record["run_id"]
        except (AttributeError, TypeError, ValueError):
            current = False
        if current:
            return (
                f"its results_version {record.get('results_version')!r} is not the "
                f"{tvconv.RESULTS_VERSION} its run_id was made with (edited after the run?)"
            )
        return None
    if record.get("task", task) != task:
        return f"its task {record['task']!r} is not its config's {task!r}"
    if "seed" in section and "seed" in record and section["seed"] != record["seed"]:
        return f"its seed {record['seed']} is not its config's seed {section['seed']}"
    try:
        expected = result_hash(task, section)
    except (AttributeError, TypeError, ValueError) as error:
        return f"its config cannot be read ({error})"
    if expected != record["run_id"]:
        return (
            f"its config hashes to run_id {expected}, not to its {record['run_id']!r} "
            "(edited after the run?)"
        )
    return None


# Lock files this process holds, by path -> open file descriptor (the flock lives on it).
_HELD: dict[Path, int] = {}


@dataclass(frozen=True)
class Store:
    root: Path
    study: str
    preset: str

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.study / self.preset

    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"

    def record_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def read(self, run_id: str) -> dict | None:
        """The run's record, or None when it is missing or damaged (see ``damage``)."""
        record, _why = self._load(self.record_path(run_id))
        return record

    def damaged(self, run_id: str) -> str | None:
        """Why the run's record file is damaged, or None (no file, or a usable record)."""
        return self._load(self.record_path(run_id))[1]

    @staticmethod
    def _load(path: Path) -> tuple[dict | None, str | None]:
        """(the record, None) or (None, why it cannot be used; None when the file is absent)."""
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, RecursionError) as error:  # unreadable, truncated, not JSON
            return None, f"not readable as JSON ({error})"
        why = damage(record, path.stem)
        return (None, why) if why else (record, None)

    def status(self, run_id: str) -> str:
        """done | failed | missing."""
        record = self.read(run_id)
        if record is None:
            return "missing"
        return "done" if record.get("status") == "complete" else "failed"

    def write(self, record: dict) -> Path:
        """Atomically write a run record (temp file + fsync + rename)."""
        if record.get("status") not in STATUSES:
            raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')}")
        text = json.dumps(record, indent=1, sort_keys=True, allow_nan=True)
        return write_text_atomically(self.record_path(record["run_id"]), text)

    def records(self) -> tuple[list[dict], list[tuple[Path, str]]]:
        """(every readable record, [(unreadable file, why)]), sorted by run_id."""
        good, bad = [], []
        for path in sorted(self.runs_dir.glob("*.json")):
            record, why = self._load(path)
            if record is None:
                bad.append((path, why or "vanished while read"))
            else:
                good.append(record)
        return good, bad

    def find_elsewhere(self, run_id: str) -> dict | None:
        """A complete record of ``run_id`` in another study of this preset (the same run_id is
        the same computation: config, seed and results version), or None."""
        for path in sorted(Path(self.root).glob(f"*/{self.preset}/runs/{run_id}.json")):
            if path.parent == self.runs_dir:
                continue
            record, _why = self._load(path)
            if record is not None and record["status"] == "complete":  # where it lives
                return {**record, "study": path.parents[2].name, "preset": path.parents[1].name}
        return None

    # ---------------------------------------------------------------- locks and events

    def lock_path(self, run_id: str) -> Path:
        return self.folder / "locks" / f"{run_id}.lock"

    def try_lock(self, run_id: str) -> bool:
        """Take the run's lock (an exclusive ``flock`` on its lock file, held until ``unlock``
        or until this process dies); False if another process holds it."""
        path = self.lock_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)  # for people, not for locking
        _HELD[path] = descriptor
        return True

    def is_unlocked(self, run_id: str) -> bool:
        """Whether no process holds the run's lock right now."""
        path = self.lock_path(run_id)
        if path in _HELD:
            return False
        try:
            descriptor = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        else:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            return True
        finally:
            os.close(descriptor)

    def unlock(self, run_id: str) -> None:
        """Release a lock this process holds (lock files stay: removing one could let two
        processes lock two different files)."""
        descriptor = _HELD.pop(self.lock_path(run_id), None)
        if descriptor is not None:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)

    def log_event(self, event: dict) -> None:
        """Append one JSON line to events.jsonl (a single write: atomic for short lines)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.time(), **event}) + "\n"
        descriptor = os.open(self.folder / "events.jsonl", os.O_CREAT | os.O_APPEND | os.O_WRONLY)
        try:
            os.write(descriptor, line.encode())
        finally:
            os.close(descriptor)

    def events(self) -> list[dict]:
        path = self.folder / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
