"""Look at the embedded data: ``python -m tvconv.data [--out PNG] [--size PX] [--seed N]``.

Writes a grid of samples (aligned faces of a few identities, the same identities layout-free, hard
pairs of each benchmark, fundus images with their masks for each domain) and prints the layout
diagnostic (paper's Fig. 1 statistic) of the aligned faces and of the layout-free control.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from tvconv.console import exit_with, nonnegative_int_arg, output_problem
from tvconv.data.synthetic import (
    BENCHMARKS,
    SyntheticFacesConfig,
    load_synthetic_faces,
)
from tvconv.data.synthetic_fundus import make_fundus_domains
from tvconv.data.variance import layout_variance

LABEL_HEIGHT = 14
# The largest preview size: rendering memory grows with the square of the size (the default 800
# training images, the layout-free copy and the benchmarks are all rendered), and a preview of a
# few faces per row needs no more.
MAX_SIZE = 256


def _row(images: torch.Tensor, label: str) -> Image.Image:
    """A labelled strip of uint8 images (N, 3, H, W)."""
    strip = torch.cat(list(images), dim=2).permute(1, 2, 0).numpy()
    picture = Image.new("RGB", (strip.shape[1], strip.shape[0] + LABEL_HEIGHT), "white")
    picture.paste(Image.fromarray(strip), (0, LABEL_HEIGHT))
    ImageDraw.Draw(picture).text((2, 1), label, fill="black")
    return picture


def _mask_overlay(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Disc rim painted green and cup blue over the image."""
    overlay = images.float()
    rim, cup = masks[:, 1] & ~masks[:, 0], masks[:, 0]
    for region, colour in ((rim, (40.0, 200.0, 40.0)), (cup, (40.0, 90.0, 255.0))):
        paint = torch.tensor(colour)[None, :, None, None].expand_as(overlay)
        alpha = 0.7 * region.unsqueeze(1).float()
        overlay = overlay * (1 - alpha) + paint * alpha
    return overlay.round().byte()


def _stack(rows: list[Image.Image]) -> Image.Image:
    width = max(r.width for r in rows)
    grid = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    top = 0
    for row in rows:
        grid.paste(row, (0, top))
        top += row.height
    return grid


def preview(out: Path, size: int, seed: int, per_row: int = 8) -> None:
    config = SyntheticFacesConfig(image_size=size, seed=seed)
    train, benchmarks = load_synthetic_faces(config)
    free_train, _ = load_synthetic_faces(
        SyntheticFacesConfig(image_size=size, seed=seed, layout="free")
    )
    per_identity = config.images_per_identity
    rows = []
    for identity in range(2):
        start = identity * per_identity
        rows.append(_row(train.images[start : start + per_row], f"identity {identity}, aligned"))
        rows.append(
            _row(free_train.images[start : start + per_row], f"identity {identity}, layout-free")
        )
    for bench in benchmarks:
        same = bench.pairs[bench.issame][: per_row // 2]
        different = bench.pairs[~bench.issame][: per_row // 2]
        images = torch.cat([bench.images[same.flatten()], bench.images[different.flatten()]])
        rows.append(_row(images, f"{bench.name}: 4 same pairs, then 4 different pairs"))
    domains = make_fundus_domains(size=max(size, 64), seed=seed, scale=0.1)
    for domain, splits in domains.items():
        data = splits["train"]
        shown = data.images[: per_row // 2]
        overlays = _mask_overlay(shown, data.masks[: per_row // 2])
        pairs = torch.stack([shown, overlays], dim=1).flatten(0, 1)
        scale = size / pairs.shape[-1]
        pairs = torch.nn.functional.interpolate(pairs.float(), scale_factor=scale, mode="area")
        rows.append(_row(pairs.round().byte(), f"fundus domain {domain}: image, cup/disc mask"))
    out.parent.mkdir(parents=True, exist_ok=True)
    _stack(rows).save(out)
    print(f"wrote {out}")
    print(
        f"layout diagnostic, {len(train)} training images at {size} px ({', '.join(BENCHMARKS)}"
        " benchmarks not included):"
    )
    for name, data in (("aligned", train), ("layout-free", free_train)):
        summary = layout_variance(data.images).summary()
        print(
            f"  {name:12s} cross-image var {summary['cross_image_var']:.4f}  "
            f"intra-image var {summary['intra_image_var']:.4f}  "
            f"score {summary['layout_score']:.2f}  "
            f"mean-image share {100 * summary['mean_image_share']:.0f}%"
        )


def _output_problem(out: Path) -> str | None:
    """Why the grid cannot be written to ``out`` (None when it can; its folder is created)."""
    extension = out.suffix.lower()
    if not out.is_dir() and Image.registered_extensions().get(extension) not in Image.SAVE:
        return f"--out {out}: unknown image type {extension!r}; expected e.g. .png or .jpg"
    return output_problem(out, "--out")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tvconv.data", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/data_samples.png"))
    parser.add_argument(
        "--size", type=int, default=64, help=f"face image size in pixels, 16-{MAX_SIZE}"
    )
    parser.add_argument("--seed", type=nonnegative_int_arg, default=0, help="data seed, >= 0")
    args = parser.parse_args()
    if not 16 <= args.size <= MAX_SIZE:
        parser.error(f"--size {args.size}: expected a face image size in pixels, 16-{MAX_SIZE}")
    problem = _output_problem(args.out)
    if problem:
        parser.error(problem)
    preview(args.out, args.size, args.seed)


if __name__ == "__main__":
    exit_with(main)
