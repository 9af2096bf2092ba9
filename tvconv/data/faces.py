"""Real face data in the formats the paper's datasets are shipped in.

- Training tree (CASIA-WebFace-frontal): ``<root>/<identity>/<image>.{jpg,png,...}``, one folder
  per identity; labels follow the sorted folder names.
- Verification pair list, in either of two formats: the project's ``left right flag`` lines
  (paths relative to an image root, flag 1 = same identity, -1 = different), or the official LFW
  ``pairs.txt`` (a ``folds pairs`` header such as ``10\t300``, then ``name n1 n2`` lines for a
  same-identity pair and ``name1 n1 name2 n2`` lines for a different one, images
  ``<name>/<name>_<n:04d>.jpg``). 10 consecutive folds of equal size; blank lines and lines
  starting with ``#`` are ignored.
- insightface ``.bin`` benchmark: a pickled pair (list of encoded image bytes, list of booleans),
  images 2i and 2i + 1 forming pair i. It is read with a restricted unpickler that only builds
  lists, tuples, bytes and booleans: anything else (code, numpy objects) is refused, and so is
  any opcode or call that would allocate more than the file holds.

``scan_image_folder``, ``read_pair_list`` and ``read_bin`` check a source without decoding its
images (what a sweep's plan check runs); the ``load_*`` functions decode. ``parse_benchmarks``
turns ``data.benchmarks`` entries (``[name=]file.bin`` or ``[name=]pairs.txt:image_root``) into
named sources; ``paper_order`` sorts benchmark names as the paper's tables do.

A training tree is read through ``cached_image_folder``: decoded once (by ``workers`` DataLoader
processes) into a uint8 array on disk, memory-mapped by every later run and job (keyed by the
tree's file names, sizes and modification times, and the image size), so memory stays bounded
whatever the tree's size; ``load_image_folder(..., in_memory=False)`` decodes on access instead.
"""

from __future__ import annotations

import _codecs
import hashlib
import io
import json
import os
import pickle
import pickletools
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tvconv._lock import exclusive
from tvconv.data._cache import cache_dir
from tvconv.data._images import IMAGE_SUFFIXES, check_image_header, decode_all, decode_rgb
from tvconv.data.datasets import (
    FaceTrainSet,
    VerificationBenchmark,
    check_pair_count,
    check_pair_flags,
)

