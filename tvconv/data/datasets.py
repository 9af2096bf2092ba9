"""The data containers every source produces (synthetic or real), ready for a DataLoader.

Images are kept as uint8 tensors (N, 3, H, W) in memory where they fit; ``to_model_input`` turns a
batch into the float input the face models expect (the paper's normalisation, mean 0.5, std 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

NUM_FOLDS = 10


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) in [0, 255] -> float32 in [-1, 1] (mean 0.5, std 0.5 per channel)."""
    return images.float().div_(127.5).sub_(1.0)


def check_pair_count(count: int, name: str) -> None:
    """The protocol's folds need a positive multiple of ``NUM_FOLDS`` pairs."""
    if count == 0 or count % NUM_FOLDS:
        raise ValueError(
            f"{name}: the number of pairs ({count}) must be a positive multiple of "
            f"{NUM_FOLDS} (10 consecutive folds)"
        )


def check_pair_flags(issame: list[bool], name: str) -> None:
    """Verification needs both kinds of pair: with only same (or only different) pairs no
    threshold can be chosen, and the evaluation would fail after training."""
    if all(issame) or not any(issame):
        kind = "same-identity" if all(issame) else "different-identity"
        raise ValueError(
            f"{name}: all {len(issame)} pairs are {kind} pairs; a verification benchmark needs "
            "both same and different pairs"
        )


def pair_flags(issame: torch.Tensor) -> torch.Tensor:
    """Same-identity flags as bool: bool, 0/1 or the pair lists' 1/-1 (same/different). Raises
    ValueError on other values (``-1`` read as a bool would be "same")."""
    if issame.dtype == torch.bool:
        return issame
    values = set(torch.unique(issame).tolist())
    if values <= {0, 1} or values <= {-1, 1}:
        return issame == 1
    raise ValueError(
        f"issame must hold bool, 0/1 or 1/-1 (same/different) flags, got values "
        f"{sorted(values)[:5]}"
    )


def _check_images(images: torch.Tensor, what: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{what}: images must be a uint8 tensor (N, 3, H, W), "
            f"got {images.dtype} {tuple(images.shape)}"
        )


class FaceTrainSet(Dataset):
    """Identity-labelled face images: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,).

    Either held in memory (``images`` given) or decoded on access by ``load`` (one index -> uint8
    (3, H, W)) for real training sets too large for memory.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        num_classes: int,
        images: torch.Tensor | None = None,
        load: Callable[[int], torch.Tensor] | None = None,
        name: str = "faces",
    ) -> None:
        if (images is None) == (load is None):
            raise ValueError("FaceTrainSet needs exactly one of images (in memory) or load")
        if images is not None:
            _check_images(images, name)
            if images.shape[0] != labels.shape[0]:
                raise ValueError(f"{name}: {images.shape[0]} images but {labels.shape[0]} labels")
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name}: labels must lie in [0, {num_classes - 1}]")
        self.images = images
        self.labels = labels.long()
        self.num_classes = num_classes
        self.name = name
        self._load = load

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index] if self.images is not None else self._load(index)
        return image, int(self.labels[index])

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self[0][0].shape[-2:])


@dataclass
class VerificationBenchmark(Dataset):
    """A face-verification benchmark in the paper's protocol.

    ``pairs`` (P, 2) index into ``images`` (M, 3, H, W) uint8; ``issame`` (P,) bool. The pairs form
    10 consecutive folds of P / 10 pairs each. As a Dataset it holds the M images (what a model
    embeds, e.g. batched by a DataLoader); the pairs then index the embeddings.
    """

    name: str
    images: torch.Tensor
    pairs: torch.Tensor
    issame: torch.Tensor

    def __post_init__(self) -> None:
        _check_images(self.images, self.name)
        count = self.pairs.shape[0]
        if self.pairs.dim() != 2 or self.pairs.shape[1] != 2 or self.issame.shape != (count,):
            raise ValueError(
                f"{self.name}: pairs must be (P, 2) and issame (P,), "
                f"got {tuple(self.pairs.shape)} and {tuple(self.issame.shape)}"
            )
        check_pair_count(count, self.name)
        if self.pairs.min() < 0 or self.pairs.max() >= self.images.shape[0]:
            raise ValueError(f"{self.name}: pair indices must lie in [0, {len(self.images) - 1}]")
        self.pairs = self.pairs.long()
        self.issame = pair_flags(self.issame)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]

    @property
    def folds(self) -> torch.Tensor:
        """(P,) fold index of every pair (consecutive blocks)."""
        return torch.arange(self.pairs.shape[0]) // (self.pairs.shape[0] // NUM_FOLDS)


class FundusSet(Dataset):
    """Fundus ROIs with masks: ``images`` uint8 (N, 3, H, W), ``masks`` bool (N, 2, H, W) holding
    (cup, disc) as the paper's two sigmoid outputs; the cup lies inside the disc."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, domain: int, split: str) -> None:
        _check_images(images, f"fundus domain {domain} {split}")
        if masks.dtype != torch.bool or masks.shape != (images.shape[0], 2, *images.shape[2:]):
            raise ValueError(
                f"fundus masks must be bool (N, 2, H, W) matching the images, "
                f"got {masks.dtype} {tuple(masks.shape)}"
            )
        self.images = images
        self.masks = masks
        self.domain = domain
        self.split = split

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.masks[index]
