"""Study specs: the shipped ones load and expand; grids; bad input is refused with context."""

import pytest

from studies.spec import SpecError, list_studies, load_spec, selects

SHIPPED = ["aug", "convergence", "depth", "init", "profile", "seg", "tradeoff", "weightgen"]


def test_every_shipped_spec_loads_and_expands():
    assert list_studies() == SHIPPED
    expected_quick = {  # face studies: the cells their verdicts need x 5 seeds
        "aug": 50,
        "convergence": 18,
        "depth": 15,
        "init": 15,
        "profile": 28,
        "seg": 24,
        "tradeoff": 15,
        "weightgen": 20,
    }
    for name in SHIPPED:
        spec = load_spec(name)
        assert spec.description
        assert len(spec.runs("smoke")) >= 2
        assert len(spec.runs("quick")) == expected_quick[name]
        expected_presets = {"smoke", "quick"} | ({"paper"} if name != "convergence" else set())
        expected_presets |= {"gpu"} if name != "seg" else set()  # seg: not a face study
        assert set(spec.presets) == expected_presets


def test_face_quick_presets_have_five_seeds_and_every_contrast_cell():
    """Every contrast a face study declares can be judged on its quick preset's runs (at least
    seeds 0-4; the depthwise-only convergence check has 9)."""
    for name in ("aug", "convergence", "depth", "init", "tradeoff", "weightgen"):
        spec = load_spec(name)
        runs = spec.runs("quick")
        seeds = list(range(9 if name == "convergence" else 5))
        assert sorted({run.seed for run in runs}) == seeds, name
        cells = {run.cell: run.settings for run in runs}
        for contrast in spec.contrasts:
            for selector in (*contrast.plus, *contrast.minus):
                chosen = [cell for cell, flat in cells.items() if selects(selector, flat)]
                assert len(chosen) == 1, (name, contrast.name, selector)


def test_init_quick_cells_and_seeds():
    spec = load_spec("init")
    runs = spec.runs("quick")
    cells = list(dict.fromkeys(run.cell for run in runs))
    assert cells == ["atom=dw", "atom=tvconv init=ones", "atom=tvconv init=stats"]
    stats = next(r for r in runs if r.cell == "atom=tvconv init=stats")
    assert stats.config.face.model.init == "stats"


def test_seg_quick_crosses_atoms_and_held_out_domains():
    runs = load_spec("seg").runs("quick")
    cells = list(dict.fromkeys(run.cell for run in runs))
    atoms, domains = ("aspp", "dw", "tvconv"), (1, 2, 3, 4)
    assert cells == [f"atom={a} held_out={d}" for a in atoms for d in domains]
    assert {run.config.task for run in runs} == {"fundus"}
    assert sorted({run.config.fundus.seed for run in runs}) == [0, 1]
    assert runs[0].config.fundus.model.name == "deeplabv3plus_mobilenet_v2_x0_35"


@pytest.mark.parametrize("study", ["aug", "depth", "init", "weightgen"])
def test_the_four_questions_can_be_asked_of_the_fundus_task(study):
    spec = load_spec(study)
    runs = spec.runs("quick", {"task": "fundus"})
    assert runs and {run.config.task for run in runs} == {"fundus"}
    assert {run.config.fundus.model.atom for run in runs} <= {"dw", "tvconv"}
    assert len({run.run_id for run in runs}) == len(runs)
    face_ids = {run.run_id for run in spec.runs("quick")}
    assert not face_ids & {run.run_id for run in runs}


def test_fundus_task_keeps_preset_grids_and_applies_section_grids():
    init = load_spec("init").runs("smoke", {"task": "fundus"})
    cells = [run.cell for run in init]
    assert cells == ["atom=dw", "atom=tvconv init=ones", "atom=tvconv init=stats"]
    assert {run.study for run in init} == {"init-fundus"}  # its own store folder
    assert init[2].config.fundus.model.init == "stats"
    depth = load_spec("depth").runs("quick", {"task": "fundus"})
    selects = {run.config.fundus.model.select for run in depth if run.cell != "atom=dw"}
    assert selects == {"first:1", "first:2", "all"}


def test_a_study_without_a_section_for_the_task_is_refused():
    with pytest.raises(SpecError, match="not defined for task='fundus'; it is defined for face"):
        load_spec("tradeoff").runs("quick", {"task": "fundus"})


def test_paper_preset_needs_data_root(monkeypatch):
    spec = load_spec("init")
    monkeypatch.delenv("DATA_ROOT", raising=False)
    with pytest.raises(SpecError, match="needs an environment variable that is not set"):
        spec.runs("paper")
    monkeypatch.setenv("DATA_ROOT", "/data")
    run = spec.runs("paper")[0]
    assert run.config.face.data.train_root == "/data/casia_webface_frontal"
    assert run.config.face.data.benchmarks[0] == "/data/lfw.bin"
    assert run.config.face.optim.epochs == 38 and run.config.face.data.image_size == 96


