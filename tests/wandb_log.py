"""Read back an offline W&B run from its ``run-<id>.wandb`` transaction log, for the tests.

wandb 0.31 writes the log from its Go core and ships no Python reader any more; the records are
wandb's own protobuf ``Record`` messages (``wandb.proto.wandb_internal_pb2``) in the leveldb log
framing: a 7-byte file header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each with
a 7-byte header (CRC32C, little-endian length, type: 1 full, 2 first, 3 middle, 4 last).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Every ``Record`` of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < HEADER:  # the block's tail is padding
            position += room
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        if kind == 0 and length == 0:
            break
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


@dataclass
class OfflineRun:
    """What a reviewer sees of a run: identity, config, tags, history rows and the summary."""

    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # defined metric -> its step metric


def read_run(folder: Path) -> OfflineRun:
    """The run in an ``offline-run-*`` folder."""
    (log,) = Path(folder).glob("run-*.wandb")
    run = OfflineRun()
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.id, run.name = record.run.run_id, record.run.display_name
            run.group, run.job_type = record.run.run_group, record.run.job_type
            run.tags = list(record.run.tags)
            _update(run.config, record.run.config.update)
        elif kind == "config":
            _update(run.config, record.config.update)
        elif kind == "history":
            run.history.append(
                {_key(item): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "metric":
            run.metrics[record.metric.name or record.metric.glob_name] = record.metric.step_metric
    run.config.pop("_wandb", None)
    return run


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _update(target: dict, items) -> None:
    for item in items:
        target[_key(item)] = json.loads(item.value_json)


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under ``<root>/wandb/wandb``."""
    return [
        read_run(folder)
        for folder in sorted((Path(root) / "wandb" / "wandb").glob("offline-run-*"))
    ]
