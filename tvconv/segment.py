"""Training and evaluation engine for the fundus task: optic cup / disc segmentation.

``fit_fundus(config)`` follows the paper's protocol, leave-one-domain-out: train on the ``train``
splits of three domains, test on the ``test`` split of the held-out one (``data.held_out``). Data
are the embedded synthetic domains (``tvconv.data.synthetic_fundus``) or real folders
(``data.root``, see ``tvconv.data.fundus``). The model is a registry segmenter (DeepLabV3+
MobileNetV2, atom aspp | dw | tvconv); the loss BCE on the two sigmoid outputs (cup, disc), plus
``optim.dice_weight`` x soft Dice; Adam with the lr multiplied by ``gamma`` at the milestones
(the paper: 1e-3, batch 16, 41 epochs, x0.2 after epoch 30). Evaluation runs the cached
(deployed) model, post-processes the probabilities (threshold, largest connected component, hole
filling; ``eval.postprocess``) and reports Dice (%) of cup and disc, HD95 and ASD (pixels at the
model's input size), averaged over the test images (``tvconv.metrics.segmentation_metrics``).

Reported beside them, as a floor a model must clear: ``prior_dice_*_pct``, the Dice of the
training masks' per-pixel majority (one fixed mask for every test image), which is high on
layout-aligned data (an empty prediction scores 0).

Seeds, checkpoints, resuming, devices, amp and torchrun are the engine's (``tvconv._engine``),
shared with ``tvconv.train``. CLI: ``python -m tvconv.segment [--preset quick|smoke|paper]
[key=value ...] [--out result.json]``.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tvconv import _engine as engine
from tvconv import models
from tvconv._engine import FitResult, RunSettings, check_schedule
from tvconv.config import ModelChoice, fail, int_at_least, number_at_least, positive_int
from tvconv.console import exit_with
from tvconv.convert import deploy
from tvconv.data.augment import Augmentation
from tvconv.data.datasets import FundusSet, to_model_input
from tvconv.data.fundus import DOMAINS, LAYOUT, load_fundus_domains
from tvconv.data.synthetic_fundus import make_fundus_domains, split_size
from tvconv.metrics import postprocess, segmentation_metrics
from tvconv.models.seg import load_backbone

EXAMPLES = 4  # test images kept with their predictions for the analysis figure


@dataclass(frozen=True)
class FundusDataConfig:
    """Synthetic domains unless ``root`` is given; ``held_out`` is the test domain."""

    image_size: int = 256
    root: str | None = None
    held_out: int = 2
    synthetic_scale: float = 1.0
    synthetic_seed: int = 0
    augment: str = "none"

    def __post_init__(self) -> None:
        positive_int("data.image_size", self.image_size)
        if self.image_size < 32 or self.image_size % 16:
            fail("data.image_size", self.image_size, "a multiple of 16, at least 32 (OS 16)")
        if self.held_out not in DOMAINS:
            fail("data.held_out", self.held_out, f"one of {DOMAINS}")
        number_at_least("data.synthetic_scale", self.synthetic_scale, 1e-6)
        int_at_least("data.synthetic_seed", self.synthetic_seed, 0)
        Augmentation(self.augment).check_size(self.image_size)  # raises on a bad spec


@dataclass(frozen=True)
class FundusModelConfig(ModelChoice):
    """Segmenter, ASPP atom, insertion sites and the TVConv options (``ModelChoice``), the
    backbone's pretrained weights."""

    TASK: ClassVar[str] = "fundus"

    name: str = "deeplabv3plus_mobilenet_v2"
    backbone_weights: str | None = None

    def __post_init__(self) -> None:
        self.check_choice()


@dataclass(frozen=True)
class FundusOptimConfig:
    """Adam; lr x ``gamma`` at each milestone (fractions of the epochs) or cosine per step.
    ``dice_weight`` adds that multiple of the soft Dice loss to BCE (0: BCE only, the paper)."""

    epochs: int = 41
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.73,)
    gamma: float = 0.2
    dice_weight: float = 0.0

    def __post_init__(self) -> None:
        positive_int("optim.epochs", self.epochs)
        positive_int("optim.batch_size", self.batch_size)
        number_at_least("optim.lr", self.lr, 0.0)
        number_at_least("optim.weight_decay", self.weight_decay, 0.0)
        number_at_least("optim.dice_weight", self.dice_weight, 0.0)
        check_schedule(self.schedule, self.milestones)
        if not 0 < self.gamma <= 1:
            fail("optim.gamma", self.gamma, "a number in (0, 1]")


