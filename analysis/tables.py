"""Study tables in the paper's shape, rendered as Markdown, LaTeX (booktabs) and CSV.

Face studies: one row per cell, the verification benchmarks as columns (four + mean, as the
paper's tables), each ``mean ± std`` over seeds with the best mean per column in bold, the cost
columns that vary between cells, and the paired difference of the mean accuracy to the depthwise
baseline with its Student-t 95% CI (Holm-adjusted over the study's TVConv cells), p-value and the
wins, then the floors (raw pixels, mean colour, the untrained network). Fundus studies
(``fundus_table``): one row per cell, Dice (%) of cup and disc, HD95 and ASD (px) with their 95%
CIs, and the paired difference
of the mean Dice to the depthwise run; the segmentation study adds the paper's layout
(``seg_domain_table``): one row per ASPP variant, Dice of cup and disc per held-out domain, and
the image-blind layout prior as the floor a model must clear. Profile: one table of models (MACs,
parameters, latency per batch and threads) and one of the single-layer grid (cached TVConv /
depthwise time).
Formatting is fixed (one decimal for accuracies, stable row order), so the same records always
give byte-identical files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

from analysis.frame import (
    TVCONV_ONLY_FIELDS,
    batch_thread_suffixes,
    cell_order,
    complete_runs,
    split_profile,
    varying_columns,
    varying_precision,
)
from analysis.stats import aggregate, aggregate_paired, summarise
from analysis.verdicts import MAX_SEEDS as VERDICT_MAX_SEEDS
from analysis.verdicts import is_provisional
from tvconv.data.faces import paper_order
from tvconv.data.synthetic import BENCHMARKS
from tvconv.ops import GENERATOR_ONLY_FIELDS

HEADLINE = "mean_acc_pct"
SEG_HEADLINE = "dice_mean_pct"
SEG_METRICS = (  # metric, header, higher is better
    ("dice_cup_pct", "Dice cup", True),
    ("dice_disc_pct", "Dice disc", True),
    ("hd95_cup_px", "HD95 cup", False),
    ("hd95_disc_px", "HD95 disc", False),
    ("asd_cup_px", "ASD cup", False),
    ("asd_disc_px", "ASD disc", False),
)
ATOM_NAMES = {"aspp": "ASPP (dilated)", "dw": "depthwise", "tvconv": "TVConv"}
COSTS = (  # metric, header, scale
    ("macs", "MMACs", 1e-6),
    ("trainable_params", "train params (M)", 1e-6),
    ("deployed_params", "deployed params (M)", 1e-6),
)
TRAIN_ACCURACY = "train_acc_pct"  # the last epoch's training accuracy (face runs)
TRAIN_HEADER = "train acc, last epoch (lowest seed)"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells in bold
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        def cell(r: int, c: int, text: str) -> str:
            return f"**{text}**" if (r, c) in self.bold else text

        lines = [
            "| " + " | ".join(self.header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(self.header) - 1)) + "|",
        ]
        for r, row in enumerate(self.rows):
            lines.append("| " + " | ".join(cell(r, c, t) for c, t in enumerate(row)) + " |")
        text = "\n".join(lines) + "\n"
        if self.notes:
            text += "\n" + "\n".join(self.notes) + "\n"
        return text

    def latex(self) -> str:
        def cell(r: int, c: int, text: str) -> str:
            escaped = latex_escape(text)
            return f"\\textbf{{{escaped}}}" if (r, c) in self.bold else escaped

        columns = "l" + "r" * (len(self.header) - 1)
        lines = [
            f"\\begin{{tabular}}{{{columns}}}",
            "\\toprule",
            " & ".join(latex_escape(h) for h in self.header) + " \\\\",
            "\\midrule",
        ]
        for r, row in enumerate(self.rows):
            lines.append(" & ".join(cell(r, c, t) for c, t in enumerate(row)) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        lines += [f"% {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "−": "-",
}


def latex_escape(text: str) -> str:
    return re.sub(
        "|".join(re.escape(k) for k in _LATEX_SPECIAL), lambda m: _LATEX_SPECIAL[m[0]], text
    )


def number(value: float, digits: int = 1, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return text[1:] if sign and float(text) == 0 else text


def mean_std(row: pd.Series, digits: int = 1) -> str:
    if row["n"] == 0:
        return "–"
    if row["n"] == 1:
        return number(row["mean"], digits)
    return f"{number(row['mean'], digits)} ± {number(row['std'], digits)}"


def benchmarks_of(runs: pd.DataFrame) -> list[str]:
    """Benchmark names with an ``<name>_acc_pct`` metric, in the suite's order (synthetic
    benchmarks first in their defined order, then real ones: the paper's LFW, CFP-FF, AgeDB-30,
    CALFW in its order, the others alphabetically)."""
    names = {
        c[: -len("_acc_pct")]
        for c in runs.columns
        if c.endswith("_acc_pct")
        and c not in (HEADLINE, "train_acc_pct")
        and not c.startswith(FLOOR_PREFIX)
    }
    known = [name for name in BENCHMARKS if name in names]
    return known + paper_order(sorted(names - set(known)))


def _varying_costs(usable: pd.DataFrame) -> list[tuple[str, str, float]]:
    """The ``COSTS`` columns whose values differ between runs (shown only then)."""
    return [
        (metric, header, scale)
        for metric, header, scale in COSTS
        if metric in usable and usable[metric].nunique() > 1
    ]


def _training_column(usable: pd.DataFrame) -> dict[str, str]:
    """Per cell, ``mean ± std (lowest)`` of the last epoch's training accuracy; empty when no
    run recorded it (records written before it was kept)."""
    if TRAIN_ACCURACY not in usable:
        return {}
    recorded = usable.dropna(subset=[TRAIN_ACCURACY])
    summary = aggregate(recorded, TRAIN_ACCURACY).set_index("cell")
    lowest = recorded.groupby("cell")[TRAIN_ACCURACY].min()
    return {
        cell: f"{mean_std(summary.loc[cell])} ({number(lowest[cell])})" for cell in summary.index
    }


def _one_seed_notes(usable: pd.DataFrame) -> list[str]:
    if len(usable) and usable.groupby("cell").size().min() < 2:
        return ["One seed in a cell gives no interval: run more (`--seeds`)."]
    return []


def _long_form(summaries: dict, paired: pd.DataFrame, headline: str) -> pd.DataFrame:
    """The CSV's numbers: every summary row, then the paired differences as ``diff_<headline>``."""
    return pd.concat(
        [summaries[m].reset_index() for m in summaries]
        + ([paired.reset_index().assign(metric=f"diff_{headline}")] if not paired.empty else []),
        ignore_index=True,
    )


