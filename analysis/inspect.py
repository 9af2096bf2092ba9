"""Figures that look inside the data and the trained models rather than at run metrics.

- ``layout_figure``: the paper's Fig. 1, histograms of the cross-image variance (one value per
  position) and the intra-image variance (one value per image) for the embedded synthetic faces,
  the two layout-free controls, scikit-image's real aligned faces and non-face patches (when
  scikit-image is installed) and, when given, a real face folder (``tvconv.data.variance``).
- ``affinity_figure``: the affinity maps and generated kernels of trained TVConv models, layer by
  layer from shallow to deep, rebuilt from the run record's config and the state dict the runner
  saved under ``results/<study>/<preset>/models/<run_id>.pt``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.figures import ROLLED_ANYWHERE, plt, save, style
from analysis.frame import complete_runs
from tvconv import models
from tvconv.data.faces import load_image_folder
from tvconv.data.synthetic import make_face_train_set
from tvconv.data.variance import LayoutVariance, layout_variance
from tvconv.ops import TVConv
from tvconv.train import ModelConfig, quick_config

VARIANCE_COLOURS = {"cross": "#0072B2", "intra": "#D55E00"}


def synthetic_variances(image_size: int | None = None, seed: int = 0) -> dict[str, LayoutVariance]:
    """Layout diagnostic of the quick preset's training faces and of question 1's two
    layout-free controls (``studies/aug.yaml``): faces rolled anywhere, and rolled by up to a
    quarter of the frame (the shift-augmented twins)."""
    synthetic = quick_config().data.synthetic
    if image_size is not None:
        synthetic = replace(synthetic, image_size=image_size)
    synthetic = replace(synthetic, seed=seed)
    out = {}
    for label, layout, free_shift in (
        ("synthetic faces (aligned)", "aligned", synthetic.free_shift),
        ("layout-free control (rolled anywhere)", "free", ROLLED_ANYWHERE),
        ("layout-free control (rolled up to 1/4)", "free", 0.25),
    ):
        variant = replace(synthetic, layout=layout, free_shift=free_shift)
        out[label] = layout_variance(make_face_train_set(variant).images)
    return out


def real_variance(root: str | Path, image_size: int) -> LayoutVariance:
    """Layout diagnostic of a real face image folder (``root/<identity>/<image>``)."""
    return layout_variance(load_image_folder(root, image_size=image_size).images)


def scikit_image_variances() -> dict[str, LayoutVariance]:
    """Layout diagnostic of the real images scikit-image ships (``data.lfw_subset()``: 100
    aligned LFW faces, then 100 non-face patches; 25 px grey), or {} without scikit-image (a
    dev dependency)."""
    try:
        from skimage import data
    except ImportError:
        return {}
    images = torch.from_numpy(data.lfw_subset()).float().unsqueeze(1) * 2 - 1  # [0, 1] -> [-1, 1]
    return {
        "real aligned faces (LFW)": layout_variance(images[:100]),
        "real non-face patches": layout_variance(images[100:]),
    }


def layout_figure(variances: dict[str, LayoutVariance], stem: Path) -> list[Path]:
    """One panel per dataset: overlaid histograms of both variances, their means marked."""
    with style():
        fig, axes = plt.subplots(
            1, len(variances), figsize=(3.4 * len(variances), 3.0), sharex=True, squeeze=False
        )
        high = max(
            max(float(v.cross_image.max()), float(v.intra_image.max())) for v in variances.values()
        )
        bins = np.linspace(0, high * 1.02, 40)
        for ax, (label, variance) in zip(axes[0], variances.items(), strict=True):
            for kind, values, mean in (
                ("cross", variance.cross_image, variance.cross_mean),
                ("intra", variance.intra_image, variance.intra_mean),
            ):
                what = (
                    "cross-image (per position)" if kind == "cross" else "intra-image (per image)"
                )
                ax.hist(
                    values.numpy(),
                    bins=bins,
                    density=True,
                    alpha=0.55,
                    color=VARIANCE_COLOURS[kind],
                    label=what,
                )
                ax.axvline(mean, color=VARIANCE_COLOURS[kind], linewidth=1.2, linestyle="--")
            ax.set_title(
                f"{label}\nintra / cross = {variance.score:.2f}, "
                f"mean image {100 * variance.mean_image_share:.0f}%"
            )
            ax.set_xlabel("variance (pixel values in [-1, 1])")
            ax.set_ylabel("density")
        axes[0, 0].legend(loc="upper right")
        fig.tight_layout()
        return save(fig, stem)


def load_backbone(record: dict, model_path: Path) -> torch.nn.Module:
    """The trained backbone of a face run: built from the record's config, weights loaded."""
    face = record["config"]["face"]
    model = ModelConfig(**face["model"])
    backbone = models.create(
        model.name,
        atom=model.atom,
        input_size=face["data"]["image_size"],
        embedding_size=model.embedding_size,
        dropout=model.dropout,
        **model.tvconv_options(),
    )
    backbone.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    return backbone.eval()


