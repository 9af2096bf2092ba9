"""Real face data in the formats the paper's datasets are shipped in.

- Training tree (CASIA-WebFace-frontal): ``<root>/<identity>/<image>.{jpg,png,...}``, one folder
  per identity; labels follow the sorted folder names.
- Verification pair list: a text file of ``left right flag`` lines (paths relative to an image
  root, flag 1 = same identity, -1 = different), 10 consecutive folds of equal size; blank lines
  and lines starting with ``#`` are ignored.
- insightface ``.bin`` benchmark: a pickled pair (list of encoded image bytes, list of booleans),
  images 2i and 2i + 1 forming pair i. It is read with a restricted unpickler that only builds
  lists, tuples, bytes and booleans: anything else (code, numpy objects) is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar

import torch

from tvconv.data._images import IMAGE_SUFFIXES, decode_all, decode_rgb
from tvconv.data.datasets import FaceTrainSet, VerificationBenchmark

TREE_LAYOUT = "<root>/<identity>/<image>.jpg (one folder per identity, as CASIA-WebFace)"
PAIRS_LAYOUT = "one 'left right flag' line per pair, flag 1 (same) or -1 (different)"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(
    root: str | Path, image_size: int | tuple[int, int] | None = None, in_memory: bool = True
) -> FaceTrainSet:
    """Identity-labelled training set from an image-folder tree.

    ``in_memory`` decodes everything once into a uint8 tensor; otherwise images are decoded on
    access (for trees larger than memory; use DataLoader workers)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"face training root {root} does not exist; expected {TREE_LAYOUT}")
    identities = sorted(p for p in root.iterdir() if p.is_dir())
    if not identities:
        raise ValueError(f"no identity folders in {root}; expected {TREE_LAYOUT}")
    paths, labels = [], []
    for label, folder in enumerate(identities):
        images = _images_in(folder)
        if not images:
            raise ValueError(
                f"identity folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                f"expected {TREE_LAYOUT}"
            )
        paths += images
        labels += [label] * len(images)
    label_tensor = torch.tensor(labels)
    name = root.name
    if in_memory:
        images = decode_all(paths, lambda p: decode_rgb(p, image_size, str(p)), f"decoding {name}")
        return FaceTrainSet(label_tensor, len(identities), images=images, name=name)
    return FaceTrainSet(
        label_tensor,
        len(identities),
        load=lambda i: decode_rgb(paths[i], image_size, str(paths[i])),
        name=name,
    )


def load_pair_list(
    pairs_file: str | Path,
    image_root: str | Path,
    image_size: int | tuple[int, int] | None = None,
    name: str | None = None,
) -> VerificationBenchmark:
    """Verification benchmark from a ``left right flag`` pair list and an image root."""
    pairs_file, image_root = Path(pairs_file), Path(image_root)
    if not pairs_file.is_file():
        raise ValueError(f"pair list {pairs_file} does not exist; expected {PAIRS_LAYOUT}")
    if not image_root.is_dir():
        raise ValueError(f"image root {image_root} of {pairs_file} does not exist")
    index: dict[str, int] = {}
    pairs, issame = [], []
    for number, line in enumerate(pairs_file.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) != 3 or fields[2] not in ("1", "-1"):
            raise ValueError(
                f"{pairs_file}:{number}: malformed pair line {text!r}; expected {PAIRS_LAYOUT}"
            )
        for path in fields[:2]:
            if path not in index:
                if not (image_root / path).is_file():
                    raise ValueError(f"{pairs_file}:{number}: image {image_root / path} not found")
                index[path] = len(index)
        pairs.append((index[fields[0]], index[fields[1]]))
        issame.append(fields[2] == "1")
    if not pairs:
        raise ValueError(f"pair list {pairs_file} holds no pairs; expected {PAIRS_LAYOUT}")
    name = name or pairs_file.stem
    images = decode_all(
        list(index),
        lambda p: decode_rgb(image_root / p, image_size, str(image_root / p)),
        f"decoding {name}",
    )
    return VerificationBenchmark(name, images, torch.tensor(pairs), torch.tensor(issame))


class _BenchmarkUnpickler(pickle.Unpickler):
    """Builds only containers, bytes and booleans (Python 2 pickles of byte strings need
    ``_codecs.encode``); any other global is refused."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("_codecs", "encode"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "bool"),
        ("__builtin__", "bytes"),
        ("__builtin__", "bytearray"),
        ("__builtin__", "list"),
        ("__builtin__", "tuple"),
        ("__builtin__", "bool"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_bin(
    path: str | Path, image_size: int | tuple[int, int] | None = None, name: str | None = None
) -> VerificationBenchmark:
    """Verification benchmark from an insightface-style ``.bin`` file (see the module doc)."""
    path = Path(path)
    expected = "a pickled (list of encoded image bytes, list of booleans), 2 images per pair"
    if not path.is_file():
        raise ValueError(f"benchmark file {path} does not exist; expected {expected}")
    try:
        with path.open("rb") as handle:
            content = _BenchmarkUnpickler(handle, encoding="bytes").load()
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: {error}; expected {expected}, nothing else") from error
    except (EOFError, ValueError, TypeError) as error:
        message = f"{path} is not a readable benchmark file ({error}); expected {expected}"
        raise ValueError(message) from error
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise ValueError(f"{path} holds a {type(content).__name__}; expected {expected}")
    blobs, flags = content
    if not all(isinstance(b, (bytes, bytearray)) for b in blobs) or not all(
        isinstance(f, bool) for f in flags
    ):
        raise ValueError(f"{path}: unexpected element types; expected {expected}")
    if len(blobs) != 2 * len(flags):
        raise ValueError(f"{path}: {len(blobs)} images for {len(flags)} pairs; expected {expected}")
    name = name or path.stem
    images = decode_all(
        list(range(len(blobs))),
        lambda i: decode_rgb(bytes(blobs[i]), image_size, f"#{i} in {path}"),
        f"decoding {name}",
    )
    pairs = torch.arange(2 * len(flags)).view(-1, 2)
    return VerificationBenchmark(name, images, pairs, torch.tensor(flags, dtype=torch.bool))
