"""The variance split of a paired difference (hand values) and ``python -m analysis.noise`` on a
store of saved models."""

import json

import numpy as np
import pytest
import torch

from analysis import noise
from studies.store import Store
from tests.analysis.conftest import face_record
from tvconv import models


def test_split_variance_against_hand_values():
    differences = np.array([[1.0, 3.0], [5.0, 7.0], [2.0, 2.0]])
    split = noise.split_variance(differences, recorded=np.array([0.0, 1.0, 2.0]))
    # within: variances over draws 2, 2, 0 -> 4/3; between: variance of the means 2, 6, 2 -> 16/3
    assert split.draw_variance == pytest.approx(4 / 3)
    assert split.training_variance == pytest.approx(16 / 3 - (4 / 3) / 2)
    assert split.recorded_sd == pytest.approx(1.0)
    assert split.predicted_sd(1) == pytest.approx(np.sqrt(6.0))
    assert split.predicted_sd(4) == pytest.approx(np.sqrt(14 / 3 + 1 / 3))
    assert (split.seeds, split.draws) == (3, 2)


def test_training_variance_is_never_negative():
    # the seed means agree exactly: all the spread is the draw's
    split = noise.split_variance(np.array([[0.0, 2.0], [2.0, 0.0]]), np.array([1.0, -1.0]))
    assert split.training_variance == 0.0
    assert split.draw_variance == pytest.approx(2.0)


@pytest.mark.parametrize("shape", [(1, 3), (3, 1)])
def test_split_variance_needs_two_seeds_and_two_draws(shape):
    with pytest.raises(ValueError, match="at least 2 seeds and 2 draws"):
        noise.split_variance(np.zeros(shape), np.zeros(shape[0]))


CELLS = ("atom=dw lr=0.1", "atom=dw lr=0.2")  # differ in training only: any weights fit both


def _store(tmp_path, same_weights: bool) -> Store:
    """Two cells x 2 seeds of smoke-sized face runs, each with a saved (untrained) backbone:
    the same weights in both cells of a seed, or each its own."""
    store = Store(tmp_path / "results", "tradeoff", "quick")
    (store.folder / "models").mkdir(parents=True)
    for seed in (0, 1):
        for index, cell in enumerate(CELLS):
            lr = 0.1 * (index + 1)
            record = face_record(
                "tradeoff", cell, seed, 60.0, **{"model.atom": "dw", "optim.lr": lr}
            )
            store.write(record)
            face = record["config"]["face"]
            torch.manual_seed(seed if same_weights else 10 * seed + index)
            net = models.create(
                face["model"]["name"],
                atom="dw",
                input_size=32,
                embedding_size=face["model"]["embedding_size"],
            )
            torch.save(net.state_dict(), store.folder / "models" / f"{record['run_id']}.pt")
    return store


def test_identical_models_differ_by_nothing_on_every_draw(tmp_path):
    store = _store(tmp_path, same_weights=True)
    differences, recorded = noise.fresh_draw_differences(
        store, *CELLS, draws=2, progress=lambda _: None
    )
    assert differences.shape == (2, 2)
    assert np.all(differences == 0.0)
    np.testing.assert_array_equal(recorded, [0.0, 0.0])


def test_cli_splits_the_spread_of_different_models(tmp_path, capsys):
    store = _store(tmp_path, same_weights=False)
    argv = ["tradeoff", "--plus", CELLS[1], "--minus", CELLS[0], "--draws", "2"]
    assert noise.main([*argv, "--results", str(store.root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["seeds"], out["draws"]) == (2, 2)
    assert np.any(np.array(out["differences"]) != 0.0)
    assert out["draw_variance"] > 0.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plus", "atom=tvconv", "--minus", CELLS[0]], "no complete run of cell 'atom=tvconv'"),
        (["--plus", CELLS[1], "--minus", CELLS[0], "--draws", "1"], "--draws must be >= 2"),
        (["--plus", CELLS[1], "--minus", CELLS[0], "--preset", "smoke"], "no complete run"),
        (["--plus", CELLS[0], "--minus", CELLS[0]], "name the same cell"),
    ],
)
def test_cli_refuses_bad_input(tmp_path, capsys, argv, message):
    store = _store(tmp_path, same_weights=True)
    assert noise.main(["tradeoff", *argv, "--results", str(store.root)]) == 2
    assert message in capsys.readouterr().err


def test_cli_needs_saved_models(tmp_path, capsys):
    store = _store(tmp_path, same_weights=True)
    for path in (store.folder / "models").glob("*.pt"):
        path.unlink()
    argv = ["tradeoff", "--plus", CELLS[1], "--minus", CELLS[0], "--results", str(store.root)]
    assert noise.main(argv) == 2
    assert "0 seed(s) with both cells' models saved" in capsys.readouterr().err


def test_cli_refuses_an_unknown_study(tmp_path, capsys):
    argv = ["nope", "--plus", "a", "--minus", "b", "--results", str(tmp_path)]
    assert noise.main(argv) == 2
    assert "nope" in capsys.readouterr().err
