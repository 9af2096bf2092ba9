"""Cup / disc segmentation metrics and post-processing against hand-computed values and
brute-force references written from the definitions."""

import math
from collections import deque

import numpy as np
import pytest
import torch

from tvconv.metrics import (
    connected_components,
    dice,
    fill_holes,
    hd95_asd,
    largest_component,
    postprocess,
    segmentation_metrics,
    surface,
)


def masks_from(*rows_per_image: list[str]) -> torch.Tensor:
    """Bool masks (N, H, W) drawn as strings, '#' for foreground."""
    return torch.tensor([[[c == "#" for c in row] for row in rows] for rows in rows_per_image])


def bfs_components(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """Reference labelling: breadth-first search from every unlabelled foreground pixel."""
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    height, width = mask.shape
    labels = np.zeros(mask.shape, dtype=np.int64)
    next_label = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        next_label += 1
        labels[start] = next_label
        queue = deque([start])
        while queue:
            row, col = queue.popleft()
            for dr, dc in steps:
                r, c = row + dr, col + dc
                if 0 <= r < height and 0 <= c < width and mask[r, c] and not labels[r, c]:
                    labels[r, c] = next_label
                    queue.append((r, c))
    return labels


def canonical(labels: np.ndarray) -> np.ndarray:
    """Relabels components 1, 2, ... in order of first appearance (raster order); 0 stays 0."""
    flat = labels.ravel()
    values, first = np.unique(flat, return_index=True)
    order = values[np.argsort(first)]
    order = order[order != 0]
    mapping = {0: 0} | {int(value): rank + 1 for rank, value in enumerate(order)}
    return np.array([mapping[int(value)] for value in flat]).reshape(labels.shape)


def reference_hd95_asd(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """HD95 and ASD by loops over all pixels and all pairs of surface pixels."""

    def surface_points(mask):
        height, width = mask.shape
        points = []
        for r in range(height):
            for c in range(width):
                neighbours = [(r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)]
                inside = [0 <= i < height and 0 <= j < width and mask[i, j] for i, j in neighbours]
                if mask[r, c] and not all(inside):
                    points.append((r, c))
        return points

    def directed(points, others):
        return [min(math.dist(p, q) for q in others) for p in points]

    predicted, expected = surface_points(prediction), surface_points(target)
    distances = directed(predicted, expected) + directed(expected, predicted)
    return float(np.percentile(distances, 95)), float(np.mean(distances))


def spiral(size: int) -> torch.Tensor:
    """A one-pixel wide square spiral walked inwards from the top-left corner, walls 1 px apart."""
    grid = torch.zeros(size, size, dtype=torch.bool)
    directions = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    row, col, heading = 0, 0, 0
    grid[0, 0] = True

    def free(r, c):
        return 0 <= r < size and 0 <= c < size and not grid[r, c]

    def can_move(d):
        dr, dc = directions[d]
        ahead_r, ahead_c = row + 2 * dr, col + 2 * dc
        inside = 0 <= ahead_r < size and 0 <= ahead_c < size
        return free(row + dr, col + dc) and (not inside or not grid[ahead_r, ahead_c])

    while True:
        if not can_move(heading):
            heading = (heading + 1) % 4
            if not can_move(heading):
                return grid
        row, col = row + directions[heading][0], col + directions[heading][1]
        grid[row, col] = True


def snake(size: int) -> torch.Tensor:
    """Full rows 0, 2, 4, ... joined alternately at the right and the left end."""
    grid = torch.zeros(size, size, dtype=torch.bool)
    grid[::2] = True
    for row in range(1, size, 2):
        grid[row, -1 if row % 4 == 1 else 0] = True
    return grid


# --- dice -----------------------------------------------------------------------------------------


def test_dice_hand_values():
    prediction = masks_from(["##.", "#.."], ["...", "..."], ["...", "..."], ["#..", "..."])
    target = masks_from(["##.", "..."], ["...", "..."], ["##.", "..."], ["...", "..#"])
    values = dice(prediction, target)
    assert values.dtype == torch.float64
    # 2 * 2 / (3 + 2); both empty; empty prediction; disjoint
    assert values.tolist() == pytest.approx([0.8, 1.0, 0.0, 0.0])


def test_dice_rejects_non_bool():
    with pytest.raises(ValueError, match=r"bool tensor \(N, H, W\)"):
        dice(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.bool))


# --- surface --------------------------------------------------------------------------------------


def test_surface_of_square_is_its_ring():
    square = masks_from([".....", ".###.", ".###.", ".###.", "....."])
    ring = masks_from([".....", ".###.", ".#.#.", ".###.", "....."])
    assert torch.equal(surface(square), ring)


def test_surface_of_single_pixel_is_itself():
    pixel = masks_from(["...", ".#.", "..."])
    assert torch.equal(surface(pixel), pixel)


def test_surface_counts_outside_the_image_as_background():
    corner = masks_from(["###..", "###..", "###..", ".....", "....."])
    expected = masks_from(["###..", "#.#..", "###..", ".....", "....."])
    assert torch.equal(surface(corner), expected)
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    expected_full = masks_from(["####", "#..#", "#..#", "####"])
    assert torch.equal(surface(full), expected_full)


# --- HD95 / ASD -----------------------------------------------------------------------------------


def test_hd95_asd_identical_masks_are_zero():
    disc = masks_from([".....", ".###.", "#####", ".###.", "....."])
    hd95, asd = hd95_asd(disc, disc.clone())
    assert hd95.tolist() == [0.0]
    assert asd.tolist() == [0.0]


def test_hd95_asd_single_pixels_three_apart():
    prediction = masks_from(["......", "......", "..#...", "......"])
    target = masks_from(["......", "......", ".....#", "......"])
    hd95, asd = hd95_asd(prediction, target)
    assert hd95.dtype == asd.dtype == torch.float64
    assert hd95.tolist() == [3.0]
    assert asd.tolist() == [3.0]


def test_hd95_asd_squares_shifted_by_one():
    # 2x2 squares: the distances are [0, 1, 0, 1] both ways; 3x3 squares: 4 ones and 4 zeros each
    # way (the middle pixel of each ring side facing the shift is 1 px from the other ring).
    prediction = masks_from(["##...", "##...", "....."], ["###..", "###..", "###.."])
    target = masks_from([".##..", ".##..", "....."], [".###.", ".###.", ".###."])
    hd95, asd = hd95_asd(prediction, target)
    assert hd95.tolist() == pytest.approx([1.0, 1.0])
    assert asd.tolist() == pytest.approx([0.5, 0.5])


def test_hd95_interpolates_linearly():
    # Distances pooled: prediction -> target [0], target -> prediction [0, 3]; the 95th percentile
    # of [0, 0, 3] sits at position 0.95 * 2 = 1.9: 0 + 0.9 * 3.
    hd95, asd = hd95_asd(masks_from(["#..."]), masks_from(["#..#"]))
    assert hd95.tolist() == pytest.approx([2.7])
    assert asd.tolist() == pytest.approx([1.0])


def test_hd95_asd_empty_masks():
    empty = masks_from(["....", "....", "...."])
    filled = masks_from(["....", ".#..", "...."])
    hd95, asd = hd95_asd(torch.cat([empty, empty, filled]), torch.cat([filled, empty, empty]))
    assert hd95.tolist() == pytest.approx([5.0, 0.0, 5.0])  # diagonal of 3 x 4 is 5
    assert asd.tolist() == pytest.approx([5.0, 0.0, 5.0])


def test_hd95_asd_match_brute_force_on_random_masks():
    generator = torch.Generator().manual_seed(0)
    prediction = torch.rand(12, 11, 13, generator=generator) < 0.3
    target = torch.rand(12, 11, 13, generator=generator) < 0.3
    hd95, asd = hd95_asd(prediction, target)
    for index in range(len(prediction)):
        expected = reference_hd95_asd(prediction[index].numpy(), target[index].numpy())
        assert (hd95[index].item(), asd[index].item()) == pytest.approx(expected, rel=1e-12)


def test_hd95_asd_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        hd95_asd(torch.zeros(1, 3, 3, dtype=torch.bool), torch.zeros(1, 3, 4, dtype=torch.bool))


# --- connected components -------------------------------------------------------------------------


def test_two_blobs_get_two_labels():
    masks = masks_from(["##...", "##...", ".....", "...##", "...##"])
    labels = connected_components(masks)
    assert labels.dtype == torch.int64
    assert (labels[~masks] == 0).all()
    first, second = labels[0, 0, 0].item(), labels[0, 4, 4].item()
    assert first > 0 and second > 0 and first != second
    assert set(labels[0, :2, :2].flatten().tolist()) == {first}
    assert set(labels[0, 3:, 3:].flatten().tolist()) == {second}


def test_diagonal_neighbours_join_only_under_8_connectivity():
    masks = masks_from(["#..", ".#.", "..#"])
    assert labels_count(connected_components(masks, connectivity=8)) == 1
    assert labels_count(connected_components(masks, connectivity=4)) == 3


def labels_count(labels: torch.Tensor) -> int:
    return len(set(labels.flatten().tolist()) - {0})


@pytest.mark.parametrize("shape", [snake, spiral])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_long_thin_shapes_are_one_component(shape, connectivity):
    mask = shape(41)
    assert mask.sum() > 600
    labels = connected_components(mask[None], connectivity=connectivity)
    assert labels_count(labels) == 1
    assert (labels[0][mask] > 0).all()


def test_images_of_a_batch_converge_independently():
    # The spiral needs many more steps than the others, which leave the batch early.
    masks = torch.stack(
        [spiral(41), torch.zeros(41, 41, dtype=torch.bool), snake(41), torch.eye(41, dtype=bool)]
    )
    labels = connected_components(masks)
    assert [labels_count(label) for label in labels] == [1, 0, 1, 1]
    for mask, label in zip(masks, labels, strict=True):
        assert torch.equal(label, connected_components(mask[None])[0])


@pytest.mark.parametrize("connectivity", [4, 8])
def test_components_match_breadth_first_search(connectivity):
    generator = torch.Generator().manual_seed(1)
    masks = torch.rand(20, 16, 16, generator=generator) < 0.5
    labels = connected_components(masks, connectivity=connectivity)
    for mask, label in zip(masks.numpy(), labels.numpy(), strict=True):
        np.testing.assert_array_equal(canonical(label), bfs_components(mask, connectivity))


def test_connectivity_must_be_4_or_8():
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        connected_components(torch.zeros(1, 3, 3, dtype=torch.bool), connectivity=6)


# --- largest component, hole filling, post-processing ---------------------------------------------


def test_largest_component_keeps_the_bigger_blob():
    masks = masks_from(["##....", "##..##", "....##", "#...##"], ["......"] * 4)
    kept = largest_component(masks)
    expected = masks_from(["......", "....##", "....##", "....##"], ["......"] * 4)
    assert torch.equal(kept, expected)


def test_largest_component_keeps_one_of_equal_blobs():
    masks = masks_from(["#.#"])
    kept = largest_component(masks)
    assert kept.sum() == 1
    assert torch.equal(largest_component(masks), kept)


def test_fill_holes_fills_a_ring_but_not_a_notch_open_to_the_border():
    ring = masks_from([".......", ".#####.", ".#...#.", ".#.#.#.", ".#...#.", ".#####."])
    filled = masks_from([".......", ".#####.", ".#####.", ".#####.", ".#####.", ".#####."])
    assert torch.equal(fill_holes(ring), filled)
    notch = masks_from([".#.#.", ".#.#.", ".#.#.", ".###.", "....."])
    assert torch.equal(fill_holes(notch), notch)


def test_fill_holes_background_is_4_connected():
    # The diamond's wall is only 8-connected, yet its inside does not leak out diagonally.
    diamond = masks_from(["..#..", ".#.#.", "#...#", ".#.#.", "..#.."])
    filled = masks_from(["..#..", ".###.", "#####", ".###.", "..#.."])
    assert torch.equal(fill_holes(diamond), filled)


def test_postprocess_end_to_end():
    disc = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.9, 0.9, 0.9, 0.9, 0.0, 0.8],
            [0.0, 0.9, 0.2, 0.5, 0.9, 0.0, 0.0],
            [0.0, 0.9, 0.9, 0.9, 0.9, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    cup = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.7, 0.7, 0.7, 0.7, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    probabilities = torch.stack([cup, disc])[None]
    result = postprocess(probabilities)
    expected_disc = masks_from([".......", ".####..", ".####..", ".####..", "......."])
    expected_cup = masks_from([".......", ".......", "..###..", ".......", "......."])
    assert result.dtype == torch.bool and result.shape == (1, 2, 5, 7)
    assert torch.equal(result[:, 1], expected_disc)
    assert torch.equal(result[:, 0], expected_cup)
    plain = postprocess(probabilities, largest=False, fill=False)
    assert torch.equal(plain, probabilities > 0.5)
    assert not plain[0, 1, 2, 3]  # 0.5 is not above the threshold
    assert plain[0, 0, 2, 5] and plain[0, 0, 4, 0]  # the cup outside the disc is kept
    only_fill = postprocess(probabilities, largest=False)
    assert only_fill[0, 1, 1, 6]  # the noise pixel stays without largest=True
    assert not only_fill[0, 0, 2, 5]  # but the cup is still clipped to the disc


def test_postprocess_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        postprocess(torch.zeros(1, 3, 4, 4))


# --- segmentation_metrics -------------------------------------------------------------------------


def test_segmentation_metrics_hand_values():
    cup_target = masks_from(["....", ".#..", "....", "...."], ["....", "..#.", "....", "...."])
    cup_prediction = masks_from(["....", ".#..", "....", "...."], ["....", "....", "....", "...."])
    disc_target = masks_from(["....", ".##.", ".##.", "...."], [".##.", ".##.", "....", "...."])
    disc_prediction = masks_from(["....", ".##.", ".##.", "...."], ["##..", "##..", "....", "...."])
    prediction = torch.stack([cup_prediction, disc_prediction], dim=1)
    target = torch.stack([cup_target, disc_target], dim=1)
    result = segmentation_metrics(prediction, target)
    diagonal = math.sqrt(32)
    expected_per_image = {
        "dice_cup_pct": [100.0, 0.0],
        "hd95_cup_px": [0.0, diagonal],
        "asd_cup_px": [0.0, diagonal],
        "dice_disc_pct": [100.0, 50.0],  # 2 * 2 / (4 + 4)
        "hd95_disc_px": [0.0, 1.0],
        "asd_disc_px": [0.0, 0.5],
    }
    assert set(result["per_image"]) == set(expected_per_image)
    for key, values in expected_per_image.items():
        assert result["per_image"][key] == pytest.approx(values), key
    expected_means = {
        "dice_cup_pct": 50.0,
        "dice_disc_pct": 75.0,
        "dice_mean_pct": 62.5,
        "hd95_cup_px": diagonal / 2,
        "hd95_disc_px": 0.5,
        "asd_cup_px": diagonal / 2,
        "asd_disc_px": 0.25,
    }
    assert set(result) == set(expected_means) | {"per_image"}
    for key, value in expected_means.items():
        assert isinstance(result[key], float)
        assert result[key] == pytest.approx(value), key


@pytest.mark.parametrize(
    ("prediction", "target", "message"),
    [
        (torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4, dtype=torch.bool), "prediction must be"),
        (
            torch.zeros(2, 2, 4, 4, dtype=torch.bool),
            torch.zeros(2, 4, 4, dtype=torch.bool),
            "target must be",
        ),
        (
            torch.zeros(2, 3, 4, 4, dtype=torch.bool),
            torch.zeros(2, 3, 4, 4, dtype=torch.bool),
            r"\(N, 2, H, W\)",
        ),
        (
            torch.zeros(2, 2, 4, 4, dtype=torch.bool),
            torch.zeros(2, 2, 4, 5, dtype=torch.bool),
            "same shape",
        ),
        (
            torch.zeros(0, 2, 4, 4, dtype=torch.bool),
            torch.zeros(0, 2, 4, 4, dtype=torch.bool),
            "at least one image",
        ),
    ],
)
def test_segmentation_metrics_rejects_bad_inputs(prediction, target, message):
    with pytest.raises(ValueError, match=message):
        segmentation_metrics(prediction, target)
