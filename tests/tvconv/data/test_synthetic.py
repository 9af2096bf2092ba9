"""Synthetic faces and fundus: determinism, structure, the layout premise, the cache."""

import functools
from dataclasses import replace

import pytest
import torch

from tvconv.data import synthetic
from tvconv.data.datasets import NUM_FOLDS
from tvconv.data.synthetic import (
    BENCHMARKS,
    SyntheticFacesConfig,
    load_synthetic_faces,
    make_face_benchmark,
    make_face_train_set,
)
from tvconv.data.synthetic_fundus import make_fundus_domains
from tvconv.data.variance import layout_variance
from tvconv.metrics import verification_accuracy
from tvconv.train import colour_embedding, pixel_embedding, quick_config

SMALL = SyntheticFacesConfig(
    image_size=32,
    train_identities=6,
    images_per_identity=3,
    test_identities=20,
    test_images_per_identity=4,
    pairs_per_benchmark=40,
    seed=0,
)


def test_same_seed_gives_bit_identical_data_and_another_seed_differs():
    first, second = make_face_train_set(SMALL), make_face_train_set(SMALL)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    other = make_face_train_set(SyntheticFacesConfig(**{**SMALL.__dict__, "seed": 1}))
    assert not torch.equal(first.images, other.images)
    for name in BENCHMARKS:
        a, b = make_face_benchmark(name, SMALL), make_face_benchmark(name, SMALL)
        assert torch.equal(a.images, b.images) and torch.equal(a.pairs, b.pairs)


