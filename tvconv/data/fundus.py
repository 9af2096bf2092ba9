"""Real fundus data in the layout of the paper's four domains.

``<root>/Domain{1..4}/{train,test}/ROIs/{image,mask}/<name>.png``: an RGB ROI and a grey-level mask
of the same name. Mask values encode the structures as in the public release: <= 50 optic cup
(which lies inside the disc), 51..200 disc rim, > 200 background; we return (cup, disc) boolean
masks, disc including the cup. Images are resized bilinearly and masks by nearest neighbour.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from tvconv.data._images import decode_all, open_image, to_tensor
from tvconv.data.datasets import FundusSet

DOMAINS = (1, 2, 3, 4)
SPLITS = ("train", "test")
LAYOUT = "<root>/Domain{1..4}/{train,test}/ROIs/{image,mask}/<name>.png"
CUP_MAX, DISC_MAX = 50, 200


def decode_mask(grey: torch.Tensor) -> torch.Tensor:
    """Grey-level mask (1, H, W) uint8 -> bool (2, H, W): (cup, disc)."""
    return torch.cat([grey <= CUP_MAX, grey <= DISC_MAX])


def load_fundus_split(
    root: str | Path, domain: int, split: str, image_size: int = 256
) -> FundusSet:
    if domain not in DOMAINS or split not in SPLITS:
        raise ValueError(
            f"domain must be in {DOMAINS} and split in {SPLITS}, got {domain}, {split}"
        )
    base = Path(root) / f"Domain{domain}" / split / "ROIs"
    image_dir, mask_dir = base / "image", base / "mask"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            found = "is not a folder" if folder.exists() else "does not exist"
            raise ValueError(f"fundus folder {folder} {found}; expected {LAYOUT}")
    names = sorted(p.name for p in image_dir.glob("*.png"))
    if not names:
        raise ValueError(f"no .png images in {image_dir}; expected {LAYOUT}")
    missing = [n for n in names if not (mask_dir / n).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} images have no mask of the same name in {mask_dir}, "
            f"e.g. {missing[0]}; expected {LAYOUT}"
        )
    images = decode_all(
        names,
        lambda n: to_tensor(open_image(image_dir / n, str(image_dir / n), LAYOUT), image_size),
        f"decoding Domain{domain}/{split} images",
    )
    greys = decode_all(
        names,
        lambda n: to_tensor(
            open_image(mask_dir / n, str(mask_dir / n), LAYOUT), image_size, "L", Image.NEAREST
        ),
        f"decoding Domain{domain}/{split} masks",
    )
    masks = torch.stack([decode_mask(g) for g in greys])
    return FundusSet(images, masks, domain, split)


def load_fundus_domains(root: str | Path, image_size: int = 256) -> dict[int, dict[str, FundusSet]]:
    """All four domains, both splits."""
    if not Path(root).is_dir():
        found = "is not a folder" if Path(root).exists() else "does not exist"
        raise ValueError(f"fundus root {root} {found}; expected {LAYOUT}")
    return {d: {s: load_fundus_split(root, d, s, image_size) for s in SPLITS} for d in DOMAINS}
