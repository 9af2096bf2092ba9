"""Image decoding shared by the real-data loaders (Pillow -> uint8 tensors)."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _as_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    return (size, size) if isinstance(size, int) else size


class ImageError(ValueError):
    """An image file (or a benchmark's encoded image) that cannot be decoded: bad input, found
    when the data is loaded, before training (``python -m tvconv.train`` exits 2 on it)."""


def _unreadable(what: str, error: Exception, expected: str) -> ImageError:
    """The error for an image that cannot be read: what it is, why (Pillow's reason, without
    the in-memory buffer's repr for a benchmark's encoded image) and the layout expected."""
    if isinstance(error, UnidentifiedImageError):
        reason = f"not an image format Pillow reads (e.g. {', '.join(IMAGE_SUFFIXES)})"
    else:
        reason = str(error)
    return ImageError(f"cannot read image {what}: {reason}; expected {expected}")


def open_image(source: Path | bytes, what: str, expected: str) -> Image.Image:
    """``source`` decoded; ``what`` names it and ``expected`` is the data layout it belongs to,
    both for the error (ImageError) when it cannot be read."""
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    except (OSError, UnidentifiedImageError) as error:
        raise _unreadable(what, error, expected) from error
    return image


def check_image_header(source: Path | bytes, what: str, expected: str) -> None:
    """Raise ImageError unless ``source`` starts like an image Pillow can read (the header only:
    nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source):
            pass
    except (OSError, UnidentifiedImageError) as error:
        raise _unreadable(what, error, expected) from error


def to_tensor(
    image: Image.Image,
    size: int | tuple[int, int] | None,
    mode: str = "RGB",
    resample: int = Image.BILINEAR,
) -> torch.Tensor:
    """PIL image -> uint8 tensor (C, H, W), resized to ``size`` (H, W) if given."""
    image = image.convert(mode)
    target = _as_size(size)
    if target is not None and image.size != (target[1], target[0]):
        image = image.resize((target[1], target[0]), resample)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def decode_rgb(
    source: Path | bytes, size: int | tuple[int, int] | None, what: str, expected: str
) -> torch.Tensor:
    return to_tensor(open_image(source, what, expected), size)


def decode_all(
    items: Sequence, decode: Callable[[object], torch.Tensor], description: str
) -> torch.Tensor:
    """Decode every item into one uint8 tensor (N, C, H, W); all must share one size."""
    progress = tqdm(
        items, desc=description, unit="img", disable=not sys.stderr.isatty(), leave=False
    )
    tensors = [decode(item) for item in progress]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(
            f"{description}: images have different sizes {sorted(shapes)[:3]}; pass image_size "
            "to resize them to one size"
        )
    return torch.stack(tensors)
