"""Affinity-map initialisers: values, shapes, registry and the data-driven hook."""

import pytest
import torch

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


def test_registering_a_data_driven_initialiser(monkeypatch):
    monkeypatch.setattr(affinity, "_INITIALISERS", dict(affinity._INITIALISERS))
    monkeypatch.setattr(affinity, "_DATA_DRIVEN", set(affinity._DATA_DRIVEN))

    @affinity.register("half", data_driven=True)
    def half(channels, h, w):
        return torch.full((channels, h, w), 0.5)

    assert affinity.is_data_driven("half") and not affinity.is_data_driven("ones")
    layer = TVConv(3, 4, 4, inter_channels=4, inter_layers=0, init="half")
    assert torch.equal(layer.affinity_maps, torch.full((4, 4, 4), 0.5))
    with pytest.raises(ValueError, match="already registered"):
        affinity.register("half")(half)


def test_initialiser_with_a_wrong_shape_is_refused(monkeypatch):
    monkeypatch.setattr(affinity, "_INITIALISERS", dict(affinity._INITIALISERS))
    affinity.register("broken")(lambda c, h, w: torch.zeros(c, h))
    with pytest.raises(ValueError, match=r"returned shape \(2, 3\), expected \(2, 3, 3\)"):
        affinity.create("broken", 2, 3, 3)
