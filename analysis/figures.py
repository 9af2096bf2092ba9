"""The paper's figures from a study's runs frame (matplotlib; PNG + PDF, one style).

Every figure uses the Okabe-Ito colour-blind-safe palette (depthwise blue, TVConv vermillion),
labels its axes with units, shows the mean over seeds with its 95% Student-t CI as error bars
(or a band) and the single seeds as small dots, so a reader sees how many seeds stand behind a
point. Functions take the runs frame of ``analysis.frame`` and an output stem (``.../aug``) and
return the written paths.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.frame import (
    AUGMENT_ORDER,
    batch_thread_suffixes,
    complete_runs,
    precision_text,
    select_rank,
    split_profile,
    value_rank,
    varying_precision,
)
from analysis.stats import paired_differences, summarise
from analysis.tables import HEADLINE, SEG_HEADLINE

ATOM_COLOURS = {"aspp": "#009E73", "dw": "#0072B2", "tvconv": "#D55E00"}
ATOM_LABELS = {"aspp": "ASPP (dilated)", "dw": "depthwise", "tvconv": "TVConv"}
EXTRA_COLOURS = ("#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
ACC_LABEL = "mean verification accuracy (%)"
GAP_LABEL = "TVConv − depthwise (pp, paired by seed)"
METRIC_LABELS = {HEADLINE: ACC_LABEL, SEG_HEADLINE: "mean Dice of cup and disc (%)"}
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "svg.hashsalt": "tvconv",
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    with plt.rc_context(RC):
        yield


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` (no timestamps in the metadata) and close."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return paths


def _summary_by(frame: pd.DataFrame, group: str, metric: str, order: list) -> pd.DataFrame:
    rows = []
    for value in order:
        values = frame.loc[frame[group] == value, metric]
        if len(values):
            rows.append({group: value, **summarise(values), "values": list(values)})
    return pd.DataFrame(rows)


def _errorbars(summary: pd.DataFrame) -> np.ndarray:
    """Asymmetric error-bar lengths from the CI (zero where there is none)."""
    low = (summary["mean"] - summary["ci_low"]).fillna(0).clip(lower=0)
    high = (summary["ci_high"] - summary["mean"]).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def _points(ax: plt.Axes, x: np.ndarray, summary: pd.DataFrame, colour: str, label: str, **kw):
    """Mean with CI error bars, and each seed as a small dot."""
    ax.errorbar(
        x,
        summary["mean"],
        yerr=_errorbars(summary),
        color=colour,
        marker=kw.pop("marker", "o"),
        markersize=5,
        capsize=3,
        label=label,
        **kw,
    )
    for xi, values in zip(x, summary["values"], strict=True):
        ax.scatter([xi] * len(values), values, s=9, color=colour, alpha=0.45, linewidths=0)


def _baseline_band(ax: plt.Axes, frame: pd.DataFrame, metric: str) -> None:
    """The depthwise baseline as a horizontal line (mean) and band (CI)."""
    values = frame.loc[frame["model.atom"] == "dw", metric]
    if values.empty:
        return
    stats = summarise(values)
    colour = ATOM_COLOURS["dw"]
    ax.axhline(stats["mean"], color=colour, linestyle="--", linewidth=1.2, label="depthwise")
    if math.isfinite(stats["ci_low"]):
        ax.axhspan(stats["ci_low"], stats["ci_high"], color=colour, alpha=0.12, linewidth=0)


def _empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()


def _categorical_axis(ax: plt.Axes, labels: list[str], xlabel: str, rotation: int = 0) -> None:
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=rotation, ha="right" if rotation else "center")
    ax.set_xlabel(xlabel)
    ax.set_xlim(-0.5, len(labels) - 0.5)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def metric_name(metric: str) -> str:
    """A short name for titles: accuracy (face), Dice (fundus)."""
    return "Dice" if metric.startswith("dice") else "accuracy"


# ----------------------------------------------------------------- question 1: augmentation


ROLLED_ANYWHERE = 0.5  # ``data.synthetic.free_shift`` of the first layout-free control
LAYOUT_FREE = "layout-free"


def augmentation_level(frame: pd.DataFrame) -> pd.Series:
    """The aug study's x axis: the augmentation on aligned data; on the layout-free data
    ``layout-free``, with how far its faces are rolled when not anywhere (``rolled ≤ 0.25``)
    and its augmentation when not the paper's flip."""
    layout = frame.get("data.synthetic.layout", pd.Series("aligned", index=frame.index))
    shift = frame.get("data.synthetic.free_shift", pd.Series(ROLLED_ANYWHERE, index=frame.index))

    def level(augment: str, layout: str, shift: float) -> str:
        if layout != "free":
            return augment
        details = [f"rolled ≤ {shift:g}"] if shift != ROLLED_ANYWHERE else []
        details += [augment] if augment != "hflip" else []
        return f"{LAYOUT_FREE} ({', '.join(details)})" if details else LAYOUT_FREE

    return pd.Series(
        [level(*row) for row in zip(frame["data.augment"], layout, shift, strict=True)],
        index=frame.index,
    )


