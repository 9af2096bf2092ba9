"""Face-verification metrics in the paper's protocol, plus threshold-free numbers.

``verification_accuracy`` follows the paper's protocol: embeddings are L2-normalised; for each of
the 10 folds, the mean embedding of the other 9 folds (left and right images together) is subtracted
from every embedding, which is then renormalised; the score of a pair is the squared L2 distance;
the threshold is picked on the 9 folds from a grid of 2 * steps + 1 values over [-3, 3] (the
mean of all thresholds reaching the best accuracy), and the accuracy measured on the held-out fold.
A same pair is correct when its score is below the threshold, a different pair when above.

``protocol="official"`` reproduces the common face-evaluation loop, where the centring and
renormalisation accumulate from fold to fold (each fold starts from the previous fold's centred
embeddings); ``protocol="clean"`` (default) starts every fold from the original embeddings.

``roc_metrics`` gives threshold-free numbers on the cosine similarity of the normalised
embeddings over all pairs: the ROC AUC and the true-accept rate at a false-accept rate of 1e-2.

For optic cup / disc segmentation (bool masks (N, H, W), or (N, 2, H, W) for cup and disc),
``postprocess`` thresholds probabilities and optionally keeps the largest connected component
(``connected_components``, ``largest_component``) and fills holes (``fill_holes``);
``segmentation_metrics`` reports Dice (``dice``), HD95 and the symmetric average surface distance
(``hd95_asd``, on the border pixels given by ``surface``), in pixels. The image operations are
``scipy.ndimage``'s (labelling, hole filling, erosion, the exact Euclidean distance transform).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from tvconv.data.datasets import NUM_FOLDS, pair_flags

PROTOCOLS = ("clean", "official")
THRESHOLD_STEPS = 10_000
THRESHOLD_RANGE = 3.0


def threshold_grid(steps: int = THRESHOLD_STEPS) -> torch.Tensor:
    """The 2 * steps + 1 thresholds (-steps..steps) * 3 / steps, in float64."""
    return torch.arange(-steps, steps + 1, dtype=torch.float64) * THRESHOLD_RANGE / steps


def accuracies_over_thresholds(
    scores: torch.Tensor, issame: torch.Tensor, thresholds: torch.Tensor
) -> torch.Tensor:
    """Accuracy of every threshold: (#same below + #different above) / #pairs, vectorised."""
    same = torch.sort(scores[issame]).values
    different = torch.sort(scores[~issame]).values
    same_below = torch.searchsorted(same, thresholds, side="left")
    different_above = different.numel() - torch.searchsorted(different, thresholds, side="right")
    return (same_below + different_above).double() / scores.numel()


def _pair_scores(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return (left - right).pow(2).sum(dim=1)


def _check_pairs(left: torch.Tensor, right: torch.Tensor, issame: torch.Tensor) -> None:
    if left.shape != right.shape or left.dim() != 2 or issame.shape != (left.shape[0],):
        raise ValueError(
            f"left and right must be (P, D) and issame (P,), got {tuple(left.shape)}, "
            f"{tuple(right.shape)}, {tuple(issame.shape)}"
        )
    if left.shape[0] == 0 or left.shape[1] == 0:
        raise ValueError(f"no pairs to score: left and right are {tuple(left.shape)}")
    if not (torch.isfinite(left).all() and torch.isfinite(right).all()):
        raise ValueError("embeddings hold NaN or inf (a diverged model?); no score is defined")


def verification_accuracy(
    left: torch.Tensor,
    right: torch.Tensor,
    issame: torch.Tensor,
    folds: torch.Tensor | None = None,
    protocol: str = "clean",
    threshold_steps: int = THRESHOLD_STEPS,
) -> dict:
    """10-fold verification accuracy of pairs of embeddings ``left``, ``right`` (P, D).

    ``issame`` (P,): bool, 0/1 or 1/-1 flags (``pair_flags``). ``folds`` (P,): each pair's fold
    id, at least two folds; by default the protocol's ``NUM_FOLDS`` consecutive blocks of pairs.
    Returns ``acc_pct`` (mean over folds, %), ``acc_std_pct``, ``fold_acc_pct`` (list) and
    ``threshold`` (mean of the chosen thresholds).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    _check_pairs(left, right, issame)
    count = left.shape[0]
    if folds is None:
        if count < NUM_FOLDS:
            raise ValueError(f"{count} pairs cannot form {NUM_FOLDS} folds; pass folds")
        folds = torch.arange(count) * NUM_FOLDS // count
    if folds.shape != (count,) or folds.dtype.is_floating_point or folds.dtype == torch.bool:
        raise ValueError(
            f"folds must be integer fold ids (P,) = ({count},), got {folds.dtype} "
            f"{tuple(folds.shape)}"
        )
    if torch.unique(folds).numel() < 2:
        raise ValueError("folds must name at least two folds (a threshold is chosen on the rest)")
    issame = pair_flags(issame)
    original_left = F.normalize(left.double(), dim=1)
    original_right = F.normalize(right.double(), dim=1)
    current_left, current_right = original_left, original_right
    thresholds = threshold_grid(threshold_steps)
    fold_ids = sorted(set(folds.tolist()))
    accuracies, chosen = [], []
    for fold in fold_ids:
        held_out = folds == fold
        if protocol == "clean":
            current_left, current_right = original_left, original_right
        mean = torch.cat([current_left[~held_out], current_right[~held_out]]).mean(dim=0)
        current_left = F.normalize(current_left - mean, dim=1)
        current_right = F.normalize(current_right - mean, dim=1)
        scores = _pair_scores(current_left, current_right)
        train_acc = accuracies_over_thresholds(scores[~held_out], issame[~held_out], thresholds)
        threshold = thresholds[train_acc == train_acc.max()].mean()
        test_scores, test_same = scores[held_out], issame[held_out]
        correct = (test_scores[test_same] < threshold).sum() + (
            test_scores[~test_same] > threshold
        ).sum()
        accuracies.append(float(correct) / int(held_out.sum()))
        chosen.append(float(threshold))
    fold_acc = torch.tensor(accuracies, dtype=torch.float64) * 100
    return {
        "acc_pct": float(fold_acc.mean()),
        "acc_std_pct": float(fold_acc.std(unbiased=False)),
        "fold_acc_pct": fold_acc.tolist(),
        "threshold": sum(chosen) / len(chosen),
    }


def roc_metrics(
    left: torch.Tensor, right: torch.Tensor, issame: torch.Tensor, far: float = 1e-2
) -> dict:
    """ROC AUC (%, ties counted half) and the true-accept rate ``tar_pct`` (%) at false-accept
    rate ``far`` of the cosine similarity of the normalised embeddings."""
    _check_pairs(left, right, issame)
    issame = pair_flags(issame)
    if issame.all() or not issame.any():
        raise ValueError("roc_metrics needs both same and different pairs")
    similarity = (F.normalize(left.double(), dim=1) * F.normalize(right.double(), dim=1)).sum(1)
    positives, negatives = similarity[issame], similarity[~issame]
    sorted_negatives = torch.sort(negatives).values
    below = torch.searchsorted(sorted_negatives, positives, side="left")
    not_above = torch.searchsorted(sorted_negatives, positives, side="right")
    auc = (below + not_above).double().sum() / 2 / (positives.numel() * negatives.numel())
    # Threshold: the smallest similarity that accepts at most far * #negatives different pairs.
    allowed = int(far * negatives.numel())
    count = negatives.numel()
    threshold = sorted_negatives[count - allowed - 1] if allowed < count else -2.0
    tar = (positives > threshold).double().mean()
    return {"auc_pct": float(auc) * 100, "tar_pct": float(tar) * 100, "far": far}


# --- Optic cup / disc segmentation: post-processing and metrics -----------------------------------

CONNECTIVITIES = (4, 8)


def _check_masks(masks: torch.Tensor, name: str = "masks") -> None:
    if masks.dtype != torch.bool or masks.dim() != 3:
        raise ValueError(
            f"{name} must be a bool tensor (N, H, W), got {masks.dtype} {tuple(masks.shape)}"
        )


STRUCTURES = {  # the 4- and 8-neighbourhoods
    4: ndimage.generate_binary_structure(2, 1),
    8: ndimage.generate_binary_structure(2, 2),
}


def _per_image(operation, masks: torch.Tensor) -> torch.Tensor:
    """``operation`` (a numpy bool image -> bool image) applied to each mask (N, H, W)."""
    images = masks.numpy(force=True)
    result = np.stack([operation(image) for image in images]) if len(images) else images.copy()
    return torch.from_numpy(result).to(masks.device)


def connected_components(masks: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Labels (N, H, W) int64 of the 4- or 8-connected components of bool ``masks`` (N, H, W).

    Background is 0; each component is labelled with the flat index + 1 of its last pixel in
    raster order: unique within its image, not consecutive, and independent of how components
    are found (``scipy.ndimage.label``).
    """
    _check_masks(masks)
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    count, height, width = masks.shape
    pixel_ids = np.arange(1, height * width + 1, dtype=np.int64).reshape(height, width)
    result = np.zeros((count, height, width), dtype=np.int64)
    for index, mask in enumerate(masks.cpu().numpy()):
        labels, found = ndimage.label(mask, structure=STRUCTURES[connectivity])
        if found:
            last = ndimage.maximum(pixel_ids, labels, index=np.arange(1, found + 1))
            result[index] = np.concatenate([[0], np.asarray(last, dtype=np.int64)])[labels]
    return torch.from_numpy(result).to(masks.device)


def largest_component(masks: torch.Tensor) -> torch.Tensor:
    """Keeps only the largest 8-connected component of each bool mask (N, H, W).

    Empty masks stay empty; among equally large components the one with the smallest label wins.
    """
    labels = connected_components(masks, connectivity=8)
    count, height, width = masks.shape
    bins = height * width + 1
    offsets = torch.arange(count, device=masks.device).view(count, 1, 1) * bins
    sizes = torch.bincount((labels + offsets).flatten(), minlength=count * bins).view(count, bins)
    sizes[:, 0] = 0
    largest = sizes.argmax(dim=1).view(count, 1, 1)
    return masks & (labels == largest)


def fill_holes(masks: torch.Tensor) -> torch.Tensor:
    """Bool masks (N, H, W) with every background pixel not 4-connected to the border filled
    (``scipy.ndimage.binary_fill_holes``)."""
    _check_masks(masks)
    return _per_image(lambda mask: ndimage.binary_fill_holes(mask, STRUCTURES[4]), masks)


def postprocess(
    probabilities: torch.Tensor, threshold: float = 0.5, largest: bool = True, fill: bool = True
) -> torch.Tensor:
    """Bool (cup, disc) masks (N, 2, H, W) from probabilities (N, 2, H, W).

    Thresholds (p > threshold), then per channel keeps the largest 8-connected component
    (``largest``) and fills holes (``fill``). Only when ``largest`` or ``fill`` is on is the cup
    also clipped to the disc (cup &= disc); with both off this is a plain threshold.
    """
    if probabilities.dim() != 4 or probabilities.shape[1] != 2:
        raise ValueError(
            f"probabilities must be (N, 2, H, W) for (cup, disc), got {tuple(probabilities.shape)}"
        )
    masks = probabilities > threshold
    if not (largest or fill):
        return masks
    count, channels, height, width = masks.shape
    flat = masks.reshape(count * channels, height, width)
    if largest:
        flat = largest_component(flat)
    if fill:
        flat = fill_holes(flat)
    cup, disc = flat.reshape(count, channels, height, width).unbind(dim=1)
    return torch.stack([cup & disc, disc], dim=1)


def surface(masks: torch.Tensor) -> torch.Tensor:
    """Border pixels of bool masks (N, H, W): foreground with a 4-neighbour in the background.

    Pixels outside the image count as background, so foreground on the image edge is surface.
    """
    _check_masks(masks)
    interior = _per_image(lambda mask: ndimage.binary_erosion(mask, STRUCTURES[4]), masks)
    return masks & ~interior


def dice(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice 2|P∩G| / (|P| + |G|) per image (N,) float64 of bool masks (N, H, W).

    Both masks empty gives 1.0, exactly one empty 0.0.
    """
    _check_masks(prediction, "prediction")
    _check_masks(target, "target")
    overlap = (prediction & target).sum(dim=(1, 2)).double()
    total = (prediction.sum(dim=(1, 2)) + target.sum(dim=(1, 2))).double()
    return torch.where(total > 0, 2 * overlap / total.clamp(min=1), 1.0)


def _distances_to(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Euclidean distance from each True pixel of ``points`` (raster order) to the nearest True
    pixel of ``others`` (exact: ``scipy.ndimage.distance_transform_edt``)."""
    return ndimage.distance_transform_edt(~others)[points]


def hd95_asd(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HD95 and ASD in pixels per image (N,) float64 (on the CPU) of bool masks (N, H, W).

    The distances from every surface pixel of the prediction to the nearest surface pixel of the
    target and from every target surface pixel to the nearest prediction surface pixel are pooled;
    HD95 is their 95th percentile (linear interpolation, as medpy's ``hd95``) and ASD their mean
    (the symmetric average surface distance over the pooled distances; medpy's ``assd`` instead
    averages the two directed means). Both masks empty gives 0; exactly one empty gives
    the image diagonal sqrt(H^2 + W^2), the largest possible distance, as a penalty.
    """
    _check_masks(prediction, "prediction")
    _check_masks(target, "target")
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    count, height, width = prediction.shape
    hd95 = torch.zeros(count, dtype=torch.float64)
    asd = torch.zeros(count, dtype=torch.float64)
    diagonal = math.hypot(height, width)
    for index, (predicted, expected) in enumerate(
        zip(surface(prediction).numpy(force=True), surface(target).numpy(force=True), strict=True)
    ):
        if not predicted.any() or not expected.any():
            if predicted.any() or expected.any():
                hd95[index] = asd[index] = diagonal
            continue
        distances = torch.from_numpy(
            np.concatenate(
                [_distances_to(predicted, expected), _distances_to(expected, predicted)]
            ).astype(np.float64)
        )
        hd95[index] = torch.quantile(distances, 0.95)
        asd[index] = distances.mean()
    return hd95, asd


SEGMENTATION_CHANNELS = ("cup", "disc")


def segmentation_metrics(prediction: torch.Tensor, target: torch.Tensor) -> dict:
    """Dice (%), HD95 and ASD (pixels) of bool (cup, disc) masks (N, 2, H, W), mean over images.

    Returns ``dice_cup_pct``, ``dice_disc_pct``, ``dice_mean_pct`` (mean of the two),
    ``hd95_cup_px``, ``hd95_disc_px``, ``asd_cup_px``, ``asd_disc_px`` and ``per_image``: the same
    keys but ``dice_mean_pct`` with one value per image in lists. Conventions for empty masks are
    those of ``dice`` and ``hd95_asd``.
    """
    for name, masks in (("prediction", prediction), ("target", target)):
        if masks.dtype != torch.bool or masks.dim() != 4 or masks.shape[1] != 2:
            raise ValueError(
                f"{name} must be a bool tensor (N, 2, H, W) of (cup, disc) masks, "
                f"got {masks.dtype} {tuple(masks.shape)}"
            )
    if prediction.shape != target.shape or len(prediction) == 0:
        raise ValueError(
            f"prediction and target must have the same shape with at least one image, got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    per_image = {}
    for channel, name in enumerate(SEGMENTATION_CHANNELS):
        predicted, expected = prediction[:, channel], target[:, channel]
        hd95, asd = hd95_asd(predicted, expected)
        per_image[f"dice_{name}_pct"] = (dice(predicted, expected) * 100).tolist()
        per_image[f"hd95_{name}_px"] = hd95.tolist()
        per_image[f"asd_{name}_px"] = asd.tolist()
    means = {key: sum(values) / len(values) for key, values in per_image.items()}
    return {
        "dice_cup_pct": means["dice_cup_pct"],
        "dice_disc_pct": means["dice_disc_pct"],
        "dice_mean_pct": (means["dice_cup_pct"] + means["dice_disc_pct"]) / 2,
        "hd95_cup_px": means["hd95_cup_px"],
        "hd95_disc_px": means["hd95_disc_px"],
        "asd_cup_px": means["asd_cup_px"],
        "asd_disc_px": means["asd_disc_px"],
        "per_image": per_image,
    }
