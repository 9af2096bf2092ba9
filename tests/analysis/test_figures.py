"""Every figure function writes a non-empty PNG and PDF with the expected axis labels."""

import math

import pandas as pd
import pytest
import torch

import tvconv
from analysis import figures, inspect
from analysis.figures import tradeoff_readoffs
from analysis.frame import load_records
from tests.analysis.conftest import aug_records, face_record
from tvconv import models
from tvconv.config import result_hash
from tvconv.data.variance import LayoutVariance


@pytest.fixture
def captured(monkeypatch):
    """Record each figure's axis labels and titles just before it is saved."""
    seen = []
    real_save = figures.save

    def save(fig, stem):
        seen.append([(ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) for ax in fig.axes])
        return real_save(fig, stem)

    monkeypatch.setattr(figures, "save", save)
    monkeypatch.setattr(inspect, "save", save)
    return seen


def _written(paths):
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    for path in paths:
        assert path.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _labels(seen):
    return {text for axes in seen for ax in axes for text in ax}


def test_aug_figure(tmp_path, captured):
    records = aug_records()
    records += [
        face_record(
            "aug",
            f"atom={atom} layout=free",
            seed,
            50.0 + seed,
            **{"model.atom": atom, "data.synthetic.layout": "free"},
        )
        for atom in ("dw", "tvconv")
        for seed in range(3)
    ]
    _written(figures.aug_figure(load_records(records), tmp_path / "aug"))
    labels = _labels(captured)
    assert figures.ACC_LABEL in labels and figures.GAP_LABEL in labels
    assert "augmentation (layout-preserving → destroying)" in labels


def test_aug_levels_put_layout_free_last():
    records = [
        *aug_records()[:3],
        face_record(
            "aug",
            "atom=dw layout=free",
            0,
            50.0,
            **{"model.atom": "dw", "data.synthetic.layout": "free"},
        ),
    ]
    runs = load_records(records)
    assert list(figures.augmentation_level(runs)) == ["hflip"] * 3 + ["layout-free"]


def test_aug_levels_name_each_control_and_leave_no_cell_off():
    """The rolled-anywhere control, the quarter-frame one with its shifts and their aligned twin
    are three levels, in ladder order then the controls."""
    twin = "hflip,shift:0.25"
    records = [
        *aug_records()[:3],
        face_record("aug", "atom=dw twin", 0, 60.0, **{"model.atom": "dw", "data.augment": twin}),
        face_record(
            "aug",
            "atom=dw layout=free",
            0,
            50.0,
            **{"model.atom": "dw", "data.synthetic.layout": "free"},
        ),
        face_record(
            "aug",
            "atom=dw twin free",
            0,
            55.0,
            **{
                "model.atom": "dw",
                "data.augment": twin,
                "data.synthetic.layout": "free",
                "data.synthetic.free_shift": 0.25,
            },
        ),
    ]
    levels = figures.augmentation_level(load_records(records))
    free_twin = "layout-free (rolled ≤ 0.25, hflip,shift:0.25)"
    assert set(levels) == {"hflip", twin, "layout-free", free_twin}
    assert figures.augmentation_order(set(levels)) == ["hflip", twin, "layout-free", free_twin]


def test_init_figure(tmp_path, captured):
    records = [
        face_record("init", "atom=dw", s, 60.0 + s, **{"model.atom": "dw"}) for s in range(2)
    ]
    for init in ("ones", "zeros", "stats"):
        records += [
            face_record("init", f"atom=tvconv init={init}", s, 61.0 + s, **{"model.init": init})
            for s in range(2)
        ]
    records += [
        face_record(
            "init", "atom=tvconv affinity_channels=16", s, 62.0, **{"model.affinity_channels": 16}
        )
        for s in range(2)
    ]
    _written(figures.init_figure(load_records(records), tmp_path / "init"))
    labels = _labels(captured)
    assert {
        "affinity-map initialisation",
        "affinity maps c_A (log scale)",
        figures.ACC_LABEL,
    } <= labels


def test_weightgen_figure(tmp_path, captured):
    records = [face_record("weightgen", "atom=dw", 0, 60.0, **{"model.atom": "dw"})]
    records += [
        face_record(
            "weightgen", "atom=tvconv generator=False", 0, 58.0, **{"model.generator": False}
        )
    ]
    for width, depth in ((16, 1), (64, 1), (16, 0), (16, 3)):
        records += [
            face_record(
                "weightgen",
                f"atom=tvconv inter_channels={width} inter_layers={depth}",
                s,
                60.0 + width / 16 + depth,
                **{"model.inter_channels": width, "model.inter_layers": depth},
            )
            for s in range(2)
        ]
    _written(figures.weightgen_figure(load_records(records), tmp_path / "weightgen"))
    labels = _labels(captured)
    assert {
        "generator width (inter channels)",
        "generator depth (inter layers)",
        "control",
    } <= labels


