"""Real-data loaders, tested on tiny fixtures of each format written to tmp_path."""

import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from tvconv.data._images import ImageError
from tvconv.data.datasets import FaceTrainSet, VerificationBenchmark
from tvconv.data.faces import (
    BIN_LAYOUT,
    load_bin,
    load_image_folder,
    load_pair_list,
    read_bin,
    read_pair_list,
    scan_image_folder,
)
from tvconv.data.fundus import load_fundus_domains, load_fundus_split


def solid(value: int, size: int = 20) -> Image.Image:
    array = np.zeros((size, size, 3), dtype=np.uint8)
    array[..., 0] = value
    array[..., 1] = 255 - value
    return Image.fromarray(array)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def face_tree(tmp_path):
    root = tmp_path / "casia"
    for identity, count in (("0002", 2), ("0001", 3), ("0010", 1)):
        (root / identity).mkdir(parents=True)
        for k in range(count):
            solid(10 * k + int(identity)).save(root / identity / f"{k:03d}.png")
    (root / "README.txt").write_text("not an identity folder")
    return root


def test_image_folder_labels_follow_sorted_identities(face_tree):
    data = load_image_folder(face_tree)
    assert data.num_classes == 3 and len(data) == 6
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert data.images.shape == (6, 3, 20, 20) and data.images.dtype == torch.uint8
    assert data.images[3, 0, 0, 0] == 2  # 0002/000.png, red channel = 10 * 0 + 2
    assert data.images[3, 1, 0, 0] == 253


def test_image_folder_lazy_equals_in_memory_and_resizes(face_tree):
    eager = load_image_folder(face_tree, image_size=16)
    lazy = load_image_folder(face_tree, image_size=16, in_memory=False)
    assert lazy.images is None and eager.images.shape[-2:] == (16, 16)
    for i in range(len(eager)):
        image, label = lazy[i]
        assert torch.equal(image, eager.images[i]) and label == int(eager.labels[i])
    assert lazy.image_size == (16, 16)


def test_image_folder_errors(tmp_path, face_tree):
    with pytest.raises(ValueError, match="does not exist; expected <root>/<identity>/<image>"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no identity folders in"):
        load_image_folder(tmp_path / "flat")
    (tmp_path / "flat" / "ann").mkdir()
    with pytest.raises(ValueError, match=r"holds one identity folder \(ann\); training needs"):
        load_image_folder(tmp_path / "flat")
    (face_tree / "0003").mkdir()
    with pytest.raises(ValueError, match=r"identity folder .*0003 holds no images"):
        load_image_folder(face_tree)
    (face_tree / "0003" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(
        ValueError, match=r"cannot read image .*broken\.jpg: not an image .*; expected <root>/<id"
    ):
        load_image_folder(face_tree)


def test_image_folder_mixed_sizes_need_image_size(face_tree):
    solid(5, size=24).save(face_tree / "0001" / "big.png")
    with pytest.raises(ValueError, match=r"images have different sizes .* pass image_size"):
        load_image_folder(face_tree)
    assert load_image_folder(face_tree, image_size=20).images.shape[-1] == 20


@pytest.fixture
def pair_list(tmp_path):
    root = tmp_path / "lfw"
    (root / "a").mkdir(parents=True)
    for k in range(6):
        solid(40 * k).save(root / "a" / f"{k}.jpg", quality=100)
    lines = ["# left right flag", ""]
    for i in range(20):
        flag = "1" if i % 2 == 0 else "-1"
        lines.append(f"a/{i % 6}.jpg a/{(i + 1) % 6}.jpg {flag}")
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, root


def test_pair_list(pair_list):
    path, root = pair_list
    bench = load_pair_list(path, root)
    assert bench.name == path.parent.name  # a pair list is named after its folder
    assert bench.images.shape == (6, 3, 20, 20)
    assert bench.pairs.shape == (20, 2)
    assert bench.issame.tolist() == [i % 2 == 0 for i in range(20)]
    first, second = bench.pairs[7].tolist()
    assert abs(int(bench.images[first, 0, 5, 5]) - 40) <= 3  # a/1.jpg (JPEG tolerance)
    assert abs(int(bench.images[second, 0, 5, 5]) - 80) <= 3  # a/2.jpg
    assert bench.folds.tolist() == [i // 2 for i in range(20)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a/0.jpg a/1.jpg", r"pairs\.txt:3: malformed pair line 'a/0\.jpg a/1\.jpg'"),
        ("a/0.jpg a/1.jpg 0", r"pairs\.txt:3: malformed pair line"),
        ("a/0.jpg a/9.jpg 1", r"pairs\.txt:3: image .*a/9\.jpg not found; expected one"),
    ],
)
def test_pair_list_bad_lines_name_their_line(pair_list, line, message):
    path, root = pair_list
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=message):
        load_pair_list(path, root)


