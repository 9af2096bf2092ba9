"""The results store: one JSON record per run, the single source of truth.

Layout under the results root (default ``results/``)::

    <study>/<preset>/runs/<run_id>.json    one record per run, written atomically
    <study>/<preset>/locks/<run_id>.lock   held while a runner executes the run
    <study>/<preset>/events.jsonl          append-only log: one "start" line per execution

A record is written to a temp file in the same folder, fsynced and renamed, so a killed process
never leaves half a record. A lock file is created exclusively (O_CREAT | O_EXCL) and names its
holder (host, pid); a lock whose holder process no longer exists on this host is stale and is
taken over. The reader returns every readable record and reports unreadable files instead of
failing on them. The record schema is documented in results/README.md (``SCHEMA_VERSION``).
"""

from __future__ import annotations

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    # ---------------------------------------------------------------- locks and events

    def lock_path(self, run_id: str) -> Path:
        return self.folder / "locks" / f"{run_id}.lock"

    def try_lock(self, run_id: str) -> bool:
        """Take the run's lock; False if a live process holds it. Stale locks are recovered."""
        path = self.lock_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._is_stale(path):
                    return False
                path.unlink(missing_ok=True)
                continue
            holder = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
            with os.fdopen(descriptor, "w") as handle:
                json.dump(holder, handle)
            return True
        return False

    def _is_stale(self, path: Path) -> bool:
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            # Being written right now, or truncated by a killed writer: stale once it is old.
            try:
                return time.time() - path.stat().st_mtime > 60
            except OSError:
                return True
        if holder.get("host") != socket.gethostname():
            return False  # another machine's process (e.g. a SLURM job): cannot check
        return not _pid_alive(int(holder.get("pid", -1)))

    def is_unlocked(self, run_id: str) -> bool:
        """Whether no live process holds the run's lock (a stale lock counts as free)."""
        path = self.lock_path(run_id)
        return not path.exists() or self._is_stale(path)

    def unlock(self, run_id: str) -> None:
        self.lock_path(run_id).unlink(missing_ok=True)

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
