"""Face-verification metrics in the paper's protocol, plus threshold-free numbers.

``verification_accuracy`` follows PAPER.md section 5: embeddings are L2-normalised; for each of the
10 folds, the mean embedding of the other 9 folds (left and right images together) is subtracted
from every embedding, which is then renormalised; the score of a pair is the squared L2 distance;
the threshold is picked on the 9 folds from a grid of 2 * steps + 1 values over [-3, 3] (the
mean of all thresholds reaching the best accuracy), and the accuracy measured on the held-out fold.
A same pair is correct when its score is below the threshold, a different pair when above.

``protocol="official"`` reproduces the common face-evaluation loop, where the centring and
renormalisation accumulate from fold to fold (each fold starts from the previous fold's centred
embeddings); ``protocol="clean"`` (default) starts every fold from the original embeddings.

``roc_metrics`` gives threshold-free numbers on the cosine similarity of the normalised
embeddings over all pairs: the ROC AUC and the true-accept rate at a false-accept rate of 1e-2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def verification_accuracy(
    left: torch.Tensor,
    right: torch.Tensor,
    issame: torch.Tensor,
    folds: torch.Tensor,
    protocol: str = "clean",
    threshold_steps: int = THRESHOLD_STEPS,
) -> dict:
    """10-fold verification accuracy of pairs of embeddings ``left``, ``right`` (P, D).

    Returns ``acc_pct`` (mean over folds, %), ``acc_std_pct``, ``fold_acc_pct`` (list) and
    ``threshold`` (mean of the chosen thresholds).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if left.shape != right.shape or left.dim() != 2 or issame.shape != (left.shape[0],):
        raise ValueError(
            f"left and right must be (P, D) and issame (P,), got {tuple(left.shape)}, "
            f"{tuple(right.shape)}, {tuple(issame.shape)}"
        )
    issame = issame.bool()
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
    issame = issame.bool()
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