def augmentation_order(levels: set[str]) -> list[str]:
    """The ladder's augmentations first (layout-preserving to destroying), then any other
    augmentation of aligned data, then the layout-free levels: no cell is left off."""
    known = [level for level in AUGMENT_ORDER if level in levels]
    free = sorted(level for level in levels if level.startswith(LAYOUT_FREE))
    other = sorted(levels - set(known) - set(free))
    return [*known, *other, *free]


def aug_figure(runs: pd.DataFrame, stem: Path, metric: str = HEADLINE) -> list[Path]:
    usable = complete_runs(runs).assign(level=lambda f: augmentation_level(f))
    order = augmentation_order(set(usable["level"]))
    with style():
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        for offset, atom in ((-0.08, "dw"), (0.08, "tvconv")):
            summary = _summary_by(usable[usable["model.atom"] == atom], "level", metric, order)
            if summary.empty:
                continue
            x = np.array([order.index(v) for v in summary["level"]]) + offset
            # categorical levels (and the layout-free controls): no line between them
            _points(left, x, summary, ATOM_COLOURS[atom], ATOM_LABELS[atom], linestyle="none")
        _categorical_axis(left, order, "augmentation (layout-preserving → destroying)", 30)
        left.set_ylabel(metric_label(metric))
        left.set_title(f"{metric_name(metric)} per augmentation")
        left.legend(loc="best")
        pairs = paired_differences(runs, metric)
        pairs["level"] = pairs["run_id"].map(usable.set_index("run_id")["level"])
        gaps = _summary_by(pairs, "level", "diff", order)
        if gaps.empty:
            _empty(right, "no TVConv/depthwise pairs")
        else:
            x = np.array([order.index(v) for v in gaps["level"]])
            _points(right, x, gaps, "#000000", "TVConv − depthwise", linestyle="none")
            right.axhline(0, color="grey", linewidth=1)
            _categorical_axis(right, order, "augmentation (layout-preserving → destroying)", 30)
            right.set_ylabel(GAP_LABEL)
            right.set_title("gap, mean and 95% CI over seeds")
        fig.tight_layout()
        return save(fig, stem)


# --------------------------------------------------------------- question 2: initialisation


def _mode(series: pd.Series) -> object:
    counts = series.value_counts()
    return counts.index[0] if len(counts) else None


def init_figure(runs: pd.DataFrame, stem: Path, metric: str = HEADLINE) -> list[Path]:
    usable = complete_runs(runs)
    tv = usable[usable["model.atom"] == "tvconv"]
    default_maps, default_init = _mode(tv["model.affinity_channels"]), _mode(tv["model.init"])
    with style():
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), width_ratios=(3, 2))
        by_init = tv[tv["model.affinity_channels"] == default_maps]
        inits = _ordered("model.init", by_init["model.init"])
        summary = _summary_by(by_init, "model.init", metric, inits)
        _baseline_band(left, usable, metric)
        if not summary.empty:
            _points(
                left,
                np.arange(len(summary)),
                summary,
                ATOM_COLOURS["tvconv"],
                f"TVConv, c_A = {default_maps}",
                linestyle="none",
            )
        _categorical_axis(left, inits, "affinity-map initialisation")
        left.set_ylabel(metric_label(metric))
        left.set_title(f"{metric_name(metric)} per initialisation")
        left.legend(loc="best")
        by_maps = tv[tv["model.init"] == default_init]
        counts = sorted(by_maps["model.affinity_channels"].unique())
        summary = _summary_by(by_maps, "model.affinity_channels", metric, counts)
        _baseline_band(right, usable, metric)
        if not summary.empty:
            _points(
                right,
                np.log2(summary["model.affinity_channels"].astype(float)),
                summary,
                ATOM_COLOURS["tvconv"],
                f"TVConv, init = {default_init}",
            )
        right.set_xticks(np.log2(np.array(counts, dtype=float)))
        right.set_xticklabels([str(c) for c in counts])
        right.set_xlabel("affinity maps c_A (log scale)")
        right.set_ylabel(metric_label(metric))
        right.set_title(f"{metric_name(metric)} vs number of affinity maps")
        right.legend(loc="best")
        fig.tight_layout()
        return save(fig, stem)


