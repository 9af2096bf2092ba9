"""replace_depthwise / find_depthwise_sites / deploy on foreign models."""

import pytest
import torch
from torch import nn

from tvconv import TVConv, TVConvDeploy, deploy, find_depthwise_sites, replace_depthwise


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
    model, replaced = replace_depthwise(
        ForeignNet(), (1, 20, 20), select=select, inter_channels=4, inter_layers=0
    )
    assert [s.name for s in replaced] == expected
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
    ],
)
def test_bad_selection_is_refused(select, message):
    with pytest.raises(ValueError, match=message):
        replace_depthwise(ForeignNet(), (1, 20, 20), select=select)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"takes \['stride'\] from each replaced conv"):
        replace_depthwise(ForeignNet(), (1, 20, 20), stride=2)
    with pytest.raises(ValueError, match=r"input_size must be an int, \(H, W\) or \(C, H, W\)"):
        find_depthwise_sites(ForeignNet(), (1, 2, 20, 20))


def test_probe_restores_training_mode():
    model = ForeignNet().train()
    with pytest.warns(UserWarning):
        find_depthwise_sites(model, (1, 8, 8))
    assert model.training
