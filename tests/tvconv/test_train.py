"""Training engine: config parsing, schedule, determinism, failures, resume, real data, DDP."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image
from torch import nn

from tvconv._engine import lr_at, milestone_epochs
from tvconv.config import override, refuse_repeated_keys
from tvconv.data.datasets import VerificationBenchmark
from tvconv.data.synthetic import SyntheticFacesConfig, make_face_train_set
from tvconv.train import (
    EvalConfig,
    FaceRecognizer,
    OptimConfig,
    check_data_paths,
    evaluate,
    fit,
    floors,
    load_data,
    smoke_config,
)
from tvconv.train import main as train_main

BENCHMARK_NAMES = ("clean", "pose", "illumination", "age")


def test_override_parses_typed_nested_values():
    config = smoke_config()
    config = override(config, "optim.lr=0.05")
    config = override(config, "model.atom=dw")
    config = override(config, "data.synthetic.nuisance=0.5")
    config = override(config, "optim.milestones=0.5,0.75")
    config = override(config, "model.bias=true")
    config = override(config, "threads=1")
    config = override(config, "checkpoint_dir=none")
    assert config.optim.lr == 0.05 and config.model.atom == "dw"
    assert config.data.synthetic.nuisance == 0.5
    assert config.optim.milestones == (0.5, 0.75)
    assert config.model.bias is True and config.threads == 1 and config.checkpoint_dir is None


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("optim.lrate=1", r"unknown key 'lrate'; expected one of epochs, batch_size, lr"),
        ("optimizer.lr=1", "unknown key 'optimizer.lr'; expected one of seed, device, amp"),
        ("optim=1", "key 'optim' is a group; set one of optim.epochs"),
        ("optim.epochs=two", "epochs='two' is invalid: expected a value of type int"),
        ("model.bias=maybe", "bias='maybe' is invalid: expected true or false"),
        ("optim.lr", "is not of the form key=value"),
        ("model.norm=gn", "model.norm='gn' is invalid: expected one of ln, bn, in, none"),
        ("model.name=resnet", "model.name='resnet' is invalid: expected one of mobilenet_v2_x0_1"),
        ("optim.epochs=0", "optim.epochs=0 is invalid: expected a positive int"),
        ("data.augment=blur", "unknown augmentation 'blur'"),
        ("eval.protocol=lfw", "eval.protocol='lfw' is invalid: expected one of clean, official"),
        ("optim.milestones=0.9,0.5", "increasing fractions in"),
        ("seed=-1", r"seed=-1 is invalid: expected an int >= 0 \(at most 4294967295\)"),
        (
            "seed=4294967296",
            r"seed=4294967296 is invalid: expected an int >= 0 \(at most 4294967295",
        ),
    ],
)
def test_bad_overrides_name_key_value_and_expectation(assignment, message):
    with pytest.raises(ValueError, match=message):
        override(smoke_config(), assignment)


def test_a_key_given_twice_is_refused_not_left_to_the_last_value(capsys):
    refuse_repeated_keys(["optim.lr=0.1", "optim.epochs=2"])
    with pytest.raises(ValueError, match=r"optim\.epochs, optim\.lr given more than once"):
        refuse_repeated_keys(["optim.lr=0.1", "optim.epochs=2", " optim.epochs=3", "optim.lr=1"])
    with pytest.raises(SystemExit) as error:
        train_main(["--preset", "smoke", "optim.epochs=2", "optim.epochs=3"])
    assert error.value.code == 2
    assert "optim.epochs given more than once" in capsys.readouterr().err


@pytest.mark.parametrize(
    "assignments",
    [("model.generator=false", "model.init=stats"), ("model.init=stats", "model.generator=false")],
)
def test_an_affinity_init_without_a_generator_is_refused_in_either_order(assignments):
    """A TVConv without a generator has no affinity maps: an init for them would do nothing;
    each setting alone is fine."""
    config = override(smoke_config(), assignments[0])
    with pytest.raises(ValueError, match=r"model.init='stats' does nothing with model.generator"):
        override(config, assignments[1])
    without_generator = override(smoke_config(), "model.generator=false")
    assert (without_generator.model.generator, without_generator.model.init) == (False, "ones")


def test_paper_schedule_milestones_22_30_35():
    optim = OptimConfig()
    assert optim.epochs == 38 and milestone_epochs(optim) == [22, 30, 35]
    steps = 10
    assert lr_at(optim, 22 * steps - 1, steps) == pytest.approx(0.1)
    assert lr_at(optim, 22 * steps, steps) == pytest.approx(0.01)
    assert lr_at(optim, 30 * steps, steps) == pytest.approx(0.001)
    assert lr_at(optim, 38 * steps - 1, steps) == pytest.approx(0.0001)
    cosine = OptimConfig(epochs=4, schedule="cosine")
    assert lr_at(cosine, 0, 5) == pytest.approx(0.1)
    assert lr_at(cosine, 10, 5) == pytest.approx(0.05)


def test_smoke_fit_returns_a_complete_record():
    result = fit(smoke_config())
    assert result.status == "complete" and result.reason is None
    for name in BENCHMARK_NAMES:
        assert 0 < result.metrics[f"{name}_acc_pct"] < 100
        assert 0 <= result.metrics[f"{name}_auc_pct"] <= 100
    means = [result.metrics[f"{n}_acc_pct"] for n in BENCHMARK_NAMES]
    assert result.metrics["mean_acc_pct"] == pytest.approx(sum(means) / 4)
    assert [row["epoch"] for row in result.history] == [1]
    assert result.history[0]["images_per_s"] > 0
    assert result.environment["torch"] == torch.__version__
    assert result.environment["device"] == "cpu" and result.environment["threads"] >= 1
    assert isinstance(result.model, FaceRecognizer)
    record = result.to_record()
    assert "model" not in record and json.loads(json.dumps(record))["config"]["seed"] == 0


def test_same_seed_identical_and_other_seed_different():
    first, second = fit(smoke_config()), fit(smoke_config())
    assert first.metrics == second.metrics
    assert [r["loss"] for r in first.history] == [r["loss"] for r in second.history]
    other = fit(override(smoke_config(), "seed=1"))
    assert other.history[0]["loss"] != first.history[0]["loss"]


def test_non_finite_loss_fails_the_run_with_a_reason():
    config = override(override(smoke_config(), "optim.lr=1e30"), "optim.epochs=2")
    result = fit(config)
    assert result.status == "failed"
    assert "non-finite loss" in result.reason and "epoch 1" in result.reason
    assert result.metrics == {}


def test_a_run_that_diverges_on_its_last_update_fails_not_completes():
    """One step of lr 1e30: the loss it saw was finite, the model it left is not; evaluated, its
    NaN embeddings once read as "complete" with 0% accuracy and 100% AUC."""
    config = smoke_config()
    for item in ("optim.lr=1e30", "optim.batch_size=64", "optim.epochs=1", "eval.floors=false"):
        config = override(config, item)
    result = fit(config)
    assert result.status == "failed" and result.metrics == {}
    assert result.reason.startswith("non-finite") and "diverged" in result.reason


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    config = override(smoke_config(), "optim.epochs=3")
    uninterrupted = fit(config)

    def crash_after_first_epoch(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    resumable = override(config, f"checkpoint_dir={tmp_path / 'run'}")
    with pytest.raises(KeyboardInterrupt):
        fit(resumable, on_epoch_end=crash_after_first_epoch)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    resumed = fit(resumable)
    assert resumed.metrics == uninterrupted.metrics
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in uninterrupted.history]
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    config = override(smoke_config(), f"checkpoint_dir={tmp_path}")
    fit(config)
    with pytest.raises(ValueError, match="belongs to another configuration"):
        fit(override(config, "optim.lr=0.05"))


def test_fingerprint_ignores_runtime_fields_only():
    config = smoke_config()
    same = override(override(config, "threads=1"), "device=cpu")
    assert same.fingerprint() == config.fingerprint()
    assert override(config, "seed=3").fingerprint() != config.fingerprint()


def test_bf16_autocast_runs_on_cpu():
    result = fit(override(smoke_config(), "amp=bf16"))
    assert result.status == "complete" and 0 < result.metrics["mean_acc_pct"] < 100


def test_evaluate_wires_pairs_to_embeddings():
    """Raw pixels as embeddings: same pairs are identical images, different pairs not."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8)
    same = torch.arange(20).view(-1, 1).repeat(1, 2)
    different = torch.stack([torch.arange(20, 40), torch.arange(0, 20)], dim=1)
    pairs = torch.stack([same, different], dim=1).reshape(40, 2)
    issame = torch.tensor([True, False] * 20)
    bench = VerificationBenchmark("toy", images, pairs, issame)
    metrics = evaluate(nn.Flatten(), [bench], EvalConfig(threshold_steps=500))
    assert metrics["toy_acc_pct"] == 100.0 and metrics["toy_auc_pct"] == 100.0
    assert metrics["mean_acc_pct"] == 100.0


