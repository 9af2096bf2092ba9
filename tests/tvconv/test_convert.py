"""replace_depthwise / find_depthwise_sites / deploy on foreign models."""

import pytest
import torch
from torch import nn

from tvconv import TVConv, TVConvDeploy, deploy, find_depthwise_sites, replace_depthwise
from tvconv.convert import BiasedTVConv


class ForeignNet(nn.Module):
    """Built from plain nn.Conv2d; the modules are registered in a different order from the one
    they run in, so site order must come from execution."""

    def __init__(self) -> None:
        super().__init__()
        self.late_dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.early_dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.expand = nn.Conv2d(8, 16, 1)
        self.mid_dw = nn.Conv2d(16, 16, 5, padding=2, groups=16, bias=False)
        self.dilated_dw = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.early_dw(self.stem(x).relu())
        x = self.mid_dw(self.expand(x).relu())
        x = self.late_dw(self.dilated_dw(x).relu())
        return self.fc(self.pool(x).flatten(1))


def test_sites_are_found_in_execution_order_with_their_output_sizes():
    with pytest.warns(UserWarning, match=r"dilated_dw: dilation \(2, 2\)"):
        sites = find_depthwise_sites(ForeignNet(), (1, 20, 20))
    assert [(s.index, s.name, s.channels, s.h, s.w, s.stride, s.kernel_size) for s in sites] == [
        (0, "early_dw", 8, 10, 10, 2, 3),
        (1, "mid_dw", 16, 10, 10, 1, 5),
        (2, "late_dw", 16, 10, 10, 1, 3),
    ]


@pytest.mark.filterwarnings("ignore:depthwise convs not replaceable")
@pytest.mark.parametrize(
    ("select", "expected"),
    [
        ("all", ["early_dw", "mid_dw", "late_dw"]),
        ("none", []),
        ("first:1", ["early_dw"]),
        ("last:2", ["mid_dw", "late_dw"]),
        ("last:0", []),
        ([2, 0], ["early_dw", "late_dw"]),
        (1, ["mid_dw"]),
        ("1-2", ["mid_dw", "late_dw"]),
        ("0,2", ["early_dw", "late_dw"]),
    ],
)
def test_replace_depthwise_selection(select, expected):
    model, sites = replace_depthwise(
        ForeignNet(), (1, 20, 20), select=select, inter_channels=4, inter_layers=0
    )
    replaced = [s for s in sites if s.replaceable]
    assert [s.name for s in replaced] == expected
    assert [(s.name, s.reason) for s in sites if not s.replaceable] == [
        ("dilated_dw", "dilation (2, 2)")
    ]
    tvconvs = {name for name, m in model.named_modules() if isinstance(m, TVConv)}
    assert tvconvs == set(expected)
    assert isinstance(model.dilated_dw, nn.Conv2d)
    for site in replaced:
        layer = model.get_submodule(site.name)
        assert (layer.channels, layer.h, layer.w, layer.stride, layer.kernel_size) == (
            site.channels,
            site.h,
            site.w,
            site.stride,
            site.kernel_size,
        )
    assert model(torch.randn(2, 1, 20, 20)).shape == (2, 4)


@pytest.mark.filterwarnings("ignore:depthwise convs not replaceable")
def test_replaced_foreign_model_trains_and_deploys_equal():
    model, _ = replace_depthwise(
        ForeignNet(), (1, 20, 20), inter_channels=4, inter_layers=1, bias=True, init="coords"
    )
    x = torch.randn(3, 1, 20, 20)
    model(x).sum().backward()
    assert model.early_dw.affinity_maps.grad is not None
    model.eval()
    with torch.no_grad():
        before = model(x)
        deploy(model)
        after = model(x)
    assert not any(isinstance(m, TVConv) for m in model.modules())
    assert sum(isinstance(m, TVConvDeploy) for m in model.modules()) == 3
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:depthwise convs not replaceable")
@pytest.mark.parametrize(
    ("select", "message"),
    [
        ("first:4", r"'first:K' or 'last:K' with 0 <= K <= 3"),
        ("middle", r"select='middle' is not valid for a model with 3 depthwise sites"),
        ([0, 3], r"site indices must be distinct ints in \[0, 2\]; invalid: \[3\]"),
        ([1, 1], r"duplicates given"),
        ("1-", r"expected indices and ranges such as '0,3-5'"),
        ("0-5", r"invalid: \[3, 4, 5\]"),
        ("2-1", r"the range 2-1 is reversed \(it would select no site\); write 1-2"),
        (True, r"select=True is invalid: expected 'all', 'none'"),  # not site 1
        ([0, True], r"select=\[0, True\] is invalid"),
        (1.0, r"select=1.0 is invalid"),
        (None, r"select=None is invalid"),
    ],
)
def test_bad_selection_is_refused(select, message):
    with pytest.raises(ValueError, match=message):
        replace_depthwise(ForeignNet(), (1, 20, 20), select=select)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"takes \['stride'\] from each replaced conv"):
        replace_depthwise(ForeignNet(), (1, 20, 20), stride=2)
    with pytest.raises(ValueError, match=r"unknown TVConv option\(s\) \['foo'\]; expected some of"):
        replace_depthwise(ForeignNet(), (1, 20, 20), foo=1)
    for input_size in ((1, 2, 20, 20), 20.0, True, (20, 20.0)):
        with pytest.raises(ValueError, match=r"input_size must be an int, \(H, W\) or \(C, H, W"):
            find_depthwise_sites(ForeignNet(), input_size)


