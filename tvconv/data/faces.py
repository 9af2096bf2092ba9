"""Real face data in the formats the paper's datasets are shipped in.

- Training tree (CASIA-WebFace-frontal): ``<root>/<identity>/<image>.{jpg,png,...}``, one folder
  per identity; labels follow the sorted folder names.
- Verification pair list: a text file of ``left right flag`` lines (paths relative to an image
  root, flag 1 = same identity, -1 = different), 10 consecutive folds of equal size; blank lines
  and lines starting with ``#`` are ignored.
- insightface ``.bin`` benchmark: a pickled pair (list of encoded image bytes, list of booleans),
  images 2i and 2i + 1 forming pair i. It is read with a restricted unpickler that only builds
  lists, tuples, bytes and booleans: anything else (code, numpy objects) is refused, and so is
  any opcode or call that would allocate more than the file holds.

``scan_image_folder``, ``read_pair_list`` and ``read_bin`` check a source without decoding its
images (what a sweep's plan check runs); the ``load_*`` functions decode.
"""

from __future__ import annotations

import _codecs
import io
import pickle
import pickletools
from pathlib import Path

import torch

from tvconv.data._images import IMAGE_SUFFIXES, check_image_header, decode_all, decode_rgb
from tvconv.data.datasets import FaceTrainSet, VerificationBenchmark, check_pair_count

TREE_LAYOUT = "<root>/<identity>/<image>.jpg (one folder per identity, as CASIA-WebFace)"
PAIRS_LAYOUT = "one 'left right flag' line per pair, flag 1 (same) or -1 (different)"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def scan_image_folder(root: str | Path) -> tuple[list[Path], list[int], int]:
    """(image paths, their labels, number of identities) of an image-folder tree, checked
    (identity folders present, each holding images) without decoding anything."""
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
    return paths, labels, len(identities)


def load_image_folder(
    root: str | Path, image_size: int | tuple[int, int] | None = None, in_memory: bool = True
) -> FaceTrainSet:
    """Identity-labelled training set from an image-folder tree.

    ``in_memory`` decodes everything once into a uint8 tensor; otherwise images are decoded on
    access (for trees larger than memory; use DataLoader workers)."""
    paths, labels, identities = scan_image_folder(root)
    label_tensor = torch.tensor(labels)
    name = Path(root).name
    if in_memory:
        images = decode_all(paths, lambda p: decode_rgb(p, image_size, str(p)), f"decoding {name}")
        return FaceTrainSet(label_tensor, identities, images=images, name=name)
    return FaceTrainSet(
        label_tensor,
        identities,
        load=lambda i: decode_rgb(paths[i], image_size, str(paths[i])),
        name=name,
    )


def read_pair_list(
    pairs_file: str | Path, image_root: str | Path
) -> tuple[list[str], list[tuple[int, int]], list[bool]]:
    """(image paths relative to the root, pairs as indices into them, same-identity flags) of a
    pair list, checked (line syntax, every image present, a pair count of whole folds) without
    decoding any image."""
    pairs_file, image_root = Path(pairs_file), Path(image_root)
    if not pairs_file.is_file():
        raise ValueError(f"pair list {pairs_file} does not exist; expected {PAIRS_LAYOUT}")
    if not image_root.is_dir():
        raise ValueError(f"image root {image_root} of {pairs_file} does not exist")
    index: dict[str, int] = {}
    pairs, issame = [], []
    try:
        lines = pairs_file.read_text().splitlines()
    except UnicodeDecodeError as error:
        message = f"pair list {pairs_file} is not text ({error}); expected {PAIRS_LAYOUT}"
        raise ValueError(message) from None
    for number, line in enumerate(lines, start=1):
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
    check_pair_count(len(pairs), f"pair list {pairs_file}")
    return list(index), pairs, issame


def load_pair_list(
    pairs_file: str | Path,
    image_root: str | Path,
    image_size: int | tuple[int, int] | None = None,
    name: str | None = None,
) -> VerificationBenchmark:
    """Verification benchmark from a ``left right flag`` pair list and an image root."""
    paths, pairs, issame = read_pair_list(pairs_file, image_root)
    image_root = Path(image_root)
    name = name or Path(pairs_file).stem
    images = decode_all(
        paths,
        lambda p: decode_rgb(image_root / p, image_size, str(image_root / p)),
        f"decoding {name}",
    )
    return VerificationBenchmark(name, images, torch.tensor(pairs), torch.tensor(issame))


BIN_LAYOUT = "a pickled (list of encoded image bytes, list of booleans), 2 images per pair"