def test_pair_list_errors(tmp_path, pair_list):
    path, root = pair_list
    with pytest.raises(ValueError, match=r"pair list .* does not exist"):
        load_pair_list(tmp_path / "nope.txt", root)
    with pytest.raises(ValueError, match=r"image root .* does not exist; expected one .left"):
        load_pair_list(path, tmp_path / "nope")
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no pairs"):
        load_pair_list(path, root)
    path.write_text("a/0.jpg a/1.jpg 1\n" * 7)
    with pytest.raises(
        ValueError, match=r"number of pairs \(7\) must be a positive multiple of 10"
    ):
        load_pair_list(path, root)


def write_bin(path, blobs, flags, protocol=4):
    with open(path, "wb") as handle:
        pickle.dump((blobs, flags), handle, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4])
def test_bin_benchmark(tmp_path, protocol):
    blobs = [encoded(solid(10 * k)) for k in range(20)]
    flags = [k % 3 == 0 for k in range(10)]
    write_bin(tmp_path / "agedb_30.bin", blobs, flags, protocol)
    bench = load_bin(tmp_path / "agedb_30.bin", image_size=16)
    assert bench.name == "agedb_30"
    assert bench.images.shape == (20, 3, 16, 16)
    assert bench.pairs.tolist() == [[2 * i, 2 * i + 1] for i in range(10)]
    assert bench.issame.tolist() == flags
    assert int(bench.images[5, 0, 8, 8]) == 50


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_bin_refuses_arbitrary_objects(tmp_path):
    write_bin(tmp_path / "evil.bin", [Exploit()], [True])
    with pytest.raises(ValueError, match=r"refusing to load (posix|os|nt)\.system"):
        load_bin(tmp_path / "evil.bin")
    write_bin(tmp_path / "numpy.bin", [np.zeros(3)], [True])
    with pytest.raises(ValueError, match="refusing to load numpy"):
        load_bin(tmp_path / "numpy.bin")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"bins": []}, "holds a dict"),
        (([b"x", b"y", b"z"], [True]), "3 images for 1 pairs"),
        (([b"x", 3], [True]), "unexpected element types"),
    ],
)
def test_bin_structure_errors(tmp_path, content, message):
    with open(tmp_path / "odd.bin", "wb") as handle:
        pickle.dump(content, handle)
    with pytest.raises(ValueError, match=message):
        load_bin(tmp_path / "odd.bin")


def test_bin_unreadable_and_missing(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match=r"junk\.bin"):
        load_bin(tmp_path / "junk.bin")
    with pytest.raises(ValueError, match="does not exist"):
        load_bin(tmp_path / "none.bin")
    write_bin(tmp_path / "badimg.bin", [b"not an image"] * 20, [True, False] * 5)
    with pytest.raises(ValueError, match=r"cannot read image #0 in .*badimg\.bin") as caught:
        load_bin(tmp_path / "badimg.bin")
    assert "BytesIO" not in str(caught.value)  # the reason, not the in-memory buffer's repr
    assert str(caught.value).endswith("expected " + BIN_LAYOUT)