@pytest.mark.parametrize("norm", ["bn", "ln"])
def test_surgery_on_a_model_in_eval_mode_keeps_it_in_eval_mode(norm):
    """The new layers take the replaced conv's mode: a generator with batch norm in training
    mode would normalise with the batch's statistics (and update its running ones), so the
    'eval' model's output would change on deploy."""
    model = ForeignNet().eval()
    with pytest.warns(UserWarning):
        replace_depthwise(model, (1, 20, 20), norm=norm, inter_channels=4, inter_layers=1)
    assert not any(module.training for module in model.modules())
    x = torch.randn(2, 1, 20, 20)
    with torch.no_grad():
        before = model(x)
        deploy(model)
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_probe_restores_training_mode():
    model = ForeignNet().train()
    with pytest.warns(UserWarning):
        find_depthwise_sites(model, (1, 8, 8))
    assert model.training


class ZooOutsider(nn.Module):
    """A MobileNetV3 / EfficientNet-like net of depthwise convs the project's backbones lack:
    biases, ``padding="same"``, 5x5 / 7x7 kernels, stride 2, odd sizes, a dilated conv, a
    channel multiplier, asymmetric padding and one conv called at two resolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.biased = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=True)
        self.same = nn.Conv2d(8, 8, 5, padding="same", groups=8, bias=False)
        self.strided = nn.Conv2d(8, 8, 7, stride=2, padding=3, groups=8, bias=True)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.multiplier = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.asymmetric = nn.Conv2d(16, 16, 3, padding=(1, 0), groups=16)
        self.reused = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        x = self.strided(self.same(self.biased(self.stem(x))))
        x = self.asymmetric(self.multiplier(self.dilated(x)))
        fine = self.reused(x).mean(dim=(2, 3))
        coarse = self.reused(nn.functional.avg_pool2d(x, 2)).mean(dim=(2, 3))
        return self.fc(torch.cat([fine, coarse], dim=1))


def test_surgery_outside_the_zoo_reports_every_skipped_conv():
    with pytest.warns(UserWarning) as caught:
        model, sites = replace_depthwise(ZooOutsider(), 19, inter_channels=4, inter_layers=0)
    replaced = {s.name: (s.kernel_size, s.stride, s.h) for s in sites if s.replaceable}
    assert replaced == {"biased": (3, 1, 19), "same": (5, 1, 19), "strided": (7, 2, 10)}
    reasons = {s.name: s.reason for s in sites if not s.replaceable}
    assert reasons == {
        "dilated": "dilation (2, 2)",
        "multiplier": "channel multiplier 2 (8 -> 16)",
        "asymmetric": "asymmetric padding (1, 0)",
        "reused": "called at 2 resolutions (10x8, 5x4)",
    }
    messages = [str(w.message) for w in caught if "not replaceable" in str(w.message)]
    assert len(messages) == 1
    assert all(f"{name}: {reason}" in messages[0] for name, reason in reasons.items())
    for name in reasons:
        assert type(model.get_submodule(name)) is nn.Conv2d
    assert model(torch.randn(2, 3, 19, 19)).shape == (2, 4)


@pytest.mark.filterwarnings("ignore:depthwise convs not replaceable")
def test_surgery_keeps_a_depthwise_bias_and_deploys_equal():
    net = ZooOutsider()
    with torch.no_grad():
        net.biased.bias.fill_(5.0)
    zeros = torch.zeros(1, 8, 19, 19)
    assert net.biased(zeros).mean().item() == pytest.approx(5.0)
    model, _ = replace_depthwise(net, 19, inter_channels=4, inter_layers=1, init="coords")
    assert isinstance(model.biased, BiasedTVConv)
    assert model.biased(zeros).mean().item() == pytest.approx(5.0)  # was 0.0: bias dropped
    assert not isinstance(model.same, BiasedTVConv)  # bias=False: a plain TVConv
    x = torch.randn(3, 3, 19, 19)
    model(x).sum().backward()
    assert model.biased.bias.grad is not None
    model.eval()
    with torch.no_grad():
        before = model(x)
        deploy(model)
        after = model(x)
    assert not any(isinstance(m, (TVConv, BiasedTVConv)) for m in model.modules())
    assert sum(isinstance(m, TVConvDeploy) for m in model.modules()) == 3
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_padding_same_is_a_site():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding="same", groups=4, bias=False))
    _, sites = replace_depthwise(net, (4, 9, 9), inter_channels=4, inter_layers=0)
    assert [(s.name, s.reason) for s in sites] == [("0", None)]
    assert isinstance(net[0], TVConv)


def test_a_shared_conv_is_replaced_everywhere_it_sits():
    shared = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    _, sites = replace_depthwise(net, (4, 8, 8), inter_channels=4, inter_layers=0)
    assert [s.name for s in sites] == ["0"]
    assert net[0] is net[2] and isinstance(net[0], TVConv)
    deploy(net)
    assert net[0] is net[2] and isinstance(net[0], TVConvDeploy)


class _WithAnUnusedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.used = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.unused = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)  # e.g. an aux branch

    def forward(self, x):
        return self.used(self.stem(x))


def test_a_depthwise_conv_the_forward_never_runs_is_reported_skipped():
    with pytest.warns(UserWarning, match="unused: not called by the forward"):
        _model, sites = replace_depthwise(_WithAnUnusedConv(), 8)
    assert [(site.name, site.replaceable) for site in sites] == [("used", True), ("unused", False)]


@pytest.mark.parametrize("select", ["none", "first:0", "last:0", []])
def test_a_tvconv_model_with_no_tvconv_site_is_refused(select):
    from tvconv.models import create

    with pytest.raises(ValueError, match="chooses no depthwise site of mobilenet_v2_x0_1"):
        create("mobilenet_v2_x0_1", atom="tvconv", input_size=32, select=select)
