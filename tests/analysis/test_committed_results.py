"""The committed results agree with the committed records: each study's tables are what its run
records render to, and the README's results block is what the committed tables assemble into.
Fails when records land without ``python -m analysis --all --readme README.md``."""

import shutil
from pathlib import Path

import pytest

from analysis.__main__ import study_names
from analysis.report import README_BEGIN, README_END, readme_section, render

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"
STUDIES = [s for s in study_names() if s != "layout" and (RESULTS / s / "quick" / "runs").is_dir()]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Every study's committed records, copied alone to a fresh root and rendered there."""
    root = tmp_path_factory.mktemp("results")
    for study in STUDIES:
        shutil.copytree(RESULTS / study / "quick" / "runs", root / study / "quick" / "runs")
    for study in STUDIES:
        render(study, "quick", root, wandb=False)
    return root


@pytest.mark.parametrize("study", STUDIES)
def test_committed_tables_are_what_the_records_render_to(rendered, study):
    committed = RESULTS / study / "quick" / "tables"
    fresh = rendered / study / "quick" / "tables"
    names = sorted(p.name for p in fresh.iterdir() if p.suffix in (".md", ".csv"))
    assert names, f"{study}: nothing rendered"
    stale = [
        name
        for name in names
        if not (committed / name).exists()
        or (committed / name).read_text() != (fresh / name).read_text()
    ]
    assert not stale, (
        f"{study}: {', '.join(stale)} differ from what the committed records render to; "
        "run `python -m analysis --all --readme README.md` and commit"
    )


def test_readme_results_block_is_what_the_committed_tables_assemble_into(monkeypatch):
    monkeypatch.chdir(REPO)  # the block names figures by paths relative to the README
    text = (REPO / "README.md").read_text()
    head, rest = text.split(README_BEGIN, 1)
    _block, tail = rest.split(README_END, 1)
    section = readme_section(Path("results"), "quick", REPO)
    assert head + section.rstrip("\n") + tail == text, (
        "README.md's results block is stale: run `python -m analysis --readme README.md`"
    )