def _ordered(column: str, values: pd.Series) -> list:
    return sorted(values.dropna().unique(), key=lambda v: value_rank(column, v))


# ------------------------------------------------------------- question 3: weight generator


def weightgen_figure(runs: pd.DataFrame, stem: Path, metric: str = HEADLINE) -> list[Path]:
    usable = complete_runs(runs)
    tv = usable[usable["model.atom"] == "tvconv"]
    generated = tv[tv["model.generator"].astype(bool)]
    widths = sorted(generated["model.inter_channels"].unique())
    depths = sorted(generated["model.inter_layers"].unique())
    grid = np.full((len(depths), len(widths)), np.nan)
    spread = np.full_like(grid, np.nan)
    for (depth, width), values in generated.groupby(["model.inter_layers", "model.inter_channels"])[
        metric
    ]:
        stats = summarise(values)
        grid[depths.index(depth), widths.index(width)] = stats["mean"]
        spread[depths.index(depth), widths.index(width)] = stats["std"]
    controls = [("depthwise", usable[usable["model.atom"] == "dw"], ATOM_COLOURS["dw"])]
    controls.append(("no generator", tv[~tv["model.generator"].astype(bool)], EXTRA_COLOURS[0]))
    with style():
        fig, (left, right) = plt.subplots(
            1, 2, figsize=(9, 3.4), width_ratios=(max(len(widths), 2) + 1, 2)
        )
        # one colour scale for the grid and the controls' means: a colour step is then never
        # read as an effect larger than the gap to the baseline
        reference = [frame[metric].mean() for _l, frame, _c in controls if not frame.empty]
        span = [*grid[np.isfinite(grid)], *reference] or [0.0, 1.0]
        image = left.imshow(
            np.ma.masked_invalid(grid),
            cmap="viridis",
            aspect="auto",
            origin="lower",
            vmin=min(span),
            vmax=max(span),
        )
        left.set_facecolor("#dddddd")
        for (row, col), value in np.ndenumerate(grid):
            text = "not run" if not np.isfinite(value) else f"{value:.1f}"
            if np.isfinite(spread[row, col]):
                text += f"\n± {spread[row, col]:.1f}"
            light = np.isfinite(value) and value < (min(span) + max(span)) / 2
            left.text(
                col,
                row,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if light else "black",
            )
        left.set_xticks(range(len(widths)))
        left.set_xticklabels([str(w) for w in widths])
        left.set_yticks(range(len(depths)))
        left.set_yticklabels([str(d) for d in depths])
        left.set_xlabel("generator width (inter channels)")
        left.set_ylabel("generator depth (inter layers)")
        left.set_title(f"TVConv {metric_name(metric)} (%), mean ± std over seeds")
        left.grid(False)
        fig.colorbar(image, ax=left, label=metric_label(metric), fraction=0.05)
        labels = []
        for label, frame, colour in controls:
            if frame.empty:
                continue
            summary = pd.DataFrame([{**summarise(frame[metric]), "values": list(frame[metric])}])
            _points(right, np.array([len(labels)]), summary, colour, label, linestyle="none")
            labels.append(label)
        _categorical_axis(right, labels, "control")
        right.set_ylabel(metric_label(metric))
        right.set_title("controls")
        fig.tight_layout()
        return save(fig, stem)


# ----------------------------------------------------------------- question 4: insertion depth