TREE_LAYOUT = "<root>/<identity>/<image>.jpg (one folder per identity, as CASIA-WebFace)"
PAIRS_LAYOUT = (
    "one 'left right flag' line per pair, flag 1 (same) or -1 (different), or the official LFW "
    "pairs.txt ('10 300' header, 'name n1 n2' and 'name1 n1 name2 n2' lines)"
)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def scan_image_folder(root: str | Path) -> tuple[list[Path], list[int], int]:
    """(image paths, their labels, number of identities) of an image-folder tree, checked
    (identity folders present, each holding images) without decoding anything."""
    root = Path(root)
    if not root.is_dir():
        found = "is not a folder" if root.exists() else "does not exist"
        raise ValueError(f"face training root {root} {found}; expected {TREE_LAYOUT}")
    identities = sorted(p for p in root.iterdir() if p.is_dir())
    if not identities:
        raise ValueError(f"no identity folders in {root}; expected {TREE_LAYOUT}")
    if len(identities) < 2:  # a classifier of one class learns nothing (AM-Softmax refuses it)
        raise ValueError(
            f"{root} holds one identity folder ({identities[0].name}); training needs at least "
            f"2 identities; expected {TREE_LAYOUT}"
        )
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
        images = decode_all(
            paths, lambda p: decode_rgb(p, image_size, str(p), TREE_LAYOUT), f"decoding {name}"
        )
        return FaceTrainSet(label_tensor, identities, images=images, name=name)
    return FaceTrainSet(
        label_tensor,
        identities,
        load=lambda i: decode_rgb(paths[i], image_size, str(paths[i]), TREE_LAYOUT),
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
        found = "is not a file" if pairs_file.exists() else "does not exist"
        raise ValueError(f"pair list {pairs_file} {found}; expected {PAIRS_LAYOUT}")
    if not image_root.is_dir():
        found = "is not a folder" if image_root.exists() else "does not exist"
        raise ValueError(
            f"image root {image_root} of {pairs_file} {found}; expected {PAIRS_LAYOUT}"
        )
    index: dict[str, int] = {}
    pairs, issame = [], []
    try:
        lines = pairs_file.read_text().splitlines()
    except UnicodeDecodeError as error:
        message = f"pair list {pairs_file} is not text ({error}); expected {PAIRS_LAYOUT}"
        raise ValueError(message) from None
    header = None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if header is None and not pairs and 1 <= len(fields) <= 2 and all(map(str.isdigit, fields)):
            header = (number, [int(f) for f in fields])
            continue
        parsed = _pair_fields(fields)
        if parsed is None:
            raise ValueError(
                f"{pairs_file}:{number}: malformed pair line {text!r}; expected {PAIRS_LAYOUT}"
            )
        for path in parsed[:2]:
            if path not in index:
                if not (image_root / path).is_file():
                    raise ValueError(
                        f"{pairs_file}:{number}: image {image_root / path} not found; "
                        f"expected {PAIRS_LAYOUT}"
                    )
                index[path] = len(index)
        pairs.append((index[parsed[0]], index[parsed[1]]))
        issame.append(parsed[2])
    if header is not None and len(header[1]) == 2 and pairs:
        folds, per_fold = header[1]
        if len(pairs) != 2 * folds * per_fold:
            raise ValueError(
                f"{pairs_file}:{header[0]}: the header says {folds} folds of {per_fold} same and "
                f"{per_fold} different pairs ({2 * folds * per_fold}), the file holds {len(pairs)}"
            )
    if not pairs:
        raise ValueError(f"pair list {pairs_file} holds no pairs; expected {PAIRS_LAYOUT}")
    check_pair_count(len(pairs), f"pair list {pairs_file}")
    check_pair_flags(issame, f"pair list {pairs_file}")
    return list(index), pairs, issame


def _lfw_image(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def _pair_fields(fields: list[str]) -> tuple[str, str, bool] | None:
    """(left path, right path, same identity) of a pair line in either format, or None."""
    if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():  # LFW: name n1 n2
        return _lfw_image(fields[0], fields[1]), _lfw_image(fields[0], fields[2]), True
    if len(fields) == 4 and fields[1].isdigit() and fields[3].isdigit():  # LFW: different
        return _lfw_image(fields[0], fields[1]), _lfw_image(fields[2], fields[3]), False
    if len(fields) == 3 and fields[2] in ("1", "-1"):
        return fields[0], fields[1], fields[2] == "1"
    return None


def load_pair_list(
    pairs_file: str | Path,
    image_root: str | Path,
    image_size: int | tuple[int, int] | None = None,
    name: str | None = None,
) -> VerificationBenchmark:
    """Verification benchmark from a pair list (either format) and an image root; named after
    the pair list's folder unless ``name`` is given."""
    paths, pairs, issame = read_pair_list(pairs_file, image_root)
    image_root = Path(image_root)
    name = name or default_name(str(pairs_file))
    images = decode_all(
        paths,
        lambda p: decode_rgb(image_root / p, image_size, str(image_root / p), PAIRS_LAYOUT),
        f"decoding {name}",
    )
    return VerificationBenchmark(name, images, torch.tensor(pairs), torch.tensor(issame))


BIN_LAYOUT = "a pickled (list of encoded image bytes, list of booleans), 2 images per pair"


class _Allowance:
    """The bytes an unpickle may still build: what the file holds, shared by every ``bytes``,
    ``bytearray`` and ``_codecs.encode`` call (a 5-byte opcode sequence can copy a memoised
    100 KB string once more each time, so a bound per call is not enough)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.left = limit, limit

    def take(self, size: int, what: str) -> None:
        if size > self.left:
            raise pickle.UnpicklingError(
                f"refusing {what}: the objects built would exceed the file's {self.limit} bytes"
            )
        self.left -= size


def _bounded(build: type, allowance: _Allowance):
    """``bytes`` / ``bytearray`` for the unpickler: from bytes or text only (never from a size:
    ``bytearray(300_000_000)`` is 48 bytes of pickle), within the file's ``allowance``."""

    def construct(*args):
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError(f"refusing {build.__name__}(<size>): allocates memory")
        if args and isinstance(args[0], (bytes, bytearray, str)):
            allowance.take(len(args[0]), f"a {len(args[0])}-byte {build.__name__}")
        return build(*args)

    return construct


def _latin1_encode(allowance: _Allowance):
    """``_codecs.encode`` as Python 2 pickles of byte strings use it: text to latin-1 bytes (no
    other codec: "hex" doubles its input, so nested calls could grow without bound), within the
    file's ``allowance``."""

    def encode(text: object, encoding: str = "latin1") -> bytes:
        if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
            raise pickle.UnpicklingError(f"refusing _codecs.encode(..., {encoding!r})")
        allowance.take(len(text), f"a {len(text)}-character _codecs.encode")
        return _codecs.encode(text, "latin1")

    return encode


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
        allowance = _Allowance(len(data))
        builders = {
            "bytes": _bounded(bytes, allowance),
            "bytearray": _bounded(bytearray, allowance),
            "list": _sequence(list),
            "tuple": _sequence(tuple),
            "bool": bool,
        }
        self.allowed = {
            ("_codecs", "encode"): _latin1_encode(allowance),
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
    (a safe, bounded unpickle; the structure; a pair count of whole folds; both kinds of pair;
    every image's header) without decoding the images."""
    path = Path(path)
    if not path.is_file():
        found = "is not a file" if path.exists() else "does not exist"
        raise ValueError(f"benchmark file {path} {found}; expected {BIN_LAYOUT}")
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
    check_pair_flags(list(flags), str(path))
    blobs = [b if isinstance(b, bytes) else bytes(b) for b in blobs]
    for number, blob in enumerate(blobs):
        check_image_header(blob, f"#{number} in {path}", BIN_LAYOUT)
    return blobs, list(flags)


def load_bin(
    path: str | Path, image_size: int | tuple[int, int] | None = None, name: str | None = None
) -> VerificationBenchmark:
    """Verification benchmark from an insightface-style ``.bin`` file (see the module doc)."""
    blobs, flags = read_bin(path)
    name = name or Path(path).stem
    images = decode_all(
        list(range(len(blobs))),
        lambda i: decode_rgb(blobs[i], image_size, f"#{i} in {path}", BIN_LAYOUT),
        f"decoding {name}",
    )
    pairs = torch.arange(2 * len(flags)).view(-1, 2)
    return VerificationBenchmark(name, images, pairs, torch.tensor(flags, dtype=torch.bool))


# ------------------------------------------------------------------------------ named benchmarks

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# The paper's table order (Table 2): LFW, CFP-FF, AgeDB-30, CALFW; names compared without case,
# "-" or "_" (cfp_ff, CFP-FF and cfpff are one benchmark).
PAPER_ORDER = ("lfw", "cfpff", "agedb30", "calfw")
RESERVED_NAMES = ("mean", "train", "floor")
# a metric <name>_acc_pct of a benchmark named floor_x would read as a floor's (floor_x_acc_pct)
RESERVED_PREFIXES = ("floor_", "floor-", "diff_")


def _folded(name: str) -> str:
    return re.sub(r"[-_]", "", name.lower())


def paper_order(names: list[str]) -> list[str]:
    """``names`` with the paper's benchmarks first, in the paper's order, then the others
    alphabetically."""
    rank = {folded: position for position, folded in enumerate(PAPER_ORDER)}
    return sorted(names, key=lambda n: (rank.get(_folded(n), len(rank)), n))


@dataclass(frozen=True)
class BenchmarkSource:
    """One ``data.benchmarks`` entry: a name (the metrics' prefix, ``<name>_acc_pct``) and an
    insightface ``.bin`` file or a pair list with its image root."""

    name: str
    path: str
    image_root: str | None = None

    @property
    def files(self) -> list[str]:
        return [self.path] + ([self.image_root] if self.image_root else [])

    def read(self) -> None:
        """Check the source without decoding an image (raises ValueError)."""
        if self.image_root is None:
            read_bin(self.path)
        else:
            read_pair_list(self.path, self.image_root)

    def load(self, image_size: int | tuple[int, int] | None) -> VerificationBenchmark:
        if self.image_root is None:
            return load_bin(self.path, image_size, self.name)
        return load_pair_list(self.path, self.image_root, image_size, self.name)


ENTRY_LAYOUT = "[name=]file.bin or [name=]pairs.txt:image_root"


def default_name(path: str) -> str:
    """A ``.bin`` file's stem (``lfw.bin`` -> ``lfw``); a pair list's folder
    (``lfw/pairs.txt`` -> ``lfw``), its stem when it has no folder."""
    path_ = Path(path)
    if path_.suffix == ".bin" or not path_.parent.name:
        return path_.stem
    return path_.parent.name


def parse_benchmarks(entries: tuple[str, ...] | list[str]) -> list[BenchmarkSource]:
    """Named sources of ``data.benchmarks`` entries (``[name=]file.bin`` or
    ``[name=]pairs.txt:image_root``). Raises ValueError for a malformed entry, a name that is
    not a word, a reserved name or one given twice."""
    sources: list[BenchmarkSource] = []
    for entry in entries:
        name, sep, location = entry.partition("=")
        if not sep or "/" in name or ":" in name:
            name, location = "", entry
        if location.endswith(".bin"):
            path, root = location, None
        else:
            path, colon, root = location.partition(":")
            if not colon or not path or not root:
                raise ValueError(f"data.benchmarks entry {entry!r}: expected {ENTRY_LAYOUT}")
        name = name or default_name(path)
        reserved = _folded(name) in RESERVED_NAMES or name.lower().startswith(RESERVED_PREFIXES)
        if not NAME.fullmatch(name) or reserved:
            raise ValueError(
                f"data.benchmarks entry {entry!r}: the name {name!r} must be letters, digits, "
                f"'_' or '-' (not {', '.join(RESERVED_NAMES)}, nor start with floor_ or diff_); "
                f"name it with name=... ({ENTRY_LAYOUT})"
            )
        clash = next((s for s in sources if _folded(s.name) == _folded(name)), None)
        if clash is not None:
            raise ValueError(
                f"data.benchmarks: two benchmarks are named {name!r} ({clash.path} and {path}); "
                f"give each its own name, e.g. {name}2={location}"
            )
        sources.append(BenchmarkSource(name, path, root))
    return sources


# ------------------------------------------------------------------------- decoded-tree cache

CACHE_VERSION = 1  # bump when the decoding changes (the same tree then decodes again)
PROGRESS_EVERY_S = 30.0


class _Decoded(Dataset):
    """The tree's images decoded one by one (what the DataLoader workers run)."""

    def __init__(self, paths: list[Path], image_size) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return decode_rgb(self.paths[index], self.image_size, str(self.paths[index]), TREE_LAYOUT)


def tree_key(root: Path, paths: list[Path], image_size) -> str:
    """The cache key of a tree: its relative file names, sizes and modification times, the
    image size and ``CACHE_VERSION``."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, image_size]).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"faces-{Path(root).name}-{digest.hexdigest()[:16]}"


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    shapes = sorted({tuple(image.shape) for image in images})
    if len(shapes) > 1:
        raise ValueError(
            f"images have different sizes {shapes[:3]}; set data.image_size to resize them to one"
        )
    return torch.stack(images)


def _decode_into(
    target: Path, paths: list[Path], image_size, workers: int, shape: tuple[int, ...]
) -> None:
    """Decode every image into the uint8 file ``target`` (N, 3, H, W), reporting progress."""
    array = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=shape)
    loader = DataLoader(
        _Decoded(paths, image_size), batch_size=256, num_workers=workers, collate_fn=_stack
    )
    start = last = time.monotonic()
    done = 0
    for batch in loader:
        if tuple(batch.shape[1:]) != shape[1:]:
            raise ValueError(
                f"images have different sizes ({tuple(batch.shape[1:])} vs {shape[1:]}); set "
                "data.image_size to resize them to one size"
            )
        array[done : done + len(batch)] = batch.numpy()
        done += len(batch)
        if time.monotonic() - last > PROGRESS_EVERY_S:
            last = time.monotonic()
            rate = done / (last - start)
            print(
                f"decoding {len(paths)} images: {done} done, {rate:.0f} images/s, "
                f"{(len(paths) - done) / rate:.0f} s left",
                file=sys.stderr,
                flush=True,
            )
    array.flush()
    del array


def cached_image_folder(
    root: str | Path, image_size: int | tuple[int, int] | None = None, workers: int = 0
) -> FaceTrainSet:
    """The training tree, memory-mapped from its decoded copy in the data cache (decoded once,
    by ``workers`` DataLoader processes, under a lock every other run and job waits on);
    decoded on access (``load_image_folder(..., in_memory=False)``) when the cache is off."""
    paths, labels, identities = scan_image_folder(root)
    directory = cache_dir()
    if directory is None:
        return load_image_folder(root, image_size, in_memory=False)
    key = tree_key(Path(root), paths, image_size)
    array_path = directory / f"{key}.npy"
    if not array_path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        with exclusive(directory / f"{key}.lock", f"the decode of {root}"):
            if not array_path.is_file():
                first = decode_rgb(paths[0], image_size, str(paths[0]), TREE_LAYOUT)
                shape = (len(paths), *first.shape)
                started = time.monotonic()
                print(
                    f"decoding {len(paths)} training images of {root} once into {array_path} "
                    f"({np.prod(shape) / 2**30:.1f} GiB, {max(workers, 1)} process(es))",
                    file=sys.stderr,
                    flush=True,
                )
                temporary = array_path.with_name(f".{array_path.name}.{os.getpid()}.tmp.npy")
                try:
                    _decode_into(temporary, paths, image_size, workers, shape)
                    os.replace(temporary, array_path)
                finally:
                    temporary.unlink(missing_ok=True)
                print(f"decoded in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    mapped = np.load(array_path, mmap_mode="r")
    with warnings.catch_warnings():  # read-only on purpose: torch warns about writes
        warnings.simplefilter("ignore", UserWarning)
        images = torch.from_numpy(mapped)
    return FaceTrainSet(torch.tensor(labels), identities, images=images, name=Path(root).name)