def _bold_best(
    summaries: pd.DataFrame, cells: list[str], column: int, higher: bool
) -> set[tuple[int, int]]:
    means = summaries["mean"].reindex(cells)
    if not means.notna().any():
        return set()
    best = means.max() if higher else means.min()
    return {(r, column) for r, cell in enumerate(cells) if means[cell] == best}


FLOOR_PREFIX = "floor_"
FLOORS = (  # metric infix, row label, what decides its value besides the seed
    ("pixels", "floor: raw pixels", "data"),
    ("colour", "floor: mean colour", "data"),
    ("untrained", "floor: untrained", "model"),
)
# Config columns that do not change a floor (training and evaluation settings).
NOT_FLOOR_KEYS = ("data.augment", "data.workers")


def _floor_key(row: dict, columns: list[str]) -> tuple:
    """What decides a floor of this run besides the seed: its data (and model) settings; a dw
    run's TVConv options are ignored (they do not exist in its network), so are the generator's
    options of a TVConv without one, and so is how far the layout-free control moves its images
    when the data is aligned (nothing moves)."""
    ignored = set()
    if row.get("model.atom") == "dw":
        ignored = {f"model.{name}" for name in TVCONV_ONLY_FIELDS if name != "atom"}
    elif str(row.get("model.generator")) == "False":
        ignored = {f"model.{name}" for name in GENERATOR_ONLY_FIELDS}
    if row.get("data.synthetic.layout") == "aligned":
        ignored.add("data.synthetic.free_shift")
    return tuple((c, str(row[c])) for c in columns if c not in ignored)


