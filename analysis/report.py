"""Render one study: tables and figures into ``results/<study>/<preset>/{tables,figures}/`` and a
W&B summary run (job_type ``analysis``) with the aggregate table and every figure.

``render(study, preset, root)`` returns a ``Report`` (the Markdown table text, the written paths,
the problems found). Tables are deterministic; figures are rendered from the same numbers.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from analysis import figures, inspect
from analysis.frame import StudyFrame, complete_runs, load_study, split_profile
from analysis.tables import (
    HEADLINE,
    SEG_HEADLINE,
    Table,
    face_table,
    fundus_table,
    profile_tables,
    seg_domain_numbers,
    seg_domain_table,
    verdict_table,
)
from analysis.verdicts import planned_cells, planned_seeds, study_contrasts, verdicts
from studies.spec import question_of
from studies.store import Store
from studies.tracking import Tracker, group_name, summary_id
from tvconv._engine import steps_per_epoch
from tvconv.metrics import postprocess
from tvconv.train import quick_config

FACE_FIGURES = {
    "aug": figures.aug_figure,
    "init": figures.init_figure,
    "weightgen": figures.weightgen_figure,
    "depth": figures.depth_figure,
}
LAYOUT = "layout"  # pseudo-study: the paper's Fig. 1 from the embedded data (no runs needed)


@dataclass
class Report:
    study: str
    preset: str
    markdown: str
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _write_table(folder: Path, name: str, table: Table, title: str) -> list[Path]:
    return [
        _write(folder / f"{name}.md", f"### {title}\n\n{table.markdown()}"),
        _write(folder / f"{name}.tex", table.latex()),
    ]


def _csv(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False, float_format="%.6g", lineterminator="\n")
    return path


def profile_latency(root: Path, image_size: int, threads: int = 1, batch: int = 1) -> pd.DataFrame:
    """Per (model, atom): deployed-form float32 latency per image (ms) from the profile study's
    CPU records (quick, paper or smoke preset, in that order) at ``image_size``; empty when none
    match."""
    rows = {}
    for preset in ("quick", "paper", "smoke"):
        runs, _layers = split_profile(load_study("profile", preset, root).runs)
        if runs.empty or "profile.form" not in runs:
            continue
        chosen = runs[
            (runs["profile.form"] == "deploy")
            & (runs["profile.input_size"] == image_size)
            & (runs["profile.dtype"] == "float32")
            & ~runs["profile.device"].str.startswith("cuda")
        ]
        column = f"latency_ms_b{batch}_t{threads}"
        for row in chosen.to_dict("records"):
            key = (row["profile.model"], row["profile.atom"])
            if key not in rows and pd.notna(row.get(column)):
                rows[key] = row[column] / batch
    return pd.DataFrame(
        [{"model": m, "atom": a, "latency_ms": v} for (m, a), v in sorted(rows.items())],
        columns=["model", "atom", "latency_ms"],
    )


def _verdict_files(found: pd.DataFrame, frame: StudyFrame, folder: Path) -> tuple[str, list]:
    """The judged contrasts (``analysis.verdicts``) as Markdown and table files; nothing when
    the spec declares none or the runs hold none of them."""
    name = f"{frame.study}_verdicts"
    if found.empty:  # none (any more): no stale verdict files next to the tables
        for suffix in (".md", ".tex", ".csv"):
            (folder / "tables" / f"{name}{suffix}").unlink(missing_ok=True)
        return "", []
    label = "mean Dice" if frame.runs["task"].iloc[0] == "fundus" else "mean accuracy"
    table = verdict_table(found, label)
    title = f"{frame.study} / {frame.preset}: verdicts"
    paths = [*_write_table(folder / "tables", name, table, title)]
    paths.append(_csv(folder / "tables", name, found))
    return "\n" + table.markdown(), paths


def _face_report(
    frame: StudyFrame, folder: Path, root: Path
) -> tuple[str, list, list, pd.DataFrame]:
    table, numbers = face_table(frame.runs)
    title = f"{frame.study} / {frame.preset}"
    tables = [*_write_table(folder / "tables", frame.study, table, title)]
    tables.append(_csv(folder / "tables", frame.study, numbers))

    figure_paths = []
    stem = folder / "figures" / frame.study
    usable = complete_runs(frame.runs)
    if frame.study in FACE_FIGURES:
        figure_paths += FACE_FIGURES[frame.study](frame.runs, stem)
    elif frame.study == "tradeoff":
        size = int(usable["data.image_size"].iloc[0])
        figure_paths += figures.tradeoff_figure(frame.runs, stem, profile_latency(root, size))
    figure_paths += _affinity(frame, folder)
    return table.markdown(), tables, figure_paths, numbers


def _fundus_report(frame: StudyFrame, folder: Path) -> tuple[str, list, list, pd.DataFrame]:
    """A fundus study: the per-cell table; the segmentation study (or any with several held-out
    domains) adds the paper's domain table (and its CSV), the per-domain Dice figure and example
    predictions; a face
    question asked of the fundus task (``init-fundus``) gets its question's figure."""
    table, numbers = fundus_table(frame.runs)
    title = f"{frame.study} / {frame.preset}"
    tables_dir, stem = folder / "tables", folder / "figures" / frame.study
    tables = [
        *_write_table(tables_dir, frame.study, table, title),
        _csv(tables_dir, frame.study, numbers),
    ]
    usable = complete_runs(frame.runs)
    markdown = table.markdown()
    figure_paths: list[Path] = []
    question = question_of(frame.study)
    if question == "seg" or usable["data.held_out"].nunique() > 1:
        domains = seg_domain_table(frame.runs)
        tables += _write_table(tables_dir, f"{frame.study}_domains", domains, f"{title}: Dice")
        tables.append(_csv(tables_dir, f"{frame.study}_domains", seg_domain_numbers(frame.runs)))
        markdown = domains.markdown() + "\n" + markdown
        figure_paths += figures.seg_figure(frame.runs, stem)
        examples = seg_examples(usable, frame.records, folder / "examples")
        if examples:
            figure_paths += figures.seg_examples_figure(
                examples, folder / "figures" / f"{frame.study}_examples"
            )
    elif question in FACE_FIGURES:
        figure_paths += FACE_FIGURES[question](frame.runs, stem, metric=SEG_HEADLINE)
    return markdown, tables, figure_paths, numbers


