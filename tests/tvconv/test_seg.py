"""Segmentation: the DeepLabV3+ MobileNetV2 segmenter, joint augmentation, the fundus engine."""

import json

import pytest
import torch
import torch.nn.functional as F

import tvconv
from tvconv import TVConv, segment
from tvconv.config import override
from tvconv.data.augment import Augmentation
from tvconv.data.synthetic_fundus import FUNDUS_DOMAINS
from tvconv.models import create, list_models, model_task
from tvconv.models.seg import MobileNetV2Backbone, load_backbone
from tvconv.segment import (
    FundusConfig,
    check_paths,
    fit_fundus,
    load_split_data,
    main,
    prior_masks,
    segmentation_loss,
    smoke_config,
)

SMALL = "deeplabv3plus_mobilenet_v2_x0_35"
SMALL_TVCONV = {"inter_channels": 8, "inter_layers": 0}
# torchvision's ImageNet mobilenet_v2: 3,504,872 parameters, of which the classifier holds
# 1,281,000 and the last 1x1 conv to 1280 channels (features.18) 412,160.
IMAGENET_FEATURES_0_TO_17 = 3_504_872 - 1_281_000 - 412_160


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_registry_separates_the_tasks():
    assert list_models(task="fundus") == ["deeplabv3plus_mobilenet_v2", SMALL]
    assert "mobilenet_v2_x0_1" in list_models(task="face")
    assert not set(list_models(task="face")) & set(list_models(task="fundus"))
    assert model_task(SMALL) == "fundus" and model_task("shufflenet_v2_x1_0") == "face"


def test_backbone_matches_imagenet_mobilenet_v2_at_output_stride_16():
    backbone = MobileNetV2Backbone(1.0)
    assert count(backbone) == IMAGENET_FEATURES_0_TO_17
    low, high = backbone(torch.zeros(1, 3, 256, 256))
    assert low.shape == (1, 24, 64, 64) and high.shape == (1, 320, 16, 16)
    dilations = [m.dilation[0] for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    # the stage that would reach stride 32: its first block keeps dilation 1 (as ResNet does in
    # DeepLab), its 2 later blocks and the 320 block dilate by 2
    assert dilations.count(2) == 3


@pytest.mark.parametrize("atom", ["aspp", "dw", "tvconv"])
def test_every_atom_maps_images_to_two_logit_maps(atom):
    options = SMALL_TVCONV if atom == "tvconv" else {}
    model = create(SMALL, atom=atom, input_size=64, **options).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2, 64, 64)


def test_tvconv_replaces_exactly_the_three_aspp_depthwise_convs():
    model = create(SMALL, atom="tvconv", input_size=96, **SMALL_TVCONV)
    sites = model.tvconv_sites
    assert [s.name for s in sites] == [f"aspp.branches.{i}.depthwise.0" for i in (1, 2, 3)]
    assert all(isinstance(model.get_submodule(s.name), TVConv) for s in sites)
    assert {(s.channels, s.h, s.w, s.stride) for s in sites} == {(64, 6, 6, 1)}
    layers = [m for m in model.modules() if isinstance(m, TVConv)]
    assert len(layers) == 3 and all(layer in list(model.aspp.modules()) for layer in layers)
    dw = create(SMALL, atom="dw", input_size=96)
    assert count(model.backbone) == count(dw.backbone)  # the backbone keeps its depthwise convs
    first = create(SMALL, atom="tvconv", input_size=96, select="first:1", **SMALL_TVCONV)
    assert [s.name for s in first.tvconv_sites] == ["aspp.branches.1.depthwise.0"]


def test_aspp_atom_uses_dilated_branches_at_the_paper_rates():
    model = create(SMALL, atom="aspp", input_size=64)
    rates = [branch[0].dilation[0] for branch in model.aspp.branches[1:]]
    assert rates == [6, 12, 18]
    assert not any(m.groups > 1 for m in model.aspp.modules() if isinstance(m, torch.nn.Conv2d))


