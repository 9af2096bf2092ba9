"""RunConfig: every knob of one run, typed, validated, hashed.

A run is a face-task training run (``task="face"``: ``tvconv.train.TrainConfig`` under ``face``),
a fundus segmentation run (``task="fundus"``: ``tvconv.segment.FundusConfig`` under ``fundus``)
or a profiling measurement (``task="profile"``: ``ProfileConfig`` under ``profile``). Keys are
dotted paths; a key without the task prefix refers to the run's own task (``model.atom`` means
``face.model.atom`` in a face study, ``fundus.model.atom`` in a fundus one). Values are parsed
against the field's type (``tvconv.train.override``); a bad key or value is an error naming both
and what is allowed.

``run_id`` (DESIGN.md): the first 16 hex digits of the sha256 of the canonical JSON of the
result-affecting fields of the run's task, its seed and ``tvconv.RESULTS_VERSION``. Device,
threads, progress, workers, evaluation batch size and output paths are not part of it, nor are
TVConv options (and the affinity-map weight decay) of a model without TVConv (``atom`` dw or
aspp), so a baseline shared by several cells is one run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, replace

import tvconv
from tvconv import models
from tvconv.profile import FORMS
from tvconv.segment import PRESETS as FUNDUS_PRESETS
from tvconv.segment import FundusConfig
from tvconv.train import PRESETS as TRAIN_PRESETS
from tvconv.train import TrainConfig, override, to_dict

TASKS = ("face", "fundus", "profile")
TRAINING_TASKS = {"face": TRAIN_PRESETS, "fundus": FUNDUS_PRESETS}
RUNTIME_KEYS = ("device", "threads", "progress", "checkpoint_dir")
TVCONV_KEYS = ("select", *models.TVCONV_OPTIONS)


@dataclass(frozen=True)
class ProfileConfig:
    """One profiling measurement: a registry model (``layer_channels`` = 0) or a single layer
    (TVConv's cached form vs a depthwise conv of ``layer_channels`` x ``input_size``^2)."""

    model: str = "mobilenet_v2_x0_1"
    atom: str = "tvconv"
    input_size: int = 96
    form: str = "deploy"
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    threads: tuple[int, ...] = (1, 2)
    inter_channels: int = 64
    inter_layers: int = 3
    layer_channels: int = 0
    layer_stride: int = 1
    min_run_time: float = 0.2

    def __post_init__(self) -> None:
        if self.model not in models.list_models(task="face"):
            raise ValueError(
                f"profile.model={self.model!r} is invalid: expected one of "
                + ", ".join(models.list_models(task="face"))
            )
        if self.atom not in models.ATOMS:
            raise ValueError(f"profile.atom={self.atom!r} is invalid: expected dw or tvconv")
        if self.form not in FORMS:
            raise ValueError(f"profile.form={self.form!r} is invalid: expected train or deploy")
        if not self.batch_sizes or not self.threads:
            raise ValueError("profile.batch_sizes and profile.threads must not be empty")
        if self.layer_stride not in (1, 2):
            raise ValueError(f"profile.layer_stride={self.layer_stride!r}: expected 1 or 2")


@dataclass(frozen=True)
class RunConfig:
    task: str = "face"
    face: TrainConfig = field(default_factory=TrainConfig)
    fundus: FundusConfig = field(default_factory=FundusConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is invalid: expected one of {', '.join(TASKS)}")

    @property
    def section(self) -> TrainConfig | FundusConfig | ProfileConfig:
        """The active task's config."""
        return getattr(self, self.task)

    @property
    def seed(self) -> int:
        return self.fundus.seed if self.task == "fundus" else self.face.seed

    def result_affecting(self) -> dict:
        """The fields that define the run's result (what ``run_id`` hashes)."""
        return {"task": self.task, self.task: result_fields(self.task, to_dict(self.section))}

    @property
    def run_id(self) -> str:
        payload = {
            "config": self.result_affecting(),
            "results_version": tvconv.RESULTS_VERSION,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """The active task's full config (for the record)."""
        return {"task": self.task, self.task: to_dict(self.section)}


def result_fields(task: str, fields: dict) -> dict:
    """A task config as JSON (``to_dict`` of its section, or a record's) without the fields that
    do not affect the result: runtime settings, and TVConv options of a model without TVConv."""
    fields = json.loads(json.dumps(fields))
    if task == "profile":
        return fields
    for key in RUNTIME_KEYS:
        fields.pop(key, None)
    fields.get("eval", {}).pop("batch_size", None)
    if task == "face":
        fields.get("data", {}).pop("workers", None)
    if fields.get("model", {}).get("atom") != "tvconv":
        for key in TVCONV_KEYS:
            fields.get("model", {}).pop(key, None)
        if task == "face":
            fields.get("optim", {}).pop("affinity_weight_decay", None)
    return fields


def flat_config(task: str, fields: dict, prefix: str = "") -> dict:
    """A task config (``to_dict`` of its section, or a record's) as flat dotted keys, lists as
    comma-separated text: the analysis' columns and the W&B config. A profile config's fields
    (flat already) get the prefix ``profile.``."""
    if task == "profile" and not prefix:
        prefix = "profile."
    flat = {}
    for key, value in fields.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(task, value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def base_config(task: str, preset: str) -> RunConfig:
    """The starting point of a preset: a tvconv.train (face) or tvconv.segment (fundus)
    preset."""
    if task in TRAINING_TASKS:
        presets = TRAINING_TASKS[task]
        if preset not in presets:
            raise ValueError(
                f"base preset {preset!r} is invalid: expected one of {', '.join(presets)}"
            )
        return RunConfig(task=task, **{task: presets[preset]()})
    return RunConfig(task=task)


def _as_text(value: object) -> str:
    """A YAML value as the text ``override`` parses (lists as comma-separated items)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def assign(config: RunConfig, key: str, value: object) -> RunConfig:
    """``config`` with ``key`` (dotted; task prefix optional) set to ``value`` (typed or text)."""
    head = key.split(".", 1)[0]
    full_key = (
        key if head in {f.name for f in dataclasses.fields(RunConfig)} else (f"{config.task}.{key}")
    )
    try:
        return override(config, f"{full_key}={_as_text(value)}")
    except ValueError as error:
        raise ValueError(f"{key}={value!r}: {error}") from None


def with_threads(config: RunConfig, threads: int) -> RunConfig:
    """Pin the torch threads of a training run (not part of the run_id)."""
    if config.task not in TRAINING_TASKS:
        return config
    return replace(config, **{config.task: replace(config.section, threads=threads)})