def seg_examples(usable: pd.DataFrame, records: dict, folder: Path) -> list[dict]:
    """Per held-out domain, its first test image, the ground truth and each variant's
    post-processed prediction (lowest seed), from ``examples/<run_id>.pt``; domains lacking an
    examples file for some variant are skipped."""
    examples = []
    atoms = list(dict.fromkeys(usable["model.atom"]))
    for domain in sorted(int(d) for d in usable["data.held_out"].unique()):
        chosen = usable[usable["data.held_out"] == domain].sort_values("seed")
        predictions, first = {}, None
        for atom in atoms:
            rows = chosen[chosen["model.atom"] == atom]
            path = folder / f"{rows['run_id'].iloc[0]}.pt" if len(rows) else None
            if path is None or not path.is_file():
                break
            saved = torch.load(path, weights_only=True)
            evaluation = records[rows["run_id"].iloc[0]]["config"]["fundus"]["eval"]
            on = evaluation["postprocess"]
            probabilities = saved["probabilities"][:1].float() / 255
            predictions[atom] = postprocess(
                probabilities, evaluation["threshold"], largest=on, fill=on
            )[0]
            first = saved
        if first is not None and len(predictions) == len(atoms):
            examples.append(
                {
                    "domain": domain,
                    "image": first["images"][0],
                    "truth": first["masks"][0],
                    "predictions": predictions,
                }
            )
    return examples


def _affinity(frame: StudyFrame, folder: Path) -> list[Path]:
    models_dir = folder / "models"
    if not models_dir.is_dir():
        return []
    entries = inspect.affinity_entries(frame.runs, frame.records, models_dir)
    if not entries:
        return []
    if frame.study not in ("init", "aug"):
        entries = [max(entries, key=lambda e: len(inspect.tvconv_layers(e[1])))]
        kernels = True
    else:
        kernels = False
    return inspect.affinity_figure(entries, folder / "figures" / f"{frame.study}_affinity", kernels)