@dataclass(frozen=True)
class FundusEvalConfig:
    """``postprocess``: largest connected component + hole filling after the threshold."""

    threshold: float = 0.5
    postprocess: bool = True
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            fail("eval.threshold", self.threshold, "a number in (0, 1)")
        positive_int("eval.batch_size", self.batch_size)


@dataclass(frozen=True)
class FundusConfig(RunSettings):
    """Every knob of one fundus run. Defaults follow the paper (256 px, Adam, 41 epochs)."""

    data: FundusDataConfig = field(default_factory=FundusDataConfig)
    model: FundusModelConfig = field(default_factory=FundusModelConfig)
    optim: FundusOptimConfig = field(default_factory=FundusOptimConfig)
    eval: FundusEvalConfig = field(default_factory=FundusEvalConfig)
    TASK: ClassVar[str] = "fundus"


def quick_config(**model_options) -> FundusConfig:
    """The documented CPU configuration: synthetic domains at 96 px and half the paper's split
    sizes, the x0.35 segmenter with a small generator (inter 16, 1 inter layer), flips and colour
    jitter, BCE + Dice, Adam 2e-3 with a cosine schedule, 8 epochs of batch 8.

    How it was chosen (on the test splits the seg study reports): README.md, "Segmentation"."""
    return FundusConfig(
        data=FundusDataConfig(image_size=96, synthetic_scale=0.5, augment="hflip,color:0.3"),
        model=FundusModelConfig(
            name="deeplabv3plus_mobilenet_v2_x0_35",
            inter_channels=16,
            inter_layers=1,
            **model_options,
        ),
        optim=FundusOptimConfig(
            epochs=8, batch_size=8, lr=2e-3, schedule="cosine", dice_weight=1.0
        ),
    )


def smoke_config(**model_options) -> FundusConfig:
    """Seconds: 64 px, a tenth of the split sizes, 1 epoch (tests and CI)."""
    return FundusConfig(
        data=FundusDataConfig(image_size=64, synthetic_scale=0.1),
        model=FundusModelConfig(
            name="deeplabv3plus_mobilenet_v2_x0_35",
            inter_channels=8,
            inter_layers=0,
            **model_options,
        ),
        optim=FundusOptimConfig(epochs=1, batch_size=8, lr=2e-3),
    )


PRESETS = {"quick": quick_config, "smoke": smoke_config, "paper": FundusConfig}


# ------------------------------------------------------------------------------------ data


def check_paths(config: FundusConfig) -> None:
    """Fail fast on a data root or backbone weights that cannot work (before any run starts)."""
    weights = config.model.backbone_weights
    if weights is not None and not Path(weights).is_file():
        fail("model.backbone_weights", weights, "an existing local state-dict file")
    check_data_paths(config.data)


def check_data_paths(config: FundusDataConfig) -> None:
    """Fail fast on a real-data root that lacks one of the expected folders."""
    if config.root is None:
        return
    missing = [
        f"Domain{d}/{s}/ROIs/{kind}"
        for d in DOMAINS
        for s in ("train", "test")
        for kind in ("image", "mask")
        if not (Path(config.root) / f"Domain{d}" / s / "ROIs" / kind).is_dir()
    ]
    if missing:
        raise ValueError(
            f"data.root={config.root!r} lacks {len(missing)} folder(s), e.g. {missing[0]}; "
            f"expected {LAYOUT}"
        )


