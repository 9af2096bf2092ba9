"""Command line: ``python -m analysis STUDY [STUDY ...] [--preset P]`` or ``--all``.

Writes ``results/<study>/<preset>/{tables,figures}/`` and prints the Markdown table; ``layout``
renders the paper's Fig. 1 from the embedded data (``--real DIR`` adds a face image folder).
``--all`` renders every study and preset that has records (``make figures``); ``--readme
README.md`` then regenerates the README's results block from the rendered files. A question asked
of the fundus task (``python -m studies run init task=fundus``) is the study ``init-fundus``.
Exit codes: 0 done, 2 bad arguments or a study without complete runs (a named study is checked
before anything is written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.report import (
    LAYOUT,
    Report,
    check_study,
    readme_text,
    render,
    render_layout,
    update_readme,
)
from studies.spec import PRESETS, SpecError, list_studies, load_spec, task_study
from studies.store import DEFAULT_ROOT, Store
from tvconv.console import exit_with


def study_names() -> list[str]:
    """Every study, and every question its spec can ask of another task (``<study>-<task>``)."""
    return [
        *list_studies(),
        *(task_study(study, task) for study in list_studies() for task in load_spec(study).tasks),
    ]


def asked_of(study: str, task: str | None) -> str:
    """The store name of ``study`` asked of ``task``: itself without a task or when the task is
    its own (``seg --task fundus`` is ``seg``, as the runner stores it), else ``<study>-<task>``."""
    if task is None or (study in list_studies() and load_spec(study).task == task):
        return study
    return task_study(study, task)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    parser.add_argument(
        "studies", nargs="*", metavar="STUDY", help=f"any of: {', '.join(list_studies())}, {LAYOUT}"
    )
    parser.add_argument("--preset", default="quick", choices=PRESETS)
    parser.add_argument(
        "--task", help="the studies as asked of this task (fundus: init -> init-fundus)"
    )
    parser.add_argument("--all", action="store_true", help="every study and preset with records")
    parser.add_argument("--results", type=Path, default=DEFAULT_ROOT, help="results root")
    parser.add_argument("--no-wandb", action="store_true", help="skip the W&B summary run")
    parser.add_argument("--real", type=Path, help="layout: a real face folder to add to Fig. 1")
    parser.add_argument(
        "--image-size", type=int, help="layout: image side in px (default: the quick preset's)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the tables")
    parser.add_argument(
        "--readme", type=Path, help="afterwards, regenerate the results block of this README"
    )
    return parser


def _targets(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.all:
        return [
            (study, preset)
            for study in study_names()
            for preset in PRESETS
            if any(Store(args.results, study, preset).runs_dir.glob("*.json"))
        ]
    return [(asked_of(study, args.task), args.preset) for study in args.studies]


def _show(report: Report, quiet: bool) -> None:
    title = f"{report.study} / {report.preset}" if report.preset else report.study
    if not quiet:
        print(f"\n## {title}\n\n{report.markdown}")
    for problem in report.problems:
        print(f"  not used: {problem}")
    written = [*report.tables, *report.figures]
    print(f"{title}: wrote {len(written)} files under {Path(written[0]).parent.parent}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.studies and not args.all and args.readme is None:
        parser.error("name a STUDY (or layout), or pass --all or --readme")
    if args.results.exists() and not args.results.is_dir():
        parser.error(f"--results {args.results}: not a folder (expected the results root)")
    try:
        targets = _checked_targets(parser, args)
    except (SpecError, ValueError) as error:  # nothing is rendered or written
        print(f"error: {error}", file=sys.stderr)
        return 2
    status = 0
    for study, preset in targets:
        try:
            if study == LAYOUT:
                report = render_layout(args.results, args.real, args.image_size)
            else:
                report = render(study, preset, args.results, wandb=not args.no_wandb)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 2
            continue
        _show(report, args.quiet)
    if args.readme is not None and status != 0:
        print(
            f"error: {args.readme} is left as it was: a study above did not render, and its "
            "block would mix old and new files",
            file=sys.stderr,
        )
        return status
    if args.readme is not None:
        try:
            changed = update_readme(args.readme, args.results, args.preset)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{args.readme}: results block {'updated' if changed else 'unchanged'}")
    return status


def _checked_targets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list:
    """The (study, preset) pairs to render, every named one checked first (a study without
    complete runs, an unknown task, a README without its markers): a mistake in the second
    study named must not leave the first one's files rewritten. ``--all`` renders what has
    complete runs and names what has none."""
    names = study_names()  # a spec that does not load is reported here, before any render
    if args.task:
        tasks = {task for study in list_studies() for task in load_spec(study).tasks}
        if args.task not in tasks:
            parser.error(
                f"unknown task {args.task}; expected one a study's spec asks of: "
                f"{', '.join(sorted(tasks)) or 'none'}"
            )
    named = [asked_of(study, args.task) for study in args.studies]
    unknown = [s for s in named if s not in {*names, LAYOUT}]
    if unknown:
        known = ", ".join([*list_studies(), LAYOUT])
        parser.error(
            f"unknown study {', '.join(unknown)}; expected any of: {known} "
            "(or <study>-fundus for a question asked of the fundus task)"
        )
    if args.readme is not None:  # a README that cannot take the results fails before any render
        readme_text(args.readme)
    if args.real is not None and not args.real.is_dir():
        parser.error(f"--real {args.real}: not a folder (expected <identity>/<image> files)")
    targets = _targets(args)
    if args.all:
        if not targets and args.readme is None:
            raise ValueError(f"no study has records under {args.results}: nothing to render")
        return targets
    problems = []
    for study, preset in targets:
        if study != LAYOUT:
            try:
                check_study(study, preset, args.results)
            except ValueError as error:
                problems.append(str(error))
    if problems:
        raise ValueError("\nerror: ".join(problems))
    return targets


if __name__ == "__main__":
    exit_with(main)
