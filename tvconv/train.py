"""Training and evaluation engine for the face task: what every ablation run executes.

``fit(config)`` builds the data (embedded synthetic faces, or real folders and benchmark files),
the model (registry name, atom, TVConv options, insertion sites) and the AM-Softmax head, trains
with the paper's recipe by default (SGD lr 0.1, momentum 0.9, weight decay 5e-4, the lr divided
by 10 at 58% / 79% / 92% of the epochs: 22 / 30 / 35 of 38), evaluates the four verification
benchmarks (``tvconv.metrics``) and returns a ``FitResult``: final metrics (with the floors, what
no learning scores on the same pairs: raw pixels, mean colour and the network as initialised),
per-epoch history, timings, environment and the trained model. Models train and evaluate in
channels-last layout (faster on CPU; README, "The quick testbed").

Reproducibility: one seed drives the initialisation (``torch.manual_seed``), the data order and
the augmentation (independent generators per epoch, derived from the seed), so the same config
on the same machine gives identical metrics, and resuming from an epoch checkpoint continues
exactly as an uninterrupted run. A non-finite loss stops the run with ``status="failed"`` and a
reason; other errors and KeyboardInterrupt propagate.

Scale-out: ``device="auto"`` picks CUDA when present (``amp`` optional); under ``torchrun`` one
run trains with DistributedDataParallel (gloo on CPU, nccl on GPU), the global batch split across
ranks (rank r takes its slice of every global batch, so the samples seen per step do not depend on
the number of ranks).

CLI: ``python -m tvconv.train [--preset cpu-quick|smoke] [key=value ...] [--out result.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import tvconv
from tvconv import affinity, models
from tvconv.convert import check_select, deploy
from tvconv.data.augment import Augmentation
from tvconv.data.datasets import FaceTrainSet, VerificationBenchmark, to_model_input
from tvconv.data.faces import (
    BenchmarkSource,
    cached_image_folder,
    parse_benchmarks,
    scan_image_folder,
)
from tvconv.data.synthetic import SyntheticFacesConfig, load_synthetic_faces, stream
from tvconv.metrics import PROTOCOLS, roc_metrics, verification_accuracy
from tvconv.ops import NORMS

SCHEDULES = ("multistep", "cosine")
AMP_MODES = ("off", "bf16", "fp16")
CHECKPOINT = "checkpoint.pt"


def _fail(key: str, value: object, expected: str) -> None:
    raise ValueError(f"{key}={value!r} is invalid: expected {expected}")


def _positive_int(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        _fail(key, value, "a positive int")


def _number_at_least(key: str, value: object, low: float) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < low
    ):
        _fail(key, value, f"a finite number >= {low}")


def _check_schedule(schedule: str, milestones: tuple[float, ...]) -> None:
    if schedule not in SCHEDULES:
        _fail("optim.schedule", schedule, f"one of {', '.join(SCHEDULES)}")
    if not all(0 < m <= 1 for m in milestones) or list(milestones) != sorted(milestones):
        _fail("optim.milestones", milestones, "increasing fractions in (0, 1]")


def _check_runtime(config: object) -> None:
    """The top-level keys every training config shares: seed, amp, threads, device."""
    if not isinstance(config.seed, int) or config.seed < 0:
        _fail("seed", config.seed, "an int >= 0")
    if config.amp not in AMP_MODES:
        _fail("amp", config.amp, f"one of {', '.join(AMP_MODES)}")
    if config.threads is not None:
        _positive_int("threads", config.threads)
    if config.device not in ("auto", "cpu") and not config.device.startswith("cuda"):
        _fail("device", config.device, "auto, cpu or cuda[:N]")


def _fingerprint(config: object, *dropped: str) -> str:
    """Hash of a training config's result-affecting fields: all but device, threads, progress,
    paths and the ``dropped`` dotted keys (e.g. ``data.workers``)."""
    fields = to_dict(config)
    for key in ("device", "threads", "progress", "checkpoint_dir"):
        fields.pop(key)
    for key in dropped:
        group, name = key.split(".")
        fields[group].pop(name)
    payload = json.dumps({"config": fields, "version": tvconv.RESULTS_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DataConfig:
    """Training data and benchmarks. Synthetic faces unless ``train_root`` is given; real
    benchmarks are named entries ``[name=]file.bin`` or ``[name=]pairs.txt:image_root``
    (``tvconv.data.faces.parse_benchmarks``; the name defaults to the ``.bin`` stem or the pair
    list's folder). ``workers`` decode the real training tree (``cached_image_folder``) or, with
    the cache off, each batch. ``image_size``
    is the one input size: ``synthetic.image_size`` always follows it."""

    image_size: int = 96
    synthetic: SyntheticFacesConfig = field(default_factory=SyntheticFacesConfig)
    train_root: str | None = None
    benchmarks: tuple[str, ...] = ()
    augment: str = "hflip"
    workers: int = 0

    def __post_init__(self) -> None:
        _positive_int("data.image_size", self.image_size)
        if self.synthetic.image_size != self.image_size:  # one input size for data and model
            object.__setattr__(
                self, "synthetic", replace(self.synthetic, image_size=self.image_size)
            )
        Augmentation(self.augment)  # raises on a bad spec
        if not isinstance(self.workers, int) or self.workers < 0:
            _fail("data.workers", self.workers, "an int >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone, atom and TVConv options (ignored for atom=dw), embedding and AM-Softmax head."""

    name: str = "mobilenet_v2_x0_1"
    atom: str = "tvconv"
    select: str = "all"
    affinity_channels: int = 4
    inter_channels: int = 64
    inter_layers: int = 3
    norm: str = "ln"
    bias: bool = False
    init: str = "ones"
    generator: bool = True
    dropout: float = 0.0
    embedding_size: int = 512
    margin: float = 0.35
    scale: float = 32.0

    def __post_init__(self) -> None:
        if self.name not in models.list_models(task="face"):
            _fail("model.name", self.name, "one of " + ", ".join(models.list_models(task="face")))
        if self.atom not in models.ATOMS:
            _fail("model.atom", self.atom, f"one of {', '.join(models.ATOMS)}")
        try:
            check_select(self.select)
        except ValueError as error:
            raise ValueError(f"model.{error}") from None
        if self.norm not in NORMS:
            _fail("model.norm", self.norm, f"one of {', '.join(NORMS)}")
        if self.init not in affinity.list_initialisers():
            _fail("model.init", self.init, f"one of {', '.join(affinity.list_initialisers())}")
        for key in ("affinity_channels", "inter_channels", "embedding_size"):
            _positive_int(f"model.{key}", getattr(self, key))
        if not isinstance(self.inter_layers, int) or self.inter_layers < 0:
            _fail("model.inter_layers", self.inter_layers, "an int >= 0")
        if not 0 <= self.dropout < 1:
            _fail("model.dropout", self.dropout, "a number in [0, 1)")
        _number_at_least("model.margin", self.margin, 0.0)
        _number_at_least("model.scale", self.scale, 1e-6)

    def tvconv_options(self) -> dict:
        if self.atom != "tvconv":
            return {}
        names = ("select", *models.TVCONV_OPTIONS)
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum; lr multiplied by ``gamma`` at each milestone (fractions of the epochs,
    rounded to whole epochs) or cosine-annealed per step. ``batch_size`` is global."""

    epochs: int = 38
    batch_size: int = 512
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    affinity_weight_decay: bool = True
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.58, 0.79, 0.92)
    gamma: float = 0.1
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        _positive_int("optim.epochs", self.epochs)
        _positive_int("optim.batch_size", self.batch_size)
        _number_at_least("optim.lr", self.lr, 0.0)
        _number_at_least("optim.weight_decay", self.weight_decay, 0.0)
        _check_schedule(self.schedule, self.milestones)
        if not 0 <= self.momentum < 1 or not 0 < self.gamma <= 1:
            _fail("optim.momentum/gamma", (self.momentum, self.gamma), "[0, 1) and (0, 1]")
        if not 0 <= self.label_smoothing < 1:
            _fail("optim.label_smoothing", self.label_smoothing, "a number in [0, 1)")

    def milestone_epochs(self) -> list[int]:
        return [round(m * self.epochs) for m in self.milestones]


@dataclass(frozen=True)
class EvalConfig:
    """Verification protocol and its threshold grid; ``floors`` adds what no learning scores
    (raw pixels, mean colour, the untrained network) to every run's metrics."""

    protocol: str = "clean"
    every_epoch: bool = False
    batch_size: int = 256
    threshold_steps: int = 10_000
    floors: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            _fail("eval.protocol", self.protocol, f"one of {', '.join(PROTOCOLS)}")
        _positive_int("eval.batch_size", self.batch_size)
        _positive_int("eval.threshold_steps", self.threshold_steps)


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one face-task run. Defaults follow the paper (96 px, 38 epochs, batch 512);
    ``cpu_quick_config()`` is the documented CPU configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    threads: int | None = None
    progress: bool | None = None
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        _check_runtime(self)

    def fingerprint(self) -> str:
        """Hash of the result-affecting fields (not device, threads, progress, paths)."""
        return _fingerprint(self, "data.workers")


def cpu_quick_config(**model_options) -> TrainConfig:
    """The documented CPU configuration (the quick preset's base), chosen from depthwise runs
    alone (README, "The quick testbed"): 32 px synthetic faces (50 identities x 16 images;
    benchmarks of 200 unseen identities, 6,000 pairs each; the data drawn from the run's seed),
    MobileNetV2-face x0.1 with a small generator (inter 16, 1 inter layer), the paper's SGD and
    AM-Softmax, batch 32, 320 epochs (8,000 steps) with a cosine schedule: by then training has
    converged (twice the steps move depthwise accuracy by less than a point)."""
    return TrainConfig(
        data=DataConfig(image_size=32, synthetic=SyntheticFacesConfig()),
        model=ModelConfig(inter_channels=16, inter_layers=1, **model_options),
        optim=OptimConfig(epochs=320, batch_size=32, schedule="cosine"),
    )


def smoke_config(**model_options) -> TrainConfig:
    """Seconds: 32 px, few identities, 1 epoch (tests and CI)."""
    return TrainConfig(
        data=DataConfig(
            image_size=32,
            synthetic=SyntheticFacesConfig(
                train_identities=16,
                images_per_identity=4,
                test_identities=20,
                test_images_per_identity=4,
                pairs_per_benchmark=40,
            ),
        ),
        model=ModelConfig(inter_channels=8, inter_layers=0, **model_options),
        optim=OptimConfig(epochs=1, batch_size=16),
        eval=EvalConfig(threshold_steps=1000),
    )


PRESETS = {"cpu-quick": cpu_quick_config, "smoke": smoke_config, "paper": TrainConfig}


# ------------------------------------------------------------------------------------ config io


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
        return tuple(_convert(item.strip(), args[0], key) for item in items)
    if annotation is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            _fail(key, text, "true or false")
        return text.lower() in ("true", "1", "yes")
    try:
        return annotation(text)
    except ValueError:
        _fail(key, text, f"a value of type {annotation.__name__}")
    raise AssertionError("unreachable")


def override(config: object, assignment: str) -> object:
    """A copy of ``config`` with ``"group.key=value"`` applied (typed by the field's annotation;
    an unknown key is an error naming the known ones)."""
    key, sep, text = assignment.partition("=")
    if not sep:
        raise ValueError(f"override {assignment!r} is not of the form key=value")
    head, _, rest = key.strip().partition(".")
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    if head not in names:
        raise ValueError(f"unknown key {key!r}; expected one of {', '.join(names)}")
    current = getattr(config, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown key {key!r}: {head} has no sub-keys")
        return replace(config, **{head: override(current, f"{rest}={text}")})
    if dataclasses.is_dataclass(current):
        fields = ", ".join(f"{head}.{f.name}" for f in dataclasses.fields(current))
        raise ValueError(f"key {key!r} is a group; set one of {fields}")
    return replace(config, **{head: _convert(text.strip(), hints[head], key)})


# ------------------------------------------------------------------------------------ results


@dataclass
class FitResult:
    status: str
    metrics: dict
    history: list[dict]
    timings: dict
    environment: dict
    config: dict
    reason: str | None = None
    model: nn.Module | None = field(default=None, repr=False)
    examples: dict | None = field(default=None, repr=False)  # fundus: test images + predictions

    def to_record(self) -> dict:
        """Everything but the model and the examples, JSON-ready."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record.pop("model")
        record.pop("examples")
        return record


class FaceRecognizer(nn.Module):
    """Backbone + AM-Softmax head; forward(images, labels) -> margin logits."""

    def __init__(self, backbone: nn.Module, head: models.AMSoftmax) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images), labels)


# ------------------------------------------------------------------------------------ runtime


@dataclass
class _Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _start_runtime(config: TrainConfig) -> _Runtime:
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={config.device!r} but CUDA is not available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return _Runtime(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if config.optim.batch_size % world_size:
        raise ValueError(
            f"optim.batch_size={config.optim.batch_size} must be divisible by the number of "
            f"ranks ({world_size})"
        )
    return _Runtime(device, rank, world_size)


def environment(runtime: _Runtime) -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(runtime.device),
        "cuda_device": torch.cuda.get_device_name(runtime.device)
        if runtime.device.type == "cuda"
        else None,
        "threads": torch.get_num_threads(),
        "world_size": runtime.world_size,
    }


def _finite_everywhere(loss: torch.Tensor, runtime: _Runtime) -> bool:
    """Whether the loss is finite on every rank (so that all ranks stop together)."""
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if runtime.world_size > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# ------------------------------------------------------------------------------------ data


def load_data(
    config: DataConfig, seed: int = 0
) -> tuple[FaceTrainSet, list[VerificationBenchmark]]:
    """The training set and the benchmarks; synthetic data without a seed of its own is drawn
    with ``seed`` (the run's). The benchmarks are read (each checked before it is decoded)
    before the training tree, so a bad source fails in seconds."""
    sources = check_data_paths(config)
    if config.train_root is None:
        synthetic = config.synthetic
        if synthetic.seed is None:
            synthetic = replace(synthetic, seed=seed)
        return load_synthetic_faces(synthetic)
    benchmarks = [source.load(config.image_size) for source in sources]
    train = cached_image_folder(config.train_root, config.image_size, config.workers)
    return train, benchmarks


def check_data_paths(config: DataConfig) -> list[BenchmarkSource]:
    """Fail fast on real-data settings that cannot work: the benchmark entries (named, no name
    twice) and the paths only (see ``check_data`` for the contents); returns the benchmarks."""
    if config.benchmarks and config.train_root is None:
        _fail(
            "data.benchmarks",
            ",".join(config.benchmarks),
            "no benchmarks without data.train_root: the synthetic data brings its own "
            "benchmarks, so real ones are read with real training data only (set "
            "data.train_root too, or drop data.benchmarks)",
        )
    if config.train_root is not None and not config.benchmarks:
        _fail("data.benchmarks", config.benchmarks, "benchmark files when data.train_root is set")
    if config.train_root is not None and not Path(config.train_root).is_dir():
        raise ValueError(
            f"data.train_root={config.train_root!r} does not exist; expected "
            "<root>/<identity>/<image>.jpg"
        )
    sources = parse_benchmarks(config.benchmarks)
    for source in sources:
        missing = [p for p in source.files if not Path(p).exists()]
        if missing:
            raise ValueError(
                f"data.benchmarks entry {source.name}={':'.join(source.files)}: expected an "
                f"existing .bin file or 'pairs.txt:image_root'; missing {missing}"
            )
    return sources


def check_data(config: DataConfig) -> int:
    """Check the data of a run without decoding any image (a sweep's plan check): the paths,
    the training tree's identity folders, every benchmark's structure (a safe unpickle of a
    ``.bin``, every line of a pair list, whole folds of pairs). Returns the number of training
    images; raises ValueError naming the key, the file and what was expected."""
    sources = check_data_paths(config)
    if config.train_root is None:
        return config.synthetic.train_identities * config.synthetic.images_per_identity
    for source in sources:
        try:
            source.read()
        except ValueError as error:
            raise ValueError(
                f"data.benchmarks entry {source.name}={':'.join(source.files)}: {error}"
            ) from None
    try:
        paths, _labels, _identities = scan_image_folder(config.train_root)
    except ValueError as error:
        raise ValueError(f"data.train_root={config.train_root!r}: {error}") from None
    return len(paths)


def check_model(config: TrainConfig) -> None:
    """Build the backbone of ``config`` and probe it at its input size (``models.check_buildable``:
    sizes, sites, ``select``). Raises ValueError."""
    model = config.model
    models.check_buildable(
        model.name,
        model.atom,
        config.data.image_size,
        embedding_size=model.embedding_size,
        dropout=model.dropout,
        **model.tvconv_options(),
    )


def check_batch_size(batch_size: int, images: int) -> None:
    if batch_size > images:
        _fail("optim.batch_size", batch_size, f"at most the {images} training images")


def check_config(config: TrainConfig) -> None:
    """Everything about a run that can be checked without training (what ``studies`` runs for
    every run before the first starts): the data (``check_data``), the batch size against the
    training set, and the model (``check_model``). Raises ValueError."""
    check_batch_size(config.optim.batch_size, check_data(config.data))
    check_model(config)


def _batch_images(train: FaceTrainSet, indices: torch.Tensor, workers: int) -> Iterator:
    """uint8 images and labels for each index chunk (in memory, or decoded by workers)."""
    if train.images is not None:
        for chunk in indices:
            yield train.images[chunk], train.labels[chunk]
        return
    loader = torch.utils.data.DataLoader(
        train, batch_sampler=[c.tolist() for c in indices], num_workers=workers
    )
    yield from loader


# ------------------------------------------------------------------------------------ model


def build_model(config: TrainConfig, num_classes: int) -> FaceRecognizer:
    model = config.model
    backbone = models.create(
        model.name,
        atom=model.atom,
        input_size=config.data.image_size,
        embedding_size=model.embedding_size,
        dropout=model.dropout,
        **model.tvconv_options(),
    )
    head = models.AMSoftmax(model.embedding_size, num_classes, model.margin, model.scale)
    return FaceRecognizer(backbone, head)


def _optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.SGD:
    maps = [p for n, p in model.named_parameters() if n.endswith("affinity_maps")]
    others = [p for n, p in model.named_parameters() if not n.endswith("affinity_maps")]
    groups = [{"params": others}]
    if maps:
        decay = optim.weight_decay if optim.affinity_weight_decay else 0.0
        groups.append({"params": maps, "weight_decay": decay})
    return torch.optim.SGD(
        groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )


def lr_at(optim: OptimConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate of global step ``step`` (0-based)."""
    if optim.schedule == "cosine":
        total = optim.epochs * steps_per_epoch
        return optim.lr * 0.5 * (1 + math.cos(math.pi * step / total))
    passed = sum(step >= m * steps_per_epoch for m in optim.milestone_epochs())
    return optim.lr * optim.gamma**passed


# ------------------------------------------------------------------------------------ evaluation


def channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its 4-D parameters in channels-last layout, in place (``Module.to`` refuses
    the 5-D per-pixel kernels a TVConv without a generator learns directly)."""
    for parameter in model.parameters():
        if parameter.dim() == 4:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
    return model


def _as_input(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch on ``device`` in channels-last layout, the layout the models train in."""
    return x.to(device).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def embed(backbone: nn.Module, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    backbone.eval()
    chunks = [
        backbone(_as_input(to_model_input(images[start : start + batch_size]), device))
        .float()
        .cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks)


def _score(
    embeddings: torch.Tensor, bench: VerificationBenchmark, config: EvalConfig, roc: bool = True
) -> dict:
    """``acc_pct``, ``acc_std_pct`` (protocol) and, with ``roc``, ``auc_pct`` and ``tar_pct``."""
    left, right = embeddings[bench.pairs[:, 0]], embeddings[bench.pairs[:, 1]]
    accuracy = verification_accuracy(
        left, right, bench.issame, bench.folds, config.protocol, config.threshold_steps
    )
    scores = {"acc_pct": accuracy["acc_pct"], "acc_std_pct": accuracy["acc_std_pct"]}
    if roc:
        scores.update(roc_metrics(left, right, bench.issame))
    return scores


def _with_means(metrics: dict, benchmarks: list[VerificationBenchmark], kinds: tuple) -> dict:
    for kind in kinds:
        values = [metrics[f"{b.name}_{kind}_pct"] for b in benchmarks]
        metrics[f"mean_{kind}_pct"] = sum(values) / len(values)
    return metrics


def evaluate(
    backbone: nn.Module,
    benchmarks: list[VerificationBenchmark],
    config: EvalConfig,
    device: torch.device | str = "cpu",
) -> dict:
    """Per-benchmark ``<name>_acc_pct`` (protocol), ``<name>_auc_pct``, ``<name>_tar_pct`` (TAR at
    FAR 1e-2) and their means over benchmarks (``mean_acc_pct`` is the headline)."""
    metrics = {}
    for bench in benchmarks:
        scores = _score(embed(backbone, bench.images, config.batch_size, device), bench, config)
        metrics[f"{bench.name}_acc_pct"] = scores["acc_pct"]
        metrics[f"{bench.name}_acc_std_pct"] = scores["acc_std_pct"]
        metrics[f"{bench.name}_auc_pct"] = scores["auc_pct"]
        metrics[f"{bench.name}_tar_pct"] = scores["tar_pct"]
    return _with_means(metrics, benchmarks, ("acc", "auc", "tar"))


# The floors every face run reports next to its accuracy, in the same protocol on the same pairs:
# what an embedding without any learning scores.
PIXEL_FLOOR_SIZE = 48  # raw pixels of larger images are area-resized to this side first


def pixel_embedding(images: torch.Tensor) -> torch.Tensor:
    """The raw-pixel embedding: the model input itself, flattened (area-resized to at most
    ``PIXEL_FLOOR_SIZE`` px, which keeps 96 px benchmarks in memory)."""
    x = to_model_input(images)
    if max(x.shape[-2:]) > PIXEL_FLOOR_SIZE:
        x = F.adaptive_avg_pool2d(x, PIXEL_FLOOR_SIZE)
    return x.flatten(1)


def colour_embedding(images: torch.Tensor) -> torch.Tensor:
    """The mean colour of each image (3 numbers): what identifies a face without any layout."""
    return to_model_input(images).mean(dim=(2, 3))


def floors(
    untrained: nn.Module,
    benchmarks: list[VerificationBenchmark],
    config: EvalConfig,
    device: torch.device | str = "cpu",
) -> dict:
    """``floor_pixels_*`` (raw pixels), ``floor_colour_*`` (mean colour) and
    ``floor_untrained_*`` (``untrained``, the network as initialised, deployed): per benchmark
    ``<name>_acc_pct`` and their mean, ``mean_acc_pct``."""
    deployed = deploy(copy.deepcopy(untrained))
    embedders = {
        "pixels": pixel_embedding,
        "colour": colour_embedding,
        "untrained": lambda images: embed(deployed, images, config.batch_size, device),
    }
    metrics = {}
    for floor, embedder in embedders.items():
        scores = {
            f"{bench.name}_acc_pct": _score(embedder(bench.images), bench, config, roc=False)[
                "acc_pct"
            ]
            for bench in benchmarks
        }
        scores = _with_means(scores, benchmarks, ("acc",))
        metrics.update({f"floor_{floor}_{key}": value for key, value in scores.items()})
    return metrics


# ------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a temp file in the same folder, fsynced, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"checkpoint {path} belongs to another configuration ({state['fingerprint']}, this "
            f"run is {fingerprint}); remove it or use another checkpoint_dir"
        )
    return state


def _resume(
    checkpoint: Path | None, fingerprint: str, model: nn.Module, optimizer, scaler
) -> tuple[list[dict], int]:
    """Load the state of an interrupted run into model, optimizer and scaler; returns its
    history and the epoch to continue from (([], 0) when there is none)."""
    if checkpoint is None or not (state := load_checkpoint(checkpoint, fingerprint)):
        return [], 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return state["history"], state["epoch"]


def _save_epoch(
    checkpoint: Path, fingerprint: str, epoch: int, model: nn.Module, optimizer, scaler, history
) -> None:
    save_checkpoint(
        checkpoint,
        {
            "fingerprint": fingerprint,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "history": history,
        },
    )


# ------------------------------------------------------------------------------------ fit


def _steps_per_epoch(images: int, batch_size: int) -> int:
    steps = images // batch_size
    if steps == 0:
        raise ValueError(f"optim.batch_size={batch_size} exceeds the {images} training images")
    return steps


def _epoch_batches(
    seed: int, epoch: int, images: int, batch_size: int, runtime: _Runtime
) -> tuple[torch.Tensor, torch.Generator]:
    """This rank's sample indices of every step of ``epoch`` (steps, local batch) and the
    epoch's augmentation generator; reseeds torch (dropout: the same stream when resumed)."""
    torch.manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(images, generator=stream(seed, f"order-{epoch}"))
    augment_rng = stream(seed, f"augment-{epoch}-rank{runtime.rank}")
    steps = _steps_per_epoch(images, batch_size)
    local_batch = batch_size // runtime.world_size
    global_batches = order[: steps * batch_size].view(steps, -1)
    local = global_batches[:, runtime.rank * local_batch : (runtime.rank + 1) * local_batch]
    return local, augment_rng


def step_row(
    global_step: int, steps_per_epoch: int, loss: float, optimizer, batch: torch.Tensor
) -> dict:
    """What ``on_step`` receives: the step (from 1), the epoch as a fraction, the loss, the
    learning rate and the images of the step (on every rank)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    return {
        "step": global_step + 1,
        "epoch": (global_step + 1) / steps_per_epoch,
        "loss": loss,
        "lr": optimizer.param_groups[0]["lr"],
        "images": batch.shape[0] * world,
    }


def _timings(start: float, data_seconds: float, train_seconds: float, eval_start: float) -> dict:
    return {
        "data_seconds": data_seconds,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - eval_start,
        "total_seconds": time.perf_counter() - start,
    }


def _progress(config: TrainConfig, runtime: _Runtime, total: int, initial: int) -> tqdm:
    enabled = sys.stderr.isatty() if config.progress is None else config.progress
    return tqdm(
        total=total,
        initial=initial,
        disable=not (enabled and runtime.is_main),
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )


def fit(
    config: TrainConfig,
    on_epoch_end: Callable[[dict], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train and evaluate one run (see the module docstring). ``on_epoch_end(history_row)`` is
    called after each epoch (after its checkpoint is written), ``on_step(row)`` after each step
    (``step_row``)."""
    start = time.perf_counter()
    runtime = _start_runtime(config)
    torch.manual_seed(config.seed)
    train, benchmarks = load_data(config.data, config.seed)
    data_seconds = time.perf_counter() - start

    model = channels_last(build_model(config, train.num_classes).to(runtime.device))
    if config.model.atom == "tvconv" and affinity.is_data_driven(config.model.init):
        order = torch.randperm(len(train), generator=stream(config.seed, "affinity-sample"))
        sample = torch.stack([train[int(i)][0] for i in order[:256]])
        affinity.initialise_from_data(model.backbone, to_model_input(sample).to(runtime.device))
    floor_metrics = {}
    if config.eval.floors and runtime.is_main:  # before training (and before any resume)
        floor_metrics = floors(model.backbone, benchmarks, config.eval, runtime.device)
    optimizer = _optimizer(model, config.optim)
    scaler = torch.amp.GradScaler(enabled=config.amp == "fp16")
    fingerprint = config.fingerprint()
    checkpoint = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None
    history, first_epoch = _resume(checkpoint, fingerprint, model, optimizer, scaler)
    net = (
        nn.parallel.DistributedDataParallel(model, device_ids=None)
        if runtime.world_size > 1
        else model
    )

    optim = config.optim
    steps_per_epoch = _steps_per_epoch(len(train), optim.batch_size)
    augment = Augmentation(config.data.augment)
    status, reason = "complete", None
    progress = _progress(
        config, runtime, optim.epochs * steps_per_epoch, first_epoch * steps_per_epoch
    )
    train_start = time.perf_counter()
    for epoch in range(first_epoch, optim.epochs):
        epoch_start = time.perf_counter()
        local, augment_rng = _epoch_batches(
            config.seed, epoch, len(train), optim.batch_size, runtime
        )
        net.train()
        loss_sum = correct = seen = 0.0
        for step, (images, labels) in enumerate(_batch_images(train, local, config.data.workers)):
            global_step = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = lr_at(optim, global_step, steps_per_epoch)
            x = _as_input(augment(to_model_input(images), augment_rng), runtime.device)
            labels = labels.to(runtime.device)
            with _autocast(config, runtime.device):
                logits = net(x, labels)
                loss = F.cross_entropy(
                    logits.float(), labels, label_smoothing=optim.label_smoothing
                )
            if not _finite_everywhere(loss, runtime):
                status = "failed"
                reason = f"non-finite loss at epoch {epoch + 1}, step {step + 1}"
                break
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_value = loss.item()
            loss_sum += loss_value * labels.shape[0]
            if on_step is not None and runtime.is_main:
                on_step(step_row(global_step, steps_per_epoch, loss_value, optimizer, labels))
            cosine_logits = logits.detach().float()  # margin removed: argmax of cos(theta)
            cosine_logits[torch.arange(labels.shape[0]), labels] += (
                model.head.scale * model.head.margin
            )
            correct += (cosine_logits.argmax(dim=1) == labels).sum().item()
            seen += labels.shape[0]
            progress.update()
            progress.set_postfix(epoch=epoch + 1, loss=f"{loss_value:.3f}")
        if status == "failed":
            break
        seconds = time.perf_counter() - epoch_start
        row = {
            "epoch": epoch + 1,
            "loss": loss_sum / seen,
            "train_acc_pct": 100.0 * correct / seen,
            "lr": lr_at(optim, (epoch + 1) * steps_per_epoch - 1, steps_per_epoch),
            "seconds": seconds,
            "images_per_s": seen * runtime.world_size / seconds,
        }
        if config.eval.every_epoch and runtime.is_main:
            row.update(evaluate(model.backbone, benchmarks, config.eval, runtime.device))
        history.append(row)
        if checkpoint is not None and runtime.is_main:
            _save_epoch(checkpoint, fingerprint, epoch + 1, model, optimizer, scaler, history)
        if on_epoch_end is not None and runtime.is_main:
            on_epoch_end(row)
    progress.close()
    train_seconds = time.perf_counter() - train_start

    eval_start = time.perf_counter()
    metrics: dict = {}
    if status == "complete" and runtime.is_main:
        deployed = deploy(copy.deepcopy(model.backbone))
        metrics = evaluate(deployed, benchmarks, config.eval, runtime.device)
        metrics["train_loss"] = history[-1]["loss"]
        metrics["train_acc_pct"] = history[-1]["train_acc_pct"]
        metrics.update(floor_metrics)
    if runtime.world_size > 1:
        dist.barrier()
    return FitResult(
        status=status,
        reason=reason,
        metrics=metrics,
        history=history,
        timings=_timings(start, data_seconds, train_seconds, eval_start),
        environment=environment(runtime),
        config=to_dict(config),
        model=model,
    )


# ------------------------------------------------------------------------------------ cli


def run_cli(
    argv: list[str] | None,
    prog: str,
    description: str,
    presets: dict[str, Callable[[], object]],
    example: str,
    check: Callable[[object], None],
    train: Callable[[object], FitResult],
    summary_keys: Callable[[dict], list[str]],
) -> int:
    """One run from the command line: a preset, ``key=value`` overrides, ``check`` (paths) before
    training, the record to ``--out``, a one-line JSON summary of ``summary_keys(metrics)``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--preset", choices=sorted(presets), default="cpu-quick")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"e.g. {example}")
    parser.add_argument("--out", type=Path, help="write the run record (JSON) here")
    args = parser.parse_args(argv)
    try:
        config = presets[args.preset]()
        for assignment in args.overrides:
            config = override(config, assignment)
        check(config)
    except ValueError as error:
        parser.error(str(error))
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        record = result.to_record()
        if args.out is not None:
            args.out.write_text(json.dumps(record, indent=2))
        summary = {
            key: round(result.metrics.get(key, math.nan), 2) for key in summary_keys(result.metrics)
        }
        print(
            json.dumps(
                {
                    "status": result.status,
                    "reason": result.reason,
                    **summary,
                    "train_seconds": round(result.timings["train_seconds"], 1),
                }
            )
        )
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0 if result.status == "complete" else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        argv,
        prog="python -m tvconv.train",
        description="Train and evaluate one face-task run (torchrun-compatible).",
        presets=PRESETS,
        example="model.atom=dw optim.epochs=2 data.synthetic.nuisance=0.5",
        check=check_config,
        train=fit,
        summary_keys=lambda metrics: [k for k in metrics if k.startswith("mean_")],
    )


if __name__ == "__main__":
    sys.exit(main())