def test_every_image_of_a_bin_and_both_kinds_of_pair_are_checked_before_decoding(
    tmp_path, pair_list
):
    """A damaged image anywhere in a .bin, or a benchmark of one kind of pair (no threshold can
    be chosen), is refused by the check a sweep runs before training, not after it."""
    blobs = [encoded(solid(10 * k)) for k in range(20)]
    write_bin(tmp_path / "last.bin", [*blobs[:19], b"garbage"], [True, False] * 5)
    with pytest.raises(ImageError, match=r"cannot read image #19 in .*last\.bin"):
        read_bin(tmp_path / "last.bin")
    write_bin(tmp_path / "cut.bin", [*blobs[:4], blobs[4][:30], *blobs[5:]], [True, False] * 5)
    with pytest.raises(ImageError, match=r"cannot read image #4 in .*cut\.bin"):
        read_bin(tmp_path / "cut.bin")
    write_bin(tmp_path / "same.bin", blobs, [True] * 10)
    with pytest.raises(ValueError, match=r"all 10 pairs are same-identity pairs; .* needs both"):
        read_bin(tmp_path / "same.bin")
    path, root = pair_list
    path.write_text("a/0.jpg a/1.jpg -1\n" * 10)
    with pytest.raises(ValueError, match=r"all 10 pairs are different-identity pairs"):
        read_pair_list(path, root)


def make_fundus_tree(root, count=2, size=24):
    grey = np.full((size, size), 255, dtype=np.uint8)
    grey[6:18, 6:18] = 128  # disc rim
    grey[9:15, 9:15] = 0  # cup
    for domain in (1, 2, 3, 4):
        for split in ("train", "test"):
            base = root / f"Domain{domain}" / split / "ROIs"
            (base / "image").mkdir(parents=True)
            (base / "mask").mkdir(parents=True)
            for k in range(count):
                solid(20 * domain + k, size).save(base / "image" / f"g{k}.png")
                Image.fromarray(grey).save(base / "mask" / f"g{k}.png")


def test_fundus_domain_folders(tmp_path):
    make_fundus_tree(tmp_path)
    domains = load_fundus_domains(tmp_path, image_size=12)
    data = domains[3]["test"]
    assert (data.domain, data.split, len(data)) == (3, "test", 2)
    assert data.images.shape == (2, 3, 12, 12)
    assert int(data.images[1, 0, 0, 0]) == 61
    cup, disc = data.masks[0]
    assert cup.sum() == 9 and disc.sum() == 36  # 6x6 cup and 12x12 disc at half resolution
    assert not (cup & ~disc).any()


def test_fundus_errors(tmp_path):
    with pytest.raises(ValueError, match=r"fundus root .* does not exist; expected <root>/Domain"):
        load_fundus_domains(tmp_path / "none")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"fundus root .*afile is not a folder; expected <root>/"):
        load_fundus_domains(tmp_path / "afile")
    make_fundus_tree(tmp_path)
    os.remove(tmp_path / "Domain2" / "train" / "ROIs" / "mask" / "g1.png")
    with pytest.raises(
        ValueError, match=r"1 images have no mask of the same name .* e\.g\. g1\.png"
    ):
        load_fundus_split(tmp_path, 2, "train")
    for png in (tmp_path / "Domain4" / "test" / "ROIs" / "image").glob("*.png"):
        png.unlink()
    with pytest.raises(ValueError, match=r"no \.png images in .*Domain4/test/ROIs/image"):
        load_fundus_split(tmp_path, 4, "test")
    with pytest.raises(ValueError, match=r"fundus folder .*Domain9.* does not exist|domain must"):
        load_fundus_split(tmp_path, 9, "test")