def test_train_split_shape_and_labels():
    train = make_face_train_set(SMALL)
    assert train.images.shape == (18, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [i for i in range(6) for _ in range(3)]
    assert train.num_classes == 6 and len(train) == 18
    image, label = train[4]
    assert image.shape == (3, 32, 32) and label == 1


@pytest.mark.parametrize("size", [32, 48, 96, 112])
def test_any_resolution_renders_the_same_face(size):
    config = SyntheticFacesConfig(**{**SMALL.__dict__, "image_size": size, "noise": 0.0})
    images = make_face_train_set(config).images
    assert images.shape[-2:] == (size, size)
    reference = make_face_train_set(SyntheticFacesConfig(**{**config.__dict__, "image_size": 112}))
    downsampled = torch.nn.functional.interpolate(
        reference.images.float(), size=(size, size), mode="area"
    )
    assert (images.float() - downsampled).abs().mean() < 12  # same content, another sampling


def test_rendering_does_not_depend_on_chunking(monkeypatch):
    whole = make_face_train_set(SMALL).images
    monkeypatch.setattr(synthetic, "RENDER_CHUNK", 5)
    assert torch.equal(make_face_train_set(SMALL).images, whole)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_protocol(name):
    bench = make_face_benchmark(name, SMALL)
    per_identity = SMALL.test_images_per_identity
    assert bench.name == name
    assert bench.images.shape == (20 * per_identity, 3, 32, 32)
    assert bench.pairs.shape == (40, 2)
    owner = bench.pairs // per_identity
    assert torch.equal(bench.issame, owner[:, 0] == owner[:, 1])
    for fold in range(NUM_FOLDS):
        in_fold = bench.folds == fold
        assert int(bench.issame[in_fold].sum()) == 2  # half same, half different
        others = ~in_fold
        fold_ids = set(owner[in_fold].flatten().tolist())
        assert fold_ids.isdisjoint(owner[others].flatten().tolist())  # identity-disjoint folds
    assert len({tuple(p) for p in bench.pairs.tolist()}) == 40  # no repeated pair
    if name == "age":
        young = bench.pairs % per_identity < per_identity // 2
        assert young[:, 0].all() and not young[:, 1].any()


def test_benchmark_identities_are_disjoint_from_training():
    train = make_face_train_set(SMALL)
    bench = make_face_benchmark("clean", SMALL)
    train_ids = synthetic.sample_identities(6, synthetic.stream(0, "train-identities"))
    bench_ids = synthetic.sample_identities(20, synthetic.stream(0, "clean-identities"))
    assert torch.cdist(train_ids["face_w"][:, None], bench_ids["face_w"][:, None]).min() > 0
    assert bench.images.shape[0] != train.images.shape[0]


def test_harder_benchmarks_vary_more_within_an_identity():
    """The benchmark profiles at a mild nuisance (at the default's, the training variation is
    large enough to dwarf the differences these ratios look at)."""
    config = replace(SMALL, test_images_per_identity=8, nuisance=0.3)

    def spread(name):
        images = make_face_benchmark(name, config).images.float().view(20, 8, -1)
        return images.std(dim=1).mean().item()

    clean = spread("clean")
    assert spread("pose") > clean * 1.2
    assert spread("illumination") > clean * 1.2
    # age: an identity's old images (second half) are further from its young ones than those
    # are from each other
    images = make_face_benchmark("age", config).images.float().view(20, 8, -1)
    young, old = images[:, :4], images[:, 4:]
    within_young = torch.cdist(young, young).sum() / (20 * 4 * 3)
    across_ages = torch.cdist(young, old).mean()
    assert across_ages > within_young * 1.08


@functools.cache
def quick_data(layout: str = "aligned"):
    """The quick preset's data (seed 0), generated once per test session."""
    synthetic = quick_config().data.synthetic
    return load_synthetic_faces(replace(synthetic, seed=0, layout=layout))


def test_aligned_faces_are_as_layout_structured_as_real_aligned_faces():
    """The layout diagnostic (score and mean-image share) of the quick preset's aligned faces is
    within 15% of scikit-image's real aligned faces (LFW, 1.16 and 25%); the layout-free control
    loses the shared layout (its mean image is flat) and scores below 1; real non-face patches
    score far below both."""
    data = pytest.importorskip("skimage.data")
    real = torch.from_numpy(data.lfw_subset()).float().unsqueeze(1) * 2 - 1
    faces, non_faces = layout_variance(real[:100]), layout_variance(real[100:])
    assert faces.score == pytest.approx(1.156, abs=0.005)
    assert faces.mean_image_share == pytest.approx(0.250, abs=0.005)
    aligned = layout_variance(quick_data()[0].images)
    free = layout_variance(quick_data("free")[0].images)
    assert abs(aligned.score / faces.score - 1) <= 0.15
    assert abs(aligned.mean_image_share / faces.mean_image_share - 1) <= 0.15
    assert free.mean_image_share < 0.02 and free.score < 0.85 < aligned.score
    assert non_faces.score < free.score


def test_identity_lives_in_the_layout_not_in_the_mean_colour():
    """The mean colour of an image identifies a person at most 55% of the time (50% = chance);
    raw pixels, which keep the layout, do better."""
    _, benchmarks = quick_data()
    accuracy = {}
    for name, embedding in (("colour", colour_embedding), ("pixels", pixel_embedding)):
        scores = []
        for bench in benchmarks:
            vectors = embedding(bench.images)
            left, right = vectors[bench.pairs[:, 0]], vectors[bench.pairs[:, 1]]
            scores.append(verification_accuracy(left, right, bench.issame, bench.folds)["acc_pct"])
        accuracy[name] = sum(scores) / len(scores)
    assert accuracy["colour"] <= 55.0
    assert accuracy["pixels"] > accuracy["colour"] + 3


def test_free_layout_rolls_the_aligned_images():
    """The control's images are the aligned ones, pixel for pixel, each circularly shifted."""
    aligned = make_face_train_set(SMALL)
    free = make_face_train_set(replace(SMALL, layout="free"))
    assert torch.equal(aligned.labels, free.labels)
    assert not torch.equal(aligned.images, free.images)
    shifts = set()
    for moved, image in zip(free.images, aligned.images, strict=True):
        found = [
            (dy, dx)
            for dy in range(32)
            for dx in range(32)
            if torch.equal(image.roll((dy, dx), dims=(1, 2)), moved)
        ]
        assert found
        shifts.add(found[0])
    assert len(shifts) > 3
    still = replace(SMALL, layout="free", free_shift=0.0)
    assert torch.equal(make_face_train_set(still).images, aligned.images)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_size": 8}, "data.synthetic.image_size must be >= 16"),
        ({"test_images_per_identity": 5}, "must be an even int >= 4"),
        ({"test_identities": 10}, "data.synthetic.test_identities must be >= 20"),
        ({"pairs_per_benchmark": 30}, "must be a positive multiple of 20"),
        ({"nuisance": -1}, "data.synthetic.nuisance must be a number >= 0"),
        ({"nuisance": float("nan")}, r"data.synthetic.nuisance must be a number >= 0 \(finite\)"),
        ({"noise": float("inf")}, r"data.synthetic.noise must be a number >= 0 \(finite\)"),
        ({"jitter": True}, "data.synthetic.jitter must be a number >= 0"),
        ({"free_shift": float("nan")}, r"data.synthetic.free_shift must be in \[0, 0.5\]"),
        ({"images_per_identity": True}, "data.synthetic.images_per_identity must be a positive"),
        ({"layout": "random"}, "data.synthetic.layout must be one of aligned, free"),
        ({"train_identities": 0}, "data.synthetic.train_identities must be a positive int"),
    ],
)
def test_bad_configuration_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        SyntheticFacesConfig(**{**SMALL.__dict__, **change})