def test_cross_zip_and_dedup(write_spec):
    path = write_spec(
        """
        task: face
        grid:
          - model.atom: dw
            model.inter_channels: [8, 16]       # dw ignores it: one run
          - model.atom: tvconv
            optim.lr: [0.1, 0.05]
            zip:
              model.inter_channels: [8, 16]
              model.inter_layers: [0, 2]
        presets:
          smoke: {base: smoke, seeds: [0, 1]}
        """
    )
    runs = load_spec(path).runs("smoke")
    cells = list(dict.fromkeys(run.cell for run in runs))
    assert cells == [
        "atom=dw inter_channels=8",
        "atom=tvconv lr=0.1 inter_channels=8 inter_layers=0",
        "atom=tvconv lr=0.1 inter_channels=16 inter_layers=2",
        "atom=tvconv lr=0.05 inter_channels=8 inter_layers=0",
        "atom=tvconv lr=0.05 inter_channels=16 inter_layers=2",
    ]
    assert len(runs) == 10  # 5 cells x 2 seeds, the second dw cell deduplicated


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: face\ngrid: [{model.atom: [dw, }\n", "YAML syntax error"),
        (
            "task: face\npresets: {smoke: {base: smoke}}\n"
            "tasks: {fundus: {presets: {smoke: {overides: {seed: 1}}}}}\n",
            r"tasks.fundus.presets.smoke: expected a mapping with grid and / or overrides",
        ),
        (
            "task: face\npresets: {smoke: {base: smoke}}\ntasks: {fundus: {presets: {smoke: }}}\n",
            r"tasks.fundus.presets.smoke: expected a mapping",
        ),
        (
            "task: face\npresets: {smoke: {base: smoke}}\ntasks: {face: {base: {}}}\n",
            r"tasks.face: expected a task other than face",
        ),
        (
            "task: face\ngrid:\n  - {model.widht: 2}\npresets: {smoke: {base: smoke}}\n",
            r"tiny.yaml: grid cell widht=2: model.widht=2: unknown key 'widht'",
        ),
        (
            "task: face\ngrid:\n  - {optim.epochs: two}\npresets: {smoke: {base: smoke}}\n",
            r"optim.epochs='two'.*expected a value of type int",
        ),
        (
            "task: face\ngrid:\n  - {model.name: resnet}\npresets: {smoke: {base: smoke}}\n",
            r"model.name='resnet' is invalid: expected one of mobilenet_v2_x0_1",
        ),
        (
            "task: face\ngrid:\n  - {data.augment: jitter}\npresets: {smoke: {base: smoke}}\n",
            r"unknown augmentation 'jitter'",
        ),
        (
            "task: face\npresets: {smoke: {base: smoke, seeds: [a]}}\n",
            r"presets.smoke.seeds=\['a'\]: expected a list of ints",
        ),
        (
            "task: face\npresets: {smoke: {base: smoke, seeds: [0, 4294967296]}}\n",
            r"seeds=\[0, 4294967296\]: expected a list of ints >= 0 \(at most 4294967295",
        ),
        (
            "task: face\npresets: {smoke: {base: smoke, seeds: []}}\n",
            r"presets.smoke.seeds=\[\]: expected a list of ints >= 0 \(at most \d+, at least one\)",
        ),
        (
            "task: face\npresets: {smoke: {base: smoke, seeds: [1, 2, 1]}}\n",
            r"presets.smoke.seeds: seed\(s\) \[1\] given more than once",
        ),
        (
            "task: face\ngrid:\n  - {model.atom: []}\npresets: {smoke: {base: smoke}}\n",
            "grid block 1: model.atom: an empty list gives no cells",
        ),
        (
            "task: face\ngrid:\n  - {zip: {model.atom: [], optim.lr: []}}\n"
            "presets: {smoke: {base: smoke}}\n",
            r"zip lists must be lists of one length \(not empty\)",
        ),
        (
            "task: face\npresets: {smoke: {base: smoke, seeds: '0-99999999999'}}\n",
            r"presets.smoke.seeds '0-99999999999': seed 99999999999 is above the largest seed",
        ),
        ("task: face\npresets: {huge: {base: smoke}}\n", r"presets.huge: expected one of smoke"),
        ("task: face\ngrids: []\n", r"unknown top-level key\(s\) \['grids'\]"),
        ("task: face\npresets: [smoke]\n", r"presets must be a mapping of preset"),
        ("task: face\npresets: smoke\n", r"presets must be a mapping of preset"),
        ("task: face\npresets: {smoke: {base: smoke, grid: 5}}\n", r"presets.smoke.grid must be"),
        ("task: face\npresets: {smoke: {base: 3}}\n", r"presets.smoke.base must be a base"),
        (
            "task: face\npresets: {smoke: {base: smoke, overrides: [1]}}\n",
            r"presets.smoke.overrides must be a mapping, got \[1\]",
        ),
        ("task: face\nbase: 5\n", r"base must be a mapping of key: value, got 5"),
        (
            "task: face\nbase: {optim.epochs: 1, optim.epochs: 2}\n",
            r"YAML syntax error: key 'optim.epochs' given twice",
        ),
        (
            "task: face\npresets: {smoke: {base: smoke}}\ntasks: {fundus: {grid: 3}}\n",
            r"tasks.fundus.grid must be a list",
        ),
        ("task: speech\n", r"task='speech' is invalid"),
        (
            "task: face\npresets: {smoke: {base: tiny}}\n",
            r"presets.smoke.base: base preset 'tiny' is invalid: expected one of",
        ),
        (
            "task: face\ngrid:\n  - {zip: {model.inter_channels: [8, 16], optim.lr: [0.1]}}\n"
            "presets: {smoke: {base: smoke}}\n",
            "zip lists must be lists of one length",
        ),
    ],
)
def test_bad_specs_are_refused_with_file_key_and_value(write_spec, text, message):
    path = write_spec(text)
    with pytest.raises(SpecError, match=message):
        load_spec(path).runs("smoke")


