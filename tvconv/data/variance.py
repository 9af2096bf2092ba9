"""Layout-awareness diagnostic: the statistic of the paper's Fig. 1.

For images or feature maps ``x`` of shape (N, C, H, W) (images as the model sees them, in [-1, 1]):

- cross-image variance, one value per position p = (y, x):
  ``cross[p] = mean_c Var_n x[n, c, p]``, the spread of a position's value over the dataset;
- intra-image variance, one value per image n:
  ``intra[n] = mean_c Var_p x[n, c, p]``, the spread of one image's values over its positions;

(population variances). Layout-specific data (aligned faces) have small cross-image and large
intra-image variance; the ``score`` ``mean(intra) / mean(cross)`` is then above 1. By the law
of total variance both means equal the total variance minus a structure term (the spatial
variance of the mean image, resp. the variance of the image means), so data without a fixed
layout, whose mean image is flat, score about 1 or below. The ``mean_image_share`` is the first
structure term's share of the total variance: how much of what varies in the data is the layout
every image shares (25% for scikit-image's real aligned faces, ``data.lfw_subset()``; 7% for its
non-face patches). Data that do not vary (constant images, dead feature maps) have no ratio: a
zero denominator gives ``inf`` over a positive numerator and ``nan`` over zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, ``inf`` (or ``nan`` for 0 / 0) where the denominator is 0."""
    if denominator == 0:
        return math.inf if numerator > 0 else math.nan
    return numerator / denominator


@dataclass(frozen=True)
class LayoutVariance:
    cross_image: torch.Tensor  # (H * W,) variance across images, per position
    intra_image: torch.Tensor  # (N,) variance across positions, per image
    mean_image_var: float  # spatial variance of the mean image (mean over channels)

    @property
    def cross_mean(self) -> float:
        return float(self.cross_image.mean())

    @property
    def intra_mean(self) -> float:
        return float(self.intra_image.mean())

    @property
    def score(self) -> float:
        """mean intra-image / mean cross-image variance (> 1: layout-aware data)."""
        return _ratio(self.intra_mean, self.cross_mean)

    @property
    def mean_image_share(self) -> float:
        """The mean image's spatial variance / the total variance (in [0, 1])."""
        return _ratio(self.mean_image_var, self.cross_mean + self.mean_image_var)

    def summary(self) -> dict[str, float]:
        return {
            "cross_image_var": self.cross_mean,
            "intra_image_var": self.intra_mean,
            "layout_score": self.score,
            "mean_image_share": self.mean_image_share,
        }


def layout_variance(x) -> LayoutVariance:
    """Cross-image and intra-image variances of ``x``: a tensor (N, C, H, W) (images or a layer's
    features) or a dataset holding its images in memory (``.images``: a training set, a
    verification benchmark, a fundus set). uint8 images are first mapped to the model's [-1, 1]
    input range, float images are taken as they are. Raises ValueError on anything else."""
    if not isinstance(x, torch.Tensor):
        images = getattr(x, "images", None)
        if not isinstance(images, torch.Tensor):
            raise ValueError(
                f"layout_variance needs a tensor (N, C, H, W) or a dataset holding its images in "
                f"memory (.images), got {type(x).__name__}"
                + (" with its images decoded on access" if hasattr(x, "images") else "")
            )
        x = images
    if x.dim() != 4 or x.shape[0] < 2 or min(x.shape[1:]) < 1:
        raise ValueError(f"layout_variance needs (N >= 2, C, H, W >= 1), got {tuple(x.shape)}")
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise ValueError(f"layout_variance needs uint8 or float values, got {x.dtype}")
    if x.dtype == torch.uint8:
        x = x.double() / 127.5 - 1
    x = x.double().flatten(2)  # (N, C, H*W)
    cross = x.var(dim=0, unbiased=False).mean(dim=0)  # (H*W,)
    intra = x.var(dim=2, unbiased=False).mean(dim=1)  # (N,)
    structure = x.mean(dim=0).var(dim=1, unbiased=False).mean()  # mean image, over positions
    return LayoutVariance(cross.float(), intra.float(), float(structure))
