"""Verification metrics against a brute-force reference written from the protocol text."""

import math

import numpy as np
import pytest
import torch

from tvconv.metrics import (
    accuracies_over_thresholds,
    roc_metrics,
    threshold_grid,
    verification_accuracy,
)


def brute_force(left, right, issame, folds, accumulate, steps):
    """The paper's protocol, literally: loops over folds and over every threshold."""
    left = left / np.linalg.norm(left, axis=1, keepdims=True)
    right = right / np.linalg.norm(right, axis=1, keepdims=True)
    original = (left.copy(), right.copy())
    thresholds = np.arange(-steps, steps + 1) * 3.0 / steps
    accuracies = []
    for fold in range(10):
        if not accumulate:
            left, right = original
        train, test = folds != fold, folds == fold
        mu = np.concatenate([left[train], right[train]]).mean(axis=0)
        left, right = left - mu, right - mu
        left = left / np.linalg.norm(left, axis=1, keepdims=True)
        right = right / np.linalg.norm(right, axis=1, keepdims=True)
        scores = ((left - right) ** 2).sum(axis=1)

        def accuracy(mask, t, scores=scores):
            s, same = scores[mask], issame[mask]
            return ((s[same] < t).sum() + (s[~same] > t).sum()) / mask.sum()

        train_acc = np.array([accuracy(train, t) for t in thresholds])
        best = thresholds[train_acc == train_acc.max()].mean()
        accuracies.append(accuracy(test, best))
    return 100 * float(np.mean(accuracies))