def depth_figure(runs: pd.DataFrame, stem: Path, metric: str = HEADLINE) -> list[Path]:
    usable = complete_runs(runs)
    pattern = usable["model.select"].where(usable["model.atom"] == "tvconv", "none (dw)")
    usable = usable.assign(pattern=pattern)
    order = ["none (dw)"] if (pattern == "none (dw)").any() else []
    order += sorted(set(pattern) - {"none (dw)"}, key=select_rank)
    summary = _summary_by(usable, "pattern", metric, order)
    dw_params = usable.loc[usable["model.atom"] == "dw", "deployed_params"]
    base_params = dw_params.iloc[0] if len(dw_params) else usable["deployed_params"].min()
    extra = [
        (usable.loc[usable["pattern"] == p, "deployed_params"].iloc[0] - base_params) * 1e-6
        for p in order
    ]
    with style():
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        for i, row in enumerate(summary.itertuples(index=False)):
            atom = "dw" if row.pattern == "none (dw)" else "tvconv"
            one = pd.DataFrame([row._asdict()])
            _points(ax, np.array([i]), one, ATOM_COLOURS[atom], None, linestyle="none")
        _categorical_axis(ax, order, "TVConv insertion pattern (sites, shallow → deep)", 30)
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"{metric_name(metric)} vs where TVConv replaces the depthwise conv")
        cost = ax.twinx()
        cost.plot(
            range(len(order)),
            extra,
            "D",
            color=EXTRA_COLOURS[1],
            markerfacecolor="none",
            label="cached params added",
        )
        cost.set_ylabel("cached parameters added (M)", color=EXTRA_COLOURS[1])
        cost.tick_params(axis="y", colors=EXTRA_COLOURS[1])
        cost.spines["right"].set_visible(True)
        cost.grid(False)
        cost.set_ylim(bottom=0)
        handles = [
            matplotlib.lines.Line2D(
                [],
                [],
                color=ATOM_COLOURS[a],
                marker="o",
                linestyle="none",
                label=f"{ATOM_LABELS[a]} {metric_name(metric)} (mean, 95% CI)",
            )
            for a in ("dw", "tvconv")
        ]
        handles += cost.get_legend_handles_labels()[0]
        cost.legend(handles=handles, loc="upper left", fontsize=7)
        fig.tight_layout()
        return save(fig, stem)


# ------------------------------------------------------------------------- trade-off


def family(model_name: str) -> str:
    return model_name.rsplit("_x", 1)[0]


def width_label(model_name: str) -> str:
    return "x" + model_name.rsplit("_x", 1)[1].replace("_", ".")


def tradeoff_points(runs: pd.DataFrame, metric: str = HEADLINE) -> pd.DataFrame:
    """One row per (model, atom): mean accuracy with CI, MACs, deployed params."""
    usable = complete_runs(runs)
    rows = []
    for (name, atom), frame in usable.groupby(["model.name", "model.atom"], sort=True):
        rows.append(
            {
                "model": name,
                "family": family(name),
                "width": width_label(name),
                "atom": atom,
                "macs": float(frame["macs"].iloc[0]),
                "deployed_params": float(frame["deployed_params"].iloc[0]),
                **summarise(frame[metric]),
                "values": list(frame[metric]),
            }
        )
    return pd.DataFrame(rows)


def tradeoff_readoffs(points: pd.DataFrame, runs: pd.DataFrame | None = None) -> list[dict]:
    """The paper's two read-offs per TVConv point of a family.

    ``macs_ratio``: MACs the depthwise curve needs to reach the TVConv accuracy (linear
    interpolation in log MACs along the dw points in MACs order, first crossing) / the TVConv
    MACs; ``bound`` says ``>=`` when TVConv beats every dw point (ratio to the largest dw model),
    ``<`` when it is below every dw point. ``gain_pp``: TVConv - dw accuracy at equal MACs (the
    same width), paired by seed when ``runs`` is given.
    """
    out = []
    for name, group in points.groupby("family", sort=True):
        dw = group[group["atom"] == "dw"].sort_values("macs")
        for tv in group[group["atom"] == "tvconv"].sort_values("macs").itertuples(index=False):
            result = {"family": name, "model": tv.model, "width": tv.width, "acc": tv.mean}
            result.update(_equal_accuracy(dw, tv.mean, tv.macs))
            same = dw[dw["model"] == tv.model]
            result["gain_pp"] = float(tv.mean - same["mean"].iloc[0]) if len(same) else math.nan
            if runs is not None and len(same):
                pairs = paired_differences(runs[runs["model.name"] == tv.model], HEADLINE)
                result["gain_pp"] = float(pairs["diff"].mean()) if len(pairs) else math.nan
            out.append(result)
    return out