def test_deployed_segmenter_equals_the_training_form():
    torch.manual_seed(0)
    model = create(SMALL, atom="tvconv", input_size=64, **SMALL_TVCONV).eval()
    for layer in model.modules():
        if isinstance(layer, TVConv):
            torch.nn.init.normal_(layer.affinity_maps)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
        deployed = tvconv.deploy(model)(images)
    torch.testing.assert_close(deployed, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "mobilenet_v2_x0_1", "atom": "aspp"}, "must be one of dw, tvconv"),
        ({"name": SMALL, "atom": "aspp", "inter_channels": 8}, "atom='aspp'"),
        ({"name": SMALL, "atom": "dw", "embedding_size": 128}, "unknown option"),
        ({"name": SMALL, "atom": "dw", "input_size": 72}, "divisible by the network's total"),
    ],
)
def test_create_refuses_options_that_do_not_apply(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create(**kwargs)


def test_backbone_weights_load_from_torchvision_layout_and_bad_files_are_refused(tmp_path):
    source = MobileNetV2Backbone(0.35)
    torch.nn.init.normal_(source.features[5].conv[1][0].weight)
    state = dict(source.state_dict())
    state["features.18.0.weight"] = torch.zeros(1280, 112, 1, 1)  # ignored extras
    state["classifier.1.weight"] = torch.zeros(1000, 1280)
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    model = create(SMALL, atom="dw", input_size=64, backbone_weights=str(path))
    torch.testing.assert_close(
        model.backbone.features[5].conv[1][0].weight, source.features[5].conv[1][0].weight
    )
    with pytest.raises(ValueError, match="do not fit MobileNetV2"):
        load_backbone(MobileNetV2Backbone(1.0), path)
    with pytest.raises(ValueError, match="no download is ever made"):
        load_backbone(source, tmp_path / "missing.pth")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello\n", "cannot be read as a state dict"),
        ([1, 2], r"expected a state dict \(parameter name -> tensor\), got list"),
        ({"features.0.0.weight": "x"}, "with values that are not tensors"),
        ({"features.0.0.weight": torch.zeros(3)}, "do not fit MobileNetV2 width 0.35"),
    ],
    ids=["text", "list", "strings", "wrong keys"],
)
def test_backbone_weights_that_do_not_load_are_refused_before_any_run(tmp_path, content, message):
    """Checked when the run is planned (``check_config``), not found inside the run."""
    from tvconv.segment import check_config, smoke_config

    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    config = override(smoke_config(), f"model.backbone_weights={path}")
    with pytest.raises(ValueError, match=f"model.backbone_weights=.*{message}"):
        check_config(config)
    torch.save(MobileNetV2Backbone(0.35).state_dict(), path)  # the same file, now loadable
    check_config(config)


def test_geometric_augmentation_moves_masks_with_their_images():
    generator = torch.Generator().manual_seed(0)
    masks = torch.zeros(6, 2, 32, 32, dtype=torch.bool)
    masks[:, 0, 6:14, 4:20] = True
    masks[:, 1, 2:24, 3:28] = True
    images = masks.float().repeat(1, 2, 1, 1)[:, :3] * 2 - 1  # channel 0: the cup mask
    augment = Augmentation("hflip,shift:0.2,rotate:25")
    moved_images, moved_masks = augment.with_masks(images, masks, generator)
    assert moved_masks.dtype == torch.bool and moved_masks.shape == masks.shape
    assert torch.equal(moved_images[:, 0] > 0, moved_masks[:, 0])
    assert not torch.equal(moved_masks, masks)
    flipped_images, flipped_masks = Augmentation("hflip:1").with_masks(images, masks, generator)
    assert torch.equal(flipped_masks, masks.flip(-1))
    assert torch.equal(flipped_images, images.flip(-1))


def test_photometric_augmentation_leaves_masks_alone():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    masks = torch.rand(4, 2, 16, 16) > 0.5
    jittered, kept = Augmentation("color:0.4,cutout:0.3").with_masks(images, masks, generator)
    assert torch.equal(kept, masks) and not torch.equal(jittered, images)


def test_leave_one_domain_out_split_sizes():
    config = smoke_config().data
    train, test = load_split_data(config)
    sizes = {d: max(1, round(s.train * 0.1)) for d, s in FUNDUS_DOMAINS.items()}
    assert len(train) == sum(n for d, n in sizes.items() if d != 2)
    assert len(test) == round(FUNDUS_DOMAINS[2].test * 0.1) and test.domain == 2
    assert train.images.shape[1:] == (3, 64, 64) and train.masks.shape[1:] == (2, 64, 64)


def test_prior_is_the_per_pixel_majority():
    masks = torch.zeros(3, 2, 1, 3, dtype=torch.bool)
    masks[0, 0, 0] = torch.tensor([True, True, False])
    masks[1, 0, 0] = torch.tensor([True, False, False])
    masks[2, 1, 0] = torch.tensor([True, True, True])
    prior = prior_masks(masks)
    assert prior[0, 0].tolist() == [True, False, False]
    assert prior[1, 0].tolist() == [False, False, False]


def test_loss_is_bce_plus_weighted_soft_dice():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 3.0]]]])  # (1, 2, 1, 2)
    masks = torch.tensor([[[[True, False]], [[False, True]]]])
    bce = F.binary_cross_entropy_with_logits(logits, masks.float())
    torch.testing.assert_close(segmentation_loss(logits, masks, 0.0), bce)
    p = logits.sigmoid()
    cup = 1 - (2 * p[0, 0, 0, 0] + 1) / (p[0, 0].sum() + 1 + 1)
    disc = 1 - (2 * p[0, 1, 0, 1] + 1) / (p[0, 1].sum() + 1 + 1)
    torch.testing.assert_close(segmentation_loss(logits, masks, 0.5), bce + 0.5 * (cup + disc) / 2)