def layout_only_benchmark() -> VerificationBenchmark:
    """20 identities told apart by where a bright square sits on a grey image (the same mean
    colour in every image): a same pair shows one identity twice, a different pair two."""
    images = torch.full((20, 3, 8, 8), 100, dtype=torch.uint8)
    for identity in range(20):
        row, col = divmod(identity, 5)
        images[identity, :, row : row + 2, col : col + 2] = 200  # 4 bright pixels anywhere
    same = torch.arange(20).view(-1, 1).repeat(1, 2)
    different = torch.stack([torch.arange(20), (torch.arange(20) + 7) % 20], dim=1)
    pairs = torch.stack([same, different], dim=1).reshape(40, 2)
    return VerificationBenchmark("layout", images, pairs, torch.tensor([True, False] * 20))


def test_floors_on_a_tiny_set_with_known_answers():
    """Raw pixels tell every pair apart (100%); the mean colour is the same in every image, so
    every pair scores alike and the best threshold gets half the pairs (50%); the untrained
    network scores what its own deployed embedding scores."""
    bench = layout_only_benchmark()
    means = bench.images.float().mean(dim=(2, 3))
    assert torch.allclose(means, means[0].expand_as(means))
    config = EvalConfig(threshold_steps=500)
    torch.manual_seed(0)
    untrained = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    metrics = floors(untrained, [bench], config)
    assert metrics["floor_pixels_layout_acc_pct"] == 100.0
    assert metrics["floor_pixels_mean_acc_pct"] == 100.0
    assert metrics["floor_colour_layout_acc_pct"] == 50.0
    own = evaluate(untrained, [bench], config)["layout_acc_pct"]
    assert metrics["floor_untrained_layout_acc_pct"] == own
    assert set(metrics) == {
        f"floor_{kind}_{name}_acc_pct"
        for kind in ("pixels", "colour", "untrained")
        for name in ("layout", "mean")
    }


