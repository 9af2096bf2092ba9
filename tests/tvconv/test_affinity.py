"""Affinity-map initialisers: values, shapes, registry and the data-driven hook."""

import pytest
import torch
from torch import nn

from tvconv import TVConv, affinity


def test_builtin_initialisers_are_registered():
    assert {"ones", "zeros", "normal", "uniform", "coords"} <= set(affinity.list_initialisers())


def test_constant_initialisers():
    assert torch.equal(affinity.create("ones", 4, 3, 5), torch.ones(4, 3, 5))
    assert torch.equal(affinity.create("zeros", 2, 3, 3), torch.zeros(2, 3, 3))


def test_random_initialisers_follow_their_distributions_and_the_global_seed():
    torch.manual_seed(1)
    normal = affinity.create("normal", 8, 32, 32)
    uniform = affinity.create("uniform", 8, 32, 32)
    assert abs(normal.mean().item()) < 0.05 and abs(normal.std().item() - 1) < 0.05
    assert uniform.min() >= -1 and uniform.max() < 1 and abs(uniform.mean().item()) < 0.05
    torch.manual_seed(1)
    assert torch.equal(affinity.create("normal", 8, 32, 32), normal)


def test_coords_are_normalised_grids_tiled_over_channels():
    maps = affinity.create("coords", 3, 3, 5)
    assert torch.allclose(maps[0, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))  # x along width
    assert torch.allclose(maps[1, :, 0], torch.tensor([-1.0, 0.0, 1.0]))  # y along height
    assert torch.equal(maps[2], maps[0])
    assert torch.equal(affinity.create("coords", 2, 1, 1), torch.zeros(2, 1, 1))


def test_unknown_initialiser_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown affinity init 'nope'; expected one of .*ones"):
        affinity.create("nope", 1, 2, 2)


@pytest.fixture
def registry(monkeypatch):
    """Register test initialisers without leaking them into other tests."""
    monkeypatch.setattr(affinity, "_INITIALISERS", dict(affinity._INITIALISERS))
    monkeypatch.setattr(affinity, "_DATA_DRIVEN", dict(affinity._DATA_DRIVEN))


def test_registering_an_initialiser(registry):
    @affinity.register("half")
    def half(channels, h, w):
        return torch.full((channels, h, w), 0.5)

    layer = TVConv(3, 4, 4, inter_channels=4, inter_layers=0, init="half")
    assert torch.equal(layer.affinity_maps, torch.full((4, 4, 4), 0.5))
    assert not affinity.is_data_driven("half")
    with pytest.raises(ValueError, match="already registered"):
        affinity.register("half")(half)


class TwoLayers(nn.Module):
    """x -> TVConv (stride 2) -> TVConv, with data-driven maps."""

    def __init__(self, init: str) -> None:
        super().__init__()
        kw = {"affinity_channels": 3, "inter_channels": 4, "inter_layers": 0, "init": init}
        self.first = TVConv(2, 4, 4, stride=2, **kw)
        self.second = TVConv(2, 4, 4, **kw)

    def forward(self, x):
        return self.second(self.first(x))


def test_data_driven_layers_see_their_predecessors_initialised(registry):
    seen = []

    @affinity.register_data_driven("input-mean")
    def input_mean(inputs, channels, h, w):
        seen.append(inputs.clone())
        return torch.full((channels, h, w), float(inputs.mean()))

    model = TwoLayers("input-mean")
    assert affinity.is_data_driven("input-mean")
    assert torch.equal(model.first.affinity_maps, torch.ones(3, 4, 4))  # before the probe
    images = torch.randn(5, 2, 8, 8) + 3
    model.train()
    assert affinity.initialise_from_data(model, images) == 2
    assert model.training
    assert torch.equal(seen[0], images)
    with torch.no_grad():
        expected_second_input = model.first(images)  # computed with the first layer's new maps
    torch.testing.assert_close(seen[1], expected_second_input)
    assert torch.allclose(model.first.affinity_maps, torch.full((3, 4, 4), float(images.mean())))


def test_stats_maps_are_standardised_mean_and_spread_of_the_input():
    model = TwoLayers("stats")
    pattern = torch.arange(64.0).view(8, 8)
    spread = torch.linspace(0.1, 2.0, 8).view(1, 8).expand(8, 8)
    images = pattern + spread * torch.randn(400, 2, 8, 8)
    affinity.initialise_from_data(model, images)
    maps = model.first.affinity_maps.detach()
    assert maps.shape == (3, 4, 4)
    assert torch.equal(maps[2], maps[0])  # (mean, spread) alternate over the c_A maps
    for channel in (0, 1):
        assert abs(maps[channel].mean()) < 1e-5
        assert abs(maps[channel].std(unbiased=False) - 1) < 1e-4
    # mean map: 2x2-averaged pattern (antialiased bilinear resize), rising along rows and columns
    assert (maps[0][:, 1:] > maps[0][:, :-1]).all() and (maps[0][1:] > maps[0][:-1]).all()
    # spread map: the per-position std grows along the columns only
    assert (maps[1][:, 1:] > maps[1][:, :-1]).all()
    assert maps[1].std(dim=0).max() < 0.15


def test_stats_without_initialise_from_data_starts_from_ones():
    layer = TVConv(4, 3, 3, inter_channels=4, inter_layers=0, init="stats")
    assert torch.equal(layer.affinity_maps, torch.ones(4, 3, 3))
    assert affinity.is_data_driven("stats")


def test_initialiser_with_a_wrong_shape_is_refused(registry):
    affinity.register("broken")(lambda c, h, w: torch.zeros(c, h))
    with pytest.raises(ValueError, match=r"returned shape \(2, 3\), expected \(2, 3, 3\)"):
        affinity.create("broken", 2, 3, 3)
