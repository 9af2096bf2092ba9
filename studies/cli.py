"""Command line: ``python -m studies run STUDY [...]``, ``python -m studies list``,
``python -m studies sync [--dry-run]`` (upload the offline W&B runs under the results root),
``python -m studies views --entity E [--dry-run]`` (save a W&B view per study: ``studies.views``).

Exit codes: 0 done, 1 some runs failed (the others finished), 2 bad
spec/config/arguments (reported before any run starts, nothing written to the store).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from studies.runner import run_study
from studies.spec import PRESETS, SpecError, list_studies, load_spec, parse_seeds
from studies.store import DEFAULT_ROOT, Store
from studies.tracking import sync_offline_runs
from studies.views import save_views
from tvconv.config import refuse_repeated_keys

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


def _overrides(assignments: list[str]) -> dict:
    parsed = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise SpecError(f"override {assignment!r} is not of the form key=value")
        parsed[key] = value
    try:
        refuse_repeated_keys(assignments)
    except ValueError as error:
        raise SpecError(f"command line: {error}") from error
    return parsed


def parse_gpus(text: str) -> list[int]:
    """``--gpus``: GPU indices, comma-separated (``0,1``), each once."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise SpecError(f"--gpus {text!r}: expected GPU indices separated by commas, e.g. 0,1")
    gpus = [int(part) for part in parts]
    if len(set(gpus)) < len(gpus):
        raise SpecError(f"--gpus {text!r}: a GPU is given more than once")
    return gpus