def test_every_face_run_reports_its_floors_before_training_moved_anything():
    result = fit(smoke_config())
    untrained = result.metrics["floor_untrained_mean_acc_pct"]
    assert 0 < result.metrics["floor_pixels_mean_acc_pct"] < 100
    assert 0 < result.metrics["floor_colour_mean_acc_pct"] < 100
    assert 0 < untrained < 100 and untrained != result.metrics["mean_acc_pct"]
    no_floors = fit(override(smoke_config(), "eval.floors=false"))
    assert not any(key.startswith("floor_") for key in no_floors.metrics)
    assert no_floors.metrics["mean_acc_pct"] == result.metrics["mean_acc_pct"]  # no side effect


@pytest.fixture
def real_data(tmp_path):
    """A tiny CASIA-like tree and an LFW-like pair list, written from synthetic faces."""
    faces = make_face_train_set(
        SyntheticFacesConfig(image_size=32, train_identities=10, images_per_identity=4, seed=0)
    )
    root = tmp_path / "train"
    for index, (image, label) in enumerate(zip(faces.images, faces.labels, strict=True)):
        folder = root / f"id{int(label):03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index}.png")
    lines = [
        f"id{i % 10:03d}/{4 * (i % 10)}.png id{(i + k) % 10:03d}/{4 * ((i + k) % 10) + 1}.png "
        f"{1 if k == 0 else -1}"
        for i in range(10)
        for k in (0, 3)
    ]
    (tmp_path / "pairs.txt").write_text("\n".join(lines))
    return root, tmp_path / "pairs.txt"


def test_real_data_runs_through_the_same_engine(real_data):
    root, pairs = real_data
    config = smoke_config()
    config = override(config, f"data.train_root={root}")
    config = override(config, f"data.benchmarks=listed={pairs}:{root}")
    check_data_paths(config.data)
    result = fit(config)
    assert result.status == "complete"
    assert 0 <= result.metrics["listed_acc_pct"] <= 100
    assert result.metrics["mean_acc_pct"] == result.metrics["listed_acc_pct"]


