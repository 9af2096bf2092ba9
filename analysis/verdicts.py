"""Verdicts: each study's primary contrasts, estimated paired by seed, judged against a finding.

A study spec declares its contrasts (``contrasts:`` in ``studies/<study>.yaml``, parsed by
``studies.spec``): a ``plus`` and a ``minus`` list of cell selectors ({config key: value}) and the
claim about ``sum(plus) - sum(minus)`` (the paper's, for the four questions): ``positive``,
``negative``, ``none`` (no gain) or ``equal`` (within the margin either way). Per seed with a
complete run in every selected cell the contrast is one number (e.g. the TVConv - dw gap under
the flip minus that under ``shift20``); over seeds it gets a Student-t interval, Holm-adjusted
across the study's contrasts (``analysis.stats``), and one word:

- claim ``positive`` (``negative`` mirrors it): **reproduced** when the interval lies above 0;
  otherwise **contradicted** when it lies below the margin (no gain of a meaningful size, or a
  loss);
- claim ``none``: **contradicted** when the interval lies above 0 (it does help); otherwise
  **reproduced** when it lies below the margin;
- claim ``equal`` (e.g. "doubling the steps changes nothing"): **reproduced** when the interval
  lies within ± the margin; **contradicted** when it lies entirely beyond it, on either side;
- otherwise **undecided**, with the number of seeds at which an interval of the same mean and
  standard deviation would decide (``seeds_needed``; unknown below two seeds).

A verdict on fewer seeds than the preset plans (``seeds_planned``, from the spec; runs still
pending, or a study run with fewer ``--seeds``) is **provisional**: the tables say so next to the
word, which may change when the other seeds land.

The margin (``studies.spec.MARGIN``, 1 point of the headline metric unless a contrast sets its
own) is the smallest effect the verdict treats as meaningful. A gain that is significant but
smaller than the margin still counts as a gain (the checks against 0 come first). Holm's
step-down levels control the decisions about 0 across the family; the margin checks reuse the
same intervals, which for a family of two or three is close to, not exactly, familywise control.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.frame import complete_runs
from analysis.stats import adjust_family, summarise, t_quantile, t_test_p
from studies.spec import (
    CLAIMS,
    Contrast,
    Spec,
    SpecError,
    list_studies,
    load_spec,
    question_of,
    selects,
)

MAX_SEEDS = 10_000
VERDICT_COLUMNS = [
    "name",
    "claim",
    "finding",
    "n",
    "mean",
    "std",
    "p",
    "p_holm",
    "level_holm",
    "ci_low_holm",
    "ci_high_holm",
    "verdict",
    "seeds_needed",
    "margin",
    "seeds_planned",
]


def matching_cells(runs: pd.DataFrame, selector: dict) -> list[str]:
    """The cells of ``runs`` (the tidy frame) whose config has every ``selector`` value."""
    return list(
        dict.fromkeys(row["cell"] for row in runs.to_dict("records") if selects(selector, row))
    )


def resolve(runs: pd.DataFrame, contrast: Contrast) -> list[tuple[float, str]] | None:
    """(weight, cell) terms of ``contrast`` among the complete runs; None when a selector
    matches no cell (the contrast was not run in this preset). A selector matching several cells
    is an error."""
    runs = complete_runs(runs)
    terms = []
    for weight, selectors in ((1.0, contrast.plus), (-1.0, contrast.minus)):
        for selector in selectors:
            cells = matching_cells(runs, selector)
            if not cells:
                return None
            if len(cells) > 1:
                raise ValueError(
                    f"contrast {contrast.name!r}: selector {selector} matches several cells "
                    f"({', '.join(cells)}); add keys to pick one"
                )
            terms.append((weight, cells[0]))
    return terms


def contrast_values(runs: pd.DataFrame, terms: list[tuple[float, str]], metric: str) -> pd.Series:
    """Per seed with a complete run in every term's cell: the weighted sum of ``metric``. Two
    complete runs of one cell with the same seed (different configs under one label) are an
    error: pairing them would be arbitrary."""
    cells = list(dict.fromkeys(cell for _w, cell in terms))
    usable = complete_runs(runs)
    if metric not in usable:
        return pd.Series(dtype=float)
    usable = usable[usable["cell"].isin(cells)]
    repeated = usable[usable.duplicated(["cell", "seed"], keep=False)]
    if not repeated.empty:
        first = repeated.iloc[0]
        raise ValueError(
            f"cell {first['cell']!r} has several complete runs for seed {first['seed']} "
            f"({', '.join(repeated['run_id'])}): one label, different configs; remove the "
            "stray records"
        )
    by_cell = usable.pivot(index="seed", columns="cell", values=metric)
    if not set(cells) <= set(by_cell.columns):
        return pd.Series(dtype=float)
    complete = by_cell[cells].dropna()
    total = sum(weight * complete[cell] for weight, cell in terms)
    return total.sort_index().astype(float)


def decide(claim: str, low: float, high: float, margin: float) -> str:
    """reproduced | contradicted | undecided for an interval [low, high] (see module docstring)."""
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {', '.join(CLAIMS)}, got {claim!r}")
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undecided"
    if claim == "equal":
        if -margin < low and high < margin:
            return "reproduced"
        return "contradicted" if low > margin or high < -margin else "undecided"
    if claim == "negative":
        low, high = -high, -low
    if claim == "none":
        if low > 0:
            return "contradicted"
        return "reproduced" if high < margin else "undecided"
    if low > 0:
        return "reproduced"
    return "contradicted" if high < margin else "undecided"


def seeds_needed(claim: str, mean: float, std: float, level: float, margin: float) -> float:
    """The fewest seeds whose interval, with this mean and std, would decide; MAX_SEEDS + 1 when
    none up to MAX_SEEDS would; NaN when mean, std or level is unknown (fewer than 2 seeds)."""
    if not (math.isfinite(mean) and math.isfinite(std) and math.isfinite(level)):
        return math.nan
    if claim == "equal":  # inside: the distance to the nearer bound; outside: beyond the bound
        room = margin - abs(mean) if abs(mean) < margin else abs(mean) - margin
    else:
        signed = -mean if claim == "negative" else mean
        room = max(signed, margin - signed)  # the half-width below which a decision is reached
    if room <= 0:
        return MAX_SEEDS + 1
    if std == 0:
        return 2

    def decides(n: int) -> bool:  # the interval's half-width shrinks as n grows
        return t_quantile(level, n) * std / math.sqrt(n) < room

    if not decides(MAX_SEEDS):
        return MAX_SEEDS + 1
    low, high = 2, MAX_SEEDS  # the answer lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if decides(middle) else (middle + 1, high)
    return low


def planned_by(cells: list[dict], contrast: Contrast) -> bool:
    """Whether every selector of ``contrast`` picks one of ``cells`` (flattened task configs of
    the cells a preset plans): the contrast belongs to that preset, run or not."""
    selectors = (*contrast.plus, *contrast.minus)
    return all(any(selects(selector, cell) for cell in cells) for selector in selectors)


def verdicts(
    runs: pd.DataFrame,
    contrasts: list[Contrast],
    metric: str,
    planned: list[dict] | None = None,
    seeds_planned: int | None = None,
) -> pd.DataFrame:
    """One row per contrast that the runs hold (``VERDICT_COLUMNS``), Holm over those rows.
    ``planned``: the flattened task configs of the cells the preset plans; a contrast whose
    cells it holds but the runs do not yet (a study being re-run) gets a row with n = 0 and the
    verdict undecided, so that it is listed as waiting for runs rather than left out.
    ``seeds_planned``: how many seeds the preset plans (NaN in the column when unknown); a row
    with fewer (n below it) is a provisional verdict."""
    rows, values = [], {}
    for contrast in contrasts:
        terms = resolve(runs, contrast)
        if terms is None and not (planned and planned_by(planned, contrast)):
            continue
        series = np.array([]) if terms is None else contrast_values(runs, terms, metric).to_numpy()
        values[contrast.name] = series
        rows.append(
            {
                "name": contrast.name,
                "claim": contrast.claim,
                "finding": contrast.finding,
                **summarise(series),
                "p": t_test_p(series),
                "margin": contrast.margin,
            }
        )
    if not rows:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    frame = adjust_family(pd.DataFrame(rows), values)
    frame["verdict"] = [
        decide(r.claim, r.ci_low_holm, r.ci_high_holm, r.margin) for r in frame.itertuples()
    ]
    frame["seeds_needed"] = [
        seeds_needed(r.claim, r.mean, r.std, r.level_holm, r.margin) for r in frame.itertuples()
    ]
    frame["seeds_planned"] = math.nan if seeds_planned is None else seeds_planned
    return frame[VERDICT_COLUMNS]


def is_provisional(n: float, seeds_planned: float | None) -> bool:
    """Whether a verdict on ``n`` seeds is provisional: fewer than the ``seeds_planned`` its
    preset plans (never when that is unknown: None or NaN)."""
    return seeds_planned is not None and math.isfinite(seeds_planned) and n < seeds_planned


def study_spec(study: str) -> Spec | None:
    """The spec of ``study``: its own, or for a question asked of another task
    (``init-fundus``) its question's spec for that task; None for any other name."""
    question = question_of(study)
    if question not in list_studies():
        return None
    spec = load_spec(question)
    return spec if question == study else spec.for_task(study[len(question) + 1 :])


def study_contrasts(study: str) -> tuple[Contrast, ...]:
    """The contrasts declared by the spec of ``study`` (a question asked of another task,
    ``init-fundus``, uses its spec's: those whose cells it has)."""
    spec = study_spec(study)
    return spec.contrasts if spec else ()


def planned_seeds(study: str, preset: str) -> int | None:
    """How many seeds ``study``'s spec plans for ``preset``; None when there is no such study
    or preset."""
    spec = study_spec(study)
    try:
        return len(spec.seeds(preset)) if spec else None
    except SpecError:
        return None


def planned_cells(study: str, preset: str) -> list[dict]:
    """The flattened task configs of the cells ``study``'s spec plans for ``preset`` (as
    ``studies run`` would expand them, one seed); empty when there is no such study or preset,
    or the preset cannot be expanded here (the paper preset without ``$DATA_ROOT``)."""
    spec = study_spec(study)
    try:
        runs = spec.runs(preset, seeds=[0]) if spec else []
    except SpecError:
        return []
    return [run.settings for run in runs]