def _equal_accuracy(dw: pd.DataFrame, accuracy: float, macs: float) -> dict:
    if dw.empty:
        return {"macs_ratio": math.nan, "bound": ""}
    log_macs, acc = np.log(dw["macs"].to_numpy()), dw["mean"].to_numpy()
    for i in range(len(acc) - 1):
        low, high = acc[i], acc[i + 1]
        if min(low, high) <= accuracy <= max(low, high) and high != low:
            t = (accuracy - low) / (high - low)
            needed = math.exp(log_macs[i] + t * (log_macs[i + 1] - log_macs[i]))
            return {"macs_ratio": needed / macs, "bound": ""}
    if np.isclose(acc, accuracy).any():
        return {
            "macs_ratio": float(dw["macs"].to_numpy()[np.isclose(acc, accuracy)][0] / macs),
            "bound": "",
        }
    if accuracy > acc.max():
        return {"macs_ratio": float(dw["macs"].max() / macs), "bound": ">="}
    return {"macs_ratio": float(dw["macs"].min() / macs), "bound": "<"}


def tradeoff_figure(
    runs: pd.DataFrame, stem: Path, latency: pd.DataFrame | None = None, metric: str = HEADLINE
) -> list[Path]:
    """Accuracy vs MMACs (top) and vs measured latency (bottom, when profile records match the
    models at the study's input size) per backbone family."""
    points = tradeoff_points(runs, metric)
    families = sorted(points["family"].unique())
    readoffs = tradeoff_readoffs(points, runs)
    if latency is not None and not latency.empty:
        points = points.merge(latency, on=["model", "atom"], how="left")
    else:
        points["latency_ms"] = np.nan
    with style():
        fig, axes = plt.subplots(
            2, len(families), figsize=(4.6 * len(families), 6.4), squeeze=False
        )
        for column, name in enumerate(families):
            group = points[points["family"] == name]
            top, bottom = axes[0, column], axes[1, column]
            for atom in ("dw", "tvconv"):
                line = group[group["atom"] == atom].sort_values("macs")
                if line.empty:
                    continue
                nudge = 0.985 if atom == "dw" else 1.015  # equal MACs: side by side
                x = line["macs"].to_numpy() * 1e-6 * nudge
                _points(top, x, line, ATOM_COLOURS[atom], ATOM_LABELS[atom])
                for xi, row in zip(x, line.itertuples(index=False), strict=True):
                    top.annotate(
                        row.width,
                        (xi, row.mean),
                        textcoords="offset points",
                        xytext=(-4 if atom == "dw" else 4, 4),
                        ha="right" if atom == "dw" else "left",
                        fontsize=7,
                        color=ATOM_COLOURS[atom],
                    )
                timed = line.dropna(subset=["latency_ms"])
                if not timed.empty:
                    _points(
                        bottom,
                        timed["latency_ms"].to_numpy(),
                        timed,
                        ATOM_COLOURS[atom],
                        ATOM_LABELS[atom],
                    )
            top.set_xscale("log")
            ticks = sorted(group["macs"].unique() * 1e-6)
            top.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
            top.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            top.set_xlim(min(ticks) / 1.15, max(ticks) * 1.15)
            top.set_ylabel(ACC_LABEL)
            top.set_title(name.replace("_", " "))
            notes = [_readoff_text(r) for r in readoffs if r["family"] == name]
            top.set_xlabel("\n".join(["inference cost (MMACs per image, log scale)", *notes]))
            top.legend(loc="best")
            if group["latency_ms"].notna().any():
                bottom.set_xlabel("latency (ms per image, batch 1, 1 thread)")
                bottom.set_ylabel(ACC_LABEL)
                bottom.legend(loc="best")
            else:
                _empty(
                    bottom,
                    "no profile records for these models at this input size\n"
                    "(run the profile study)",
                )
        fig.tight_layout()
        return save(fig, stem)


def _readoff_text(readoff: dict) -> str:
    ratio, bound, width = readoff["macs_ratio"], readoff["bound"], readoff["width"]
    if not math.isfinite(ratio):
        equal_acc = "no dw curve"
    elif bound == ">=":
        saving = f", saves ≥ {ratio:.1f}x MACs" if ratio > 1.05 else ""
        equal_acc = f"above every dw width{saving}"
    elif bound == "<":
        equal_acc = "below every dw width"
    else:
        equal_acc = f"dw needs {ratio:.1f}x the MACs to match"
    return f"TVConv {width}: {readoff['gain_pp']:+.1f} pp vs dw at equal MACs; {equal_acc}"


# --------------------------------------------------------------------------------- profile


