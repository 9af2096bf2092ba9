"""Profiling: analytic MACs against hand counts, fvcore / ptflops / FlopCounterMode agreeing with
them on every registry model, parameters, latency and memory rows, the layer grid, the CLI."""

import math
import re
import warnings

import pytest
import torch
from torch import nn

import tvconv
from tvconv import TVConv, TVConvDeploy, deploy, profile
from tvconv.models import create, list_models
from tvconv.profile import (
    benchmark_layer_grid,
    count_macs,
    count_macs_flop_counter,
    count_macs_fvcore,
    count_macs_ptflops,
    count_params,
    cross_check_macs,
    main,
    measure_latency,
    peak_memory_mib,
)

SMALL_TVCONV = {"inter_channels": 8, "inter_layers": 1}


@pytest.fixture(autouse=True)
def _one_thread():
    """Batch-1 probes gain nothing from threads, and on a shared 2-core machine OpenMP waits
    would dominate; latency tests pin their own thread counts."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class TinyNet(nn.Module):
    """3x8x8 -> conv3x3 (4) -> BN -> ReLU -> swish gate -> TVConv stride 2 (4x4, bias) -> fc (5)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.spatial = TVConv(4, 4, 4, stride=2, inter_channels=2, inter_layers=1, bias=True)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.stem(x)))
        x = x * torch.sigmoid(x)  # an element-wise product outside TVConv: not a MAC
        return self.fc(self.spatial(x).mean(dim=(2, 3)))


# Hand counts for TinyNet at 3x8x8 (TVConv output 4x4 = 16 pixels, k = 3).
TINY_MACS = 3 * 3 * 3 * 4 * 8 * 8 + 9 * 4 * 16 + 4 * 5  # stem 6912 + TVConv 576 + fc 20
TINY_GENERATOR_MACS = (
    9 * 16 * (4 * 2 + 2 * 2 + 2 * 36)  # weight generator: c_A 4 -> 2 -> 2 -> k*k*c 36
    + 9 * 16 * (4 * 2 + 2 * 2 + 2 * 4)  # bias generator: 4 -> 2 -> 2 -> c 4
)
TINY_BIAS_ADDS = 4 * 16 + 5  # TVConv bias (c, h, w) + fc bias
TINY_TVCONV_PARAMS = (
    4 * 16  # affinity maps (c_A, h, w)
    + (4 * 2 * 9 + 2 * 32 + 2 * 2 * 9 + 2 * 32 + 2 * 36 * 9)  # weight generator: convs + 2 LNs
    + (4 * 2 * 9 + 2 * 32 + 2 * 2 * 9 + 2 * 32 + 2 * 4 * 9)  # bias generator
)
TINY_OTHER_PARAMS = 3 * 4 * 9 + 2 * 4 + (4 * 5 + 5)  # stem, BN, fc
TINY_CACHED_PARAMS = 4 * 9 * 16 + 4 * 16  # W (c, k, k, h, w) + bias (c, h, w)


def mobilenet_v2_x0_1_macs(size: int) -> int:
    """MobileNetV2-face x0.1 by hand: channels rounded to multiples of 8 (10 blocks of 8, 6 of 16,
    1 of 32), stem stride 1, 1x1 -> 512, linear 512 -> 512."""
    blocks = [(1, 8, 1, 1), (6, 8, 2, 2), (6, 8, 3, 2), (6, 8, 4, 2), (6, 16, 3, 1),
              (6, 16, 3, 2), (6, 32, 1, 1)]  # fmt: skip
    res, channels = size, 8
    macs = 3 * 3 * 3 * channels * res * res
    for expansion, out_channels, repeats, first_stride in blocks:
        for repeat in range(repeats):
            hidden = channels * expansion
            if expansion != 1:
                macs += channels * hidden * res * res  # 1x1 expand
            res //= first_stride if repeat == 0 else 1
            macs += 9 * hidden * res * res  # depthwise 3x3 (or TVConv)
            macs += hidden * out_channels * res * res  # 1x1 project
            channels = out_channels
    return macs + channels * 512 * res * res + 512 * 512


def assert_tools_agree(model, input_size=None):
    checked = cross_check_macs(model, input_size)
    analytic = checked["analytic"]
    for tool in ("fvcore", "ptflops", "flop_counter"):
        assert checked[tool]["macs"] == analytic["macs"], tool
        assert checked[tool]["generator_macs"] == analytic["generator_macs"], tool
    assert checked["fvcore"]["layers"] == {row["name"]: row["macs"] for row in analytic["layers"]}
    assert checked["ptflops"]["raw_macs"] == analytic["macs"] + analytic["bias_adds"]
    assert checked["agree"]
    return checked


