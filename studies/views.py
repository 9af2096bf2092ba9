"""Saved W&B views, one per study and preset, built from code with ``wandb-workspaces``.

A view shows the study's training runs (filtered on the flat config keys ``study``, ``preset``
and ``task`` that ``studies.tracking`` writes), grouped by ``cell`` so that each cell's seeds form
one group, TVConv and depthwise side by side (the view's name says what its cells compare): bar
charts of the mean accuracy and of every benchmark (mean over seeds, the spread as std), the
training curves (``train/loss`` against ``step``, ``epoch/train_acc_pct`` against ``epoch``) and
the cost (MACs, deployed parameters).
The suite's own statistic, the paired difference, is in the study's summary run
(``summary-<study>-<preset>``, its ``cells`` table).

``python -m studies views --entity ENTITY`` saves them (needs ``WANDB_API_KEY`` and the network);
``--dry-run`` only builds them and lists what each holds.
"""

from __future__ import annotations

from studies.spec import SpecError, list_studies, load_spec
from studies.tracking import PROJECT, group_name
from tvconv.data.faces import paper_order, parse_benchmarks
from tvconv.data.synthetic import BENCHMARKS

HEADLINES = {"face": "mean_acc_pct", "fundus": "dice_mean_pct"}
BENCHMARK_METRICS = {  # the embedded data's; a real-data preset's follow the same pattern
    "face": tuple(f"{name}_acc_pct" for name in BENCHMARKS),
    "fundus": ("dice_cup_pct", "dice_disc_pct"),
}


ATOM_NAMES = {"tvconv": "TVConv", "dw": "depthwise", "aspp": "ASPP"}


def comparison_title(atoms: set[str]) -> str:
    """What a view compares, from the atoms its cells train: ``TVConv vs depthwise``, or
    ``depthwise runs`` for a study of one atom (the testbed's depthwise-only check)."""
    others = [ATOM_NAMES.get(atom, atom) for atom in sorted(atoms - {"tvconv"})]
    if "tvconv" in atoms and others:
        return f"TVConv vs {' and '.join(others)}"
    return f"{' and '.join(ATOM_NAMES.get(atom, atom) for atom in sorted(atoms))} runs"


def spec_atoms(spec, preset: str) -> set[str]:
    """The atoms a preset's cells set (or the spec's base); a cell that sets none counts as
    both TVConv and depthwise, the comparison every face study makes."""
    base = spec.base.get("model.atom")
    atoms = {cell.get("model.atom", base) for cell in spec.cells(preset)}
    return {atom for atom in atoms if atom} | ({"tvconv", "dw"} if None in atoms else set())


def benchmark_metrics(spec, preset: str) -> tuple[str, ...]:
    """The per-benchmark metrics a preset's runs log: a real-data preset's named benchmarks
    (``data.benchmarks``, e.g. ``lfw_acc_pct`` ... in the paper's order), else the embedded
    data's."""
    entries = (spec.presets.get(preset, {}).get("overrides") or {}).get("data.benchmarks")
    if spec.task != "face" or not entries:
        return BENCHMARK_METRICS[spec.task]
    entries = entries.split(",") if isinstance(entries, str) else list(entries)
    names = [source.name for source in parse_benchmarks([e.strip() for e in entries if e.strip()])]
    return tuple(f"{name}_acc_pct" for name in paper_order(names))


def study_view(
    study: str,
    preset: str,
    task: str,
    entity: str,
    title: str = "TVConv vs depthwise",
    benchmarks: tuple[str, ...] | None = None,
):
    """The saved view of one study and preset (a ``wandb_workspaces`` Workspace); ``title``
    says what its cells compare, ``benchmarks`` the per-benchmark metrics its runs log (by
    default the embedded data's)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    headline = HEADLINES[task]
    per_cell = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stddev"}
    comparison = [wr.BarPlot(title=f"{headline} by cell", metrics=[headline], **per_cell)]
    comparison += [
        wr.BarPlot(title=metric, metrics=[metric], **per_cell)
        for metric in (benchmarks or BENCHMARK_METRICS[task])
    ]
    training = [
        wr.LinePlot(title="training loss", x="step", y=["train/loss"], **per_cell),
        wr.LinePlot(title="learning rate", x="step", y=["train/lr"]),
        wr.LinePlot(title="images/s", x="step", y=["train/images_per_s"], **per_cell),
    ]
    if task == "face":
        training.append(
            wr.LinePlot(title="training accuracy", x="epoch", y=["epoch/train_acc_pct"], **per_cell)
        )
    cost = [
        wr.BarPlot(title="MACs (deployed)", metrics=["macs"], **per_cell),
        wr.BarPlot(title="parameters (deployed)", metrics=["deployed_params"], **per_cell),
    ]
    return ws.Workspace(
        entity=entity,
        project=PROJECT,
        name=f"{group_name(study, preset)}: {title}",
        sections=[
            ws.Section(name=f"{title}, per cell", panels=comparison, is_open=True),
            ws.Section(name="Training", panels=training, is_open=True),
            ws.Section(name="Cost", panels=cost, is_open=False),
        ],
        runset_settings=ws.RunsetSettings(
            filters=expr.And(
                expr.Config("study") == study,
                expr.Config("preset") == preset,
                expr.Config("task") == task,
            ),
            groupby=[expr.Config("cell")],
            pinned_columns=[f"summary:{headline}", "config:model.atom", "config:seed"],
        ),
    )


def study_views(entity: str, preset: str) -> list:
    """A view for every training study that has the preset (the profile study has no training
    runs to compare)."""
    views = []
    for name in list_studies():
        spec = load_spec(name)
        if spec.task not in HEADLINES or preset not in spec.presets:
            continue
        title = comparison_title(spec_atoms(spec, preset))
        benchmarks = benchmark_metrics(spec, preset)
        views.append(study_view(name, preset, spec.task, entity, title, benchmarks))
    return views


def save_views(entity: str, preset: str, dry_run: bool = False) -> int:
    """Build (and unless ``dry_run`` save) the views; prints one line per view."""
    if not entity:
        raise SpecError("--entity is required: the W&B user or team the views are saved to")
    for view in study_views(entity, preset):
        settings = view.runset_settings
        line = f"{view.name}: filter {settings.filters}; grouped by cell"
        if dry_run:
            print(f"would save {line}", flush=True)
            continue
        view.save()
        print(f"saved {line}: {view.url}", flush=True)
    return 0