def model_label(model_name: str) -> str:
    """``mobilenet_v2_x0_1`` -> ``MBv2 x0.1``; ``shufflenet_v2_x0_5`` -> ``SNv2 x0.5``."""
    short = {"mobilenet_v2": "MBv2", "shufflenet_v2": "SNv2"}
    return f"{short.get(family(model_name), family(model_name))} {width_label(model_name)}"


def profile_figure(runs: pd.DataFrame, stem: Path) -> list[Path]:
    """Throughput vs batch (deployed form at 1 and 2 threads, training form), the TVConv / dw
    time ratio of each deployed model, MACs per counter, and the single-layer grid."""
    models, layers = split_profile(runs)
    precision = varying_precision(pd.concat([models, layers]))
    deploy = models[models["profile.form"] == "deploy"]
    with style():
        fig, axes = plt.subplots(3, 2, figsize=(10, 11))
        for column, threads in enumerate((1, 2)):
            _throughput_panel(axes[0, column], deploy, threads, precision)
        _training_panel(axes[1, 0], models[models["profile.form"] == "train"], precision)
        _ratio_panel(axes[1, 1], deploy, precision)
        counted = ["profile.model", "profile.input_size", "profile.atom"]  # MACs: any dtype
        _counter_panel(axes[2, 0], deploy.drop_duplicates(counted))
        _layer_panel(axes[2, 1], layers, precision)
        fig.tight_layout()
        return save(fig, stem)


def _throughput(row: dict, threads: int) -> tuple[list[int], list[float]]:
    chosen = sorted(
        (r["batch_size"], r["images_per_s"]) for r in row["latency"] if r["threads"] == threads
    )
    return [b for b, _ in chosen], [v for _, v in chosen]


def _model_markers(models: pd.DataFrame) -> dict:
    keys = sorted(
        {
            (m, s)
            for m, s in zip(models["profile.model"], models["profile.input_size"], strict=True)
        },
        key=lambda k: (-k[1], k[0]),
    )
    return dict(zip(keys, "osD^vp<>hX", strict=False))


def _batch_axis(ax: plt.Axes) -> None:
    plain = matplotlib.ticker.FuncFormatter(lambda value, _position: f"{value:g}")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(plain)
    ax.set_yscale("log")
    # 1, 2, 5 per decade: a panel spanning less than a decade still gets labelled ticks
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("batch size (log scale)")
    ax.set_ylabel("throughput (images/s, log scale)")


def _throughput_panel(
    ax: plt.Axes, deploy: pd.DataFrame, threads: int, precision: list[str]
) -> None:
    if deploy.empty:
        _empty(ax, "no deployed-form runs")
        return
    if not any(_throughput(row, threads)[0] for row in deploy.to_dict("records")):
        _empty(ax, f"no deployed-form runs timed at {threads} thread{'s' if threads > 1 else ''}")
        return
    markers = _model_markers(deploy)
    for row in deploy.to_dict("records"):
        batches, throughput = _throughput(row, threads)
        key = (row["profile.model"], row["profile.input_size"])
        ax.plot(
            batches,
            throughput,
            marker=markers[key],
            markersize=4,
            color=ATOM_COLOURS[row["profile.atom"]],
            linestyle="-" if row["profile.input_size"] == max(k[1] for k in markers) else ":",
            label=f"{model_label(key[0])} @{key[1]}px {ATOM_LABELS[row['profile.atom']]}"
            + precision_text(row, precision),
        )
    _batch_axis(ax)
    ax.set_title(f"deployed form, inference, {threads} thread{'s' if threads > 1 else ''}")
    timed_at_two = any(_throughput(row, 2)[0] for row in deploy.to_dict("records"))
    if threads == 2 or not timed_at_two:  # the legend goes to the right, once
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))


def _training_panel(ax: plt.Axes, train: pd.DataFrame, precision: list[str]) -> None:
    if train.empty:
        _empty(ax, "no training-form runs")
        return
    timed = [
        row for row in train.to_dict("records") if _throughput(row, 1)[0] or _throughput(row, 2)[0]
    ]
    if not timed:
        _empty(ax, "no training-form runs timed at 1 or 2 threads")
        return
    for row in timed:
        for threads, linestyle in ((1, "-"), (2, "--")):
            batches, throughput = _throughput(row, threads)
            if batches:
                ax.plot(
                    batches,
                    throughput,
                    linestyle=linestyle,
                    marker="o",
                    markersize=4,
                    color=ATOM_COLOURS[row["profile.atom"]],
                    label=f"{model_label(row['profile.model'])} @{row['profile.input_size']}px "
                    f"{ATOM_LABELS[row['profile.atom']]}{precision_text(row, precision)}, "
                    f"{threads} thread{'s' if threads > 1 else ''}",
                )
    _batch_axis(ax)
    ax.set_title("training form, full step (forward, backward, SGD)")
    ax.legend(fontsize=7, loc="best")


