"""The layout diagnostic on hand-computed examples."""

import math

import pytest
import torch

from tvconv.data.variance import layout_variance


def test_hand_computed_variances():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]], [[[1.0, 2.0], [3.0, 4.0]]]])  # (2, 1, 2, 2)
    result = layout_variance(x)
    torch.testing.assert_close(result.cross_image, torch.full((4,), 0.25))
    torch.testing.assert_close(result.intra_image, torch.full((2,), 1.25))
    assert result.score == pytest.approx(5.0)
    # the mean image (0.5, 1.5, 2.5, 3.5) varies by 1.25 over positions: 1.25 / (0.25 + 1.25)
    assert result.summary() == pytest.approx(
        {
            "cross_image_var": 0.25,
            "intra_image_var": 1.25,
            "layout_score": 5.0,
            "mean_image_share": 1.25 / 1.5,
        }
    )


def test_channels_are_averaged_and_uint8_is_mapped_to_model_range():
    x = torch.tensor([[[[0, 255]], [[0, 0]]], [[[255, 255]], [[0, 0]]]], dtype=torch.uint8)
    result = layout_variance(x)  # in [-1, 1]: channel 0 of image 0 is (-1, 1), image 1 (1, 1)
    torch.testing.assert_close(result.cross_image, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(result.intra_image, torch.tensor([0.5, 0.0]))


def test_shuffled_positions_remove_the_layout():
    torch.manual_seed(0)
    pattern = torch.randn(1, 1, 8, 8) * 2
    aligned = pattern + 0.3 * torch.randn(200, 1, 8, 8)
    shuffled = torch.stack([img.flatten()[torch.randperm(64)].view(1, 8, 8) for img in aligned])
    assert layout_variance(aligned).score > 10
    assert layout_variance(shuffled).score == pytest.approx(1.0, abs=0.1)


def test_a_dataset_in_memory_is_measured_as_its_images():
    from tvconv.data.datasets import FaceTrainSet

    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    dataset = FaceTrainSet(torch.zeros(6), 1, images=images)
    assert layout_variance(dataset).summary() == layout_variance(images).summary()
    on_access = FaceTrainSet(torch.zeros(6), 1, load=lambda i: images[i])
    with pytest.raises(ValueError, match="decoded on access"):
        layout_variance(on_access)
    with pytest.raises(ValueError, match="got list"):
        layout_variance([images])


def test_data_that_do_not_vary_have_no_ratio_not_a_crash():
    """Constant images or dead (all-zero) feature maps: 0 / 0 is nan, a positive value over a
    zero cross-image variance is inf."""
    flat = layout_variance(torch.zeros(4, 3, 8, 8)).summary()
    assert flat["cross_image_var"] == 0 and flat["intra_image_var"] == 0
    assert math.isnan(flat["layout_score"]) and math.isnan(flat["mean_image_share"])
    same_pattern = torch.zeros(4, 1, 8, 8)
    same_pattern[:, :, 0, 0] = 1.0  # every image the same, not constant over positions
    result = layout_variance(same_pattern)
    assert result.score == math.inf and result.mean_image_share == 1.0


@pytest.mark.parametrize(
    "shape", [(4, 3, 0, 8), (4, 0, 8, 8), (1, 3, 8, 8), (3, 8, 8)], ids=["h0", "c0", "n1", "3d"]
)
def test_shapes_without_variance_are_refused(shape):
    with pytest.raises(ValueError, match=r"needs \(N >= 2, C, H, W >= 1\)"):
        layout_variance(torch.zeros(shape))