def test_tiny_model_hand_counts_and_every_tool_agrees():
    model = TinyNet()
    analytic = count_macs(model, 8)
    assert analytic["macs"] == TINY_MACS == 7508
    assert analytic["flops"] == 2 * TINY_MACS
    assert analytic["generator_macs"] == TINY_GENERATOR_MACS == 14976
    assert analytic["bias_adds"] == TINY_BIAS_ADDS
    assert analytic["input_size"] == (3, 8, 8)
    assert [(r["name"], r["type"], r["output_shape"], r["macs"]) for r in analytic["layers"]] == [
        ("stem", "Conv2d", (4, 8, 8), 6912),
        ("spatial", "TVConv", (4, 4, 4), 576),
        ("fc", "Linear", (5,), 20),
    ]
    checked = assert_tools_agree(model, 8)
    # The swish gate's product (4 x 8 x 8) is seen but kept out of the MACs.
    assert checked["fvcore"]["products_outside_tvconv"] == 4 * 8 * 8
    assert checked["flop_counter"]["products_outside_tvconv"] == 4 * 8 * 8
    deployed = deploy(TinyNet())
    assert isinstance(deployed.spatial, TVConvDeploy)
    assert count_macs(deployed, (3, 8, 8))["generator_macs"] == 0
    assert assert_tools_agree(deployed, (8, 8))["analytic"]["macs"] == TINY_MACS


def test_off_the_shelf_counters_miss_tvconv_without_our_handles():
    """The reason for this module: fvcore, ptflops and FlopCounterMode count the core op as zero."""
    from ptflops import get_model_complexity_info
    from torch.utils.flop_counter import FlopCounterMode

    with warnings.catch_warnings():  # fvcore.nn's init jit-scripts its losses (deprecated)
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

    layer = TVConvDeploy.from_tensors(torch.randn(4, 3, 3, 8, 8))
    x = torch.zeros(1, 4, 8, 8)
    analysis = FlopCountAnalysis(layer, x)
    analysis.unsupported_ops_warnings(False).tracer_warnings("none")
    assert analysis.total() == 0
    plain = get_model_complexity_info(
        layer, (4, 8, 8), print_per_layer_stat=False, as_strings=False, backend="pytorch"
    )
    assert plain[0] == 0
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(x)
    assert counter.get_total_flops() == 0
    tools = (count_macs_fvcore, count_macs_ptflops, count_macs_flop_counter)
    assert [count(layer, (4, 8, 8))["macs"] for count in tools] == [9 * 4 * 8 * 8] * 3


@pytest.mark.parametrize(
    "layer",
    [
        TVConv(4, 8, 8, inter_channels=2, inter_layers=0),
        TVConv(4, 4, 4, stride=2, generator=False, bias=True),
        TVConvDeploy.from_tensors(torch.randn(4, 5, 5, 8, 8), torch.randn(4, 8, 8)),
    ],
    ids=["generator", "no-generator", "deployed-k5"],
)
def test_a_lone_layer_is_counted_by_every_tool(layer):
    checked = assert_tools_agree(layer, (4, 8, 8))
    k, out = layer.kernel_size, layer.h
    assert checked["analytic"]["macs"] == k * k * 4 * out * out
    generator = 9 * 64 * (4 * 2 + 2 * 36) if isinstance(layer, TVConv) and layer.generator else 0
    assert checked["analytic"]["generator_macs"] == generator
    has_bias = layer.has_bias if isinstance(layer, TVConv) else layer.bias is not None
    cached = 4 * k * k * out * out + (4 * out * out if has_bias else 0)
    assert count_params(layer)["deployed_params"] == cached


@pytest.mark.slow
@pytest.mark.parametrize("atom", ["dw", "tvconv"])
@pytest.mark.parametrize("name", list_models())
def test_tools_agree_on_every_registry_model_in_both_forms(name, atom):
    options = SMALL_TVCONV if atom == "tvconv" else {}
    model = create(name, atom=atom, input_size=32, **options)
    training = assert_tools_agree(model)
    if atom == "dw":  # deploy() leaves a dw model unchanged: one form
        assert training["analytic"]["generator_macs"] == 0
        return
    deployed = assert_tools_agree(deploy(model))
    assert deployed["analytic"]["macs"] == training["analytic"]["macs"]
    assert deployed["analytic"]["generator_macs"] == 0
    assert training["analytic"]["macs"] == count_macs(create(name, input_size=32))["macs"]
    assert training["analytic"]["generator_macs"] > 0


