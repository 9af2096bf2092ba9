"""Config plumbing shared by every task: validators, ``key=value`` overrides, JSON, the hash.

Configs are frozen dataclasses (``tvconv.train.TrainConfig``, ``tvconv.segment.FundusConfig``,
``tvconv.profile.ProfileConfig``). ``override(config, "group.key=value")`` returns a copy with the
value parsed against the field's annotation; an unknown key or a bad value is a ValueError naming
the key, the value and what is allowed. ``result_fields`` strips what does not change a run's
result (device, threads, progress, paths, workers, evaluation batch size, and the TVConv options
of a model without TVConv); ``result_hash`` is the one hash of them: the run_id of a study run,
the fingerprint of a training checkpoint and (without seed and atom) the key that pairs a TVConv
run with its depthwise baseline. ``ModelChoice`` is the model part both training tasks share
(registry name, atom, TVConv sites and options).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, replace
from typing import ClassVar

import tvconv
from tvconv import models
from tvconv.convert import check_select
from tvconv.ops import OPTION_NAMES, TVConvOptions

AMP_MODES = ("off", "bf16", "fp16")
RUNTIME_KEYS = ("device", "threads", "progress", "checkpoint_dir")
TVCONV_FIELDS = ("select", *OPTION_NAMES)  # what only a TVConv model reads (besides its atom)
# The largest run seed: each epoch reseeds torch with seed * 1_000_003 + epoch
# (``tvconv._engine.epoch_batches``), which must stay inside torch's 64-bit seed range.
MAX_SEED = 2**32 - 1


def fail(key: str, value: object, expected: str) -> None:
    raise ValueError(f"{key}={value!r} is invalid: expected {expected}")


def check_device(key: str, value: str) -> None:
    """auto (CUDA when present), cpu or cuda[:N]."""
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
        fail(key, value, "auto, cpu or cuda[:N] (N a GPU index)")


def positive_int(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(key, value, "a positive int")


def int_at_least(key: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        fail(key, value, f"an int >= {low}")


def number_at_least(key: str, value: object, low: float) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < low
    ):
        fail(key, value, f"a finite number >= {low}")


def check_runtime(config: object) -> None:
    """The top-level keys every training config shares: seed, amp, threads, device."""
    seed = config.seed
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        fail("seed", seed, f"an int >= 0 (at most {MAX_SEED})")
    if config.amp not in AMP_MODES:
        fail("amp", config.amp, f"one of {', '.join(AMP_MODES)}")
    if config.threads is not None:
        positive_int("threads", config.threads)
    check_device("device", config.device)


def to_dict(config: object) -> dict:
    """A (nested) config dataclass as plain JSON-ready data."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _convert(text: str, annotation: object, key: str) -> object:
    """Parse ``text`` as a value of the field type ``annotation``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(text, inner, key)
    if origin is tuple:
        items = [item for item in text.split(",") if item.strip()]
        try:
            return tuple(_convert(item.strip(), args[0], key) for item in items)
        except ValueError:
            example = {float: "0.5,0.75", int: "1,2"}.get(args[0], "a,b")
            fail(key, text, f"{args[0].__name__} values separated by commas, e.g. {example}")
    if annotation is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            fail(key, text, "true or false")
        return text.lower() in ("true", "1", "yes")
    try:
        return annotation(text)
    except ValueError:
        fail(key, text, f"a value of type {annotation.__name__}")
    raise AssertionError("unreachable")


def refuse_repeated_keys(assignments: list[str]) -> None:
    """A ValueError naming the keys given more than once among ``key=value`` assignments: the
    last would win without a word, so a typo'd second value would pass unseen."""
    keys = [a.partition("=")[0].strip() for a in assignments if "=" in a]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} given more than once: give each key once")