def random_pairs(seed, pairs=200, dim=8, signal=0.8):
    rng = np.random.default_rng(seed)
    issame = np.zeros(pairs, dtype=bool)
    issame[rng.permutation(pairs)[: pairs // 2]] = True
    left = rng.normal(size=(pairs, dim)) + 0.7  # off-centre, so the centring matters
    noise = rng.normal(size=(pairs, dim))
    right = np.where(issame[:, None], signal * left + noise, rng.normal(size=(pairs, dim)) + 0.7)
    folds = np.arange(pairs) // (pairs // 10)
    return left, right, issame, folds


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("protocol", ["clean", "official"])
def test_accuracy_matches_the_brute_force_reference(seed, protocol):
    left, right, issame, folds = random_pairs(seed)
    expected = brute_force(left, right, issame, folds, protocol == "official", steps=300)
    result = verification_accuracy(
        torch.tensor(left),
        torch.tensor(right),
        torch.tensor(issame),
        torch.tensor(folds),
        protocol=protocol,
        threshold_steps=300,
    )
    assert result["acc_pct"] == pytest.approx(expected, abs=1e-9)
    assert 50 < result["acc_pct"] < 100
    assert len(result["fold_acc_pct"]) == 10


def test_the_official_quirk_changes_the_result():
    left, right, issame, folds = random_pairs(3, dim=4)
    args = [torch.tensor(a) for a in (left, right, issame, folds)]
    clean = verification_accuracy(*args, protocol="clean", threshold_steps=300)
    official = verification_accuracy(*args, protocol="official", threshold_steps=300)
    assert clean["acc_pct"] != official["acc_pct"]


def test_perfectly_separable_pairs_score_100():
    torch.manual_seed(0)
    base = torch.randn(100, 16)
    issame = torch.arange(100) % 2 == 0
    right = torch.where(issame[:, None], base, -base)
    result = verification_accuracy(base, right, issame, torch.arange(100) // 10)
    assert result["acc_pct"] == 100.0 and result["acc_std_pct"] == 0.0


def test_threshold_grid_and_vectorised_accuracies():
    grid = threshold_grid(10_000)
    assert grid.numel() == 20_001 and grid[0] == -3 and grid[-1] == 3 and grid[10_000] == 0
    scores = torch.tensor([0.5, 1.0, 1.5, 1.0], dtype=torch.float64)
    issame = torch.tensor([True, True, False, False])
    thresholds = torch.tensor([0.4, 0.5, 0.7, 1.0, 1.2, 2.0], dtype=torch.float64)
    naive = [
        ((scores[issame] < t).sum() + (scores[~issame] > t).sum()).item() / 4 for t in thresholds
    ]
    assert accuracies_over_thresholds(scores, issame, thresholds).tolist() == naive


def unit_pairs(similarities):
    """Pairs of 2-d unit vectors with the given cosine similarities."""
    angles = torch.tensor([math.acos(s) for s in similarities], dtype=torch.float64)
    left = torch.stack([torch.ones_like(angles), torch.zeros_like(angles)], dim=1)
    right = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return left, right


def test_roc_metrics_on_known_similarities():
    left, right = unit_pairs([0.9, 0.8, 0.1, 0.85])
    issame = torch.tensor([True, True, False, False])
    result = roc_metrics(left, right, issame, far=0.5)
    assert result["auc_pct"] == pytest.approx(75.0)  # 0.9 beats both, 0.8 beats one
    assert result["tar_pct"] == pytest.approx(100.0)  # threshold 0.1 accepts 1 of 2 negatives
    strict = roc_metrics(left, right, issame, far=0.0)
    assert strict["tar_pct"] == pytest.approx(50.0)  # threshold 0.85: only 0.9 accepted
    tied = roc_metrics(*unit_pairs([0.5, 0.5]), torch.tensor([True, False]))
    assert tied["auc_pct"] == pytest.approx(50.0)


def test_bad_inputs_are_refused():
    x = torch.zeros(20, 4)
    with pytest.raises(ValueError, match="protocol must be one of clean, official"):
        verification_accuracy(x, x, torch.zeros(20), torch.zeros(20), protocol="lfw")
    with pytest.raises(ValueError, match=r"issame \(P,\)"):
        verification_accuracy(x, x, torch.zeros(19), torch.zeros(20))
    with pytest.raises(ValueError, match="both same and different pairs"):
        roc_metrics(x + 1, x + 1, torch.ones(20, dtype=torch.bool))


def test_pair_list_flags_and_default_folds_read_as_the_protocol():
    """1/-1 flags (the pair lists' format) are same/different, not all "same" as a bool cast
    reads them; without folds, the protocol's 10 consecutive folds are used."""
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(60, 8, generator=generator), torch.randn(60, 8, generator=generator)
    same = torch.arange(60) % 3 == 0
    folds = torch.arange(60) // 6
    expected = verification_accuracy(left, right, same, folds)
    signed = same.long() * 2 - 1
    assert verification_accuracy(left, right, signed, folds) == expected
    assert verification_accuracy(left, right, same.long(), folds) == expected
    assert verification_accuracy(left, right, same) == expected
    assert roc_metrics(left, right, signed) == roc_metrics(left, right, same)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"issame": torch.full((20,), 2)}, r"bool, 0/1 or 1/-1 .* got values \[2\]"),
        ({"folds": torch.zeros(20, dtype=torch.long)}, "at least two folds"),
        ({"folds": torch.arange(19)}, r"folds must be integer fold ids \(P,\) = \(20,\)"),
        ({"folds": torch.arange(20) / 2.0}, "folds must be integer fold ids"),
        ({"left": torch.zeros(20, 4) * math.nan}, "NaN or inf"),
        (
            {"left": torch.zeros(0, 4), "right": torch.zeros(0, 4), "issame": torch.zeros(0)},
            "no pairs",
        ),
    ],
)
def test_inputs_without_a_defined_score_are_refused(arguments, message):
    inputs = {
        "left": torch.randn(20, 4),
        "right": torch.randn(20, 4),
        "issame": torch.arange(20) % 2 == 0,
        "folds": torch.arange(20) // 2,
    }
    with pytest.raises(ValueError, match=message):
        verification_accuracy(**(inputs | arguments))