def test_bad_settings_are_refused_with_what_was_expected(tmp_path):
    config = smoke_config()
    with pytest.raises(ValueError, match=r"data.held_out=5 is invalid: expected one of \(1, 2"):
        override(config, "data.held_out=5")
    with pytest.raises(ValueError, match=r"model\.name='mobilenet_v2_x0_1' is invalid"):
        override(config, "model.name=mobilenet_v2_x0_1")
    with pytest.raises(ValueError, match=r"model\.atom='shift' is invalid"):
        override(config, "model.atom=shift")
    with pytest.raises(ValueError, match="a multiple of 16, at least 32"):
        override(config, "data.image_size=72")
    with pytest.raises(ValueError, match=r"'shift:0.001' is 0 pixels on a \d+ px image"):
        override(config, "data.augment=shift:0.001")
    with pytest.raises(ValueError, match="lacks 16 folder"):
        check_paths(override(config, f"data.root={tmp_path}"))
    with pytest.raises(ValueError, match="an existing local state-dict file"):
        check_paths(override(config, f"model.backbone_weights={tmp_path / 'none.pth'}"))


def test_smoke_fit_is_deterministic_and_reports_every_metric():
    config = override(override(smoke_config(), "threads=1"), "progress=false")
    first, second = fit_fundus(config), fit_fundus(config)
    assert first.status == "complete" and len(first.history) == 1
    assert first.metrics == second.metrics
    for key in ("dice_cup_pct", "dice_disc_pct", "hd95_cup_px", "asd_disc_px"):
        assert key in first.metrics
    assert 0 <= first.metrics["dice_disc_pct"] <= 100
    assert 0 < first.metrics["prior_dice_disc_pct"] <= 100
    examples = first.examples
    assert examples["probabilities"].dtype == torch.uint8
    assert examples["images"].shape[0] == examples["masks"].shape[0] == 4
    assert "examples" not in first.to_record() and json.dumps(first.to_record())


def test_fingerprint_ignores_runtime_settings():
    config = FundusConfig()
    assert config.fingerprint() == override(config, "threads=3").fingerprint()
    assert config.fingerprint() != override(config, "data.held_out=3").fingerprint()


def test_cli_writes_a_record(tmp_path, capsys):
    out = tmp_path / "run.json"
    code = main(["--preset", "smoke", "threads=1", "model.atom=aspp", "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["config"]["model"]["atom"] == "aspp" and record["status"] == "complete"
    assert json.loads(capsys.readouterr().out)["status"] == "complete"


def test_cli_refuses_a_bad_out_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(segment, "fit_fundus", lambda config: pytest.fail("trained"))
    with pytest.raises(SystemExit) as caught:
        main(["--preset", "smoke", "--out", str(tmp_path)])
    assert caught.value.code == 2 and "is a folder" in capsys.readouterr().err


def _refused_before_training(argv, capsys, monkeypatch) -> str:
    monkeypatch.setattr(segment, "fit_fundus", lambda config: pytest.fail("trained"))
    with pytest.raises(SystemExit) as caught:
        main(["--preset", "smoke", *argv])
    assert caught.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["optim.batch_size=100000"], "optim.batch_size=100000 is invalid: expected at most the"),
        (["data.synthetic_scale=0.0001"], "expected at most the 3 training images"),
        (["model.atom=tvconv", "model.select=5"], "site indices must be distinct ints in"),
        (["checkpoint_dir=FILE"], "is not a folder"),
        (["--out", "/proc/record.json"], "--out /proc/record.json: its folder cannot take a file"),
    ],
)
def test_cli_refuses_what_would_fail_after_the_data_or_the_training(
    argv, message, tmp_path, capsys, monkeypatch
):
    """The checks the study runner makes before any run, made by the command too: the batch
    against the training set, the TVConv sites, the checkpoint folder, an --out that root may
    'access' but not write (/proc)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    argv = [arg.replace("FILE", str(a_file)) for arg in argv]
    assert message in _refused_before_training(argv, capsys, monkeypatch)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["device=cuda"], "device=cuda but this machine has no CUDA device"),
        (["device=cuda:1"], "device=cuda:1 but this machine has no CUDA device"),
        (["amp=fp16"], "amp='fp16' is invalid: expected bf16 or off on the CPU"),
    ],
)
def test_cli_refuses_a_device_this_machine_lacks(argv, message, capsys, monkeypatch):
    assert message in _refused_before_training(argv, capsys, monkeypatch)
