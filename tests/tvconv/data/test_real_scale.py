"""Real data at scale: the decoded-tree cache and the lazy loader equal to the in-memory decode,
named benchmarks, the official LFW pair format and the paper's column order."""

import pytest
import torch

from tests.tvconv.data.test_formats import face_tree, solid  # noqa: F401 (fixture)
from tvconv.data import faces
from tvconv.data.faces import (
    BenchmarkSource,
    cached_image_folder,
    load_image_folder,
    load_pair_list,
    paper_order,
    parse_benchmarks,
    read_pair_list,
)
from tvconv.train import DataConfig, batch_images, check_data


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TVCONV_CACHE", str(folder))
    return folder


@pytest.mark.parametrize("workers", [0, 2])
def test_cached_tree_equals_the_in_memory_decode(face_tree, cache, workers, capsys, monkeypatch):  # noqa: F811
    eager = load_image_folder(face_tree, image_size=16)
    cached = cached_image_folder(face_tree, image_size=16, workers=workers)
    assert torch.equal(cached.images, eager.images) and torch.equal(cached.labels, eager.labels)
    assert cached.num_classes == eager.num_classes
    (array,) = cache.glob("faces-casia-*.npy")
    assert "decoding 6 training images" in capsys.readouterr().err
    assert array.stat().st_size >= 6 * 3 * 16 * 16
    # a second run maps the decoded copy: nothing decoded, nothing printed
    monkeypatch.setattr(faces, "decode_rgb", lambda *_: pytest.fail("decoded again"))
    again = cached_image_folder(face_tree, image_size=16, workers=workers)
    assert torch.equal(again.images, eager.images)
    assert capsys.readouterr().err == ""


def test_cache_key_follows_the_tree_and_the_size(face_tree, cache):  # noqa: F811
    cached_image_folder(face_tree, image_size=16)
    cached_image_folder(face_tree, image_size=12)
    assert len(list(cache.glob("faces-*.npy"))) == 2
    solid(99).save(face_tree / "0001" / "new.png")
    grown = cached_image_folder(face_tree, image_size=16)
    assert len(grown) == 7 and len(list(cache.glob("faces-*.npy"))) == 3
    assert torch.equal(grown.images, load_image_folder(face_tree, image_size=16).images)


def test_cache_off_decodes_lazily_through_workers(face_tree, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TVCONV_CACHE", "off")
    eager = load_image_folder(face_tree, image_size=16)
    lazy = cached_image_folder(face_tree, image_size=16, workers=2)
    assert lazy.images is None
    chunks = torch.tensor([[5, 0, 3], [1, 4, 2]])
    for (images, labels), chunk in zip(batch_images(lazy, chunks, 2), chunks, strict=True):
        assert torch.equal(images, eager.images[chunk])
        assert torch.equal(labels, eager.labels[chunk])


def test_a_failed_decode_leaves_no_cache_entry(face_tree, cache):  # noqa: F811
    (face_tree / "0001" / "zz_broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*zz_broken\.jpg"):
        cached_image_folder(face_tree, image_size=16)
    assert not list(cache.glob("*.npy"))


def test_benchmark_names(tmp_path):
    sources = parse_benchmarks(
        ["/d/lfw.bin", "/d/cfp/pairs.txt:/d/cfp/images", "ff=/d/x.bin", "my-set=/d/p.txt:/d/im"]
    )
    assert [s.name for s in sources] == ["lfw", "cfp", "ff", "my-set"]
    assert sources[1] == BenchmarkSource("cfp", "/d/cfp/pairs.txt", "/d/cfp/images")
    assert parse_benchmarks(["pairs.txt:img"])[0].name == "pairs"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["/a/lfw.bin", "/b/lfw.bin"], r"two benchmarks are named 'lfw'"),
        (["/a/lfw/pairs.txt:/a/lfw", "/b/lfw.bin"], r"two benchmarks are named 'lfw'"),
        (["x=/a/one.bin", "x=/a/two.bin"], r"two benchmarks are named 'x'"),
        (["cfp_ff=/a/1.bin", "CFP-FF=/a/2.bin"], r"two benchmarks are named 'CFP-FF'"),
        (["a b=/a/1.bin"], r"the name 'a b' must be letters"),
        (["mean=/a/1.bin"], r"the name 'mean' must be letters"),
        (["floor_lfw=/a/1.bin"], r"the name 'floor_lfw' .* nor start with floor_ or diff_"),
        (["/a/diff_x.bin"], r"the name 'diff_x' .* nor start with floor_"),
        (["/a/pairs.txt"], r"expected \[name=\]file\.bin or \[name=\]pairs\.txt:image_root"),
    ],
)
def test_bad_benchmark_entries_are_refused(entries, message):
    with pytest.raises(ValueError, match=message):
        parse_benchmarks(entries)