def test_a_damaged_training_image_is_bad_input_found_before_training(real_data, capsys):
    """The tree is checked without decoding; its images are decoded once, before the first
    step: a damaged one ends the command with exit 2 and its path, not a traceback."""
    root, pairs = real_data
    damaged = sorted(root.rglob("*.png"))[5]
    damaged.write_bytes(damaged.read_bytes()[:40])
    argv = ["--preset", "smoke", f"data.train_root={root}", f"data.benchmarks={pairs}:{root}"]
    with pytest.raises(SystemExit) as caught:
        train_main([*argv, "eval.floors=false"])
    assert caught.value.code == 2
    assert f"cannot read image {damaged}" in capsys.readouterr().err


def test_missing_real_data_paths_fail_fast(tmp_path):
    config = override(smoke_config(), f"data.train_root={tmp_path / 'none'}")
    config = override(config, f"data.benchmarks={tmp_path / 'lfw.bin'}")
    with pytest.raises(ValueError, match=r"data.train_root=.*none' does not exist"):
        check_data_paths(config.data)
    a_file = tmp_path / "casia.jpg"
    a_file.write_bytes(b"")
    with pytest.raises(ValueError, match=r"data.train_root=.*casia.jpg' is a file, not a folder"):
        check_data_paths(override(config, f"data.train_root={a_file}").data)
    only_root = override(smoke_config(), f"data.train_root={tmp_path}")
    with pytest.raises(ValueError, match=r"data\.benchmarks=\(\) is invalid: expected benchmark"):
        check_data_paths(only_root.data)


@pytest.mark.slow
def test_two_process_ddp_on_cpu_keeps_ranks_in_sync(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, torch
            from tvconv.config import override
            from tvconv.train import fit, smoke_config
            config = override(smoke_config(), "optim.epochs=2")
            result = fit(config)
            checksum = sum(float(p.double().sum()) for p in result.model.parameters())
            rank = os.environ["RANK"]
            fields = [checksum, result.status, result.environment["world_size"],
                      result.metrics.get("mean_acc_pct")]
            with open(r"{tmp_path}" + f"/rank{{rank}}.txt", "w") as handle:
                handle.write(" ".join(repr(f) if isinstance(f, float) else str(f) for f in fields))
            """
        )
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    rank0 = (tmp_path / "rank0.txt").read_text().split()
    rank1 = (tmp_path / "rank1.txt").read_text().split()
    assert rank0[0] == rank1[0]  # identical parameters on both ranks after training
    assert rank0[1:3] == ["complete", "2"] and rank1[1:3] == ["complete", "2"]
    assert 0 < float(rank0[3]) < 100 and rank1[3] == "None"  # rank 0 evaluates


def test_the_data_seed_follows_the_run_seed_unless_set():
    """Seeds differ in the identities drawn too (intervals cover identity sampling); a fixed
    ``data.synthetic.seed`` keeps one dataset across run seeds."""
    config = smoke_config()
    assert config.data.synthetic.seed is None
    first, _ = load_data(config.data, seed=0)
    again, _ = load_data(config.data, seed=0)
    other, other_benchmarks = load_data(config.data, seed=1)
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    fixed = override(config, "data.synthetic.seed=0").data
    assert torch.equal(load_data(fixed, seed=1)[0].images, first.images)
    assert not torch.equal(load_data(fixed, seed=1)[1][0].images, other_benchmarks[0].images)


def test_a_key_that_follows_another_is_refused_not_dropped():
    config = smoke_config()  # 32 px
    with pytest.raises(ValueError, match=r"data.synthetic.image_size cannot be set: it follows "):
        override(config, "data.synthetic.image_size=64")
    assert override(config, "data.synthetic.image_size=32") == config  # what it follows already
    assert override(config, "data.image_size=48").data.synthetic.image_size == 48


def test_a_batch_torchrun_cannot_split_evenly_is_bad_input(monkeypatch, capsys):
    """Checked before training (exit 2), not inside the process group on every rank."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as caught:
        train_main(["--preset", "smoke", "optim.batch_size=15"])
    assert caught.value.code == 2
    assert "optim.batch_size=15 is invalid: expected a multiple of the 2 ranks" in (
        capsys.readouterr().err
    )