def test_mobilenet_v2_x0_1_at_96_dw_and_deployed_tvconv_cost_the_same():
    dw = create("mobilenet_v2_x0_1", input_size=96)
    model = create("mobilenet_v2_x0_1", atom="tvconv", input_size=96)  # the paper's generator
    sites = model.tvconv_sites
    trainable = count_params(model)["trainable_params"]
    # The paper's cost of B per step: h*w*(9*c_A*inter + L*9*inter^2 + 9*inter*k*k*c).
    generator = sum(
        s.h * s.w * (9 * 4 * 64 + 3 * 9 * 64**2 + 9 * 64 * 9 * s.channels) for s in sites
    )
    assert count_macs(model)["generator_macs"] == generator
    deploy(model)
    expected = mobilenet_v2_x0_1_macs(96)
    assert expected == 18_023_680
    for net in (dw, model):
        assert assert_tools_agree(net)["analytic"]["macs"] == expected
    dw_params, tv_params = count_params(dw), count_params(model)
    assert dw_params["deployed_params"] == dw_params["trainable_params"] == 324_672
    assert trainable == 16_369_368
    cached_extra = sum(9 * s.channels * s.h * s.w - 9 * s.channels for s in sites)
    assert tv_params["deployed_params"] - dw_params["deployed_params"] == cached_extra
    assert tv_params["deployed_bytes"] == 4 * tv_params["deployed_params"]


def test_count_params_hand_counts():
    model = TinyNet()
    params = count_params(model)
    assert params["trainable_params"] == TINY_OTHER_PARAMS + TINY_TVCONV_PARAMS == 1397
    assert params["deployed_params"] == TINY_OTHER_PARAMS + TINY_CACHED_PARAMS == 781
    assert params["trainable_bytes"] == 4 * 1397
    assert params["deployed_bytes"] == 4 * 781
    rows = {row["name"]: row for row in params["layers"]}
    assert list(rows) == ["stem", "norm", "spatial", "fc"]
    assert rows["spatial"]["trainable_params"] == TINY_TVCONV_PARAMS
    assert rows["spatial"]["deployed_params"] == TINY_CACHED_PARAMS
    for row in rows.values():  # float32: 4 bytes a parameter, per layer and in the totals
        assert row["trainable_bytes"] == 4 * row["trainable_params"]
        assert row["deployed_bytes"] == 4 * row["deployed_params"]
    half = count_params(TinyNet().half())
    assert half["layers"][2]["deployed_bytes"] == 2 * TINY_CACHED_PARAMS
    assert half["deployed_bytes"] == sum(row["deployed_bytes"] for row in half["layers"])
    model.stem.weight.requires_grad_(False)
    frozen = count_params(model)
    assert frozen["trainable_params"] == 1397 - 108
    assert frozen["deployed_params"] == 781
    deployed = deploy(TinyNet())
    assert count_params(deployed)["deployed_params"] == sum(
        p.numel() for p in deployed.parameters()
    )


@pytest.mark.parametrize("name", list_models())
def test_deployed_params_match_the_deployed_model(name):
    model = create(name, atom="tvconv", input_size=32, bias=True, **SMALL_TVCONV)
    predicted = count_params(model)
    assert predicted["trainable_params"] == sum(p.numel() for p in model.parameters())
    assert predicted["deployed_params"] == sum(p.numel() for p in deploy(model).parameters())


def test_count_macs_refuses_modules_without_a_formula():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 4, 2))
    with pytest.raises(ValueError, match=r"no MAC formula for 1 \(ConvTranspose2d\)"):
        count_macs(model, 8)
    with pytest.raises(ValueError, match="has no input_size attribute; pass input_size"):
        count_macs(nn.Conv2d(3, 4, 3))


