"""A study's run records -> one tidy pandas DataFrame: one row per run, config and metrics.

Columns: ``run_id``, ``study``, ``preset``, ``cell``, ``seed``, ``status`` (``complete``,
``failed``, or ``stale`` for a record made by another ``tvconv.RESULTS_VERSION``), ``error`` (its
last line), ``results_version``, ``baseline_key`` (which depthwise run a TVConv run is paired
with), every config field flattened (face: ``model.atom``, ``data.augment`` ...; profile:
``profile.atom``, ``profile.batch_sizes`` ...; lists become ``8,32`` strings), every metric, and
``train_seconds`` / ``total_seconds``. Rows are in a stable order (``sort_runs``): the same
records give the same frame. Nothing is dropped silently: failed and stale runs stay in the frame
(``complete_runs`` selects the usable ones) and unreadable files are returned next to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import tvconv
from studies.config import config_columns
from studies.spec import as_text
from studies.store import Store
from tvconv.affinity import list_initialisers
from tvconv.config import TVCONV_FIELDS, result_hash
from tvconv.data.augment import LEVELS
from tvconv.models import list_models
from tvconv.profile.runs import ProfileConfig

# Fields that only matter for TVConv: a TVConv run is paired with the depthwise run whose config
# equals its own once these (and the atom) are removed.
TVCONV_ONLY_FIELDS = ("atom", *TVCONV_FIELDS)

# Sort order of the axes (earlier = more significant) and of the values of the categorical ones.
AXIS_PRIORITY = (
    "model.atom",
    "data.held_out",
    "data.synthetic.layout",
    "model.name",
    "profile.layer_channels",
    "profile.model",
    "profile.input_size",
    "profile.layer_stride",
    "profile.form",
    "profile.atom",
    "data.augment",
    "model.generator",
    "model.init",
    "model.select",
    "model.affinity_channels",
    "model.inter_channels",
    "model.inter_layers",
)
AUGMENT_ORDER = tuple(LEVELS)
VALUE_ORDER = {
    "model.atom": ("aspp", "dw", "tvconv"),
    "profile.atom": ("dw", "tvconv"),
    "data.synthetic.layout": ("aligned", "free"),
    "data.augment": AUGMENT_ORDER,
    "model.init": tuple(
        dict.fromkeys(
            ("ones", "zeros", "normal", "uniform", "coords", "stats", *list_initialisers())
        )
    ),
    "model.name": tuple(list_models()),
    "profile.model": tuple(list_models()),
    "profile.form": ("deploy", "train"),
}


@dataclass(frozen=True)
class StudyFrame:
    runs: pd.DataFrame  # one row per record
    unreadable: list[tuple[Path, str]]  # files the store could not read, and why
    study: str
    preset: str
    records: dict[str, dict]  # the records themselves, by run_id

    @property
    def complete(self) -> pd.DataFrame:
        return complete_runs(self.runs)

    def problems(self) -> list[str]:
        """One line per run that is not used (failed, stale) and per unreadable file."""
        lines = [f"unreadable: {path} ({why})" for path, why in self.unreadable]
        for row in self.runs[self.runs["status"] != "complete"].itertuples():
            lines.append(f"{row.status}: {row.run_id} {row.cell} seed={row.seed}: {row.error}")
        return lines


def task_config(record: dict) -> dict:
    """The record's config without the task wrapper ({"task": ..., "<task>": {...}})."""
    config = record.get("config") or {}
    return config.get(record.get("task") or config.get("task"), {}) or {}


def baseline_key(task: str, config: dict) -> str:
    """Identifies the depthwise run a TVConv run is compared with: the result hash
    (``tvconv.config.result_hash``) of the config without the seed, the atom and the TVConv-only
    fields (a dw run's own key is the same)."""
    stripped = json.loads(json.dumps(config))
    stripped.pop("seed", None)
    groups = [stripped] + [v for v in stripped.values() if isinstance(v, dict) and "atom" in v]
    for group in groups:  # face: config["model"]; profile: the config itself
        for field in TVCONV_ONLY_FIELDS:
            group.pop(field, None)
    return result_hash(task or "", stripped, 12)


def config_key(record: dict) -> str:
    """Identifies a record's configuration: the result hash of its config without the seed (the
    runs of one cell share it, whatever their labels say)."""
    task = record.get("task") or (record.get("config") or {}).get("task") or ""
    fields = dict(task_config(record))
    fields.pop("seed", None)
    return result_hash(task, fields, 12)


LABEL_PART = re.compile(r"(?:^| )(\w+)=(.*?)(?= \w+=|$)")