def test_duplicate_names_refused_by_the_data_check(tmp_path):
    config = DataConfig(train_root=str(tmp_path), benchmarks=("/a/lfw.bin", "/b/lfw.bin"))
    with pytest.raises(ValueError, match="two benchmarks are named 'lfw'"):
        check_data(config)


@pytest.fixture
def lfw(tmp_path):
    """An LFW-layout image root and an official-format pairs.txt: 10 folds of 1 same and 1
    different pair (header ``10\\t1``)."""
    root = tmp_path / "lfw"
    people = ["Ann_Lee", "Bo_Chen", "Cy_Dunn"]
    for index, name in enumerate(people):
        (root / name).mkdir(parents=True)
        for number in (1, 2):
            solid(30 * index + number).save(root / name / f"{name}_{number:04d}.jpg", quality=100)
    lines = ["10\t1"]
    for fold in range(10):
        lines.append(f"{people[fold % 3]}\t1\t2")
        lines.append(f"{people[fold % 3]}\t1\t{people[(fold + 1) % 3]}\t2")
    path = root / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, root


def test_official_lfw_pairs_are_read(lfw):
    path, root = lfw
    paths, pairs, issame = read_pair_list(path, root)
    assert issame == [True, False] * 10
    assert paths[pairs[0][0]] == "Ann_Lee/Ann_Lee_0001.jpg"
    assert paths[pairs[0][1]] == "Ann_Lee/Ann_Lee_0002.jpg"
    assert paths[pairs[1][1]] == "Bo_Chen/Bo_Chen_0002.jpg"
    bench = load_pair_list(path, root, image_size=16)
    assert bench.name == "lfw" and bench.pairs.shape == (20, 2)
    assert bench.folds.tolist() == [i // 2 for i in range(20)]


def test_lfw_header_must_match_the_pairs(lfw):
    path, root = lfw
    path.write_text(path.read_text().replace("10\t1", "10\t300", 1))
    with pytest.raises(ValueError, match=r"pairs\.txt:1: the header says 10 folds of 300"):
        read_pair_list(path, root)
    path.write_text("10\t1\nAnn_Lee\t1\t9\n")
    with pytest.raises(ValueError, match=r"pairs\.txt:2: image .*Ann_Lee_0009\.jpg not found"):
        read_pair_list(path, root)


def test_paper_order():
    names = ["zeta", "calfw", "AgeDB-30", "cfp_ff", "lfw", "alpha"]
    assert paper_order(names) == ["lfw", "cfp_ff", "AgeDB-30", "calfw", "alpha", "zeta"]


def test_benchmark_columns_follow_the_paper():
    import pandas as pd

    from analysis.tables import benchmarks_of

    columns = {f"{n}_acc_pct": [1.0] for n in ("calfw", "agedb_30", "lfw", "cfp_ff", "extra")}
    runs = pd.DataFrame({**columns, "mean_acc_pct": [1.0], "train_acc_pct": [1.0]})
    assert benchmarks_of(runs) == ["lfw", "cfp_ff", "agedb_30", "calfw", "extra"]


def test_decode_progress_lines(face_tree, cache, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(faces, "PROGRESS_EVERY_S", -1.0)
    cached_image_folder(face_tree, image_size=16)
    err = capsys.readouterr().err
    assert "decoding 6 images: 6 done" in err and "decoded in" in err