def _ratio_panel(ax: plt.Axes, deploy: pd.DataFrame, precision: list[str]) -> None:
    """TVConv / dw latency of the deployed form, per model (and device / dtype where they
    vary) at each batch and thread count."""
    pairs = []
    for key, group in deploy.groupby(["profile.model", "profile.input_size", *precision]):
        dw = group[group["profile.atom"] == "dw"]
        tv = group[group["profile.atom"] == "tvconv"]
        if dw.empty or tv.empty:
            continue
        model, size, *setting = key
        pairs.append(
            (" ".join([f"{model_label(model)} @{size}", *setting]), dw.iloc[0], tv.iloc[0])
        )
    suffixes = batch_thread_suffixes(deploy, "latency_ms")
    if not pairs or not suffixes:
        _empty(ax, "no dw / TVConv pairs")
        return
    width = 0.8 / len(suffixes)
    for i, suffix in enumerate(suffixes):
        ratios = [tv[f"latency_ms_{suffix}"] / dw[f"latency_ms_{suffix}"] for _l, dw, tv in pairs]
        batch, threads = suffix[1:].split("_t")
        ax.bar(
            np.arange(len(pairs)) + (i - (len(suffixes) - 1) / 2) * width,
            ratios,
            width,
            color=EXTRA_COLOURS[i % len(EXTRA_COLOURS)],
            label=f"batch {batch}, {threads} thread{'s' if threads != '1' else ''}",
        )
    ax.axhline(1, color="black", linewidth=1)
    ax.margins(y=0.35)  # headroom: the legend sits above the tallest bar, not on it
    _categorical_axis(ax, [label for label, _dw, _tv in pairs], "deployed model @ input px", 30)
    ax.set_ylabel("TVConv / depthwise latency (equal MACs)")
    ax.set_title("what equal MACs cost in time (1 = parity)")
    ax.legend(fontsize=7, ncol=2, loc="upper left")


COUNTERS = (
    ("macs", "analytic"),
    ("macs_fvcore", "fvcore + handles"),
    ("macs_ptflops", "ptflops + hooks"),
    ("macs_flop_counter", "FlopCounterMode + formula"),
    ("macs_stock", "FlopCounterMode as shipped"),
)


def _counter_panel(ax: plt.Axes, models: pd.DataFrame) -> None:
    present = [(c, label) for c, label in COUNTERS if c in models and models[c].notna().any()]
    tv = models[models["profile.atom"] == "tvconv"].sort_values("macs")
    if tv.empty or len(present) < 2:
        _empty(ax, "no per-counter MACs in these records")
        return
    width = 0.8 / len(present)
    labels = [
        f"{model_label(m)} @{s}"
        for m, s in zip(tv["profile.model"], tv["profile.input_size"], strict=True)
    ]
    for i, (column, label) in enumerate(present):
        colour = ([ATOM_COLOURS["tvconv"], *EXTRA_COLOURS])[i]
        ax.bar(
            np.arange(len(tv)) + (i - (len(present) - 1) / 2) * width,
            tv[column] * 1e-6,
            width,
            label=label,
            color=colour,
        )
    _categorical_axis(ax, labels, "deployed TVConv model @ input px", 30)
    ax.set_yscale("log")
    ax.set_ylabel("MMACs per image (log scale)")
    ax.set_title("MACs by counter (off-the-shelf counts TVConv as 0)")
    ax.legend(fontsize=7, loc="upper left")


