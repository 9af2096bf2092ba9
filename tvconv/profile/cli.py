"""``python -m tvconv.profile MODEL [--atom tvconv] [--form deploy] ...``: MACs, parameters and
latency of one model from the command line."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from torch import nn

from tvconv import models
from tvconv.console import exit_with, positive_float_arg, positive_int_arg
from tvconv.convert import deploy
from tvconv.models import TVCONV_OPTIONS
from tvconv.ops import TVConvOptions
from tvconv.profile.counting import FORMS, count_params, cross_check_macs, input_shape
from tvconv.profile.timing import check_latency_args, default_device, measure_latency

# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tvconv.profile",
        description="MACs (analytic, fvcore, ptflops, FlopCounterMode), parameters and latency "
        "of a registry model.",
    )
    parser.add_argument("model", help="registry name, e.g. mobilenet_v2_x0_1")
    parser.add_argument("--atom", choices=("dw", "tvconv"), default="dw")
    parser.add_argument(
        "--form",
        choices=FORMS,
        default="deploy",
        help="deploy: cached TVConv, eval-mode forward; train: training form, full training step",
    )
    parser.add_argument("--input-size", type=positive_int_arg, default=96, help="square input side")
    parser.add_argument(
        "--batch-sizes",
        type=positive_int_arg,
        nargs="+",
        help="default: 1 2 4 8 16 (deploy), 2 4 8 16 (train: BatchNorm needs 2+)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int_arg,
        nargs="+",
        default=[1],
        help="thread counts to time (the paper's grid: 1 2 4 8)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when present)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    parser.add_argument(
        "--min-run-time", type=positive_float_arg, default=0.2, help="seconds per configuration"
    )
    parser.add_argument("--no-latency", action="store_true", help="counts only, no timing")
    parser.add_argument("--per-layer", action="store_true", help="print the per-layer MAC table")
    tv = parser.add_argument_group("TVConv options (atom tvconv; defaults: the paper's)")
    tv.add_argument("--select", help="sites: all, first:K, last:K or comma-separated indices")
    for option in dataclasses.fields(TVConvOptions):  # declared once, in tvconv.ops
        flag = "--" + option.name.replace("_", "-")
        if option.type in (bool, "bool") and option.default:
            tv.add_argument(
                f"--no-{option.name}", dest=option.name, action="store_false", default=None
            )
        elif option.type in (bool, "bool"):
            tv.add_argument(flag, action="store_true", default=None)
        else:
            kind = int if option.type in (int, "int") else str
            tv.add_argument(flag, type=kind, help=f"default {option.default}")
    return parser


def _build_model(args: argparse.Namespace) -> nn.Module:
    given = {key: getattr(args, key) for key in TVCONV_OPTIONS if getattr(args, key) is not None}
    options = TVConvOptions(**given).options() if args.atom == "tvconv" else given
    options = {key: options[key] for key in given}  # only what was given: the model's defaults
    if args.select is not None:
        select = args.select
        if select.replace(",", "").isdigit():
            select = [int(index) for index in select.split(",")]
        options["select"] = select
    return models.create(args.model, atom=args.atom, input_size=args.input_size, **options)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str) -> str:
    """A plain-text table; ``align`` holds one "l" or "r" per column."""
    cells = [list(map(str, header)), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if side == "l" else cell.rjust(width)
            for cell, width, side in zip(row, widths, align, strict=True)
        ).rstrip()
        for row in cells
    )


def _print_macs(checked: dict, per_layer: bool) -> None:
    analytic, ptflops = checked["analytic"], checked["ptflops"]
    bias_note = (
        f"ptflops' own count {ptflops['raw_macs']:,} includes {ptflops['bias_adds']:,} bias adds"
    )
    rows = [
        ("analytic", analytic, ""),
        ("fvcore", checked["fvcore"], ""),
        ("ptflops", ptflops, bias_note),
        ("FlopCounterMode", checked["flop_counter"], ""),
    ]
    print("\nMACs per image, inference (FLOPs = 2 x MACs; generator: once per training step)")
    print(
        _table(
            ("counter", "macs", "generator_macs", "note"),
            [(name, f"{c['macs']:,}", f"{c['generator_macs']:,}", note) for name, c, note in rows],
            "lrrl",
        )
    )
    print("all counters agree" if checked["agree"] else "COUNTERS DISAGREE:")
    for line in checked["disagreements"]:
        print(f"  {line}")
    if per_layer:
        layers = [
            (
                row["name"],
                row["type"],
                "x".join(map(str, row["output_shape"])),
                f"{row['macs']:,}",
                f"{row['generator_macs']:,}",
            )
            for row in analytic["layers"]
        ]
        print()
        print(_table(("layer", "type", "output", "macs", "generator_macs"), layers, "llrrr"))


def _print_params(params: dict) -> None:
    rows = [
        (form, f"{params[f'{form}_params']:,}", f"{params[f'{form}_bytes'] / 2**20:.2f}")
        for form in ("trainable", "deployed")
    ]
    print("\nParameters")
    print(_table(("", "params", "MiB"), rows, "lrr"))


def _print_latency(rows: list[dict], form: str) -> None:
    first = rows[0]
    env = first["environment"]
    knobs = "".join(f", {knob}" for knob in ("channels_last", "torch_compile") if first[knob])
    step = "training step" if form == "train" else "forward, eval mode"
    print(
        f"\nLatency ({step}, fp32, {env['device']} {env['device_name']}, "
        f"torch {env['torch_version']}{knobs})"
    )
    table = [
        (
            row["batch_size"],
            row["threads"],
            f"{row['latency_ms']:.2f}",
            f"{row['latency_iqr_ms']:.2f}",
            f"{row['images_per_s']:.1f}",
            f"{row['peak_memory_mib']:.1f}",
        )
        for row in rows
    ]
    header = ("batch", "threads", "latency_ms", "iqr_ms", "images_per_s", "peak_memory_mib")
    print(_table(header, table, "rrrrrr"))
    print(
        "latency_ms: median over torch.utils.benchmark blocks, iqr_ms: their interquartile "
        f"range; peak_memory_mib: {first['memory_method']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; exit status 0 when the counters agree, 1 when they do not, 2 on bad arguments."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = [2, 4, 8, 16] if args.form == "train" else [1, 2, 4, 8, 16]
    try:
        model = _build_model(args)
        device = default_device(args.device)
        if not args.no_latency:
            check_latency_args(
                model, args.form, args.batch_sizes, args.threads, args.min_run_time, 0
            )
    except ValueError as error:
        parser.error(str(error))
    if args.form == "deploy":
        deploy(model)
    shape = input_shape(model, args.input_size)
    print(f"{args.model}, atom {args.atom}, form {args.form}, input {'x'.join(map(str, shape))}")
    checked = cross_check_macs(model, shape)
    _print_macs(checked, args.per_layer)
    _print_params(count_params(model))
    if not args.no_latency:
        rows = measure_latency(
            model,
            shape,
            batch_sizes=args.batch_sizes,
            threads=args.threads,
            form=args.form,
            device=device,
            channels_last=args.channels_last,
            torch_compile=args.compile,
            min_run_time=args.min_run_time,
        )
        _print_latency(rows, args.form)
    return 0 if checked["agree"] else 1


if __name__ == "__main__":
    exit_with(main)