def test_too_many_pairs_for_the_identities_is_refused():
    config = SyntheticFacesConfig(**{**SMALL.__dict__, "pairs_per_benchmark": 400})
    with pytest.raises(ValueError, match="only 12 distinct same pairs per fold, 20 needed"):
        make_face_benchmark("clean", config)


def test_cache_round_trip_and_recovery(tmp_path, monkeypatch):
    monkeypatch.setenv("TVCONV_CACHE", str(tmp_path))
    train, benchmarks = load_synthetic_faces(SMALL)
    entries = list(tmp_path.glob("faces-*.pt"))
    assert len(entries) == 1
    again, benchmarks_again = load_synthetic_faces(SMALL)
    assert torch.equal(again.images, train.images)
    assert [b.name for b in benchmarks_again] == list(BENCHMARKS)
    assert torch.equal(benchmarks_again[3].pairs, benchmarks[3].pairs)
    entries[0].write_bytes(b"truncated")
    recovered, _ = load_synthetic_faces(SMALL)
    assert torch.equal(recovered.images, train.images)
    assert not list(tmp_path.glob("*.tmp"))


def test_fundus_domains():
    domains = make_fundus_domains(size=48, scale=0.1)
    assert sorted(domains) == [1, 2, 3, 4]
    assert [len(domains[d]["train"]) for d in (1, 2, 3, 4)] == [5, 10, 32, 32]
    assert [len(domains[d]["test"]) for d in (1, 2, 3, 4)] == [5, 6, 8, 8]
    for domain, splits in domains.items():
        for split, data in splits.items():
            assert (data.domain, data.split) == (domain, split)
            cup, disc = data.masks[:, 0], data.masks[:, 1]
            assert not (cup & ~disc).any()  # the cup lies inside the disc
            assert (cup.sum(dim=(1, 2)) > 0).all()
            assert (disc.sum(dim=(1, 2)) > cup.sum(dim=(1, 2))).all()
    again = make_fundus_domains(size=48, scale=0.1)
    assert torch.equal(again[2]["test"].images, domains[2]["test"].images)


def test_fundus_domains_differ_in_appearance_and_disc_size():
    domains = make_fundus_domains(size=48, scale=0.2)
    colour = {d: domains[d]["train"].images.float().mean(dim=(0, 2, 3)) for d in domains}
    disc = {d: domains[d]["train"].masks[:, 1].float().mean().item() for d in domains}
    assert (colour[1] - colour[2]).abs().max() > 10
    assert disc[2] > disc[3] * 1.5  # RIM-ONE-like discs are larger than REFUGE-like ones


def test_folds_stay_identity_disjoint_when_identities_do_not_divide_by_ten():
    config = SyntheticFacesConfig(
        **{**SMALL.__dict__, "test_identities": 21, "pairs_per_benchmark": 60}
    )
    bench = make_face_benchmark("clean", config)
    owner = bench.pairs // config.test_images_per_identity
    for fold in range(NUM_FOLDS):
        inside = set(owner[bench.folds == fold].flatten().tolist())
        outside = set(owner[bench.folds != fold].flatten().tolist())
        assert inside and inside.isdisjoint(outside)