def floor_groups(usable: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(floor infix, row label, runs) per floor and per distinct setting it depends on, in
    cell order; the label names the settings that differ between the groups of a floor."""
    groups = []
    data_columns = [c for c in usable.columns if c.startswith("data.") and c not in NOT_FLOOR_KEYS]
    model_columns = [c for c in usable.columns if c.startswith("model.")]
    ordered = usable.assign(
        _order=usable["cell"].map({c: i for i, c in enumerate(cell_order(usable))})
    )
    ordered = ordered.sort_values(["_order", "seed"], kind="stable")
    for infix, label, depends in FLOORS:
        if f"{FLOOR_PREFIX}{infix}_{HEADLINE}" not in usable:
            continue
        columns = data_columns + (model_columns if depends == "model" else [])
        keys = [_floor_key(row, columns) for row in ordered.to_dict("records")]
        distinct = list(dict.fromkeys(keys))
        present = [dict(key) for key in distinct]
        varying = [  # in the study's axis order (atom first)
            column
            for column in varying_columns(usable)
            if column in columns
            and len({settings[column] for settings in present if column in settings}) > 1
        ]
        for key in distinct:
            chosen = ordered[[k == key for k in keys]]
            settings = dict(key)
            names = [f"{c.split('.')[-1]}={settings[c]}" for c in _named(varying, settings)]
            groups.append((infix, " ".join([label, *names]), chosen))
    return groups


def _named(varying: list[str], settings: dict) -> list[str]:
    """The varying columns a floor row names: all of those its settings have, but
    ``generator=True`` where the generator's own options are named (they imply it; the trained
    cells' labels leave it out the same way)."""
    named = [c for c in varying if c in settings]
    generator_options = {f"model.{name}" for name in GENERATOR_ONLY_FIELDS}
    if (
        "model.generator" in named
        and settings["model.generator"] == "True"
        and generator_options.intersection(named)
    ):
        named.remove("model.generator")
    return named


def _floor_summary(runs: pd.DataFrame, infix: str, metric: str) -> pd.Series:
    """A floor's ``metric`` over seeds: each seed once (cells sharing the setting share it)."""
    column = f"{FLOOR_PREFIX}{infix}_{metric}"
    if column not in runs:
        return pd.Series(summarise([]))
    per_seed = runs.dropna(subset=[column]).drop_duplicates("seed")[column]
    return pd.Series(summarise(per_seed))


def face_table(runs: pd.DataFrame) -> tuple[Table, pd.DataFrame]:
    """The study table and its numbers in long form (cell, metric, n, mean, std, CI, paired
    difference, floors) for the CSV. The floor rows follow the cells."""
    usable = complete_runs(runs)
    cells = cell_order(usable)
    benchmarks = benchmarks_of(usable)
    metrics = [f"{b}_acc_pct" for b in benchmarks] + [HEADLINE]
    costs = _varying_costs(usable)
    summaries = {metric: aggregate(usable, metric).set_index("cell") for metric in metrics}
    for metric, _header, _scale in costs:
        summaries[metric] = aggregate(usable, metric).set_index("cell")
    paired = aggregate_paired(usable, HEADLINE).set_index("cell")
    header = ["cell", "n", *benchmarks, "mean", *(h for _m, h, _s in costs)]
    training = _training_column(usable)
    if training:
        header.append(TRAIN_HEADER)
    if not paired.empty:
        header.append(f"Δ mean vs dw [95% CI, {_holm_text(paired)}] (wins)")
    rows, bold = [], set()
    for cell in cells:
        row = [cell, str(int(summaries[HEADLINE].loc[cell, "n"]))]
        row += [mean_std(summaries[metric].loc[cell]) for metric in metrics]
        for metric, _header, scale in costs:
            row.append(number(summaries[metric].loc[cell, "mean"] * scale, 3))
        if training:
            row.append(training.get(cell, "–"))
        if not paired.empty:
            row.append(_delta_text(usable, paired, cell))
        rows.append(row)
    for column, metric in enumerate(metrics, start=2):
        bold |= _bold_best(summaries[metric], cells, column, higher=True)
    floor_numbers = []
    for infix, label, group in floor_groups(usable):
        stats = {metric: _floor_summary(group, infix, metric) for metric in metrics}
        row = [label, str(int(stats[HEADLINE]["n"]))]
        row += [mean_std(stats[metric]) for metric in metrics]
        rows.append(row + [""] * (len(header) - len(row)))
        floor_numbers += [
            {"cell": label, "metric": metric, **stats[metric].to_dict()} for metric in metrics
        ]
    notes = [
        "Accuracy (%) on the verification benchmarks, mean ± std over seeds (n); best mean per "
        "column in bold."
    ]
    if floor_numbers:
        notes.append(
            "Floors, on the same pairs and seeds: the raw pixels and the mean colour of each "
            "image as its embedding, and the network as initialised (deployed, never trained)."
        )
    if training:
        notes.append(
            "Train acc: the training accuracy (%) of the last epoch, mean ± std over seeds and "
            "the lowest seed's: a seed far below the others is a run whose training collapsed "
            "or never took off, whatever it scores on the benchmarks."
        )
    if not paired.empty:
        notes.append(
            "Δ: paired difference of the mean accuracy to the depthwise run with the same seed and "
            f"data, mean [Student-t 95% CI, Holm-adjusted over the {family_size(paired)} "
            "TVConv cells with two pairs or more] "
            "and the Holm-adjusted p-value (pairs where TVConv is higher / pairs)."
        )
    notes += _one_seed_notes(usable) + _unpaired_notes(usable, paired)
    numbers = _long_form(summaries, paired, HEADLINE)
    if floor_numbers:
        numbers = pd.concat([numbers, pd.DataFrame(floor_numbers)], ignore_index=True)
    return Table(header, rows, bold, notes), numbers


def _delta_text(usable: pd.DataFrame, paired: pd.DataFrame, cell: str) -> str:
    """A cell's Δ entry: its paired difference; ``baseline`` for a depthwise cell; for a TVConv
    cell none of whose runs has a depthwise partner, a dash saying so (not ``baseline``)."""
    if cell in paired.index:
        return _paired_text(paired.loc[cell])
    atoms = set(usable.loc[usable["cell"] == cell, "model.atom"])
    if atoms == {"dw"}:
        return "baseline"
    return "– (no dw run of its seeds and settings)" if "tvconv" in atoms else "–"


def _unpaired_notes(usable: pd.DataFrame, paired: pd.DataFrame) -> list[str]:
    """Why a table of TVConv cells has no Δ column: none of them has a depthwise partner."""
    if not paired.empty or "model.atom" not in usable or "tvconv" not in set(usable["model.atom"]):
        return []
    return [
        "No Δ column: no run of these cells has a depthwise run of the same seed and settings "
        "to be paired with."
    ]


def _paired_text(row: pd.Series) -> str:
    """``+1.2 [-0.3, +2.7] p=0.12 (4/5)``: the Holm-adjusted interval and p-value."""
    interval, p_value = _interval_text(row["ci_low_holm"], row["ci_high_holm"]), ""
    if math.isfinite(row["p_holm"]):
        p_value = f" p={p_text(row['p_holm'])}"
    return (
        f"{number(row['mean'], sign=True)}{interval}{p_value} ({int(row['wins'])}/{int(row['n'])})"
    )


def family_size(comparisons: pd.DataFrame) -> int:
    """How many comparisons Holm adjusted over: those with a p-value (two values or more)."""
    return int(comparisons["p"].notna().sum()) if "p" in comparisons else 0


def _holm_text(verdicts: pd.DataFrame) -> str:
    """``Holm over 2``; ``no interval yet`` when no contrast has two seeds."""
    size = family_size(verdicts)
    return f"Holm over {size}" if size else "no interval yet"


def _interval_text(low: float, high: float) -> str:
    """`` [-0.3, +2.7]`` (signed), or nothing without an interval."""
    if not math.isfinite(low):
        return ""
    return f" [{number(low, sign=True)}, {number(high, sign=True)}]"


def p_text(p: float) -> str:
    """Two significant digits, ``<0.001`` below that."""
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def profile_tables(runs: pd.DataFrame) -> tuple[Table, Table, pd.DataFrame]:
    """(models table, single-layer table, long numbers)."""
    model_runs, layer_runs = split_profile(runs)
    usable = pd.concat([model_runs, layer_runs]).sort_index()  # precision columns filled in
    precision = varying_precision(usable)
    precision_header = [c.removeprefix("profile.") for c in precision]
    suffixes = batch_thread_suffixes(model_runs, "latency_ms")
    header = ["model", "input", "atom", "form", *precision_header]
    header += ["MMACs", "params (M)", "deployed params (M)"]
    header += [f"ms {s.replace('_', ' ')}" for s in suffixes]
    rows = []
    for row in model_runs.to_dict("records"):
        rows.append(
            [
                row["profile.model"],
                str(row["profile.input_size"]),
                row["profile.atom"],
                row["profile.form"],
                *(row[c] for c in precision),
                number(row["macs"] * 1e-6, 2),
                number(row["trainable_params"] * 1e-6, 3),
                number(row["deployed_params"] * 1e-6, 3),
                *(number(row.get(f"latency_ms_{s}", math.nan), 2) for s in suffixes),
            ]
        )
    models = Table(
        header,
        rows,
        notes=[
            "Per-image inference MACs (analytic, deployed form; the training form adds the "
            "generator's batch-independent MACs), parameters, and median latency in ms per batch "
            "(b = batch size, t = threads; train form: a full training step)."
        ],
    )
    ratio_suffixes = batch_thread_suffixes(layer_runs, "ratio")
    layer_rows = [
        [
            str(row["profile.layer_channels"]),
            str(row["profile.input_size"]),
            str(row["profile.layer_stride"]),
            *(row[c] for c in precision),
            *(number(row.get(f"ratio_{s}", math.nan), 2) for s in ratio_suffixes),
        ]
        for row in layer_runs.to_dict("records")
    ]
    layers = Table(
        [
            "channels",
            "input",
            "stride",
            *precision_header,
            *(s.replace("_", " ") for s in ratio_suffixes),
        ],
        layer_rows,
        notes=[
            "Cached TVConv time / depthwise conv time for one layer of that shape (1 = parity)."
        ],
    )
    keep = ["run_id", "cell", *(c for c in usable.columns if c.startswith("profile."))]
    metric_columns = [
        c
        for c in usable.columns
        if c in ("macs", "flops", "generator_macs", "trainable_params", "deployed_params")
        or c.startswith(("latency_ms_", "images_per_s_", "ratio_", "macs_"))
    ]
    long = usable[keep + sorted(metric_columns)].melt(
        id_vars=keep, var_name="metric", value_name="value"
    )
    long = long.dropna(subset=["value"]).reset_index(drop=True)
    return models, layers, long


def _with_ci(row: pd.Series, digits: int = 1) -> str:
    if row["n"] == 0:
        return "–"
    if row["n"] == 1 or not math.isfinite(row["ci_low"]):
        return number(row["mean"], digits)
    low, high = number(row["ci_low"], digits), number(row["ci_high"], digits)
    return f"{number(row['mean'], digits)} [{low}, {high}]"


def fundus_table(runs: pd.DataFrame) -> tuple[Table, pd.DataFrame]:
    """A fundus study: per cell, Dice / HD95 / ASD mean [95% CI] over seeds, the costs that
    vary, and the paired difference of the mean Dice to the depthwise run; long numbers for the
    CSV."""
    usable = complete_runs(runs)
    cells = cell_order(usable)
    metrics = [m for m in SEG_METRICS if m[0] in usable]
    costs = _varying_costs(usable)
    summaries = {m: aggregate(usable, m).set_index("cell") for m, _h, _b in metrics}
    for metric, _header, _scale in costs:
        summaries[metric] = aggregate(usable, metric).set_index("cell")
    paired = aggregate_paired(usable, SEG_HEADLINE).set_index("cell")
    if SEG_HEADLINE in usable:  # in the long form (CSV, W&B cells table), not a column here
        summaries[SEG_HEADLINE] = aggregate(usable, SEG_HEADLINE).set_index("cell")
    header = ["cell", "n", *(h for _m, h, _b in metrics), *(h for _m, h, _s in costs)]
    if not paired.empty:
        header.append(f"Δ mean Dice vs dw [95% CI, {_holm_text(paired)}] (wins)")
    rows, bold = [], set()
    for cell in cells:
        row = [cell, str(int(summaries[metrics[0][0]].loc[cell, "n"]))]
        row += [_with_ci(summaries[m].loc[cell]) for m, _h, _b in metrics]
        row += [number(summaries[m].loc[cell, "mean"] * s, 3) for m, _h, s in costs]
        if not paired.empty:
            row.append(_delta_text(usable, paired, cell))
        rows.append(row)
    domain_of = usable.groupby("cell")["data.held_out"].first()
    for column, (metric, _header, higher) in enumerate(metrics, start=2):
        for domain in sorted(set(domain_of)):  # compare cells tested on the same domain only
            same = [c for c in cells if domain_of[c] == domain]
            chosen = _bold_best(summaries[metric], same, column, higher)
            bold |= {(cells.index(same[r]), c) for r, c in chosen}
    notes = [
        "Dice (%, higher is better) and HD95 / ASD (pixels at the model's input size, lower is "
        "better) per test image, averaged; mean [Student-t 95% CI] over seeds (n); best mean "
        "per column among the cells with the same held-out domain in bold."
    ]
    if not paired.empty:
        notes.append(
            "Δ: paired difference of the mean of cup and disc Dice to the depthwise run with the "
            "same seed and data, mean [Student-t 95% CI, Holm-adjusted over the cells compared] "
            "and the Holm-adjusted p-value (pairs where the cell is higher / pairs)."
        )
    notes += _one_seed_notes(usable) + _unpaired_notes(usable, paired)
    return Table(header, rows, bold, notes), _long_form(summaries, paired, SEG_HEADLINE)


def seg_domain_numbers(runs: pd.DataFrame) -> pd.DataFrame:
    """The statistics of the paper's domain table in long form (its CSV): per ASPP variant
    (``atom``), held-out domain (``mean``: the mean over domains per seed, seeds with a run on
    every domain) and structure, the Dice's n, mean, std and Student-t 95% interval; the layout
    prior (``atom`` ``prior``) as its mean over runs."""
    usable = complete_runs(runs)
    domains = sorted(int(d) for d in usable["data.held_out"].unique())
    rows = []
    for atom in [a for a in ATOM_NAMES if a in set(usable["model.atom"])]:
        chosen = usable[usable["model.atom"] == atom]
        for domain in domains:
            of_domain = chosen[chosen["data.held_out"] == domain]
            for structure in ("cup", "disc"):
                stats = summarise(of_domain[f"dice_{structure}_pct"])
                rows.append({"atom": atom, "domain": str(domain), "structure": structure, **stats})
        for structure in ("cup", "disc"):
            by_seed = chosen.pivot_table(
                index="seed", columns="data.held_out", values=f"dice_{structure}_pct"
            ).reindex(columns=domains)
            stats = summarise(by_seed.dropna().mean(axis=1))  # seeds with a run on every domain
            rows.append({"atom": atom, "domain": "mean", "structure": structure, **stats})
    prior = {
        s: usable.groupby("data.held_out")[f"prior_dice_{s}_pct"].mean() for s in ("cup", "disc")
    }
    for domain in [*domains, "mean"]:  # the table's column order, as above
        for structure, per_domain in prior.items():
            mean = per_domain.mean() if domain == "mean" else per_domain.get(domain, math.nan)
            rows.append(
                {
                    "atom": "prior",
                    "domain": str(domain),
                    "structure": structure,
                    "mean": float(mean),
                }
            )
    return pd.DataFrame(
        rows, columns=["atom", "domain", "structure", "n", "mean", "std", "ci_low", "ci_high"]
    )


def seg_domain_table(runs: pd.DataFrame) -> Table:
    """The paper's layout: one row per ASPP variant (and the layout prior), Dice of cup and
    disc per held-out domain and their means over domains, ``mean ± std`` over seeds
    (``seg_domain_numbers``)."""
    long = seg_domain_numbers(runs)
    atoms = [atom for atom in dict.fromkeys(long["atom"]) if atom != "prior"]
    keys = list(dict.fromkeys(zip(long["domain"], long["structure"], strict=True)))  # D1 cup ..
    header = ["ASPP", *(f"D{d} {s}" if d != "mean" else f"mean {s}" for d, s in keys)]
    numbers = long.set_index(["atom", "domain", "structure"])
    rows, bold, columns = [], set(), {}
    for atom in atoms:
        row = [ATOM_NAMES[atom]]
        for domain, structure in keys:
            stats = numbers.loc[(atom, domain, structure)]
            columns.setdefault(len(row), []).append(stats["mean"])
            row.append(mean_std(stats))
        rows.append(row)
    for column, means in columns.items():
        finite = [value for value in means if math.isfinite(value)]
        best = max(finite, default=math.nan)
        bold |= {(r, column) for r, value in enumerate(means) if value == best}
    rows.append(
        ["layout prior (image-blind)"]
        + [number(numbers.loc[("prior", d, s), "mean"]) for d, s in keys]
    )
    notes = [
        "Dice (%) on the held-out domain's test split (Dk = domain k held out, the model trained "
        "on the other three), mean ± std over seeds; the means over domains use the seeds with a "
        "complete run on every domain (– if none); best per column in bold.",
        "Layout prior: the training masks' per-pixel majority used as the prediction for every "
        "test image, the floor an image-blind model reaches on layout-aligned data.",
    ]
    return Table(header, rows, bold, notes)


def verdict_table(
    verdicts: pd.DataFrame, metric_label: str = "headline metric", family: str | None = None
) -> Table:
    """One row per declared contrast: the paper's finding, the estimate with its Holm-adjusted
    Student-t interval and p-value, the verdict (marked provisional on fewer seeds than the
    preset plans), and the seeds an interval of the measured SD needs to decide. ``family``
    names the Holm family in the header (default: its size)."""
    header = [
        "contrast",
        "finding tested",
        "n",
        f"estimate [95% CI, {family or _holm_text(verdicts)}]",
        "p (Holm)",
        "verdict",
        "seeds to decide",
    ]
    rows, provisional = [], False
    for row in verdicts.to_dict("records"):
        verdict = f"**{row['verdict']}**"
        planned = row.get("seeds_planned", math.nan)  # absent from an older verdicts CSV
        if is_provisional(row["n"], planned):
            provisional = True
            verdict += f" (provisional: {int(row['n'])} of {int(planned)} seeds)"
        interval = ""
        if math.isfinite(row["ci_low_holm"]):
            low, high = (
                number(row["ci_low_holm"], sign=True),
                number(row["ci_high_holm"], sign=True),
            )
            interval = f" [{low}, {high}]"
        needed = row["seeds_needed"]
        if not math.isfinite(needed):
            needed_text = "–"
        elif needed > VERDICT_MAX_SEEDS:
            needed_text = f"> {VERDICT_MAX_SEEDS}"
        else:
            needed_text = str(int(needed))
        rows.append(
            [
                row["name"],
                row["finding"] or row["claim"],
                str(int(row["n"])),
                f"{number(row['mean'], sign=True)}{interval}",
                p_text(row["p_holm"]) if math.isfinite(row["p_holm"]) else "–",
                verdict,
                needed_text,
            ]
        )
    notes = [
        f"Estimate: the contrast of the {metric_label} (points), paired by seed (n seeds with "
        "every cell complete), Student-t interval Holm-adjusted over the study's contrasts. "
        "Verdict: reproduced when the interval lies on the finding's side (above 0 for a "
        "claimed gain, below the margin for a claimed absence of gain, within ± the margin "
        "for a claimed equality); contradicted when it lies on the other side (below the "
        "margin for a claimed gain, above 0 for a claimed absence of gain, beyond the margin "
        "for a claimed equality); otherwise undecided. Seeds to decide: how many seeds an "
        "interval with the measured mean and SD needs for a verdict."
    ]
    if len(verdicts) and (verdicts["n"] < 2).any():
        notes.append(
            "n below 2 gives no interval: n = 0, no seed has a complete run in every cell of "
            "the contrast yet (its runs are pending)."
        )
    if provisional:
        notes.append(
            "Provisional: fewer seeds have every cell of the contrast complete than the preset "
            "plans (runs pending, or run with fewer seeds); the verdict may change when the "
            "other seeds land."
        )
    if len(verdicts):
        margins = sorted(set(verdicts["margin"]))
        notes.append(
            f"Margin of a meaningful effect: {', '.join(number(x) for x in margins)} points."
        )
    return Table(header, rows, set(), notes)
