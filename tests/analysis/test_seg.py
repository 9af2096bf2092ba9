"""Fundus studies: tables in the paper's domain layout, the per-domain Dice figure, the example
predictions, and the CLI on a segmentation store and on a question asked of the fundus task."""

import pandas as pd
import torch

import tvconv
from analysis.__main__ import main
from analysis.frame import load_records
from analysis.tables import fundus_table, seg_domain_table
from studies.config import assign, base_config
from studies.store import Store

# (atom, held-out domain) -> (cup Dice per seed 0, 1), disc = cup + 10; HD95 = 100 - cup / 10
CUP = {
    ("aspp", 1): (70.0, 72.0),
    ("dw", 1): (60.0, 64.0),
    ("tvconv", 1): (66.0, 70.0),
    ("aspp", 2): (50.0, 52.0),
    ("dw", 2): (54.0, 54.0),
    ("tvconv", 2): (58.0, 60.0),
}
PRIOR = {1: (40.0, 75.0), 2: (30.0, 65.0)}


def seg_record(atom, domain, seed, cup, study="seg"):
    config = base_config("fundus", "smoke")
    for key, value in (("seed", seed), ("model.atom", atom), ("data.held_out", domain)):
        config = assign(config, key, value)
    metrics = {
        "dice_cup_pct": cup,
        "dice_disc_pct": cup + 10,
        "dice_mean_pct": cup + 5,
        "hd95_cup_px": 100 - cup / 10,
        "hd95_disc_px": 5.0,
        "asd_cup_px": 2.0,
        "asd_disc_px": 1.0,
        "prior_dice_cup_pct": PRIOR[domain][0],
        "prior_dice_disc_pct": PRIOR[domain][1],
        "macs": 1_000_000,
    }
    return {
        "schema_version": 1,
        "results_version": tvconv.RESULTS_VERSION,
        "run_id": config.run_id,
        "study": study,
        "preset": "quick",
        "cell": f"atom={atom} held_out={domain}",
        "seed": seed,
        "task": "fundus",
        "config": config.to_dict(),
        "status": "complete",
        "error": None,
        "metrics": metrics,
        "history": [],
        "timings": {"train_seconds": 10.0, "total_seconds": 12.0},
    }


def seg_records():
    return [
        seg_record(atom, domain, seed, cup)
        for (atom, domain), values in CUP.items()
        for seed, cup in enumerate(values)
    ]


def test_domain_table_has_the_papers_layout_and_the_prior_row():
    table = seg_domain_table(load_records(seg_records()))
    assert table.header == [
        "ASPP",
        "D1 cup",
        "D1 disc",
        "D2 cup",
        "D2 disc",
        "mean cup",
        "mean disc",
    ]
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["ASPP (dilated)"][:2] == ["71.0 ± 1.4", "81.0 ± 1.4"]
    assert rows["TVConv"][2:4] == ["59.0 ± 1.4", "69.0 ± 1.4"]
    # per seed, the mean over domains: dw (57, 59) -> 58.0 ± 1.4
    assert rows["depthwise"][4] == "58.0 ± 1.4"
    assert rows["layout prior (image-blind)"] == ["40.0", "75.0", "30.0", "65.0", "35.0", "70.0"]
    assert (0, 1) in table.bold and (2, 3) in table.bold  # aspp best on D1 cup, TVConv on D2


def test_fundus_table_cis_lower_is_better_and_paired_dice():
    table, long = fundus_table(load_records(seg_records()))
    header = table.header
    assert header[:4] == ["cell", "n", "Dice cup", "Dice disc"]
    assert header[-1] == "Δ mean Dice vs dw [95% CI, Holm over 4] (wins)"
    rows = {row[0]: row for row in table.rows}
    # seeds at 60 and 64: mean 62, s = 2.83, t(0.975, 1) = 12.71: 62 -+ 25.4
    assert rows["atom=dw held_out=1"][2] == "62.0 [36.6, 87.4]"
    assert rows["atom=dw held_out=1"][-1] == "baseline"
    # TVConv vs dw on domain 1: +6 on both seeds
    assert rows["atom=tvconv held_out=1"][-1] == "+6.0 [+6.0, +6.0] p=<0.001 (2/2)"
    hd95_cup = header.index("HD95 cup")
    best_hd95 = [r for r, row in enumerate(table.rows) if (r, hd95_cup) in table.bold]
    # lowest HD95 per held-out domain: cells tested on different domains are not compared
    assert [table.rows[r][0] for r in best_hd95] == [
        "atom=aspp held_out=1",
        "atom=tvconv held_out=2",
    ]
    assert set(long["metric"]) >= {"dice_cup_pct", "hd95_disc_px", "diff_dice_mean_pct"}