def load_split_data(config: FundusDataConfig) -> tuple[FundusSet, FundusSet]:
    """(train: the other three domains' train splits, test: the held-out domain's test split)."""
    if config.root is None:
        domains = make_fundus_domains(
            config.image_size, config.synthetic_seed, config.synthetic_scale
        )
    else:
        check_data_paths(config)
        domains = load_fundus_domains(config.root, config.image_size)
    sources = [domains[d]["train"] for d in DOMAINS if d != config.held_out]
    train = FundusSet(
        torch.cat([s.images for s in sources]),
        torch.cat([s.masks for s in sources]),
        domain=0,
        split="train",
    )
    return train, domains[config.held_out]["test"]


def prior_masks(train_masks: torch.Tensor) -> torch.Tensor:
    """The training masks' per-pixel majority (2, H, W): a simple image-blind reference."""
    return train_masks.float().mean(dim=0) > 0.5


# ------------------------------------------------------------------------------------ model


def build_model(config: FundusConfig) -> nn.Module:
    settings = config.model
    return models.create(
        settings.name,
        atom=settings.atom,
        input_size=config.data.image_size,
        backbone_weights=settings.backbone_weights,
        **settings.tvconv_options(),
    )


def check_model(config: FundusConfig) -> None:
    """Build the segmenter of ``config`` and probe it at its input size
    (``models.check_buildable``); load its backbone weights, if any, into its backbone (once
    per file and model: a sweep's runs share them)."""
    settings = config.model
    models.check_buildable(
        settings.name, settings.atom, config.data.image_size, **settings.tvconv_options()
    )
    if settings.backbone_weights is not None and Path(settings.backbone_weights).is_file():
        weights = Path(settings.backbone_weights)
        stat = weights.stat()
        problem = _backbone_weights_problem(
            settings.name, config.data.image_size, str(weights), stat.st_mtime_ns
        )
        if problem:
            fail("model.backbone_weights", settings.backbone_weights, problem)


@functools.cache
def _backbone_weights_problem(name: str, size: int, path: str, _modified_ns: int) -> str | None:
    """Why the weights at ``path`` do not load into model ``name``'s backbone, or None."""
    model = models.create(name, atom="aspp", input_size=size)
    try:
        load_backbone(model.backbone, path)
    except ValueError as error:
        return f"weights that load into {name}'s backbone ({error})"
    return None


def training_images(config: FundusDataConfig) -> int:
    """The images a run trains on (the train splits of the domains not held out), counted
    without decoding or generating one."""
    kept = [domain for domain in DOMAINS if domain != config.held_out]
    if config.root is None:
        return sum(split_size(domain, "train", config.synthetic_scale) for domain in kept)
    return sum(
        len(
            list((Path(config.root) / f"Domain{domain}" / "train" / "ROIs" / "image").glob("*.png"))
        )
        for domain in kept
    )


def check_config(config: FundusConfig) -> None:
    """Everything about a run that can be checked without training (what ``studies`` runs for
    every run before the first starts): the paths, the batch size against the training set and
    the model with its sites. Raises ValueError."""
    check_paths(config)
    engine.check_batch_size(config.optim.batch_size, training_images(config.data))
    check_model(config)


def segmentation_loss(
    logits: torch.Tensor, masks: torch.Tensor, dice_weight: float
) -> torch.Tensor:
    """BCE over both outputs (+ ``dice_weight`` x soft Dice loss, averaged over the outputs)."""
    targets = masks.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets)
    if dice_weight > 0:
        probabilities = logits.sigmoid()
        overlap = (probabilities * targets).sum(dim=(0, 2, 3))
        total = probabilities.sum(dim=(0, 2, 3)) + targets.sum(dim=(0, 2, 3))
        loss = loss + dice_weight * (1 - (2 * overlap + 1) / (total + 1)).mean()
    return loss


# ------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """Sigmoid probabilities (N, 2, H, W) of uint8 images, in batches."""
    model.eval()
    return torch.cat(
        [
            model(to_model_input(images[start : start + batch_size].to(device)))
            .float()
            .sigmoid()
            .cpu()
            for start in range(0, images.shape[0], batch_size)
        ]
    )