def check_latency_rows(rows, form, batch_sizes, threads):
    assert [(row["threads"], row["batch_size"]) for row in rows] == [
        (t, b) for t in threads for b in batch_sizes
    ]
    for row in rows:
        assert row["form"] == form
        assert math.isfinite(row["latency_ms"]) and row["latency_ms"] > 0
        assert math.isfinite(row["latency_iqr_ms"]) and row["latency_iqr_ms"] >= 0
        assert row["images_per_s"] == pytest.approx(row["batch_size"] * 1e3 / row["latency_ms"])
        assert row["measurements"] >= 1
        if row["memory_method"] == "unavailable":
            assert math.isnan(row["peak_memory_mib"])
        else:
            assert row["memory_method"] == "rss_peak_delta"
            assert math.isfinite(row["peak_memory_mib"]) and row["peak_memory_mib"] >= 0
        env = row["environment"]
        assert env["torch_version"] == torch.__version__
        assert env["threads"] == row["threads"]
        assert env["device"] == row["device"] == "cpu"
        assert isinstance(env["cpu_model"], str) and env["cpu_model"]


def test_measure_latency_deployed_forward_rows():
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = measure_latency(
        model, 8, batch_sizes=(1, 4), threads=(1, 2), min_run_time=0.02, warmup_runs=1
    )
    check_latency_rows(rows, "deploy", (1, 4), (1, 2))
    assert not rows[0]["channels_last"] and not rows[0]["torch_compile"]
    assert isinstance(model.spatial, TVConv)  # a deployed copy was timed, not the model
    assert model.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_measure_latency_training_step_rows():
    model = create("mobilenet_v2_x0_1", atom="tvconv", input_size=32, **SMALL_TVCONV).eval()
    before = [p.clone() for p in model.parameters()]
    rows = measure_latency(
        model, 32, batch_sizes=(2,), form="train", channels_last=True, min_run_time=0.02
    )
    check_latency_rows(rows, "train", (2,), (1,))
    assert rows[0]["channels_last"]
    assert not model.training
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"form": "infer"}, "form must be one of train, deploy, got 'infer'"),
        ({"batch_sizes": (0, 2)}, r"batch_sizes must be positive ints, got \(0, 2\)"),
        ({"threads": ()}, r"threads must be positive ints, got \(\)"),
        ({"min_run_time": 0}, "min_run_time must be a finite number of seconds > 0"),
        ({"min_run_time": math.nan}, "min_run_time must be a finite number of seconds > 0"),
        ({"min_run_time": math.inf}, "min_run_time must be a finite number of seconds > 0"),
        ({"min_run_time": "0.1"}, "min_run_time must be a finite number of seconds > 0"),
        ({"warmup_runs": 1.5}, "warmup_runs must be an int >= 0, got 1.5"),
        ({"threads": 2.0}, "threads must be a positive int or a list of them, got 2.0"),
        ({"form": "train", "batch_sizes": (1, 2)}, "BatchNorm needs more than one image"),
    ],
)
def test_measure_latency_refuses_bad_arguments(kwargs, message):
    model = create("mobilenet_v2_x0_1", input_size=32)
    with pytest.raises(ValueError, match=message):
        measure_latency(model, **kwargs)


def test_measure_latency_refuses_training_a_deployed_model():
    model = deploy(create("mobilenet_v2_x0_1", atom="tvconv", input_size=32, **SMALL_TVCONV))
    with pytest.raises(ValueError, match="form='train' needs the training form"):
        measure_latency(model, batch_sizes=(2,), form="train")


def test_peak_memory_sees_a_64_mib_allocation():
    memory, method = peak_memory_mib(lambda: torch.ones(16 * 2**20).sum(), "cpu")
    if method == "unavailable":
        pytest.skip("peak RSS cannot be reset on this platform")
    assert method == "rss_peak_delta"
    assert 60 <= memory <= 100


def test_layer_grid_rows():
    rows = benchmark_layer_grid(
        channels=(4,),
        resolutions=(8,),
        batch_sizes=(1, 2),
        strides=(1, 2),
        min_run_time=0.01,
        warmup_runs=1,
    )
    assert [(r["stride"], r["batch_size"], r["output_size"]) for r in rows] == [
        (1, 1, 8),
        (1, 2, 8),
        (2, 1, 4),
        (2, 2, 4),
    ]
    for row in rows:
        assert row["macs"] == 9 * 4 * row["output_size"] ** 2
        assert row["tvconv_ms"] > 0 and row["depthwise_ms"] > 0
        assert row["ratio"] == pytest.approx(row["tvconv_ms"] / row["depthwise_ms"])
        assert row["tvconv_iqr_ms"] >= 0 and row["depthwise_iqr_ms"] >= 0
        assert row["environment"]["threads"] == row["threads"] == 1
    with pytest.raises(ValueError, match="resolutions must be positive ints"):
        benchmark_layer_grid((4,), (), (1,))
    for bad, message in (
        ({"min_run_time": 0}, "min_run_time must be a finite number"),
        ({"min_run_time": math.nan}, "min_run_time must be a finite number"),
        ({"warmup_runs": -1}, "warmup_runs must be an int >= 0"),
        ({"kernel_size": -3}, "kernel_size must be a positive odd int, got -3"),
    ):
        with pytest.raises(ValueError, match=message):
            benchmark_layer_grid((4,), (8,), (1,), **bad)