def _layer_panel(ax: plt.Axes, layers: pd.DataFrame, precision: list[str]) -> None:
    if layers.empty:
        _empty(ax, "no single-layer runs")
        return
    layers = layers.sort_values(
        ["profile.input_size", "profile.layer_channels", *precision],
        ascending=[False, True, *(True for _ in precision)],
    )
    labels = [
        f"c{row['profile.layer_channels']} {row['profile.input_size']}px "
        f"s{row['profile.layer_stride']}{precision_text(row, precision)}"
        for row in layers.to_dict("records")
    ]
    suffixes = batch_thread_suffixes(layers, "ratio")
    width = 0.8 / max(len(suffixes), 1)
    for i, suffix in enumerate(suffixes):
        batch, threads = suffix[1:].split("_t")
        ax.bar(
            np.arange(len(layers)) + (i - (len(suffixes) - 1) / 2) * width,
            layers[f"ratio_{suffix}"],
            width,
            color=EXTRA_COLOURS[i % len(EXTRA_COLOURS)],
            label=f"batch {batch}, {threads} thread{'s' if threads != '1' else ''}",
        )
    ax.axhline(1, color="black", linewidth=1)
    ax.axhline(1.25, color="grey", linewidth=1, linestyle=":", label="kernels target (1.25)")
    ax.margins(y=0.35)  # headroom for the legend above the bars
    _categorical_axis(ax, labels, "layer (channels, input, stride)", 30)
    ax.set_ylabel("cached TVConv / depthwise time")
    ax.set_title("single layer: cached TVConv vs depthwise conv")
    ax.legend(fontsize=7, ncol=2, loc="upper right")


# --------------------------------------------------------------------------- segmentation


def seg_figure(runs: pd.DataFrame, stem: Path) -> list[Path]:
    """Dice of cup and disc per held-out domain, one series per ASPP variant (mean, 95% CI,
    seeds), with the image-blind layout prior as a black bar."""
    usable = complete_runs(runs)
    domains = sorted(int(d) for d in usable["data.held_out"].unique())
    atoms = [a for a in ATOM_LABELS if a in set(usable["model.atom"])]
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=False)
        for ax, structure in zip(axes, ("cup", "disc"), strict=True):
            metric = f"dice_{structure}_pct"
            for i, atom in enumerate(atoms):
                offset = (i - (len(atoms) - 1) / 2) * 0.14
                summary = _summary_by(
                    usable[usable["model.atom"] == atom], "data.held_out", metric, domains
                )
                x = np.array([domains.index(d) for d in summary["data.held_out"]]) + offset
                _points(ax, x, summary, ATOM_COLOURS[atom], ATOM_LABELS[atom], linestyle="none")
            prior = usable.groupby("data.held_out")[f"prior_dice_{structure}_pct"].mean()
            ax.scatter(
                [domains.index(d) for d in prior.index],
                prior.to_numpy(),
                marker="_",
                s=400,
                color="#000000",
                label="layout prior",
            )
            _categorical_axis(ax, [f"domain {d}" for d in domains], "held-out domain")
            ax.set_ylabel(f"{structure} Dice (%)")
            ax.set_title(f"optic {structure}, leave-one-domain-out")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.92))
        return save(fig, stem)


def _mask_colours(masks: np.ndarray) -> np.ndarray:
    """(2, H, W) cup / disc masks -> an RGB picture: background black, rim grey, cup white."""
    picture = np.zeros((*masks.shape[1:], 3))
    picture[masks[1]] = 0.5
    picture[masks[0]] = 1.0
    return picture


def seg_examples_figure(examples: list[dict], stem: Path) -> list[Path]:
    """One row per example: the image, the ground truth and each variant's post-processed
    prediction (dicts with ``domain``, ``image`` (3, H, W) uint8, ``truth`` (2, H, W) bool and
    ``predictions`` {atom: (2, H, W) bool})."""
    if not examples:
        raise ValueError("seg_examples_figure needs at least one example")
    atoms = [a for a in ATOM_LABELS if a in examples[0]["predictions"]]
    columns = 2 + len(atoms)
    with style():
        fig, axes = plt.subplots(
            len(examples), columns, figsize=(1.6 * columns, 1.7 * len(examples)), squeeze=False
        )
        for row, example in zip(axes, examples, strict=True):
            panels = [
                ("image", np.transpose(np.asarray(example["image"]), (1, 2, 0))),
                ("ground truth", _mask_colours(np.asarray(example["truth"]))),
            ] + [
                (ATOM_LABELS[a], _mask_colours(np.asarray(example["predictions"][a])))
                for a in atoms
            ]
            for ax, (title, picture) in zip(row, panels, strict=True):
                ax.imshow(picture, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                ax.set_title(title, fontsize=8)
            row[0].set_ylabel(f"domain {example['domain']}", fontsize=8)
        fig.tight_layout()
        return save(fig, stem)
