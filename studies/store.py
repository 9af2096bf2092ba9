"""The results store: one JSON record per run, the single source of truth.

Layout under the results root (default ``results/``)::

    <study>/<preset>/runs/<run_id>.json    one record per run, written atomically
    <study>/<preset>/locks/<run_id>.lock   held while a runner executes the run
    <study>/<preset>/events.jsonl          append-only log: one "start" line per execution

A record is written to a temp file in the same folder, fsynced and renamed, so a killed process
never leaves half a record. A run's lock is an exclusive ``flock`` on its lock file (which also
names the holder, host and pid, for people): the kernel releases it when its process dies (on
NFS, when the lease ends), so a killed runner never leaves a run locked. The reader returns every
readable record and reports unreadable files instead of failing on them. The record schema is
documented in results/README.md (``SCHEMA_VERSION``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1
DEFAULT_ROOT = Path("results")
STATUSES = ("complete", "failed")


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
        """The run's record, or None when it is missing or unreadable."""
        try:
            return json.loads(self.record_path(run_id).read_text())
        except (OSError, ValueError):
            return None

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
        path = self.record_path(record["run_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{record['run_id']}.", suffix=".tmp", delete=False
        ) as handle:
            json.dump(record, handle, indent=1, sort_keys=True, allow_nan=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
        return path

    def records(self) -> tuple[list[dict], list[tuple[Path, str]]]:
        """(every readable record, [(unreadable file, why)]), sorted by run_id."""
        good, bad = [], []
        for path in sorted(self.runs_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                if not isinstance(record, dict) or "run_id" not in record:
                    raise ValueError("not a run record")
            except (OSError, ValueError) as error:
                bad.append((path, str(error)))
                continue
            good.append(record)
        return good, bad

    def find_elsewhere(self, run_id: str) -> dict | None:
        """A complete record of ``run_id`` in another study of this preset (the same run_id is
        the same computation: config, seed and results version), or None."""
        for path in sorted(Path(self.root).glob(f"*/{self.preset}/runs/{run_id}.json")):
            if path.parent == self.runs_dir:
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("status") == "complete":
                return record
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
