"""RunConfig: run_id contract, task-relative keys, validation messages."""

import re

import pytest

import tvconv
from studies.config import (
    ProfileConfig,
    RunConfig,
    assign,
    base_config,
    config_columns,
    flat_config,
)


def quick(**changes):
    config = base_config("face", "quick")
    for key, value in changes.items():
        config = assign(config, key, value)
    return config


def test_run_id_is_16_hex_and_stable():
    run_id = quick().run_id
    assert re.fullmatch(r"[0-9a-f]{16}", run_id)
    assert quick().run_id == run_id


def test_run_id_follows_result_affecting_fields_only():
    base = quick().run_id
    assert quick(seed=1).run_id != base
    assert quick(**{"optim.lr": 0.05}).run_id != base
    assert quick(**{"data.synthetic.nuisance": 0.5}).run_id != base
    for runtime in (
        {"threads": 1},
        {"device": "cpu"},
        {"progress": True},
        {"checkpoint_dir": "/tmp/x"},
        {"data.workers": 2},
    ):
        assert quick(**runtime).run_id == base, runtime


def test_dw_runs_ignore_tvconv_options():
    dw = quick(**{"model.atom": "dw"})
    assert quick(**{"model.atom": "dw", "model.inter_channels": 64}).run_id == dw.run_id
    assert quick(**{"model.atom": "dw", "model.init": "zeros"}).run_id == dw.run_id
    assert quick(**{"model.inter_channels": 64}).run_id != quick().run_id


def test_run_id_includes_the_results_version(monkeypatch):
    before = quick().run_id
    monkeypatch.setattr(tvconv, "RESULTS_VERSION", tvconv.RESULTS_VERSION + 1)
    assert quick().run_id != before


def test_keys_are_relative_to_the_task():
    config = quick(**{"model.atom": "dw", "face.optim.lr": 0.2})
    assert config.face.model.atom == "dw" and config.face.optim.lr == 0.2
    profile = assign(RunConfig(task="profile"), "batch_sizes", [1, 4])
    assert profile.profile.batch_sizes == (1, 4)
    assert profile.run_id != RunConfig(task="profile").run_id


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "model.widht",
            2,
            r"model.widht=2: unknown key 'widht'; expected one of affinity_channels, inter_",
        ),
        ("optim.epochs", "many", r"optim.epochs='many': .* expected a value of type int"),
        (
            "optim.milestones",
            "[100]",
            r"optim.milestones='\[100\]': .* float values separated by commas, e.g. 0.5,0.75",
        ),
        ("model.name", "resnet50", r"model.name='resnet50' is invalid: expected one of mobilenet"),
        ("model.init", "random", r"model.init='random' is invalid: expected one of coords"),
        ("data.augment", "blur", r"unknown augmentation 'blur'"),
        ("data.augment", "shift:0.01", r"data.augment=.shift:0.01.: .* 0 pixels on a 32 px image"),
        ("model.select", "last:99", None),
        ("task", "segmentation", r"task='segmentation' is invalid: expected one of face, fundus"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    if message is None:  # select is checked against the model's sites when the model is built
        assert quick(**{key: value}).face.model.select == "last:99"
        return
    with pytest.raises(ValueError, match=message):
        quick(**{key: value})


def test_profile_config_validation():
    with pytest.raises(ValueError, match=r"profile\.form='both' is invalid"):
        ProfileConfig(form="both")
    with pytest.raises(ValueError, match=r"profile\.layer_stride=3"):
        ProfileConfig(layer_stride=3)


def test_flat_config_keeps_values_and_config_columns_render_lists_as_text():
    nested = {
        "model": {"atom": "tvconv", "width": 0.1},
        "data": {"augment": ["hflip", "shift:0.25"]},
    }
    assert flat_config(nested) == {
        "model.atom": "tvconv",
        "model.width": 0.1,
        "data.augment": ["hflip", "shift:0.25"],
    }
    assert config_columns("face", nested)["data.augment"] == "hflip,shift:0.25"
    assert config_columns("face", nested)["model.width"] == 0.1
    assert config_columns("profile", {"batch": 1, "threads": [1, 2]}) == {
        "profile.batch": 1,
        "profile.threads": "1,2",
    }