def override(config: object, assignment: str, prefix: str = "") -> object:
    """A copy of ``config`` with ``"group.key=value"`` applied (typed by the field's annotation;
    an unknown key is an error naming the known ones). A config class may declare keys that
    follow another one (``DERIVED = {"synthetic.image_size": "image_size"}``): setting one is
    an error naming the key to set instead. ``prefix`` is the path of ``config`` in messages."""
    key, sep, text = assignment.partition("=")
    if not sep:
        raise ValueError(f"override {assignment!r} is not of the form key=value")
    key = key.strip()
    derived = getattr(type(config), "DERIVED", {})
    if key in derived and text.strip() != str(getattr(config, derived[key])):
        raise ValueError(
            f"{prefix}{key} cannot be set: it follows {prefix}{derived[key]} (set that instead)"
        )
    if key in derived:
        return config  # the value it already follows
    head, _, rest = key.partition(".")
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    if head not in names:
        raise ValueError(f"unknown key {key!r}; expected one of {', '.join(names)}")
    current = getattr(config, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown key {key!r}: {head} has no sub-keys")
        changed = override(current, f"{rest}={text}", f"{prefix}{head}.")
        return replace(config, **{head: changed})
    if dataclasses.is_dataclass(current):
        fields = ", ".join(f"{head}.{f.name}" for f in dataclasses.fields(current))
        raise ValueError(f"key {key!r} is a group; set one of {fields}")
    return replace(config, **{head: _convert(text.strip(), hints[head], key)})


def result_fields(task: str, fields: dict) -> dict:
    """A task config as JSON (``to_dict`` of it, or a record's) without the fields that do not
    affect the result: runtime settings, the evaluation batch size, the data workers, and the
    TVConv options of a model without TVConv. A profile config is all result (where it runs and
    in which dtype too), but its ``device`` and ``dtype`` at their defaults are left out: the
    fields came later, and the measurements made before them keep their run_ids."""
    fields = json.loads(json.dumps(fields))
    if task == "profile":
        for key, default in (("device", "auto"), ("dtype", "float32")):
            if fields.get(key) == default:
                fields.pop(key)
        return fields
    for key in RUNTIME_KEYS:
        fields.pop(key, None)
    fields.get("eval", {}).pop("batch_size", None)
    if task == "face":
        fields.get("data", {}).pop("workers", None)
    if fields.get("model", {}).get("atom") != "tvconv":
        for key in TVCONV_FIELDS:
            fields.get("model", {}).pop(key, None)
        if task == "face":
            fields.get("optim", {}).pop("affinity_weight_decay", None)
    return fields


def result_hash(task: str, fields: dict, length: int = 16) -> str:
    """The hash of a run's result-affecting config (``result_fields``) and
    ``tvconv.RESULTS_VERSION``: the first ``length`` hex digits of the sha256 of its canonical
    JSON."""
    payload = {
        "config": {"task": task, task: result_fields(task, fields)},
        "results_version": tvconv.RESULTS_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class ModelChoice(TVConvOptions):
    """A registry model of the config's ``TASK`` (``name``), its ``atom`` and the sites TVConv
    replaces (``select``), with the TVConv options inherited as flat keys (ignored unless
    atom=tvconv): what the face and the fundus model configs share."""

    TASK: ClassVar[str] = ""

    name: str = ""
    atom: str = "tvconv"
    select: str = "all"

    def check_choice(self) -> None:
        """Raise ValueError naming ``model.<key>`` for an unknown model or atom, a bad
        ``select`` or a bad TVConv option."""
        names = models.list_models(task=self.TASK)
        if self.name not in names:
            fail("model.name", self.name, f"one of {', '.join(names)}")
        atoms = models.model_atoms(self.name)
        if self.atom not in atoms:
            fail("model.atom", self.atom, f"one of {', '.join(atoms)}")
        try:
            check_select(self.select)
        except ValueError as error:
            raise ValueError(f"model.{error}") from None
        self.check_options("model.")

    def tvconv_options(self) -> dict:
        """The keyword arguments ``models.create`` takes for the TVConv sites (none otherwise)."""
        return {"select": self.select, **self.options()} if self.atom == "tvconv" else {}