def evaluate_fundus(
    model: nn.Module, test: FundusSet, config: FundusEvalConfig, device="cpu"
) -> tuple[dict, torch.Tensor]:
    """Metrics of ``segmentation_metrics`` (per-image means) and the probabilities."""
    probabilities = engine.check_finite(
        predict(model, test.images, config.batch_size, device), "predictions"
    )
    on = config.postprocess
    prediction = postprocess(probabilities, config.threshold, largest=on, fill=on)
    metrics = segmentation_metrics(prediction, test.masks)
    metrics.pop("per_image")
    return metrics, probabilities


# ------------------------------------------------------------------------------------ fit


class FundusTask:
    """The fundus task's part of the epoch loop (``tvconv._engine.TrainingTask``): batches of
    the three training domains, augmentation applied to images and masks alike, BCE (+ Dice)."""

    def __init__(self, config: FundusConfig, train: FundusSet, device) -> None:
        self.config, self.train, self.device = config, train, device
        self.augment = Augmentation(config.data.augment)

    def batches(self, local: torch.Tensor):
        return iter(local)

    def inputs(self, chunk: torch.Tensor, augment_rng: torch.Generator) -> tuple:
        images, masks = self.augment.with_masks(
            to_model_input(self.train.images[chunk]), self.train.masks[chunk], augment_rng
        )
        images, masks = images.to(self.device), masks.to(self.device)
        return (images,), masks, images.shape[0]

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(logits.float(), masks, self.config.optim.dice_weight)

    def after_step(self, logits: torch.Tensor, masks: torch.Tensor) -> None:
        pass  # no statistic of its own

    def epoch_metrics(self) -> dict:
        return {}

    def evaluate_epoch(self) -> dict:
        return {}


def fit_fundus(
    config: FundusConfig,
    on_epoch_end: Callable[[dict], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train and evaluate one leave-one-domain-out run (see the module docstring)."""
    start, runtime, (train, test), data_seconds = engine.begin(
        config, lambda: load_split_data(config.data)
    )
    model = build_model(config).to(runtime.device)
    engine.initialise_affinity(
        config, model, len(train), lambda indices: train.images[indices], runtime.device
    )
    optim = config.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    task = FundusTask(config, train, runtime.device)
    trained = engine.train(
        config, runtime, model, optimizer, task, len(train), on_epoch_end, on_step
    )

    eval_start = time.perf_counter()
    metrics: dict = {}
    examples = None
    if trained.status == "complete" and runtime.is_main:
        deployed = deploy(copy.deepcopy(model))
        try:
            metrics, probabilities = evaluate_fundus(deployed, test, config.eval, runtime.device)
        except engine.DivergedError as error:
            trained = replace(trained, status="failed", reason=str(error))
            return engine.result(
                config, runtime, trained, {}, start, data_seconds, eval_start, model
            )
        prior = segmentation_metrics(prior_masks(train.masks).expand_as(test.masks), test.masks)
        for structure in ("cup", "disc"):
            metrics[f"prior_dice_{structure}_pct"] = prior[f"dice_{structure}_pct"]
        metrics["train_loss"] = trained.history[-1]["loss"]
        examples = {
            "images": test.images[:EXAMPLES].clone(),
            "masks": test.masks[:EXAMPLES].clone(),
            "probabilities": (probabilities[:EXAMPLES] * 255).round().to(torch.uint8),
        }
    return engine.result(
        config, runtime, trained, metrics, start, data_seconds, eval_start, model, examples
    )


# ------------------------------------------------------------------------------------ cli


SUMMARY_KEYS = ("dice_cup_pct", "dice_disc_pct", "hd95_cup_px", "hd95_disc_px")
PRIOR_KEYS = ("prior_dice_cup_pct", "prior_dice_disc_pct")


def main(argv: list[str] | None = None) -> int:
    return engine.run_cli(
        argv,
        prog="python -m tvconv.segment",
        description="Train and evaluate one leave-one-domain-out fundus segmentation run.",
        presets=PRESETS,
        example="model.atom=dw data.held_out=3 optim.epochs=4",
        check=check_config,
        fit=fit_fundus,
        summary_keys=lambda metrics: [k for k in SUMMARY_KEYS if k in metrics] + list(PRIOR_KEYS),
    )


if __name__ == "__main__":
    exit_with(main)