def _profile_report(frame: StudyFrame, folder: Path) -> tuple[str, list, list, pd.DataFrame]:
    models_table, layers_table, numbers = profile_tables(frame.runs)
    title = f"{frame.study} / {frame.preset}"
    tables = [
        *_write_table(folder / "tables", "profile_models", models_table, f"{title}: models"),
        *_write_table(folder / "tables", "profile_layers", layers_table, f"{title}: one layer"),
        _csv(folder / "tables", "profile", numbers),
    ]
    figure_paths = figures.profile_figure(frame.runs, folder / "figures" / "profile")
    markdown = models_table.markdown() + "\n" + layers_table.markdown()
    return markdown, tables, figure_paths, numbers


def render_layout(root: Path, real: Path | None = None, image_size: int | None = None) -> Report:
    """The paper's Fig. 1 into ``results/figures/`` (synthetic faces at ``image_size``, default
    the quick preset's), with the diagnostic's table."""
    variances = inspect.synthetic_variances(image_size)
    variances.update(inspect.scikit_image_variances())
    if real is not None:
        size = image_size or quick_config().data.image_size
        variances[f"real: {Path(real).name}"] = inspect.real_variance(real, size)
    stem = Path(root) / "figures" / "layout_variance"
    paths = inspect.layout_figure(variances, stem)
    lines = [
        "| data | cross-image var | intra-image var | intra / cross | mean-image share |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, variance in variances.items():
        lines.append(
            f"| {label} | {variance.cross_mean:.4f} | {variance.intra_mean:.4f} | "
            f"{variance.score:.2f} | {100 * variance.mean_image_share:.0f}% |"
        )
    markdown = "\n".join(lines) + "\n"
    table = _write(stem.with_suffix(".md"), markdown)
    return Report(LAYOUT, "", markdown, tables=[table], figures=paths)


def render(
    study: str, preset: str = "quick", root: str | Path = "results", wandb: bool = True
) -> Report:
    """Tables and figures of one study's records; raises ValueError when it has no complete run."""
    root = Path(root)
    frame = complete_frame(study, preset, root)
    folder = root / study / preset
    task, is_profile, headline = _kind(frame.runs)
    found = _judged(frame, study, preset)  # first: a store they refuse leaves no file rewritten
    if is_profile:
        markdown, tables, figure_paths, numbers = _profile_report(frame, folder)
    elif task == "fundus":
        markdown, tables, figure_paths, numbers = _fundus_report(frame, folder)
    else:
        markdown, tables, figure_paths, numbers = _face_report(frame, folder, root)
    if not is_profile:
        verdict_markdown, verdict_paths = _verdict_files(found, frame, folder)
        markdown += verdict_markdown
        tables += verdict_paths
    problems = frame.problems() + _without_headline(frame.runs, headline)
    if problems:
        tables.append(_write(folder / "tables" / "problems.txt", "\n".join(problems) + "\n"))
    else:  # none (any more): no stale list of runs the store no longer holds
        (folder / "tables" / "problems.txt").unlink(missing_ok=True)
    report = Report(study, preset, markdown, tables, figure_paths, problems)
    if wandb:
        log_to_wandb(report, numbers, root, found, headline)
    return report


def _kind(runs: pd.DataFrame) -> tuple[str | None, bool, str]:
    """(task, whether the runs are profile measurements, the headline metric) of a study."""
    task = runs["task"].iloc[0] if "task" in runs else None
    is_profile = task == "profile" or "profile.model" in runs
    return task, is_profile, SEG_HEADLINE if task == "fundus" else HEADLINE


def _judged(frame: StudyFrame, study: str, preset: str) -> pd.DataFrame:
    """The study's verdicts (none for the profile study); a ValueError when its contrasts cannot
    be judged on this store (a selector matching two cells: runs of two training lengths)."""
    _task, is_profile, headline = _kind(frame.runs)
    if is_profile:
        return pd.DataFrame()
    contrasts, planned = list(study_contrasts(study)), planned_cells(study, preset)
    return verdicts(frame.runs, contrasts, headline, planned, planned_seeds(study, preset))


def _without_headline(runs: pd.DataFrame, headline: str) -> list[str]:
    """One line per complete run whose headline metric is missing or NaN: the table's n and
    mean leave it out while its other columns count it, so the reader is told which."""
    usable = complete_runs(runs)
    if headline not in usable:
        return []
    return [
        f"no {headline}: {row.run_id} {row.cell} seed={row.seed} (left out of its cell's n and "
        "mean; its other metrics are counted)"
        for row in usable[usable[headline].isna()].itertuples()
    ]


def check_study(study: str, preset: str, root: str | Path) -> None:
    """What ``render`` would refuse, found without writing: no complete run, contrasts that
    cannot be judged (``python -m analysis`` checks every named study first)."""
    _judged(complete_frame(study, preset, root), study, preset)


def complete_frame(study: str, preset: str, root: str | Path) -> StudyFrame:
    """The study's records, or a ValueError saying what is there instead of a complete run (no
    records; only failed or stale ones) and the command that makes one."""
    frame = load_study(study, preset, Path(root))
    if not complete_runs(frame.runs).empty:
        return frame
    where = Store(Path(root), study, preset).runs_dir
    command = f"python -m studies run {_run_command(study)} --preset {preset}"
    if frame.runs.empty:
        damaged = (
            f" ({len(frame.unreadable)} damaged record(s), re-run by `{command}`; the first: "
            f"{frame.problems()[0]})"
            if frame.unreadable
            else ""
        )
        raise ValueError(
            f"no complete runs of {study}/{preset} in {where}{damaged}; run `{command}` first"
        )
    counts = frame.runs["status"].value_counts()
    found = ", ".join(f"{count} {status}" for status, count in counts.items())
    how = []
    if "failed" in counts:
        how.append(f"`{command} --retry-failed` re-runs the failed ones")
    if "stale" in counts:
        how.append(f"`{command}` re-runs the stale ones (an older RESULTS_VERSION)")
    raise ValueError(
        f"no complete runs of {study}/{preset} in {where}: {found}; "
        + "; ".join(how or [f"run `{command}`"])
        + (f" (why: {frame.problems()[0]})" if frame.problems() else "")
    )


def _run_command(study: str) -> str:
    """The ``studies run`` arguments writing ``study`` (``init-fundus``: ``init task=fundus``)."""
    question = question_of(study)
    return study if question == study else f"{question} task={study[len(question) + 1 :]}"


def log_to_wandb(
    report: Report, numbers: pd.DataFrame, root: Path, found: pd.DataFrame, headline: str
) -> None:
    """The study's summary run (job_type ``analysis``, fixed id ``summary-<study>-<preset>``: a
    re-render replaces it), tables of numbers only: ``cells`` (per cell, the headline's n, mean,
    std, 95% interval, and the paired difference to depthwise with its Holm-adjusted interval,
    p-value and wins), ``numbers`` (the CSV: every metric), ``verdicts`` (per contrast: estimate,
    Holm-adjusted interval and p-value, verdict, seeds to decide, seeds the preset plans), with
    one summary key per contrast and the figures as images."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        tracker = Tracker(
            root,
            group=group_name(report.study, report.preset),
            job_type="analysis",
            name=f"{report.preset} {report.study} summary",
            config={"study": report.study, "preset": report.preset},
            tags=[report.study, report.preset, "summary"],
            run_id=summary_id(report.study, report.preset),
        )
        cells = cell_summary(numbers, headline)
        if not cells.empty:
            tracker.log_table("cells", list(cells.columns), _rows(cells))
        tracker.log_table("numbers", list(numbers.columns), _rows(numbers))
        if not found.empty:
            columns = ["name", "claim", "n", "mean", "ci_low_holm", "ci_high_holm", "p_holm"]
            columns += ["verdict", "seeds_needed", "seeds_planned"]
            tracker.log_table("verdicts", columns, _rows(found[columns]))
        tracker.log_images({path.stem: path for path in report.figures if path.suffix == ".png"})
        tracker.finish(
            {
                **{f"verdict/{row.name}": row.verdict for row in found.itertuples()},
                **{f"estimate/{row.name}": row.mean for row in found.itertuples()},
                "problems": len(report.problems),
                "figures": json.dumps(sorted(p.name for p in report.figures if p.suffix == ".png")),
            }
        )


CELL_COLUMNS = ["n", "mean", "std", "ci_low", "ci_high"]
DIFF_COLUMNS = ["mean", "ci_low_holm", "ci_high_holm", "p_holm", "wins"]


def cell_summary(numbers: pd.DataFrame, headline: str) -> pd.DataFrame:
    """One row per cell: the headline metric's statistics and, for cells compared with a
    depthwise baseline, the paired difference (``diff``, ``diff_ci_low``, ``diff_ci_high``,
    ``diff_p_holm``, ``diff_wins``); empty when ``numbers`` is not in long form."""
    if "metric" not in numbers or "n" not in numbers:
        return pd.DataFrame()
    cells = numbers.loc[numbers["metric"] == headline, ["cell", *CELL_COLUMNS]]
    # a study without TVConv cells (``convergence``) has no paired rows, and no columns for them
    paired = numbers.loc[numbers["metric"] == f"diff_{headline}"].reindex(
        columns=["cell", *DIFF_COLUMNS]
    )
    paired = paired.rename(
        columns={
            "mean": "diff",
            "ci_low_holm": "diff_ci_low",
            "ci_high_holm": "diff_ci_high",
            "p_holm": "diff_p_holm",
            "wins": "diff_wins",
        }
    )
    merged = cells.merge(paired, on="cell", how="left").astype({"n": int})
    return merged.assign(metric=headline)[["cell", "metric", *merged.columns[1:]]]


def _rows(frame: pd.DataFrame) -> list[list]:
    """Rows of plain Python values (numpy scalars as numbers, NaN as None)."""
    return [
        [None if isinstance(v, float) and math.isnan(v) else _plain(v) for v in row]
        for row in frame.itertuples(index=False)
    ]


def _plain(value: object) -> object:
    """numpy scalars as Python numbers (wandb.Table wants plain values)."""
    return value.item() if hasattr(value, "item") else value


README_BEGIN = "<!-- results:begin (generated by `python -m analysis --all --readme README.md`) -->"
README_END = "<!-- results:end -->"
README_STUDIES = (  # study, table files, figures (besides <study>.png), heading
    ("convergence", ("convergence",), (), "The testbed: is training converged?"),
    ("tradeoff", ("tradeoff",), ("tradeoff_affinity",), "Accuracy vs cost (the headline)"),
    ("aug", ("aug",), ("aug_affinity",), "Question 1: robustness to augmentation"),
    ("init", ("init",), ("init_affinity",), "Question 2: affinity-map initialisation"),
    ("weightgen", ("weightgen",), (), "Question 3: weight-generator over-parameterisation"),
    ("depth", ("depth",), (), "Question 4: where to insert TVConv"),
    ("profile", ("profile_models", "profile_layers"), (), "Cost profile"),
    ("seg", ("seg_domains", "seg"), ("seg_examples",), "Segmentation: optic cup and disc"),
)


def rendered_studies(root: Path, preset: str) -> list[str]:
    """The README's studies whose tables are rendered under ``root`` for ``preset``."""
    return [
        study
        for study, table_names, _figures, _heading in README_STUDIES
        if all((Path(root) / study / preset / "tables" / f"{n}.md").exists() for n in table_names)
    ]


def readme_section(root: Path, preset: str = "quick", readme_folder: Path = Path()) -> str:
    """The README's results block: per study its figures and tables as rendered under ``root``
    (studies without rendered tables are skipped), then Fig. 1."""
    root = Path(root)
    parts = [README_BEGIN, ""]
    glance = verdicts_at_a_glance(root, preset)
    if glance is not None:
        parts.append(f"### Verdicts at a glance ({preset} preset)\n")
        parts.append(glance.markdown())
    rendered = rendered_studies(root, preset)
    for study, table_names, extra_figures, heading in README_STUDIES:
        if study not in rendered:
            continue
        folder = root / study / preset
        tables = [folder / "tables" / f"{name}.md" for name in table_names]
        verdict_file = folder / "tables" / f"{study}_verdicts.md"
        tables += [verdict_file] if verdict_file.exists() else []
        parts.append(f"### {heading} (`{study}`, {preset} preset)\n")
        trained_on = training_text(load_study(study, preset, root).runs)
        if trained_on:
            parts.append(f"Trained on: {trained_on}.\n")
        for name in (study, *extra_figures):
            figure = folder / "figures" / f"{name}.png"
            if figure.exists():
                parts.append(f"![{study}: {name}]({_link(figure, readme_folder)})\n")
        for path in tables:
            text = path.read_text()
            parts.append(text.split("\n", 2)[2] if text.startswith("### ") else text)
    layout = root / "figures" / "layout_variance.png"
    if layout.exists():
        parts.append("### The premise: layout-aware data (the paper's Fig. 1)\n")
        parts.append(f"![layout variance]({_link(layout, readme_folder)})\n")
        if layout.with_suffix(".md").exists():
            parts.append(layout.with_suffix(".md").read_text())
    parts.append(README_END)
    return "\n".join(parts) + "\n"


def _link(path: Path, readme_folder: Path) -> str:
    """``path`` as the README links it: relative to the README's folder, wherever the command
    ran from or however ``--results`` was written."""
    return Path(os.path.relpath(Path(path).resolve(), Path(readme_folder).resolve())).as_posix()


def training_text(runs: pd.DataFrame) -> str | None:
    """What a face study's complete runs trained on, read from their records, for the README:
    ``200 synthetic identities x 16 images, 32,000 steps`` when every run agrees; otherwise each
    training length (or each data and length) with its number of runs, so a store holding runs
    of two training sets says so. None when the store holds no complete face run."""
    usable = complete_runs(runs)
    if usable.empty or "optim.epochs" not in usable:
        return None
    settings = []
    for _, run in usable[usable["task"] == "face"].iterrows():
        epochs, batch = int(run["optim.epochs"]), int(run["optim.batch_size"])
        root = run.get("data.train_root")
        if isinstance(root, str) and root:
            settings.append(
                (f"the images under `{root}`", f"{epochs:,} epoch" + "s" * (epochs != 1))
            )
            continue
        identities = int(run["data.synthetic.train_identities"])
        per_identity = int(run["data.synthetic.images_per_identity"])
        steps = epochs * steps_per_epoch(identities * per_identity, batch)
        settings.append(
            (
                f"{identities} synthetic identities x {per_identity} images",
                f"{steps:,} step" + "s" * (steps != 1),
            )
        )
    if not settings:
        return None
    counts = pd.Series(settings).value_counts(sort=False)
    if len(counts) == 1:
        return ", ".join(counts.index[0])
    data = {setting[0] for setting in settings}
    if len(data) == 1:
        lengths = ", ".join(f"{length} ({_runs(count)})" for (_, length), count in counts.items())
        return f"{data.pop()}; {lengths}"
    return "; ".join(
        f"{source}, {length} ({_runs(count)})" for (source, length), count in counts.items()
    )


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def verdicts_at_a_glance(root: Path, preset: str) -> Table | None:
    """Every README study's verdicts in one table (a ``study`` column first), from the rendered
    ``<study>_verdicts.csv`` files; None when there are none."""
    frames = []
    for study, *_rest in README_STUDIES:
        path = Path(root) / study / preset / "tables" / f"{study}_verdicts.csv"
        if path.exists():
            found = pd.read_csv(path)
            found["finding"] = found["finding"].fillna("")
            frames.append(found.assign(study=study))
    if not frames:
        return None
    every = pd.concat(frames, ignore_index=True)
    table = verdict_table(every, family="Holm within its study")
    rows = [[f"`{study}`", *row] for study, row in zip(every["study"], table.rows, strict=True)]
    return Table(["study", *table.header], rows, set(), table.notes)


def readme_text(readme: Path) -> str:
    """The text of ``readme``, checked to hold the results markers in order (a ValueError
    says what is wrong): ``python -m analysis --readme`` checks it before rendering anything."""
    try:
        text = Path(readme).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--readme {readme}: cannot be read ({error})") from error
    begin = text.find(README_BEGIN)
    if begin < 0 or text.find(README_END, begin) < 0:
        raise ValueError(
            f"{readme} has no results block: add the lines\n{README_BEGIN}\n{README_END}\n"
            "(in this order) where the results should go"
        )
    return text


def update_readme(readme: Path, root: Path, preset: str = "quick") -> bool:
    """Replace the block between the results markers of ``readme``; True when it changed."""
    text = readme_text(readme)
    if not rendered_studies(root, preset):
        raise ValueError(
            f"no rendered results of the {preset} preset under {root} (no "
            f"<study>/{preset}/tables/); run `python -m analysis --all --results {root}` first; "
            f"{readme} is left as it was"
        )
    head, rest = text.split(README_BEGIN, 1)
    _old, tail = rest.split(README_END, 1)
    section = readme_section(root, preset, Path(readme).parent)
    new = head + section.rstrip("\n") + tail
    if new != text:
        Path(readme).write_text(new)
    return new != text