def test_depth_figure(tmp_path, captured):
    records = [face_record("depth", "atom=dw", s, 60.0, **{"model.atom": "dw"}) for s in range(2)]
    for select in ("all", "first:6", "last:4"):
        records += [
            face_record(
                "depth", f"atom=tvconv select={select}", s, 61.0, **{"model.select": select}
            )
            for s in range(2)
        ]
    _written(figures.depth_figure(load_records(records), tmp_path / "depth"))
    labels = _labels(captured)
    assert "cached parameters added (M)" in labels
    assert "TVConv insertion pattern (sites, shallow → deep)" in labels


def _point(model, atom, macs, mean):
    return {
        "model": model,
        "family": figures.family(model),
        "width": figures.width_label(model),
        "atom": atom,
        "macs": macs,
        "mean": mean,
    }


def test_tradeoff_readoffs_known_numbers():
    points = pd.DataFrame(
        [
            _point("mobilenet_v2_x0_1", "dw", 1e6, 60.0),
            _point("mobilenet_v2_x0_5", "dw", 4e6, 70.0),
            _point("mobilenet_v2_x0_1", "tvconv", 1e6, 65.0),
            _point("mobilenet_v2_x0_5", "tvconv", 4e6, 75.0),
        ]
    )
    small, large = tradeoff_readoffs(points)
    assert small["macs_ratio"] == pytest.approx(2.0)  # dw reaches 65% half-way in log MACs: 2e6
    assert small["bound"] == "" and small["gain_pp"] == pytest.approx(5.0)
    assert large["bound"] == ">=" and large["macs_ratio"] == pytest.approx(1.0)
    dw_points = points[points["atom"] == "dw"].to_dict("records")
    worse = _point("mobilenet_v2_x0_1", "tvconv", 1e6, 50.0)
    below = tradeoff_readoffs(pd.DataFrame([*dw_points, worse]))
    assert below[0]["bound"] == "<" and below[0]["gain_pp"] == pytest.approx(-10.0)


def test_tradeoff_figure_with_and_without_latency(tmp_path, captured):
    records = []
    for name, base in (
        ("mobilenet_v2_x0_1", 60.0),
        ("mobilenet_v2_x0_2", 64.0),
        ("shufflenet_v2_x0_5", 62.0),
    ):
        for atom, bonus in (("dw", 0.0), ("tvconv", 2.0)):
            records += [
                face_record(
                    "tradeoff",
                    f"name={name} atom={atom}",
                    s,
                    base + bonus + s,
                    **{"model.name": name, "model.atom": atom},
                )
                for s in range(2)
            ]
    runs = load_records(records)
    latency = pd.DataFrame(
        [
            {"model": "mobilenet_v2_x0_1", "atom": "dw", "latency_ms": 1.5},
            {"model": "mobilenet_v2_x0_1", "atom": "tvconv", "latency_ms": 2.0},
        ]
    )
    _written(figures.tradeoff_figure(runs, tmp_path / "tradeoff", latency))
    labels = _labels(captured)
    assert any(
        label.startswith("inference cost (MMACs per image, log scale)\nTVConv x0.1: ")
        for label in labels
    )
    assert "latency (ms per image, batch 1, 1 thread)" in labels
    _written(figures.tradeoff_figure(runs, tmp_path / "tradeoff_no_latency"))


def _profile_record(cell, **profile):
    config = {
        "model": "mobilenet_v2_x0_1",
        "atom": "dw",
        "form": "deploy",
        "input_size": 96,
        "layer_channels": 0,
        "layer_stride": 1,
        "batch_sizes": [1, 8],
        "threads": [1, 2],
        **profile,
    }
    if config["layer_channels"]:
        metrics = {"ratio_b1_t1": 2.0, "ratio_b8_t1": 3.0}
        latency = []
    else:
        latency = [
            {"batch_size": b, "threads": t, "images_per_s": 100.0 * b * t, "latency_ms": 10.0 / t}
            for b in (1, 8)
            for t in (1, 2)
        ]
        metrics = {
            "macs": 18e6,
            "flops": 36e6,
            "trainable_params": 3e5,
            "deployed_params": 3e5,
            "macs_fvcore": 18e6,
            "macs_ptflops": 18e6,
            "macs_flop_counter": 18e6,
            "macs_stock": 9e6,
            **{f"latency_ms_b{r['batch_size']}_t{r['threads']}": r["latency_ms"] for r in latency},
        }
    return {
        "run_id": result_hash("profile", config),  # as the runner names it
        "study": "profile",
        "preset": "quick",
        "cell": cell,
        "seed": 0,
        "task": "profile",
        "config": {"task": "profile", "profile": config},
        "status": "complete",
        "error": None,
        "metrics": metrics,
        "latency": latency,
        "results_version": tvconv.RESULTS_VERSION,
    }