def _comparable(value: object) -> str:
    """A label or config value as text that compares equal across int / float / bool spellings."""
    parts = as_text(value).split(",") if not isinstance(value, str) else value.split(",")
    normal = []
    for part in parts:
        text = part.strip().lower()
        try:
            number = float(text)
        except ValueError:
            normal.append(text)
            continue
        normal.append(as_text(number) if text not in ("nan", "inf", "-inf") else text)
    return ",".join(normal)


def label_disagreement(record: dict) -> str | None:
    """How a record's cell label contradicts its config (``atom=dw`` on a TVConv run), or None.
    Each ``key=value`` of the label must be the value of a config field of that name."""
    label = str(record.get("cell") or "")
    if label in ("", "base"):
        return None
    flat = config_columns("", task_config(record))
    for key, value in LABEL_PART.findall(label):
        fields = {name: v for name, v in flat.items() if name.split(".")[-1] == key}
        if not fields:
            return f"its label {label!r} names {key}, which its config does not have"
        if not any(_comparable(v) == _comparable(value) for v in fields.values()):
            actual = ", ".join(f"{name}={as_text(v)}" for name, v in fields.items())
            return f"its label {label!r} says {key}={value} but its config has {actual}"
    return None


def _last_line(error: object) -> str:
    lines = [line for line in str(error or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def record_row(record: dict) -> dict:
    config = task_config(record)
    status = record.get("status", "failed")
    if status == "complete" and record.get("results_version") != tvconv.RESULTS_VERSION:
        status = "stale"
    row = {
        "run_id": record["run_id"],
        "study": record.get("study"),
        "preset": record.get("preset"),
        "task": record.get("task"),
        "cell": record.get("cell", ""),
        "seed": record.get("seed"),
        "status": status,
        "error": _last_line(record.get("error"))
        if status != "stale"
        else f"results_version {record.get('results_version')} != {tvconv.RESULTS_VERSION}",
        "results_version": record.get("results_version"),
        "baseline_key": baseline_key(record.get("task"), config),
        "config_key": config_key(record),
    }
    row.update(config_columns(record.get("task"), {k: v for k, v in config.items() if k != "seed"}))
    row.update(record.get("metrics") or {})
    if "latency" in record:  # profile: one dict per (threads, batch) measurement
        row["latency"] = record["latency"]
    timings = record.get("timings") or {}
    for key in ("train_seconds", "total_seconds"):
        if key in timings:
            row[key] = timings[key]
    return row


def value_rank(column: str, value: object) -> tuple:
    """Sort key of one axis value: known categorical order, then numbers, then text."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return (0, 0, "")
    order = VALUE_ORDER.get(column)
    if order is not None and value in order:
        return (1, order.index(value), "")
    if column.endswith(".select"):
        return (1, *select_rank(str(value)))
    if isinstance(value, bool):
        return (1, int(value), "")
    if isinstance(value, (int, float)):
        return (1, float(value), "")
    return (2, 0, str(value))


def select_rank(select: str) -> tuple[float, str]:
    """Insertion patterns from few to many sites: first:K, last:K, explicit ranges, then all."""
    kind, _, count = select.partition(":")
    if kind == "first" and count.isdigit():
        return (1000 + int(count), "")
    if kind == "last" and count.isdigit():
        return (2000 + int(count), "")
    if select == "all":
        return (9000, "")
    start = select.split("-")[0].split(",")[0]
    return (3000 + int(start), select) if start.isdigit() else (8000, select)


def varying_columns(runs: pd.DataFrame) -> list[str]:
    """Config columns whose value differs between runs (the study's axes), most significant
    first."""
    columns = [c for c in runs.columns if "." in c and c != "run_id"]
    varying = [c for c in columns if runs[c].astype(str).nunique() > 1]
    priority = {name: i for i, name in enumerate(AXIS_PRIORITY)}
    return sorted(varying, key=lambda c: (priority.get(c, len(priority)), c))


def sort_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Stable, meaningful row order: by the axes (baseline first), then seed, then run_id."""
    if runs.empty:
        return runs
    axes = varying_columns(runs)
    keys = [
        tuple(value_rank(column, value) for column, value in zip(axes, values, strict=True))
        for values in runs[axes].itertuples(index=False, name=None)
    ]
    order = sorted(
        range(len(runs)),
        key=lambda i: (keys[i], runs["seed"].iloc[i] or 0, runs["run_id"].iloc[i]),
    )
    return runs.iloc[order].reset_index(drop=True)


def cell_order(runs: pd.DataFrame) -> list[str]:
    """The cells in ``sort_runs`` order."""
    return list(dict.fromkeys(sort_runs(runs)["cell"]))


def load_records(records: list[dict]) -> pd.DataFrame:
    """Records (dicts as the store holds them) -> the tidy runs frame, one cell per
    configuration (``distinct_cells``)."""
    if not records:
        return pd.DataFrame(columns=["run_id", "study", "preset", "cell", "seed", "status"])
    return sort_runs(distinct_cells(pd.DataFrame([record_row(record) for record in records])))


def distinct_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by configuration, not by label: when runs of different configurations share
    a label (e.g. one sweep run with ``optim.epochs=2`` and one without), each group's label
    gets the settings that tell them apart (``atom=dw [epochs=2]``), so no row averages two
    configurations. The other way round, runs of one configuration under different labels (a
    record relabelled by hand, a partial label) are one cell, under their most common label."""
    runs = runs.copy()
    for _key, group in runs.groupby("config_key", sort=False):
        counts = group["cell"].value_counts()
        if len(counts) > 1:
            runs.loc[group.index, "cell"] = min(
                counts.items(), key=lambda item: (-item[1], item[0])
            )[0]
    ignored = {"run_id", "seed", "config_key", "baseline_key", "cell", "status", "error"}
    columns = [c for c in runs.columns if "." in c and c not in ignored]
    for label, group in runs.groupby("cell", sort=False):
        if group["config_key"].nunique() < 2:
            continue
        keys = group.drop_duplicates("config_key")
        differing = [c for c in columns if keys[c].astype(str).nunique() > 1]
        for key in keys["config_key"]:
            row = keys[keys["config_key"] == key].iloc[0]
            detail = " ".join(f"{c.split('.')[-1]}={_short(row[c])}" for c in differing)
            chosen = (runs["cell"] == label) & (runs["config_key"] == key)
            runs.loc[chosen, "cell"] = f"{label} [{detail}]" if label != "base" else detail
    return runs


def _short(value: object) -> str:
    return "-" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def load_study(study: str, preset: str = "quick", root: str | Path = "results") -> StudyFrame:
    """Every record of ``results/<study>/<preset>/runs`` as a StudyFrame. A store holding a
    record whose cell label contradicts its config is refused (ValueError naming the files)."""
    store = Store(Path(root), study, preset)
    records, unreadable = store.records()
    contradicted = [
        f"{store.record_path(record['run_id'])}: {why}"
        for record in records
        if (why := label_disagreement(record)) is not None
    ]
    if contradicted:
        raise ValueError(
            f"{study}/{preset}: {len(contradicted)} record(s) whose cell label contradicts "
            "their config (made by an override of a grid key?); remove them and re-run the "
            "cells with --cells:\n  " + "\n  ".join(contradicted)
        )
    by_id = {record["run_id"]: record for record in records}
    return StudyFrame(load_records(records), unreadable, study, preset, by_id)


def complete_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "complete"].reset_index(drop=True)


# Where a profile measurement ran; records written before these fields existed ran at the defaults.
PRECISION_FIELDS = {"profile.device": ProfileConfig.device, "profile.dtype": ProfileConfig.dtype}


def split_profile(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A profile study's complete runs as (model runs, single-layer runs), each with its
    ``profile.device`` and ``profile.dtype`` (the defaults where a record lacks them)."""
    usable = complete_runs(runs).copy()
    for column, default in PRECISION_FIELDS.items():
        usable[column] = usable[column].fillna(default) if column in usable else default
    is_layer = usable.get("profile.layer_channels", pd.Series(0, index=usable.index)) > 0
    return usable[~is_layer], usable[is_layer]


def varying_precision(runs: pd.DataFrame) -> list[str]:
    """The ``PRECISION_FIELDS`` columns of ``split_profile``'s runs that take more than one
    value: the ones a table or figure must name to keep the measurements apart."""
    return [c for c in PRECISION_FIELDS if c in runs and runs[c].nunique() > 1]


def precision_text(row: dict, columns: list[str]) -> str:
    """`` cuda bfloat16``: the row's values of ``columns`` (``varying_precision``), or ``""``."""
    return "".join(f" {row[c]}" for c in columns)


def batch_thread_suffixes(runs: pd.DataFrame, prefix: str) -> list[str]:
    """``b<batch>_t<threads>`` suffixes of the ``<prefix>_b*_t*`` metrics, by threads then
    batch."""
    found = set()
    for column in runs.columns:
        match = re.fullmatch(rf"{prefix}_b(\d+)_t(\d+)", column)
        if match and runs[column].notna().any():
            found.add((int(match[2]), int(match[1])))
    return [f"b{batch}_t{threads}" for threads, batch in sorted(found)]
