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

CLI: ``python -m tvconv.train [--preset quick|smoke|paper] [key=value ...] [--out result.json]``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tvconv import _engine as engine
from tvconv import models
from tvconv._engine import FitResult, RunSettings, check_batch_size, check_schedule
from tvconv.config import ModelChoice, fail, int_at_least, number_at_least, positive_int
from tvconv.console import exit_with
from tvconv.convert import deploy
from tvconv.data.augment import Augmentation
from tvconv.data.datasets import FaceTrainSet, VerificationBenchmark, to_model_input
from tvconv.data.faces import (
    BenchmarkSource,
    cached_image_folder,
    parse_benchmarks,
    scan_image_folder,
)
from tvconv.data.synthetic import MIN_IMAGE_SIZE, SyntheticFacesConfig, load_synthetic_faces
from tvconv.metrics import PROTOCOLS, roc_metrics, verification_accuracy


@dataclass(frozen=True)
class DataConfig:
    """Training data and benchmarks. Synthetic faces unless ``train_root`` is given; real
    benchmarks are named entries ``[name=]file.bin`` or ``[name=]pairs.txt:image_root``
    (``tvconv.data.faces.parse_benchmarks``; the name defaults to the ``.bin`` stem or the pair
    list's folder). ``workers`` decode the real training tree (``cached_image_folder``) or, with
    the cache off, each batch. ``image_size``
    is the one input size: ``synthetic.image_size`` follows it (setting it is refused)."""

    DERIVED: ClassVar[dict[str, str]] = {"synthetic.image_size": "image_size"}  # ``override``

    image_size: int = 96
    synthetic: SyntheticFacesConfig = field(default_factory=SyntheticFacesConfig)
    train_root: str | None = None
    benchmarks: tuple[str, ...] = ()
    augment: str = "hflip"
    workers: int = 0

    def __post_init__(self) -> None:
        int_at_least("data.image_size", self.image_size, MIN_IMAGE_SIZE)
        if self.synthetic.image_size != self.image_size:  # one input size for data and model
            object.__setattr__(
                self, "synthetic", replace(self.synthetic, image_size=self.image_size)
            )
        Augmentation(self.augment).check_size(self.image_size)  # raises on a bad spec
        int_at_least("data.workers", self.workers, 0)


@dataclass(frozen=True)
class ModelConfig(ModelChoice):
    """Backbone, atom, insertion sites and the TVConv options (``ModelChoice``), embedding and
    AM-Softmax head."""

    TASK: ClassVar[str] = "face"

    name: str = "mobilenet_v2_x0_1"
    dropout: float = 0.0
    embedding_size: int = 512
    margin: float = 0.35
    scale: float = 32.0

    def __post_init__(self) -> None:
        self.check_choice()
        positive_int("model.embedding_size", self.embedding_size)
        if not 0 <= self.dropout < 1:
            fail("model.dropout", self.dropout, "a number in [0, 1)")
        number_at_least("model.margin", self.margin, 0.0)
        number_at_least("model.scale", self.scale, 1e-6)


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
        positive_int("optim.epochs", self.epochs)
        positive_int("optim.batch_size", self.batch_size)
        number_at_least("optim.lr", self.lr, 0.0)
        number_at_least("optim.weight_decay", self.weight_decay, 0.0)
        check_schedule(self.schedule, self.milestones)
        if not 0 <= self.momentum < 1 or not 0 < self.gamma <= 1:
            fail("optim.momentum/gamma", (self.momentum, self.gamma), "[0, 1) and (0, 1]")
        if not 0 <= self.label_smoothing < 1:
            fail("optim.label_smoothing", self.label_smoothing, "a number in [0, 1)")


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
            fail("eval.protocol", self.protocol, f"one of {', '.join(PROTOCOLS)}")
        positive_int("eval.batch_size", self.batch_size)
        positive_int("eval.threshold_steps", self.threshold_steps)