def test_containers_validate_their_contents():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        FaceTrainSet(torch.zeros(3), 2, images=images)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        FaceTrainSet(torch.tensor([0, 1, 2, 0]), 2, images=images)
    with pytest.raises(ValueError, match="images must be a uint8 tensor"):
        FaceTrainSet(torch.zeros(4), 2, images=images.float())
    with pytest.raises(ValueError, match="exactly one of images"):
        FaceTrainSet(torch.zeros(4), 2)
    pairs = torch.zeros(10, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"pair indices must lie in \[0, 3\]"):
        VerificationBenchmark("b", images, pairs + 4, torch.zeros(10, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"pairs must be \(P, 2\) and issame \(P,\)"):
        VerificationBenchmark("b", images, pairs, torch.zeros(9, dtype=torch.bool))
    signed = torch.tensor([1, -1] * 5)  # the pair lists' same / different flags
    benchmark = VerificationBenchmark("b", images, pairs, signed)
    assert benchmark.issame.tolist() == [True, False] * 5  # a bool cast made every pair "same"
    with pytest.raises(ValueError, match=r"bool, 0/1 or 1/-1 .* got values \[2\]"):
        VerificationBenchmark("b", images, pairs, torch.full((10,), 2))


def test_every_container_feeds_a_data_loader(tmp_path, pair_list):
    """DataLoader-ready: a benchmark batches its images (what a model embeds; the pairs then
    index the embeddings), a training set its (image, label) pairs."""
    from torch.utils.data import DataLoader

    benchmark = load_pair_list(*pair_list)
    batches = list(DataLoader(benchmark, batch_size=3))
    assert len(benchmark) == benchmark.images.shape[0]
    torch.testing.assert_close(torch.cat(batches), benchmark.images)
    train = FaceTrainSet(torch.arange(4) % 2, 2, images=torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    images, labels = next(iter(DataLoader(train, batch_size=4)))
    assert images.shape == (4, 3, 8, 8) and labels.tolist() == [0, 1, 0, 1]


def test_bin_that_would_allocate_is_refused_before_it_allocates(tmp_path):
    """48 bytes of pickle asking for a 300 MB bytearray, a length prefix of 2**40 bytes, and a
    codec call that grows without bound: each refused with the file named, nothing allocated."""
    path = tmp_path / "alloc.bin"
    path.write_bytes(b"\x80\x02c__builtin__\nbytearray\nJ\x00\xa3\xe1\x11\x85R.")
    with pytest.raises(ValueError, match=r"alloc\.bin: refusing bytearray\(<size>\)"):
        load_bin(path)
    path.write_bytes(b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc.")
    with pytest.raises(ValueError, match=r"alloc\.bin is not a valid pickle"):
        load_bin(path)
    nested = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x03\x00\x00\x00hex\x86R."
    path.write_bytes(nested)
    with pytest.raises(ValueError, match=r"refusing _codecs\.encode\(\.\.\., 'hex'\)"):
        load_bin(path)
    path.write_bytes(pickle.dumps((list(b"x" * 40), [True] * 20), protocol=2))
    with pytest.raises(ValueError, match="unexpected element types"):
        load_bin(path)
    # one 2 KB string, memoised, copied 50 times by 5-byte opcode runs: 100 KB from a 2 KB file
    blob = encoded(solid(0)).ljust(2000, b"\0")
    copies = b"h\x00h\x01R" * 50  # BINGET 0, BINGET 1, REDUCE: bytearray(blob) again
    flags = b"(" + b"\x88\x89" * 12 + b"\x88l"  # 25 flags
    path.write_bytes(
        b"\x80\x03cbuiltins\nbytearray\nq\x00B"
        + len(blob).to_bytes(4, "little")
        + blob
        + b"\x85q\x01("
        + copies
        + b"l"
        + flags
        + b"\x86."
    )
    with pytest.raises(ValueError, match="the objects built would exceed the file's"):
        read_bin(path)


def test_readers_check_without_decoding(tmp_path, pair_list, face_tree):
    blobs = [encoded(solid(10 * k)) for k in range(20)]
    write_bin(tmp_path / "lfw.bin", blobs, [True, False] * 5)
    read, flags = read_bin(tmp_path / "lfw.bin")
    assert read == blobs and flags == [True, False] * 5
    path, root = pair_list
    images, pairs, issame = read_pair_list(path, root)
    assert len(images) == 6 and len(pairs) == 20 and issame[0] is True
    paths, labels, identities = scan_image_folder(face_tree)
    assert identities == 3 and len(paths) == 6 and labels == [0, 0, 0, 1, 1, 2]
    write_bin(tmp_path / "odd.bin", blobs[:18], [True] * 9)
    with pytest.raises(ValueError, match=r"odd\.bin: the number of pairs \(9\) must be"):
        read_bin(tmp_path / "odd.bin")