CONTRAST_SPEC = """
task: face
grid:
  - {{model.atom: [dw, tvconv], data.augment: [hflip, rot30]}}
presets: {{smoke: {{base: smoke}}}}
contrasts:
  - {contrast}
"""


@pytest.mark.parametrize(
    ("contrast", "message"),
    [
        ("{name: a, plus: [{model.atom: tvconv}], minus: []}", "missing key.*claim"),
        (
            "{name: a, plus: [{model.atom: tvconv}], minus: [], claim: positive}",
            "minus=\\[\\]: expected a list of selectors",
        ),
        (
            "{name: a, plus: [{model.atom: tvconv}], minus: [{model.atom: dw}], claim: big}",
            "claim='big': expected one of positive, negative, none, equal",
        ),
        (
            "{name: a, plus: [{model.atomm: tvconv}], minus: [{model.atom: dw}], claim: none}",
            "contrasts\\[1\\].plus: model.atomm='tvconv'.*unknown key",
        ),
        (
            "{name: a, plus: [{model.init: random}], minus: [{model.atom: dw}], claim: none}",
            "model.init='random'",
        ),
        (
            "{name: a, plus: [{model.atom: tvconv}, {model.atom: dw}], minus: [{model.atom: dw}],"
            " claim: none}",
            "plus and minus must list as many cells",
        ),
        (
            "{name: a, plus: [{model.atom: tvconv}], minus: [{model.atom: dw}], claim: none,"
            " margin: -1}",
            "margin=-1: expected a number > 0",
        ),
        (
            "{name: a, plus: [{model.atom: tvconv}], minus: [{model.atom: dw}], claim: none,"
            " margin: .nan}",
            "margin=nan: expected a number > 0",
        ),
        (
            "{name: a, plus: [{model.atom: tvconv}], minus: [{model.atom: dw}], claim: none,"
            " extra: 1}",
            "unknown key\\(s\\) \\['extra'\\]",
        ),
        (  # valid keys, but two cells are tvconv: ambiguous in this preset
            "{name: a, plus: [{model.atom: tvconv}], minus: [{model.atom: dw, data.augment: "
            "hflip}], claim: positive}",
            "selector \\{'model.atom': 'tvconv'\\} matches several cells",
        ),
    ],
)
def test_bad_contrasts_are_refused_before_any_run(write_spec, contrast, message):
    path = write_spec(CONTRAST_SPEC.format(contrast=contrast))
    with pytest.raises(SpecError, match=message):
        load_spec(path).runs("smoke")


def test_unknown_study_and_preset():
    with pytest.raises(SpecError, match=r"no study 'ablate'.*available: aug, convergence, depth"):
        load_spec("ablate")
    with pytest.raises(SpecError, match="has no preset 'huge'"):
        load_spec("init").runs("huge")


def test_command_line_overrides_apply_to_every_run_but_never_relabel_a_grid_axis(write_spec):
    spec = load_spec(write_spec())
    runs = spec.runs("smoke", overrides={"optim.lr": "0.05"})
    assert len(runs) == 6 and {r.config.face.optim.lr for r in runs} == {0.05}
    for key in ("model.atom", "face.model.atom"):  # both cells would be labelled as before
        with pytest.raises(SpecError, match=rf"{key}=dw sets a key the tiny grid varies"):
            spec.runs("smoke", overrides={key: "dw"})
    with pytest.raises(SpecError, match="the seeds are chosen with --seeds"):
        spec.runs("smoke", overrides={"seed": "0"})


def test_a_spec_that_is_not_utf8_text_is_refused(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\x00\xff\xfe")
    with pytest.raises(SpecError, match=r"binary.yaml: not a UTF-8 text file"):
        load_spec(path)