class _Once(argparse.Action):
    """An option that may be given once (argparse keeps the last of several silently, where a
    repeated key=value is refused)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest) is not None:
            parser.error(f"{option_string} given more than once; give every seed in one value")
        setattr(namespace, self.dest, values)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studies", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or --dry-run) one study's preset")
    run.add_argument("study", help=f"one of: {', '.join(list_studies())}")
    run.add_argument("--preset", default="quick", choices=PRESETS)
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="local worker processes (default 1); with GPUs, runs at once on each GPU",
    )
    run.add_argument(
        "--gpus",
        help="spread training runs over these GPUs, --jobs on each (e.g. 0,1; default every "
        "visible GPU when the runs' device is auto or cuda)",
    )
    run.add_argument(
        "--seeds",
        action=_Once,
        help="seeds to run instead of the preset's: a count (10 = 0-9), a range (0-9), a list "
        "(0,3,7) or a mix (0-4,10)",
    )
    run.add_argument(
        "--cells",
        action="append",
        metavar="PATTERN",
        help="run only the cells whose label matches this shell-style pattern (repeatable), e.g. "
        "--cells 'atom=tvconv*'; the labels are listed by --dry-run",
    )
    run.add_argument("--launcher", default="local", choices=("local", "slurm"))
    run.add_argument("--dry-run", action="store_true", help="list the runs and their status")
    rerun = run.add_mutually_exclusive_group()  # --force re-runs failed runs as well
    rerun.add_argument("--force", action="store_true", help="re-run completed and failed runs")
    rerun.add_argument("--retry-failed", action="store_true", help="re-run failed runs")
    run.add_argument("--results", type=Path, default=DEFAULT_ROOT, help="results root")
    slurm = run.add_argument_group("slurm (with --launcher slurm)")
    slurm.add_argument("--slurm-cluster", default=None, help="submitit cluster (default auto)")
    slurm.add_argument("--slurm-partition")
    slurm.add_argument("--slurm-time-min", type=int, default=60)
    slurm.add_argument("--slurm-gpus", type=int, default=0)
    slurm.add_argument("--slurm-cpus", type=int, default=2)
    slurm.add_argument("--slurm-mem-gb", type=int)
    run.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides for every run, e.g. optim.epochs=3",
    )
    listing = commands.add_parser("list", help="studies, presets and run counts")
    listing.add_argument("--results", type=Path, default=DEFAULT_ROOT)
    sync = commands.add_parser("sync", help="upload the offline W&B runs under the results root")
    sync.add_argument("--results", type=Path, default=DEFAULT_ROOT)
    sync.add_argument("--dry-run", action="store_true", help="show what would be uploaded")
    views = commands.add_parser("views", help="save a W&B view per study (grouped by cell)")
    views.add_argument("--entity", default="", help="the W&B user or team to save them to")
    views.add_argument("--preset", default="quick", choices=PRESETS)
    views.add_argument("--dry-run", action="store_true", help="build them, save nothing")
    return parser


def check_results_root(root: Path) -> None:
    """A SpecError when ``root`` cannot be the results root: a file, or a folder that cannot be
    created (nothing is created here, so a dry run writes nothing). A missing root is fine: it
    holds no runs yet."""
    if root.exists():
        if not root.is_dir():
            raise SpecError(f"--results {root}: not a folder")
        return
    ancestor = root.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise SpecError(f"--results {root}: cannot be created under {ancestor}")


def _list(results: Path) -> int:
    width = max(len(name) for name in ["study", *list_studies()])
    print(f"{'study':{width}s} {'preset':7s} {'runs':>5s} {'done':>5s} {'failed':>6s}  description")
    for name in list_studies():
        spec = load_spec(name)
        summary = spec.description.split(":")[0].replace("\n", " ")
        for preset in spec.presets:
            try:
                runs = spec.runs(preset)
            except SpecError as error:
                reason = "needs DATA_ROOT" if "DATA_ROOT" in str(error) else str(error)
                print(f"{name:{width}s} {preset:7s} {'-':>5s} {'-':>5s} {'-':>6s}  ({reason})")
                continue
            store = Store(results, name, preset)
            statuses = [store.status(run.run_id) for run in runs]
            print(
                f"{name:{width}s} {preset:7s} {len(runs):5d} {statuses.count('done'):5d} "
                f"{statuses.count('failed'):6d}  {summary}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come before or after options: argparse alone only takes them
    # before, so the others come back as extras.
    args, extras = parser.parse_known_args(argv)
    unknown = [e for e in extras if e.startswith("-")]
    if unknown or (extras and args.command != "run"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extras)}")
    if extras:
        args.overrides = [*args.overrides, *extras]
    try:
        if args.command in ("list", "sync", "run"):
            check_results_root(args.results)
        if args.command == "list":
            return _list(args.results)
        if args.command == "sync":
            return sync_offline_runs(args.results, dry_run=args.dry_run)
        if args.command == "views":
            return save_views(args.entity, args.preset, dry_run=args.dry_run)
        if args.jobs < 1:
            raise SpecError(f"--jobs={args.jobs} is invalid: expected a positive int")
        for option, value, low in (
            ("--slurm-time-min", args.slurm_time_min, 1),
            ("--slurm-cpus", args.slurm_cpus, 1),
            ("--slurm-gpus", args.slurm_gpus, 0),
            ("--slurm-mem-gb", args.slurm_mem_gb, 1),
        ):
            if value is not None and value < low:
                raise SpecError(f"{option}={value} is invalid: expected an int >= {low}")
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        gpus = parse_gpus(args.gpus) if args.gpus is not None else None
        spec = load_spec(args.study)
        slurm = {
            "cluster": args.slurm_cluster,
            "partition": args.slurm_partition,
            "time_min": args.slurm_time_min,
            "gpus": args.slurm_gpus,
            "cpus": args.slurm_cpus,
            "mem_gb": args.slurm_mem_gb,
        }
        return run_study(
            spec,
            args.preset,
            args.results,
            jobs=args.jobs,
            launcher=args.launcher,
            dry_run=args.dry_run,
            force=args.force,
            retry_failed=args.retry_failed,
            overrides=_overrides(args.overrides),
            slurm=slurm,
            seeds=seeds,
            cells=args.cells,
            gpus=gpus,
        )
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: the runs in flight stopped (no record; their epoch checkpoints stay, "
            "so running the same command again resumes them)",
            file=sys.stderr,
        )
        return INTERRUPTED