def test_cli_counts_only(capsys):
    argv = ["mobilenet_v2_x0_1", "--atom", "tvconv", "--input-size", "32", "--no-latency"]
    assert main([*argv, "--inter-channels", "8", "--inter-layers", "1", "--per-layer"]) == 0
    out = capsys.readouterr().out
    macs = count_macs(create("mobilenet_v2_x0_1", input_size=32))["macs"]
    assert "mobilenet_v2_x0_1, atom tvconv, form deploy, input 3x32x32" in out
    assert f"analytic         {macs:,}" in out
    assert "all counters agree" in out
    assert re.search(r"\nfeatures\.1\.depthwise\.0 +TVConvDeploy +8x32x32 +[\d,]+ +0\n", out)
    assert "Latency" not in out


def test_cli_latency_table(capsys):
    argv = ["mobilenet_v2_x0_1", "--input-size", "32", "--form", "train", "--batch-sizes", "2"]
    assert main([*argv, "--min-run-time", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "Latency (training step, fp32, cpu" in out
    header, row = out.split("batch  threads")[1].splitlines()[:2]
    assert "latency_ms" in header and row.split()[:2] == ["2", "1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["resnet50"], "unknown model 'resnet50'"),
        (["mobilenet_v2_x0_1", "--form", "infer"], "argument --form: invalid choice: 'infer'"),
        (["mobilenet_v2_x0_1", "--input-size", "40"], "must be divisible by the network's total"),
        (["mobilenet_v2_x0_1", "--batch-sizes", "0"], "expected a positive integer, got '0'"),
        (["mobilenet_v2_x0_1", "--inter-channels", "8"], "were given for mobilenet_v2_x0_1 with"),
        (["mobilenet_v2_x0_1", "--atom", "tvconv", "--select", "first:99"], "0 <= K <= 17"),
        (["mobilenet_v2_x0_1", "--form", "train", "--batch-sizes", "1"], "BatchNorm needs more"),
        (["mobilenet_v2_x0_1", "--device", "tpu"], "device 'tpu' is invalid: expected cpu, cuda"),
        (["mobilenet_v2_x0_1", "--device", "meta"], "device 'meta' is invalid: expected cpu, cuda"),
    ],
)
def test_cli_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""  # refused before any counting


def test_counters_agree_on_same_padding_and_name_the_layers_they_disagree_on(monkeypatch):
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding="same", groups=8),  # fvcore alone used to count it as 0
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    checked = profile.cross_check_macs(net, 16)
    assert checked["agree"] and checked["disagreements"] == []
    counted = profile.count_macs_fvcore

    def off_by_one(model, input_size=None):
        counts = counted(model, input_size)
        counts["layers"]["1"] += 1
        return counts

    monkeypatch.setattr(profile.counting, "count_macs_fvcore", off_by_one)
    with pytest.warns(UserWarning, match=r"MAC counters disagree: layer 1 \(Conv2d\)"):
        checked = profile.cross_check_macs(net, 16)
    assert not checked["agree"]
    assert checked["disagreements"] == ["layer 1 (Conv2d): analytic 18,432 MACs, fvcore 18,433"]


class _TwiceCalled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.spatial = TVConv(8, 8, 8, inter_channels=8, inter_layers=1)

    def forward(self, x):
        return self.spatial(self.spatial(self.stem(x))).mean((2, 3))


def test_a_disagreement_on_a_layer_run_twice_names_it():
    """A TVConv run twice per forward generates its kernels twice (the analytic count); ptflops
    counts its generator once: the disagreement names the layer, where it once named none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checked = profile.cross_check_macs(_TwiceCalled().eval(), 8)
    rows = {row["name"]: row["calls"] for row in checked["analytic"]["layers"]}
    assert rows == {"stem": 1, "spatial": 2}
    assert any("runs more than once: spatial (2 calls)" in d for d in checked["disagreements"])


class BiasedDepthwiseNet(nn.Module):
    """Two biased depthwise convs (8 channels at 8x8): surgery keeps each bias as a
    ``BiasedTVConv``, which deploys it as a per-position bias (8 x 8 x 8 values)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.first = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=True)
        self.second = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=True)

    def forward(self, x):
        return self.second(self.first(self.stem(x)))