@dataclass(frozen=True)
class TrainConfig(RunSettings):
    """Every knob of one face-task run. Defaults follow the paper (96 px, 38 epochs, batch 512);
    ``quick_config()`` is the documented CPU configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    TASK: ClassVar[str] = "face"


def quick_config(**model_options) -> TrainConfig:
    """The documented CPU configuration (the quick preset's base), chosen from depthwise runs
    alone (README, "The quick testbed"): 32 px synthetic faces (200 identities x 16 images;
    benchmarks of 200 unseen identities, 6,000 pairs each; the data drawn from the run's seed),
    MobileNetV2-face x0.1 with a small generator (inter 16, 1 inter layer), the paper's SGD and
    AM-Softmax, batch 32, 320 epochs (32,000 steps) with a cosine schedule: by then training has
    converged (twice the steps moved depthwise accuracy by +0.2 [-0.3, +0.8] points over 9
    seeds), and with the data fixed its seed-to-seed spread is a third of the 50-identity set's."""
    return TrainConfig(
        data=DataConfig(image_size=32, synthetic=SyntheticFacesConfig(train_identities=200)),
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


PRESETS = {"quick": quick_config, "smoke": smoke_config, "paper": TrainConfig}


class FaceRecognizer(nn.Module):
    """Backbone + AM-Softmax head; forward(images, labels) -> margin logits."""

    def __init__(self, backbone: nn.Module, head: models.AMSoftmax) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images), labels)


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
        fail(
            "data.benchmarks",
            ",".join(config.benchmarks),
            "no benchmarks without data.train_root: the synthetic data brings its own "
            "benchmarks, so real ones are read with real training data only (set "
            "data.train_root too, or drop data.benchmarks)",
        )
    if config.train_root is not None and not config.benchmarks:
        fail("data.benchmarks", config.benchmarks, "benchmark files when data.train_root is set")
    if config.train_root is not None and not Path(config.train_root).is_dir():
        found = "is a file, not a folder" if Path(config.train_root).exists() else "does not exist"
        raise ValueError(
            f"data.train_root={config.train_root!r} {found}; expected <root>/<identity>/<image>.jpg"
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


def check_config(config: TrainConfig) -> None:
    """Everything about a run that can be checked without training (what ``studies`` runs for
    every run before the first starts): the data (``check_data``), the batch size against the
    training set, and the model (``check_model``). Raises ValueError."""
    check_batch_size(config.optim.batch_size, check_data(config.data))
    check_model(config)


def batch_images(train: FaceTrainSet, indices: torch.Tensor, workers: int) -> Iterator:
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
        embeddings = embed(backbone, bench.images, config.batch_size, device)
        engine.check_finite(embeddings, f"embeddings of {bench.name}")
        scores = _score(embeddings, bench, config)
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


class FaceTask:
    """The face task's part of the epoch loop (``tvconv._engine.TrainingTask``): batches of the
    training set, flip/shift augmentation, the AM-Softmax loss, and the training accuracy (the
    margin removed: argmax of cos(theta))."""

    def __init__(self, config: TrainConfig, model: FaceRecognizer, train, benchmarks, device):
        self.config, self.model, self.train, self.benchmarks = config, model, train, benchmarks
        self.device = device
        self.augment = Augmentation(config.data.augment)
        self.correct = self.seen = 0.0

    def batches(self, local: torch.Tensor) -> Iterator:
        return batch_images(self.train, local, self.config.data.workers)

    def inputs(self, batch, augment_rng: torch.Generator) -> tuple[tuple, torch.Tensor, int]:
        images, labels = batch
        x = _as_input(self.augment(to_model_input(images), augment_rng), self.device)
        labels = labels.to(self.device)
        return (x, labels), labels, labels.shape[0]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        smoothing = self.config.optim.label_smoothing
        return F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)

    def after_step(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        cosine_logits = logits.detach().float()
        head = self.model.head
        cosine_logits[torch.arange(labels.shape[0]), labels] += head.scale * head.margin
        self.correct += (cosine_logits.argmax(dim=1) == labels).sum().item()
        self.seen += labels.shape[0]

    def epoch_metrics(self) -> dict:
        accuracy = 100.0 * self.correct / self.seen
        self.correct = self.seen = 0.0
        return {"train_acc_pct": accuracy}

    def evaluate_epoch(self) -> dict:
        if not self.config.eval.every_epoch:
            return {}
        return evaluate(self.model.backbone, self.benchmarks, self.config.eval, self.device)


def fit(
    config: TrainConfig,
    on_epoch_end: Callable[[dict], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train and evaluate one run (see the module docstring). ``on_epoch_end(history_row)`` is
    called after each epoch (after its checkpoint is written), ``on_step(row)`` after each step
    (``tvconv._engine.step_row``)."""
    start, runtime, (train, benchmarks), data_seconds = engine.begin(
        config, lambda: load_data(config.data, config.seed)
    )
    model = channels_last(build_model(config, train.num_classes).to(runtime.device))
    engine.initialise_affinity(
        config,
        model.backbone,
        len(train),
        lambda indices: torch.stack([train[int(i)][0] for i in indices]),
        runtime.device,
    )
    floor_metrics = {}
    if config.eval.floors and runtime.is_main:  # before training (and before any resume)
        floor_metrics = floors(model.backbone, benchmarks, config.eval, runtime.device)
    task = FaceTask(config, model, train, benchmarks, runtime.device)
    trained = engine.train(
        config,
        runtime,
        model,
        _optimizer(model, config.optim),
        task,
        len(train),
        on_epoch_end,
        on_step,
    )

    eval_start = time.perf_counter()
    metrics: dict = {}
    if trained.status == "complete" and runtime.is_main:
        deployed = deploy(copy.deepcopy(model.backbone))
        try:
            metrics = evaluate(deployed, benchmarks, config.eval, runtime.device)
        except engine.DivergedError as error:
            trained = replace(trained, status="failed", reason=str(error))
        else:
            metrics["train_loss"] = trained.history[-1]["loss"]
            metrics["train_acc_pct"] = trained.history[-1]["train_acc_pct"]
            metrics.update(floor_metrics)
    return engine.result(config, runtime, trained, metrics, start, data_seconds, eval_start, model)


# ------------------------------------------------------------------------------------ cli


def main(argv: list[str] | None = None) -> int:
    return engine.run_cli(
        argv,
        prog="python -m tvconv.train",
        description="Train and evaluate one face-task run (torchrun-compatible).",
        presets=PRESETS,
        example="model.atom=dw optim.epochs=2 data.synthetic.nuisance=0.5",
        check=check_config,
        fit=fit,
        summary_keys=lambda metrics: [k for k in metrics if k.startswith("mean_")],
    )


if __name__ == "__main__":
    exit_with(main)