def tvconv_layers(backbone: torch.nn.Module) -> list[tuple[str, TVConv]]:
    """TVConv layers with a weight generator, shallow to deep (module order)."""
    return [
        (name, module)
        for name, module in backbone.named_modules()
        if isinstance(module, TVConv) and module.generator
    ]


def _normalised(tile: torch.Tensor) -> np.ndarray:
    """Min-max to [0, 1] per tile: the maps' spatial pattern, not their scale, is the point."""
    tile = tile.detach().float()
    span = float(tile.max() - tile.min())
    return ((tile - tile.min()) / span).numpy() if span > 0 else np.full(tile.shape, 0.5)


def affinity_figure(
    entries: list[tuple[str, torch.nn.Module]], stem: Path, kernels: bool = True
) -> list[Path]:
    """For each (label, trained backbone): a row of affinity maps (channel 0) and, with
    ``kernels``, a row of generated kernels (centre tap of channel 0), one column per TVConv
    layer from shallow to deep. Each tile is min-max normalised."""
    rows = []
    for label, backbone in entries:
        layers = tvconv_layers(backbone)
        with torch.no_grad():
            rows.append(
                (f"{label}\naffinity map", [layer.affinity_maps[0] for _n, layer in layers])
            )
            if kernels:
                centre = [
                    layer.generate_weight()[0, layer.kernel_size // 2, layer.kernel_size // 2]
                    for _n, layer in layers
                ]
                rows.append((f"{label}\nkernel centre", centre))
    columns = max((len(tiles) for _l, tiles in rows), default=0)
    with style():
        fig, axes = plt.subplots(
            len(rows),
            max(columns, 1),
            figsize=(0.75 * max(columns, 1) + 1.2, 0.85 * len(rows) + 0.5),
            squeeze=False,
        )
        for r, (label, tiles) in enumerate(rows):
            for c in range(columns):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c < len(tiles):
                    ax.imshow(_normalised(tiles[c]), cmap="viridis", interpolation="nearest")
                    if r == 0:
                        side = tiles[c].shape[-1]
                        ax.set_title(f"{c}\n{side}px", fontsize=7)
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
        fig.suptitle(
            "TVConv layers, shallow → deep (site, resolution); tiles min-max scaled", fontsize=9
        )
        fig.tight_layout()
        return save(fig, stem)


def affinity_entries(
    runs: pd.DataFrame, records: dict[str, dict], models_dir: Path, seed: int = 0
) -> list[tuple[str, torch.nn.Module]]:
    """Trained TVConv backbones to show, one per TVConv cell at ``seed`` whose saved model exists
    (cells in table order), labelled by cell."""
    usable = complete_runs(runs)
    usable = usable[(usable["model.atom"] == "tvconv") & (usable["seed"] == seed)]
    entries = []
    for row in usable.to_dict("records"):
        path = Path(models_dir) / f"{row['run_id']}.pt"
        if path.exists() and row["model.generator"]:
            entries.append(
                (
                    row["cell"].replace("atom=tvconv", "").strip() or "tvconv",
                    load_backbone(records[row["run_id"]], path),
                )
            )
    return entries
