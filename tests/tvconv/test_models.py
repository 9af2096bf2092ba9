"""Registry models: architecture facts at 96x96, invariants for every model x atom, heads."""

import math

import pytest
import torch
from torch import nn

import tvconv
from tvconv import TVConv, TVConvDeploy
from tvconv.models import AMSoftmax, EmbeddingHead, create, list_models

SMALL_TVCONV = {"inter_channels": 8, "inter_layers": 1}

# Parameter counts at 96x96 (atom dw, and atom tvconv with the paper's generator: c_A 4, inter 64,
# 3 inter layers), checked against the official face models' structure.
PARAMS_96 = {
    "mobilenet_v2_x0_1": (324_672, 16_369_368),
    "mobilenet_v2_x0_2": (404_352, 19_678_248),
    "mobilenet_v2_x0_3": (526_656, 23_816_352),
    "mobilenet_v2_x0_5": (827_968, 30_079_264),
    "mobilenet_v2_x1_0": (2_241_280, 49_708_576),
    "shufflenet_v2_x0_5": (869_664, 10_602_984),
    "shufflenet_v2_x1_0": (1_781_476, 18_904_696),
    "shufflenet_v2_x1_5": (3_006_496, 26_650_216),
}


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_the_paper_backbones():
    assert list_models(task="face") == sorted(PARAMS_96)
    assert list_models("shufflenet*") == [
        "shufflenet_v2_x0_5",
        "shufflenet_v2_x1_0",
        "shufflenet_v2_x1_5",
    ]
    assert list_models("*x0_5") == ["mobilenet_v2_x0_5", "shufflenet_v2_x0_5"]


@pytest.mark.parametrize("name", sorted(PARAMS_96))
def test_dw_parameter_counts_at_96_match_the_official_models(name):
    assert count(create(name, input_size=96)) == PARAMS_96[name][0]


@pytest.mark.parametrize("name", sorted(PARAMS_96))
def test_tvconv_parameter_counts_at_96_match_the_official_models(name):
    assert count(create(name, atom="tvconv", input_size=96)) == PARAMS_96[name][1]


def test_mobilenet_v2_sites_at_96():
    model = create("mobilenet_v2_x1_0", atom="tvconv", input_size=96, **SMALL_TVCONV)
    sites = model.tvconv_sites
    assert [s.h for s in sites] == [96, 48, 48, 24, 24, 24] + [12] * 7 + [6] * 4
    assert [s.stride for s in sites] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert [s.channels for s in sites] == [
        32,
        96,
        144,
        144,
        192,
        192,
        192,
        384,
        384,
        384,
        384,
        576,
        576,
        576,
        960,
        960,
        960,
    ]
    x0_1 = create("mobilenet_v2_x0_1", input_size=96)
    assert x0_1.features[0][0].out_channels == 8
    blocks = list(x0_1.features)[1:-1]
    assert [block.project[0].out_channels for block in blocks] == [8] * 10 + [16] * 6 + [32]
    assert x0_1.features[-1][0].out_channels == 512


def test_shufflenet_v2_sites_at_96():
    model = create("shufflenet_v2_x1_0", atom="tvconv", input_size=96, **SMALL_TVCONV)
    sites = model.tvconv_sites
    assert len(sites) == 19
    assert [s.h for s in sites] == [24] * 5 + [12] * 9 + [6] * 5
    assert [s.channels for s in sites[:5]] == [24, 58, 58, 58, 58]
    assert sum(s.stride == 2 for s in sites) == 6


@pytest.mark.parametrize("name", ["mobilenet_v2_x0_1", "shufflenet_v2_x0_5"])
@pytest.mark.parametrize(("size", "final"), [(96, 6), (48, 3), (32, 2)])
def test_final_resolution_follows_the_total_stride(name, size, final):
    model = create(name, input_size=size)
    trunk = (
        model.features
        if hasattr(model, "features")
        else nn.Sequential(model.stem, model.stages, model.last_conv)
    )
    assert trunk(torch.randn(2, 3, size, size)).shape[-2:] == (final, final)