def _bounded(build: type, limit: int):
    """``bytes`` / ``bytearray`` for the unpickler: from bytes or text only (never from a size:
    ``bytearray(300_000_000)`` is 48 bytes of pickle) and never longer than ``limit``."""

    def construct(*args):
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError(f"refusing {build.__name__}(<size>): allocates memory")
        value = build(*args)
        if len(value) > limit:
            raise pickle.UnpicklingError(f"refusing a {len(value)}-byte {build.__name__}")
        return value

    return construct


def _latin1_encode(text: object, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 2 pickles of byte strings use it: text to latin-1 bytes (no
    other codec: "hex" doubles its input, so nested calls could grow without bound)."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode(..., {encoding!r})")
    return _codecs.encode(text, "latin1")


def _sequence(build: type):
    """``list`` / ``tuple`` for the unpickler: empty, or from a list or tuple (no iteration of a
    byte string into a list of ints)."""

    def construct(*args):
        if args and not isinstance(args[0], (list, tuple)):
            raise pickle.UnpicklingError(f"refusing {build.__name__}({type(args[0]).__name__})")
        return build(*args)

    return construct


class _BenchmarkUnpickler(pickle.Unpickler):
    """Builds only containers, bytes and booleans (Python 2 pickles of byte strings need
    ``_codecs.encode``); any other global is refused, and no call may allocate more than the
    file holds."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        limit = len(data)
        builders = {
            "bytes": _bounded(bytes, limit),
            "bytearray": _bounded(bytearray, limit),
            "list": _sequence(list),
            "tuple": _sequence(tuple),
            "bool": bool,
        }
        self.allowed = {
            ("_codecs", "encode"): _latin1_encode,
            **{(module, name): f for module in BUILTINS for name, f in builders.items()},
        }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return self.allowed[(module, name)]


BUILTINS = ("builtins", "__builtin__")


def _check_opcodes(data: bytes, path: Path) -> None:
    """Walk the pickle's opcodes without building anything: a length that runs past the end of
    the file (it would be allocated before the read fails) or a truncated stream is refused."""
    try:
        for opcode, _arg, _position in pickletools.genops(io.BytesIO(data)):
            if opcode.name == "STOP":
                return
    except Exception as error:  # genops raises ValueError / others on a damaged stream
        raise ValueError(f"{path} is not a valid pickle ({error}); expected {BIN_LAYOUT}") from None
    raise ValueError(f"{path} is not a valid pickle (no STOP opcode); expected {BIN_LAYOUT}")


def read_bin(path: str | Path) -> tuple[list[bytes], list[bool]]:
    """(encoded images, same-identity flags) of an insightface-style ``.bin`` file, checked
    (a safe, bounded unpickle; the structure; a pair count of whole folds; the first image's
    header) without decoding the images."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"benchmark file {path} does not exist; expected {BIN_LAYOUT}")
    data = path.read_bytes()
    _check_opcodes(data, path)
    try:
        content = _BenchmarkUnpickler(data).load()
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: {error}; expected {BIN_LAYOUT}, nothing else") from error
    except (EOFError, ValueError, TypeError, MemoryError, IndexError, KeyError) as error:
        message = f"{path} is not a readable benchmark file ({error!r}); expected {BIN_LAYOUT}"
        raise ValueError(message) from error
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise ValueError(f"{path} holds a {type(content).__name__}; expected {BIN_LAYOUT}")
    blobs, flags = content
    if not isinstance(blobs, (list, tuple)) or not isinstance(flags, (list, tuple)):
        raise ValueError(f"{path}: unexpected element types; expected {BIN_LAYOUT}")
    if not all(isinstance(b, (bytes, bytearray)) for b in blobs) or not all(
        isinstance(f, bool) for f in flags
    ):
        raise ValueError(f"{path}: unexpected element types; expected {BIN_LAYOUT}")
    if not flags or len(blobs) != 2 * len(flags):
        message = f"{path}: {len(blobs)} images for {len(flags)} pairs; expected {BIN_LAYOUT}"
        raise ValueError(message)
    check_pair_count(len(flags), str(path))
    check_image_header(bytes(blobs[0]), f"#0 in {path}")
    return [bytes(b) for b in blobs], list(flags)


def load_bin(
    path: str | Path, image_size: int | tuple[int, int] | None = None, name: str | None = None
) -> VerificationBenchmark:
    """Verification benchmark from an insightface-style ``.bin`` file (see the module doc)."""
    blobs, flags = read_bin(path)
    name = name or Path(path).stem
    images = decode_all(
        list(range(len(blobs))),
        lambda i: decode_rgb(blobs[i], image_size, f"#{i} in {path}"),
        f"decoding {name}",
    )
    pairs = torch.arange(2 * len(flags)).view(-1, 2)
    return VerificationBenchmark(name, images, pairs, torch.tensor(flags, dtype=torch.bool))