def test_cli_renders_the_segmentation_study_with_examples(tmp_path, capsys):
    root = tmp_path / "results"
    store = Store(root, "seg", "quick")
    for record in seg_records():
        store.write(record)
        masks = torch.zeros(4, 2, 32, 32, dtype=torch.bool)
        masks[:, 1, 8:24, 8:24] = True
        masks[:, 0, 12:20, 12:20] = True
        example = {
            "images": torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8),
            "masks": masks,
            "probabilities": (masks.float() * 255).to(torch.uint8),
        }
        (store.folder / "examples").mkdir(exist_ok=True)
        torch.save(example, store.folder / "examples" / f"{record['run_id']}.pt")
    assert main(["seg", "--results", str(root), "--no-wandb"]) == 0
    out = capsys.readouterr().out
    assert "| layout prior (image-blind) |" in out and "| atom=tvconv held_out=2 | 2 |" in out
    folder = root / "seg" / "quick"
    for name in ("seg.md", "seg.csv", "seg.tex", "seg_domains.md", "seg_domains.tex"):
        assert (folder / "tables" / name).stat().st_size > 0, name
    domains = pd.read_csv(folder / "tables" / "seg_domains.csv", dtype={"domain": str})
    tvconv_d2_cup = domains.query("atom == 'tvconv' and domain == '2' and structure == 'cup'")
    assert tvconv_d2_cup[["n", "mean"]].values.tolist() == [[2, 59.0]]
    prior_mean = domains.query("atom == 'prior' and domain == 'mean' and structure == 'disc'")
    assert prior_mean["mean"].tolist() == [70.0]
    for name in ("seg.png", "seg_examples.png", "seg_examples.pdf"):
        assert (folder / "figures" / name).stat().st_size > 1000, name


def test_a_question_asked_of_the_fundus_task_renders_as_its_own_study(tmp_path, capsys):
    root = tmp_path / "results"
    store = Store(root, "init-fundus", "quick")
    for seed in (0, 1):
        for atom, cup in (("dw", 60.0 + seed), ("tvconv", 63.0 + seed)):
            store.write(seg_record(atom, 2, seed, cup, study="init-fundus"))
    assert main(["--all", "--results", str(root), "--no-wandb", "--quiet"]) == 0
    assert "init-fundus / quick: wrote" in capsys.readouterr().out
    folder = root / "init-fundus" / "quick"
    assert "+3.0 [+3.0, +3.0] p=<0.001 (2/2)" in (folder / "tables" / "init-fundus.md").read_text()
    assert (folder / "figures" / "init-fundus.png").stat().st_size > 1000


def test_a_segmentation_study_on_one_held_out_domain_has_its_figure_and_domain_table(
    tmp_path, capsys
):
    """``--cells held_out=2`` (or the smoke preset's one domain): the domain table, its CSV and
    the per-domain figure are still drawn; ``--task fundus`` names seg itself (its own task)."""
    root = tmp_path / "results"
    store = Store(root, "seg", "quick")
    for record in seg_records():
        if record["config"]["fundus"]["data"]["held_out"] == 2:
            store.write(record)
    assert main(["seg", "--task", "fundus", "--results", str(root), "--no-wandb"]) == 0
    folder = root / "seg" / "quick"
    assert (folder / "tables" / "seg_domains.csv").is_file()
    assert (folder / "figures" / "seg.png").stat().st_size > 1000


def test_the_fundus_summary_has_a_row_per_cell_and_one_seed_has_no_holm_family():
    from analysis.report import cell_summary

    _table, numbers = fundus_table(load_records(seg_records()))
    cells = cell_summary(numbers, "dice_mean_pct")
    assert len(cells) == 6 and set(cells["n"]) == {2}
    assert cells.set_index("cell").loc["atom=tvconv held_out=1", "diff"] == 6.0
    one_seed = [r for r in seg_records() if r["seed"] == 0]
    table, _numbers = fundus_table(load_records(one_seed))
    assert table.header[-1] == "Δ mean Dice vs dw [95% CI, no interval yet] (wins)"