def profile_records():
    return [
        _profile_record("model dw", atom="dw"),
        _profile_record("model tv", atom="tvconv"),
        _profile_record("train dw", atom="dw", form="train", input_size=48),
        _profile_record("layer", layer_channels=48, input_size=24, layer_stride=2),
    ]


def test_profile_figure(tmp_path, captured):
    runs = load_records(profile_records())
    _written(figures.profile_figure(runs, tmp_path / "profile"))
    labels = _labels(captured)
    assert {
        "batch size (log scale)",
        "throughput (images/s, log scale)",
        "MMACs per image (log scale)",
        "cached TVConv / depthwise time",
    } <= labels


def test_profile_figure_of_runs_timed_at_one_thread_only(tmp_path, monkeypatch):
    """The smoke preset times one thread: the 2-thread panel says so instead of failing on an
    empty log axis, and the other panels are drawn."""
    records = profile_records()
    for record in records:
        record["latency"] = [r for r in record["latency"] if r["threads"] == 1]
        record["metrics"] = {k: v for k, v in record["metrics"].items() if "_t2" not in k}
    texts = []

    def save(fig, stem):
        fig.canvas.draw()  # what tight_layout and savefig do: an empty log axis raised here
        texts.extend(text.get_text() for ax in fig.axes for text in ax.texts)
        return []

    monkeypatch.setattr(figures, "save", save)
    figures.profile_figure(load_records(records), tmp_path / "profile")
    assert "no deployed-form runs timed at 2 threads" in texts
    assert not any(text.startswith("no training-form") for text in texts)


def precision_records():
    """dw and TVConv deployed on the CPU in float32 (records without the device and dtype
    fields, as written before they existed) and on CUDA in bfloat16, where TVConv costs 3x."""
    records = [
        _profile_record("model dw", atom="dw"),
        _profile_record("model tv", atom="tvconv"),
        _profile_record("model dw bf16", atom="dw", device="cuda", dtype="bfloat16"),
        _profile_record("model tv bf16", atom="tvconv", device="cuda", dtype="bfloat16"),
        _profile_record("layer bf16", layer_channels=48, dtype="bfloat16"),
    ]
    records[3]["metrics"] = {
        k: v * 3 if k.startswith("latency_ms_") else v for k, v in records[3]["metrics"].items()
    }
    return records


def test_profile_figure_pairs_dw_and_tvconv_within_one_device_and_dtype(tmp_path, monkeypatch):
    ratio_panels = []

    def save(fig, stem):
        ratio = fig.axes[3]  # row 2, column 2: TVConv / dw latency
        labels = [t.get_text() for t in ratio.get_xticklabels()]
        ratio_panels.append((labels, sorted({round(p.get_height(), 6) for p in ratio.patches})))
        return []

    monkeypatch.setattr(figures, "save", save)
    figures.profile_figure(load_records(precision_records()), tmp_path / "profile")
    [(labels, heights)] = ratio_panels
    assert labels == ["MBv2 x0.1 @96 auto float32", "MBv2 x0.1 @96 cuda bfloat16"]
    assert heights == [1.0, 3.0]


def test_layout_figure(tmp_path, captured):
    g = torch.Generator().manual_seed(0)
    variances = {
        "aligned": LayoutVariance(
            torch.rand(64, generator=g) * 0.1, torch.rand(50, generator=g), 0.05
        ),
        "free": LayoutVariance(torch.rand(64, generator=g), torch.rand(50, generator=g), 0.0),
    }
    _written(inspect.layout_figure(variances, tmp_path / "layout"))
    titles = [ax[2] for ax in captured[0]]
    assert titles[0].startswith("aligned\nintra / cross = ")
    assert math.isclose(
        float(titles[0].split("= ", 1)[1].split(",")[0]), variances["aligned"].score, abs_tol=0.006
    )
    assert "variance (pixel values in [-1, 1])" in _labels(captured)


def test_affinity_figure_from_a_saved_model(tmp_path, captured):
    record = face_record(
        "init",
        "atom=tvconv init=coords",
        0,
        60.0,
        **{
            "model.init": "coords",
            "model.inter_channels": 8,
            "model.inter_layers": 1,
            "data.image_size": 32,
            "data.synthetic.image_size": 32,
        },
    )
    face = record["config"]["face"]
    net = models.create(
        face["model"]["name"],
        atom="tvconv",
        input_size=32,
        init="coords",
        inter_channels=8,
        inter_layers=1,
    )
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    backbone = inspect.load_backbone(record, path)
    layers = inspect.tvconv_layers(backbone)
    assert len(layers) == 17  # MobileNetV2-face's depthwise sites
    torch.testing.assert_close(
        layers[0][1].affinity_maps, inspect.tvconv_layers(net)[0][1].affinity_maps
    )
    _written(inspect.affinity_figure([("coords", backbone)], tmp_path / "affinity"))
    assert len(captured[0]) == 2 * 17  # affinity row + kernel row, one column per layer
