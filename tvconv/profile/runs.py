"""The profiling task of the studies: ``ProfileConfig`` (one model, or one layer, measured) and
``run(config)`` (its metrics and latency rows), with ``check(config)`` for a sweep's plan."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from tvconv import models
from tvconv.config import check_device, fail, int_at_least, positive_int
from tvconv.convert import deploy
from tvconv.ops import TVConvOptions
from tvconv.profile.counting import FORMS, count_macs_stock, count_params, cross_check_macs
from tvconv.profile.timing import benchmark_layer_grid, check_timing, measure_latency

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ProfileConfig:
    """One profiling measurement: a registry model (``layer_channels`` = 0) or a single layer
    (TVConv's cached form vs a depthwise conv of ``layer_channels`` x ``input_size``^2). The
    TVConv options it varies are ``TVConvOptions``' (validated there); the others keep their
    defaults. ``device``: auto (CUDA when present), cpu or cuda[:N]; ``dtype``: the model's and
    the input's (float32, bfloat16, float16)."""

    model: str = "mobilenet_v2_x0_1"
    atom: str = "tvconv"
    input_size: int = 96
    form: str = "deploy"
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    threads: tuple[int, ...] = (1, 2)
    inter_channels: int = TVConvOptions.inter_channels  # the layer's defaults, declared there
    inter_layers: int = TVConvOptions.inter_layers
    layer_channels: int = 0
    layer_stride: int = 1
    min_run_time: float = 0.2
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.model not in models.list_models(task="face"):
            raise ValueError(
                f"profile.model={self.model!r} is invalid: expected one of "
                + ", ".join(models.list_models(task="face"))
            )
        if self.atom not in models.ATOMS:
            raise ValueError(f"profile.atom={self.atom!r} is invalid: expected dw or tvconv")
        if self.form not in FORMS:
            raise ValueError(f"profile.form={self.form!r} is invalid: expected train or deploy")
        if not self.batch_sizes or not self.threads:
            raise ValueError("profile.batch_sizes and profile.threads must not be empty")
        for key in ("batch_sizes", "threads"):
            values = getattr(self, key)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
                fail(f"profile.{key}", values, "positive ints")
        positive_int("profile.input_size", self.input_size)
        int_at_least("profile.layer_channels", self.layer_channels, 0)
        try:
            check_timing(self.min_run_time, 0)
        except ValueError:
            fail("profile.min_run_time", self.min_run_time, "a finite number of seconds > 0")
        if self.layer_stride not in (1, 2):
            raise ValueError(f"profile.layer_stride={self.layer_stride!r}: expected 1 or 2")
        check_device("profile.device", self.device)
        if self.dtype not in DTYPES:
            raise ValueError(
                f"profile.dtype={self.dtype!r} is invalid: expected one of {', '.join(DTYPES)}"
            )
        self.tvconv_options()

    def tvconv_options(self) -> dict:
        """The TVConv keyword arguments of the model (none for dw)."""
        if self.atom != "tvconv":
            return {}
        try:
            options = TVConvOptions(
                inter_channels=self.inter_channels, inter_layers=self.inter_layers
            )
        except ValueError as error:
            raise ValueError(f"profile.{error}") from None
        return options.options()


def _device(config: ProfileConfig) -> str | None:
    return None if config.device == "auto" else config.device


def check(config: ProfileConfig) -> None:
    """The measured model built at its input size (a layer measurement needs no model); a
    training-form measurement timed on batches BatchNorm can train on."""
    if config.layer_channels:
        return
    if config.form == "train" and min(config.batch_sizes) < 2:
        fail(
            "profile.batch_sizes",
            config.batch_sizes,
            "sizes >= 2 with profile.form=train (BatchNorm trains on more than one image)",
        )
    models.check_buildable(config.model, config.atom, config.input_size, **config.tvconv_options())


def run(config: ProfileConfig) -> dict:
    """``{"metrics": ..., "latency": rows}`` of one model (MACs by every counter, parameters,
    latency and images/s per batch size and threads) or one layer (the cached TVConv /
    depthwise time ratio per batch size and threads)."""
    if config.layer_channels:
        rows = [
            row
            for threads in config.threads
            for row in benchmark_layer_grid(
                channels=(config.layer_channels,),
                resolutions=(config.input_size,),
                batch_sizes=config.batch_sizes,
                strides=(config.layer_stride,),
                threads=threads,
                device=_device(config),
                dtype=DTYPES[config.dtype],
                min_run_time=config.min_run_time,
            )
        ]
        metrics = {f"ratio_b{r['batch_size']}_t{r['threads']}": r["ratio"] for r in rows}
        return {"metrics": metrics, "latency": rows}
    model = models.create(
        config.model, atom=config.atom, input_size=config.input_size, **config.tvconv_options()
    )
    counted = deploy(copy.deepcopy(model)) if config.form == "deploy" else model
    checked = cross_check_macs(counted)
    macs = checked["analytic"]
    params = count_params(model)
    rows = measure_latency(
        model,
        batch_sizes=config.batch_sizes,
        threads=config.threads,
        form=config.form,
        device=_device(config),
        dtype=DTYPES[config.dtype],
        min_run_time=config.min_run_time,
    )
    metrics = {
        "macs": macs["macs"],
        "flops": macs["flops"],
        "generator_macs": macs["generator_macs"],
        "trainable_params": params["trainable_params"],
        "deployed_params": params["deployed_params"],
        "deployed_bytes": params["deployed_bytes"],
        "macs_fvcore": checked["fvcore"]["macs"],
        "macs_ptflops": checked["ptflops"]["macs"],
        "macs_flop_counter": checked["flop_counter"]["macs"],
        "macs_stock": count_macs_stock(counted),
        "counters_agree": checked["agree"],
    }
    for row in rows:
        suffix = f"b{row['batch_size']}_t{row['threads']}"
        metrics[f"latency_ms_{suffix}"] = row["latency_ms"]
        metrics[f"images_per_s_{suffix}"] = row["images_per_s"]
    return {"metrics": metrics, "latency": rows}