@pytest.mark.parametrize("atom", ["dw", "tvconv"])
@pytest.mark.parametrize("name", list_models(task="face"))
def test_every_model_and_atom(name, atom):
    options = SMALL_TVCONV if atom == "tvconv" else {}
    model = create(name, atom=atom, input_size=32, **options)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 512)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    expected_sites = 17 if name.startswith("mobilenet") else 19
    assert sum(isinstance(m, TVConv) for m in model.modules()) == (
        expected_sites if atom == "tvconv" else 0
    )
    model.eval()
    with torch.no_grad():
        before = model(x)
        tvconv.deploy(model)
        after = model(x)
    assert not any(isinstance(m, TVConv) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_paper_model_at_96_deploys_with_identical_outputs():
    model = create("mobilenet_v2_x0_1", atom="tvconv", input_size=96).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before = model(x)
        tvconv.deploy(model)
        after = model(x)
    assert sum(isinstance(m, TVConvDeploy) for m in model.modules()) == 17
    assert not any(isinstance(m, TVConv) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_partial_insertion_and_options_pass_through():
    model = create(
        "mobilenet_v2_x0_1",
        atom="tvconv",
        input_size=32,
        select="last:4",
        affinity_channels=2,
        inter_channels=8,
        inter_layers=0,
        norm="in",
        bias=True,
        init="coords",
    )
    layers = [m for m in model.modules() if isinstance(m, TVConv)]
    assert [s.index for s in model.tvconv_sites] == [13, 14, 15, 16]
    assert len(layers) == 4
    assert all(layer.affinity_maps.shape[0] == 2 and layer.has_bias for layer in layers)
    assert isinstance(layers[0].weight_generator[1], nn.InstanceNorm2d)


def test_dropout_option_reaches_the_head():
    model = create("shufflenet_v2_x0_5", input_size=32, dropout=0.2)
    assert isinstance(model.head.dropout, nn.Dropout) and model.head.dropout.p == 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet50"}, "unknown model 'resnet50'; available: deeplabv3plus_mobilenet_v2"),
        ({"atom": "conv"}, "atom for mobilenet_v2_x0_1 must be one of dw, tvconv, got 'conv'"),
        ({"inter_channels": 8}, r"TVConv options \['inter_channels'\] were given .* atom='dw'"),
        ({"select": "last:2"}, r"TVConv options \['select'\] were given"),
        ({"width": 2}, r"unknown option\(s\) \['width'\] for mobilenet_v2_x0_1"),
        ({"input_size": 40}, "input_size 40 must be divisible by the network's total stride 16"),
        ({"input_size": (48, 48, 3)}, r"input_size must be an int or \(H, W\)"),
        ({"dropout": 1.5}, r"dropout must be a number in \[0, 1\), got 1.5"),
        ({"dropout": "a"}, r"dropout must be a number in \[0, 1\), got 'a'"),
        ({"input_size": 96.0}, r"input_size must be an int or \(H, W\), got 96.0"),
        ({"input_size": None}, r"input_size must be an int or \(H, W\), got None"),
        ({"input_size": True}, r"input_size must be an int or \(H, W\), got True"),
        ({"input_size": -16}, "input_size must be positive, got -16"),
        ({"atom": "tvconv", "select": "first:18"}, "0 <= K <= 17"),
        ({"embedding_size": 0}, "embedding_size must be a positive int, got 0"),
        ({"embedding_size": -1}, "embedding_size must be a positive int, got -1"),
        ({"embedding_size": True}, "embedding_size must be a positive int, got True"),
    ],
)
def test_create_refuses_bad_arguments(kwargs, message):
    args = {"name": "mobilenet_v2_x0_1", "input_size": 32, **kwargs}
    with pytest.raises(ValueError, match=message):
        create(**args)


def test_tvconv_model_refuses_another_input_size():
    model = create("mobilenet_v2_x0_1", atom="tvconv", input_size=32, **SMALL_TVCONV)
    with pytest.raises(ValueError, match=r"out=32x32, stride=1\) expects input \(N, 8, 32, 32\)"):
        model(torch.randn(1, 3, 48, 48))


def test_embedding_head_pools_the_whole_map():
    head = EmbeddingHead(16, embedding_size=8).eval()
    x = torch.randn(3, 16, 4, 4)
    pooled = x.mean(dim=(2, 3)) / math.sqrt(1 + head.norm.eps)
    expected = head.embedding_norm(head.fc(pooled))
    torch.testing.assert_close(head(x), expected)


def test_am_softmax_logits():
    head = AMSoftmax(embedding_size=4, num_classes=3, margin=0.35, scale=32.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1.0]]))
    embeddings = torch.tensor([[5.0, 0, 0, 0], [1.0, 1.0, 0, 0]])
    labels = torch.tensor([0, 1])
    s, m, c = 32.0, 0.35, 1 / math.sqrt(2)
    expected = torch.tensor([[s * (1 - m), 0.0, 0.0], [s * c, s * (c - m), 0.0]])
    torch.testing.assert_close(head(embeddings, labels), expected)
    torch.testing.assert_close(head(embeddings), torch.tensor([[s, 0, 0], [s * c, s * c, 0]]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\], got range \[0, 3\]"):
        head(embeddings, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        AMSoftmax(4, 1)
