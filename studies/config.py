"""RunConfig: every knob of one run, typed, validated, hashed; the table of tasks.

A run is a face-task training run (``task="face"``: ``tvconv.train.TrainConfig`` under ``face``),
a fundus segmentation run (``task="fundus"``: ``tvconv.segment.FundusConfig`` under ``fundus``)
or a profiling measurement (``task="profile"``: ``tvconv.profile.ProfileConfig`` under
``profile``); ``TASKS`` maps each task to its config class, its base presets, what runs it and
its summary metrics. Keys are dotted paths; a key without the task prefix refers to the run's own
task (``model.atom`` means ``face.model.atom`` in a face study, ``fundus.model.atom`` in a fundus
one). Values are parsed against the field's type (``tvconv.config.override``); a bad key or
value is an error naming both and what is allowed.

``run_id``: ``tvconv.config.result_hash`` of the run's task config (its result-affecting fields,
the seed among them, and ``tvconv.RESULTS_VERSION``). Device, threads, progress, workers,
evaluation batch size and output paths are not part of it, nor are TVConv options (and the
affinity-map weight decay) of a model without TVConv (``atom`` dw or aspp), so a baseline shared
by several cells is one run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tvconv import profile, segment, train
from tvconv.config import override, result_hash, to_dict
from tvconv.profile import ProfileConfig
from tvconv.segment import FundusConfig
from tvconv.train import TrainConfig


@dataclass(frozen=True)
class Task:
    """What the runner needs of a task: its config class, the base presets a study starts
    from, the function that runs one config, and the metrics a sweep's summary shows."""

    config: type
    presets: dict[str, Callable[[], object]]
    run: Callable
    summary: tuple[str, ...]

    @property
    def trains(self) -> bool:
        return bool(self.presets)


TASKS = {
    "face": Task(TrainConfig, train.PRESETS, train.fit, ("mean_acc_pct", "mean_auc_pct")),
    "fundus": Task(
        FundusConfig,
        segment.PRESETS,
        segment.fit_fundus,
        ("dice_cup_pct", "dice_disc_pct", "hd95_cup_px", "hd95_disc_px"),
    ),
    "profile": Task(
        ProfileConfig,
        {},
        profile.run,
        ("macs", "deployed_params", "latency_ms_b1_t1", "ratio_b1_t1"),
    ),
}


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

    @property
    def run_id(self) -> str:
        return result_hash(self.task, to_dict(self.section))

    def to_dict(self) -> dict:
        """The active task's full config (for the record)."""
        return {"task": self.task, self.task: to_dict(self.section)}


def flat_config(fields: dict, prefix: str = "") -> dict:
    """A nested config dict as {dotted key: value}, values as they are: what a spec's
    selectors match (``studies.spec.Run.settings``)."""
    flat = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_columns(task: str, fields: dict) -> dict:
    """A task config (``to_dict`` of its section, or a record's) as flat dotted keys, lists as
    comma-separated text: the analysis' columns and the W&B config. A profile config's fields
    (flat already) get the prefix ``profile.``."""
    flat = flat_config(fields, "profile." if task == "profile" else "")
    return {
        name: ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
        for name, value in flat.items()
    }


def base_config(task: str, preset: str) -> RunConfig:
    """The starting point of a preset: a tvconv.train (face) or tvconv.segment (fundus)
    preset."""
    presets = TASKS[task].presets
    if presets:
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


def with_runtime(config: RunConfig, threads: int, device: str | None = None) -> RunConfig:
    """Pin the torch threads (and, given, the device) of a training run: neither is part of the
    run_id."""
    if not TASKS[config.task].trains:
        return config
    section = replace(config.section, threads=threads)
    if device is not None:
        section = replace(section, device=device)
    return replace(config, **{config.task: section})