@pytest.mark.parametrize("own_bias", [False, True])
def test_a_kept_depthwise_bias_is_counted_as_deploy_holds_it(own_bias):
    model = BiasedDepthwiseNet().eval()
    replace_kwargs = {"inter_channels": 4, "inter_layers": 1, "bias": own_bias}
    tvconv.replace_depthwise(model, 8, **replace_kwargs)
    before_params, before_macs = count_params(model), count_macs(model, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a disagreement between the counters warns
        assert cross_check_macs(model, 8)["agree"]
    deploy(model)
    after_params, after_macs = count_params(model), count_macs(model, 8)
    deployed = sum(p.numel() for p in model.parameters())
    stem = 3 * 8 + 8
    assert deployed == stem + 2 * (8 * 9 * 8 * 8 + 8 * 8 * 8)  # W and one per-position bias
    assert before_params["deployed_params"] == after_params["deployed_params"] == deployed
    stem_bias_adds = 8 * 8 * 8
    assert before_macs["bias_adds"] == after_macs["bias_adds"] == stem_bias_adds + 2 * 8 * 8 * 8
    assert before_macs["macs"] == after_macs["macs"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cross_check_macs(model, 8)["agree"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_latency_and_layer_grid_in_half_precision(dtype):
    model = create("mobilenet_v2_x0_1", atom="tvconv", input_size=32, **SMALL_TVCONV)
    rows = measure_latency(model, 32, batch_sizes=(2,), min_run_time=0.01, dtype=dtype)
    assert rows[0]["dtype"] == str(dtype).removeprefix("torch.") and rows[0]["latency_ms"] > 0
    assert next(model.parameters()).dtype == torch.float32  # a converted copy was timed
    grid = benchmark_layer_grid((4,), (8,), (2,), min_run_time=0.01, warmup_runs=1, dtype=dtype)
    assert grid[0]["dtype"] == str(dtype).removeprefix("torch.") and grid[0]["ratio"] > 0


def test_profile_config_device_and_dtype():
    from tvconv.config import result_fields, to_dict
    from tvconv.profile import ProfileConfig, run

    rows = run(
        ProfileConfig(
            input_size=32, batch_sizes=(2,), threads=(1,), inter_channels=8, inter_layers=1,
            min_run_time=0.01, device="cpu", dtype="bfloat16",
        )
    )["latency"]  # fmt: skip
    assert rows[0]["dtype"] == "bfloat16" and rows[0]["device"] == "cpu"
    for key, value, message in (
        ("dtype", "float64", "profile.dtype='float64' is invalid: expected one of float32"),
        ("device", "tpu", "profile.device='tpu' is invalid: expected auto, cpu or cuda"),
        ("device", "cuda:x", "profile.device='cuda:x' is invalid: expected auto, cpu or cuda"),
        ("device", "cuda:-1", "profile.device='cuda:-1' is invalid"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            ProfileConfig(**{key: value})
    # the defaults leave the run_id of the measurements made before the fields existed alone
    assert set(result_fields("profile", to_dict(ProfileConfig()))) & {"device", "dtype"} == set()
    changed = result_fields("profile", to_dict(ProfileConfig(device="cuda", dtype="bfloat16")))
    assert changed["device"] == "cuda" and changed["dtype"] == "bfloat16"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"min_run_time": math.inf}, "profile.min_run_time=inf is invalid"),
        ({"min_run_time": -1}, "profile.min_run_time=-1 is invalid"),
        ({"threads": (0,)}, r"profile.threads=\(0,\) is invalid"),
        ({"batch_sizes": (1.5,)}, r"profile.batch_sizes=\(1.5,\) is invalid"),
        ({"input_size": 0}, "profile.input_size=0 is invalid"),
        ({"layer_channels": -8}, "profile.layer_channels=-8 is invalid"),
        ({"form": "train", "batch_sizes": (1, 2)}, "sizes >= 2 with profile.form=train"),
    ],
)
def test_a_profile_config_that_cannot_be_measured_is_refused(override, message):
    """Refused when the sweep is planned: inf timed forever, threads=0 failed inside the run,
    a negative min_run_time "completed" with a one-sample ratio."""
    from tvconv.profile.runs import ProfileConfig, check

    with pytest.raises(ValueError, match=message):
        check(ProfileConfig(**override))
