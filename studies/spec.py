"""Study specs: ``studies/<study>.yaml`` -> the list of runs of a preset.

A spec holds a description, the task, a ``base`` (overrides applied to every run), a ``grid``
and ``presets``::

    description: Question 2, affinity-map initialisation
    task: face
    base: {model.name: mobilenet_v2_x0_1}
    grid:                                   # blocks; the cells are their union
      - {model.atom: dw}
      - {model.atom: tvconv, model.init: [ones, zeros, normal]}     # lists are crossed
      - zip: {model.inter_channels: [8, 64], model.inter_layers: [0, 3]}  # zipped
    presets:
      smoke: {base: smoke, seeds: [0], overrides: {optim.epochs: 1}}
      quick: {base: quick, seeds: [0, 1, 2]}
      gpu: {base: quick, seeds: "0-29", overrides: {device: cuda}}  # seeds as --seeds text
      paper: {base: paper, seeds: [0, 1, 2], grid: [...]}   # a preset may replace the grid

A face study can also be asked of the fundus task (``task=fundus`` on the command line) when
its spec says how, in a ``tasks`` section: per task, a ``base`` replacing the spec's base, an
optional ``grid`` replacing the spec's grid and the presets' grids, and per-preset ``grid`` /
``overrides`` (the presets' seeds, base names and, without a section grid, grids carry over;
their overrides do not). The switched study is named ``<study>-<task>`` (``init-fundus``): its
records have their own folder in the store and are rendered as their own study::

    tasks:
      fundus:
        base: {data.held_out: 2}
        presets: {paper: {overrides: {data.root: $DATA_ROOT/fundus}}}

In the grid a list is an axis; a field whose value is itself a list takes a nested list
(``profile.batch_sizes: [[8, 32]]``). A cell is one point of the grid (label: its grid values,
e.g. ``atom=tvconv init=zeros``); a run is a cell x seed. Runs with the same ``run_id`` (e.g. one
dw baseline reached from several cells) are run once. Every error names the spec file, the key
and the value.

A face study declares its primary ``contrasts`` (what ``analysis.verdicts`` judges): cells picked
by selectors, added (``plus``) or subtracted (``minus``), paired by seed, and the claim tested::

    contrasts:
      - name: "stats - ones"
        plus: [{model.atom: tvconv, model.init: stats, model.affinity_channels: 4}]
        minus: [{model.atom: tvconv, model.init: ones, model.affinity_channels: 4}]
        claim: none            # positive | negative | none (no gain) | equal (within the margin)
        finding: "initialising the maps from dataset statistics does not help"

A selector must name known keys with valid values (checked on load) and pick at most one cell of
a preset (checked when the preset's runs are built); a contrast whose cells a preset lacks is
not judged there.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import os
import re
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import yaml

from studies.config import TASKS, RunConfig, assign, base_config, flat_config
from tvconv.config import MAX_SEED

SPEC_DIR = Path(__file__).parent
PRESETS = ("smoke", "quick", "gpu", "paper")
ABLATIONS = ("aug", "init", "weightgen", "depth", "seg")  # make ablation-<study>
# Seeds one command may ask for: a study's runs are its cells x its seeds, so more than this is a
# typo (``--seeds 0-99999``), not a plan; the gpu presets ask for at most 45.
MAX_SEEDS = 10_000
DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also accepts "²" and "١"


class SpecError(ValueError):
    """A bad spec, config or argument: reported before any run starts (exit code 2)."""


@dataclass(frozen=True)
class Run:
    study: str
    preset: str
    cell: str
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def settings(self) -> dict:
        """The run's task config flattened to {dotted key: value}: what selectors match."""
        return flat_config(self.config.to_dict()[self.config.task])


CONTRAST_KEYS = {"name", "plus", "minus", "claim", "finding", "margin"}
CLAIMS = ("positive", "negative", "none", "equal")
MARGIN = 1.0  # points of the headline metric: the smallest effect a verdict treats as real


@dataclass(frozen=True)
class Contrast:
    """A primary contrast of a study: ``sum(plus) - sum(minus)`` over the cells picked by the
    selectors ({config key: value}), paired by seed; the ``claim`` about it (``positive``,
    ``negative``, ``none``: no gain, or ``equal``: within the margin either way) and the
    ``finding`` it tests in words (the paper's, for the four questions)."""

    name: str
    plus: tuple[dict, ...]
    minus: tuple[dict, ...]
    claim: str
    finding: str = ""
    margin: float = MARGIN


# Runtime keys the runner sets for each run itself, and how (``studies.execute``).
RUNNER_KEYS = {
    "threads": "the usable cores split over --jobs",
    "progress": "off: a worker logs its epochs instead",
    "checkpoint_dir": "checkpoints/<run_id> in the study's store",
}


def as_text(value: object) -> str:
    """A config or selector value as comparable text (``true``, ``3``, ``hflip``)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(as_text(v) for v in value)
    return str(value)


def selects(selector: dict, flat: dict) -> bool:
    """Whether a run whose flattened task config is ``flat`` has every ``selector`` value."""
    return all(key in flat and as_text(flat[key]) == as_text(v) for key, v in selector.items())


@dataclass(frozen=True)
class Spec:
    name: str
    path: Path
    description: str
    task: str
    base: dict
    grid: list
    presets: dict
    tasks: dict
    contrasts: tuple[Contrast, ...] = ()

    def for_task(self, task: str) -> Spec:
        """This study asked of ``task`` (its ``tasks`` section applied), or itself."""
        if task == self.task:
            return self
        if task not in self.tasks:
            defined = ", ".join([self.task, *self.tasks])
            raise SpecError(
                f"{self.path}: study {self.name!r} is not defined for task={task!r}; it is "
                f"defined for {defined} (add a tasks.{task} section to ask it)"
            )
        section = self.tasks[task]
        presets = {}
        for preset, settings in self.presets.items():
            kept = {k: v for k, v in settings.items() if k in ("base", "seeds", "grid")}
            if "grid" in section:
                kept["grid"] = section["grid"]
            presets[preset] = {**kept, **(section.get("presets") or {}).get(preset, {})}
        return Spec(
            name=task_study(self.name, task),  # its own store folder and W&B group
            path=self.path,
            description=self.description,
            task=task,
            base=section.get("base") or {},
            grid=section.get("grid", self.grid),
            presets=presets,
            tasks={},
            contrasts=self.contrasts,
        )

    def seeds(self, preset: str) -> list[int]:
        return list(self._preset(preset).get("seeds", [0]))

    def _preset(self, preset: str) -> dict:
        if preset not in self.presets:
            raise SpecError(
                f"{self.path}: study {self.name!r} has no preset {preset!r}; "
                f"available: {', '.join(self.presets)}"
            )
        return self.presets[preset]

    def cells(self, preset: str) -> list[dict]:
        """Each cell as {key: value}, in grid order."""
        grid = self._preset(preset).get("grid", self.grid)
        cells: list[dict] = []
        for number, block in enumerate(grid, start=1):
            for cell in _expand_block(block, f"{self.path}: grid block {number}"):
                if cell not in cells:
                    cells.append(cell)
        return cells or [{}]

    def runs(
        self, preset: str, overrides: dict | None = None, seeds: list[int] | None = None
    ) -> list[Run]:
        """Every run of ``preset`` (cells x seeds), deduplicated by run_id, validated.
        ``overrides`` may switch the task (``task=fundus``, see ``for_task``); ``seeds`` replaces
        the preset's seeds."""
        overrides = dict(overrides or {})
        task = str(overrides.pop("task", self.task))
        if task != self.task:
            return self.for_task(task).runs(preset, overrides, seeds)
        self._check_overrides(preset, overrides)
        settings = self._preset(preset)
        _check_variables(
            [self.base, settings.get("overrides") or {}, *self.cells(preset)],
            f"{self.path}: study {self.name}, preset {preset}",
            f"make {'ablation-' if self.name.split('-')[0] in ABLATIONS else ''}"
            f"{self.name.split('-')[0]} "
            f"PRESET={preset}" + (f" OVERRIDES=task={self.task}" if "-" in self.name else ""),
        )
        try:
            base = base_config(self.task, settings.get("base", "paper"))
        except ValueError as error:
            raise SpecError(f"{self.path}: presets.{preset}.base: {error}") from None
        for where, mapping in (
            ("base", self.base),
            (f"presets.{preset}.overrides", settings.get("overrides", {})),
        ):
            base = _apply(base, mapping, f"{self.path}: {where}")
        runs, seen = [], set()
        for cell in self.cells(preset):
            config = _apply(base, cell, f"{self.path}: grid cell {_label(cell)}")
            for seed in self.seeds(preset) if seeds is None else seeds:
                seeded = _apply(config, {"seed": seed} if self.task != "profile" else {}, "seeds")
                # command-line overrides win over the grid and the seeds: "every run"
                seeded = _apply(seeded, overrides or {}, "command line")
                run = Run(self.name, preset, _label(cell), seed, seeded)
                if run.run_id not in seen:
                    seen.add(run.run_id)
                    runs.append(run)
        self._check_contrast_cells(runs)
        return runs

    def axes(self, preset: str) -> dict[str, list]:
        """The keys the preset's grid varies (task-prefixed: ``face.model.atom``) and the
        values each takes, in grid order."""
        axes: dict[str, list] = {}
        for cell in self.cells(preset):
            for key, value in cell.items():
                values = axes.setdefault(full_key(str(key), self.task), [])
                if value not in values:
                    values.append(value)
        return axes

    def _check_overrides(self, preset: str, overrides: dict) -> None:
        """Refuse command-line overrides that would make a record's label lie: a key the grid
        varies (every cell would be run with one value, still labelled with its own) and the
        seed (every seed's run would be one run); and those the runner sets itself."""
        axes = self.axes(preset)
        labels = [_label(cell) for cell in self.cells(preset)]
        for key, value in overrides.items():
            key = str(key)
            try:  # an invalid key or value is reported as such first
                assign(RunConfig(task=self.task), key, _expand(value, "command line", key))
            except ValueError as error:
                raise SpecError(f"command line: {error}") from None
            runner_keys = {f"{self.task}.{k}" for k in RUNNER_KEYS if TASKS[self.task].trains}
            if full_key(key, self.task) in runner_keys:
                raise SpecError(
                    f"command line: {key}={value}: the runner sets {key} for every run "
                    f"({RUNNER_KEYS[key.rpartition('.')[2]]}); an override would be ignored"
                )
            if full_key(key, self.task) == f"{self.task}.seed":
                raise SpecError(
                    f"command line: {key}={value}: the seeds are chosen with --seeds (e.g. "
                    f"--seeds {value}-{value} for that seed alone), not an override: an override "
                    "would give every seed's run that one seed"
                )
            axis = axes.get(full_key(key, self.task))
            if axis is not None:
                raise SpecError(
                    f"command line: {key}={value} sets a key the {self.name} grid varies "
                    f"({key}: {', '.join(_short(v) for v in axis)}), so every cell would run "
                    "with one value under its own label; to run some cells only, pass --cells "
                    f"with a pattern of their labels (e.g. --cells '{labels[-1].split()[0]}*'); "
                    f"the cells of {preset}: {'; '.join(labels)}"
                )

    def _check_contrast_cells(self, runs: list[Run]) -> None:
        """Every contrast selector picks at most one cell of the preset (none: not run here)."""
        cells = {}
        for run in runs:
            cells.setdefault(run.cell, run.settings)
        for contrast in self.contrasts:
            for selector in (*contrast.plus, *contrast.minus):
                chosen = [cell for cell, flat in cells.items() if selects(selector, flat)]
                if len(chosen) > 1:
                    raise SpecError(
                        f"{self.path}: contrast {contrast.name!r}: selector {selector} matches "
                        f"several cells ({'; '.join(chosen)}); add keys to pick one"
                    )


def full_key(key: str, task: str) -> str:
    """A config key with its task prefix (``model.atom`` -> ``face.model.atom``)."""
    head = key.split(".", 1)[0]
    return key if head in ("task", *TASKS) else f"{task}.{key}"


def select_cells(runs: list[Run], patterns: list[str], where: str = "--cells") -> list[Run]:
    """The runs whose cell label matches any of the shell-style ``patterns`` (``atom=tvconv*``);
    a pattern that matches no cell is an error listing the cells."""
    labels = list(dict.fromkeys(run.cell for run in runs))
    for pattern in patterns:
        if not fnmatch.filter(labels, pattern):
            raise SpecError(
                f"{where} {pattern!r} matches no cell; the cells: {'; '.join(labels)} "
                "(shell-style patterns: * any text, ? one character)"
            )
    return [run for run in runs if any(fnmatch.fnmatchcase(run.cell, p) for p in patterns)]


VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def variables_needed(mappings: list[dict]) -> dict[str, list[str]]:
    """The environment variables the string values of ``mappings`` refer to (``$DATA_ROOT``),
    each with the values that use it."""
    needed: dict[str, list[str]] = {}
    for mapping in mappings:
        for value in mapping.values() if isinstance(mapping, dict) else ():
            for text in value if isinstance(value, list) else [value]:
                for match in VARIABLE.finditer(text if isinstance(text, str) else ""):
                    needed.setdefault(match[1] or match[2], []).append(text)
    return needed


def _check_variables(mappings: list[dict], where: str, command: str = "") -> None:
    """Every variable the values use is set and not empty (``DATA_ROOT=`` would turn
    ``$DATA_ROOT/casia`` into ``/casia``); the error says what the folder must hold."""
    for name, values in variables_needed(mappings).items():
        if os.environ.get(name, "").strip():
            continue
        state = " (it is empty)" if name in os.environ else ""
        listed = ", ".join(dict.fromkeys(values))
        raise SpecError(
            f"{where}: needs an environment variable that is not set: {name}{state}; it must "
            f"name the folder the data is read from: {listed}"
            + (f" (e.g. {command} {name}=/path/to/data; README, Data)" if command else "")
        )


def _expand(value: object, where: str, key: str) -> object:
    """Environment variables in string values (``$DATA_ROOT/casia``); unset ones are an error."""
    if isinstance(value, list):
        return [_expand(v, where, key) for v in value]
    if not isinstance(value, str) or "$" not in value:
        return value
    _check_variables([{key: value}], where)
    expanded = os.path.expandvars(value)
    if "$" in expanded:
        raise SpecError(f"{where}: {key}={value!r}: cannot expand the environment variables")
    return expanded


def _apply(config: RunConfig, mapping: dict, where: str) -> RunConfig:
    if not isinstance(mapping, dict):
        raise SpecError(f"{where}: expected a mapping of key: value, got {mapping!r}")
    for key, value in mapping.items():
        value = _expand(value, where, key)
        try:
            config = assign(config, str(key), value)
        except ValueError as error:
            raise SpecError(f"{where}: {error}") from None
    return config


def _label(cell: dict) -> str:
    if not cell:
        return "base"
    return " ".join(f"{key.split('.')[-1]}={_short(value)}" for key, value in cell.items())


def _short(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _expand_block(block: object, where: str) -> list[dict]:
    """A grid block -> its cells: plain keys are crossed; ``zip:`` keys vary together."""
    if not isinstance(block, dict):
        raise SpecError(f"{where}: expected a mapping of key: value or list, got {block!r}")
    crossed = {k: v for k, v in block.items() if k != "zip"}
    zipped = block.get("zip", {})
    if not isinstance(zipped, dict):
        raise SpecError(f"{where}: zip must map keys to equal-length lists, got {zipped!r}")
    lengths = {len(v) if isinstance(v, list) else -1 for v in zipped.values()}
    if zipped and (len(lengths) != 1 or -1 in lengths or 0 in lengths):
        raise SpecError(
            f"{where}: zip lists must be lists of one length (not empty), got {zipped!r}"
        )
    empty = [key for key, values in crossed.items() if values == []]
    if empty:
        raise SpecError(
            f"{where}: {', '.join(empty)}: an empty list gives no cells; list the values"
        )
    zip_rows = [dict(zip(zipped, row, strict=True)) for row in zip(*zipped.values(), strict=True)]
    axes = [
        [(k, v) for v in (vals if isinstance(vals, list) else [vals])]
        for k, vals in crossed.items()
    ]
    cells = []
    for combo in itertools.product(*axes):
        for row in zip_rows or [{}]:
            cells.append({**dict(combo), **row})
    return cells


def spec_path(name: str) -> Path:
    return SPEC_DIR / f"{name}.yaml"


def task_study(study: str, task: str) -> str:
    """The name of ``study`` asked of another task (``init`` on ``fundus``: ``init-fundus``):
    its own store folder, W&B group and tables."""
    return f"{study}-{task}"


def question_of(name: str) -> str:
    """The study a (possibly task-switched) study name asks (``init-fundus`` -> ``init``)."""
    for study in list_studies():
        if name == study or any(name == task_study(study, t) for t in load_spec(study).tasks):
            return study
    return name


def list_studies() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def load_spec(name_or_path: str | Path) -> Spec:
    """Parse and check a spec (by study name or path)."""
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        path = spec_path(str(name_or_path))
    if not path.is_file():
        raise SpecError(
            f"no study {str(name_or_path)!r} ({path} does not exist); available: "
            f"{', '.join(list_studies())}"
        )
    try:
        content = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: YAML syntax error: {error}") from None
    except UnicodeDecodeError as error:
        raise SpecError(
            f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})"
        ) from None
    if not isinstance(content, dict):
        raise SpecError(f"{path}: expected a mapping with description, task, grid, presets")
    allowed = {"description", "task", "base", "grid", "presets", "tasks", "contrasts"}
    unknown = sorted(set(content) - allowed)
    if unknown:
        raise SpecError(f"{path}: unknown top-level key(s) {unknown}; expected {sorted(allowed)}")
    task = content.get("task", "face")
    if task not in TASKS:
        raise SpecError(f"{path}: task={task!r} is invalid: expected one of {', '.join(TASKS)}")
    _check_kind(content.get("base") or {}, dict, f"{path}: base", "a mapping of key: value")
    presets = content.get("presets") or {}
    _check_kind(presets, dict, f"{path}: presets", "a mapping of preset -> {base, seeds, ...}")
    for preset, settings in presets.items():
        if preset not in PRESETS or not isinstance(settings, dict):
            raise SpecError(
                f"{path}: presets.{preset}: expected one of {', '.join(PRESETS)} mapping to "
                "{base, seeds, overrides, grid}"
            )
        extra = sorted(set(settings) - {"base", "seeds", "overrides", "grid"})
        if extra:
            raise SpecError(f"{path}: presets.{preset}: unknown key(s) {extra}")
        _check_preset_parts(settings, f"{path}: presets.{preset}")
        seeds = settings.get("seeds", [0])
        if isinstance(seeds, str):  # --seeds text, a list from here on
            settings["seeds"] = parse_seeds(seeds, f"{path}: presets.{preset}.seeds")
        elif (
            not isinstance(seeds, list)
            or not seeds
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds
            )
        ):
            raise SpecError(
                f"{path}: presets.{preset}.seeds={seeds!r}: expected a list of ints >= 0 (at "
                f"most {MAX_SEED}, at least one) or a range such as 0-29"
            )
        else:
            _refuse_repeated(seeds, f"{path}: presets.{preset}.seeds")
    grid = content.get("grid") or []
    _check_kind(grid, list, f"{path}: grid", "a list of blocks")
    tasks = content.get("tasks") or {}
    if not isinstance(tasks, dict):
        raise SpecError(f"{path}: tasks must map a task to {{base, grid, presets}}, got {tasks!r}")
    for other, section in tasks.items():
        if other not in TASKS or other == task or not isinstance(section, dict):
            raise SpecError(
                f"{path}: tasks.{other}: expected a task other than {task} "
                f"({', '.join(t for t in TASKS if t != task)}) mapping to {{base, grid, presets}}"
            )
        extra = sorted(set(section) - {"base", "grid", "presets"})
        section_presets = section.get("presets") or {}
        unknown_presets = sorted(set(section_presets) - set(presets))
        if extra or unknown_presets or not isinstance(section_presets, dict):
            raise SpecError(
                f"{path}: tasks.{other}: unknown key(s) {extra or unknown_presets}; expected "
                "base, grid and presets (of the spec's presets) with grid / overrides"
            )
        _check_kind(section.get("base") or {}, dict, f"{path}: tasks.{other}.base", "a mapping")
        _check_kind(section.get("grid") or [], list, f"{path}: tasks.{other}.grid", "a list")
        for preset, settings in section_presets.items():
            if not isinstance(settings, dict) or set(settings) - {"grid", "overrides"}:
                raise SpecError(
                    f"{path}: tasks.{other}.presets.{preset}: expected a mapping with grid "
                    f"and / or overrides, got {settings!r}"
                )
            _check_preset_parts(settings, f"{path}: tasks.{other}.presets.{preset}")
    return Spec(
        name=path.stem,
        path=path,
        description=str(content.get("description", "")).strip(),
        task=task,
        base=content.get("base") or {},
        grid=grid,
        presets=presets,
        tasks=tasks,
        contrasts=_check_contrasts(content.get("contrasts") or [], path, task),
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last one
    silently; the command line refuses repeated keys too)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_kind(value: object, kind: type, where: str, expected: str) -> None:
    if not isinstance(value, kind):
        raise SpecError(f"{where} must be {expected}, got {value!r}")


def _check_preset_parts(settings: dict, where: str) -> None:
    """A preset's ``base`` (a base config's name), ``overrides`` (a mapping) and ``grid`` (a
    list of blocks) have the types the runner reads them as."""
    if "base" in settings:
        _check_kind(settings["base"], str, f"{where}.base", "a base config's name")
    _check_kind(settings.get("overrides") or {}, dict, f"{where}.overrides", "a mapping")
    _check_kind(settings.get("grid") or [], list, f"{where}.grid", "a list of blocks")


def parse_seeds(text: str, where: str = "--seeds") -> list[int]:
    """``--seeds`` (or a spec's ``seeds:`` given as text, named by ``where``): a count (``10``:
    seeds 0-9), a range (``0-9``), a list (``0,3,7``) or a mix of ranges and seeds (``0-4,10``);
    seeds are ints in [0, ``MAX_SEED``], given once each, at most ``MAX_SEEDS`` of them (checked
    before any list is built, so a typo such as ``0-9999999999`` is an error, not a hang)."""
    text = text.strip()
    if DIGITS.fullmatch(text):
        count = int(text)
        if count < 1:
            raise SpecError(f"{where} {text}: a count of seeds must be >= 1 (seed 0 alone: 0-0)")
        if count > MAX_SEEDS:
            raise SpecError(f"{where} {text}: a count of seeds must be at most {MAX_SEEDS}")
        return list(range(count))
    spans: list[tuple[int, int]] = []
    for part in (part.strip() for part in text.split(",")):
        start, dash, end = part.partition("-")
        if not DIGITS.fullmatch(start) or (dash and not DIGITS.fullmatch(end)):
            raise SpecError(
                f"{where} {text!r}: {part!r} is not a seed or a range; expected a count "
                "(10), a range (0-9), a list (0,3,7) or a mix (0-4,10) of ints >= 0"
            )
        low, high = int(start), int(end) if dash else int(start)
        if high < low:
            raise SpecError(f"{where} {text!r}: the range {part} is reversed")
        if high > MAX_SEED:
            raise SpecError(f"{where} {text!r}: seed {high} is above the largest seed, {MAX_SEED}")
        spans.append((low, high))
    total = sum(high - low + 1 for low, high in spans)
    if total > MAX_SEEDS:
        raise SpecError(f"{where} {text!r}: {total} seeds, more than the {MAX_SEEDS} allowed")
    seeds = [seed for low, high in spans for seed in range(low, high + 1)]
    _refuse_repeated(seeds, f"{where} {text!r}")
    return seeds


def _refuse_repeated(seeds: list[int], where: str) -> None:
    """A SpecError naming the seeds given more than once (a spec's list or ``--seeds`` text)."""
    repeated = sorted(seed for seed, times in Counter(seeds).items() if times > 1)
    if repeated:
        raise SpecError(f"{where}: seed(s) {repeated} given more than once")


def seeds_text(seeds: list[int]) -> str:
    """The compact form of a list of seeds, as ``--seeds`` reads it: ``[0, 1, 2, 5]`` -> ``0-2,5``
    (a single seed reads ``4-4``, since ``--seeds 4`` means the count 4: seeds 0-3)."""
    spans: list[list[int]] = []
    for seed in sorted(set(seeds)):
        if spans and seed == spans[-1][1] + 1:
            spans[-1][1] = seed
        else:
            spans.append([seed, seed])
    if len(spans) == 1:
        return f"{spans[0][0]}-{spans[0][1]}"
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in spans)


def _check_selector(selector: object, task: str, where: str) -> dict:
    if not isinstance(selector, dict) or not selector:
        raise SpecError(f"{where}: expected a selector {{config key: value}}, got {selector!r}")
    probe = RunConfig(task=task)
    for key, value in selector.items():
        try:
            assign(probe, str(key), value)
        except ValueError as error:
            raise SpecError(f"{where}: {error}") from None
    return {str(key): value for key, value in selector.items()}


def _check_contrasts(contrasts: object, path: Path, task: str) -> tuple[Contrast, ...]:
    """The spec's primary contrasts, checked: each a unique name, ``plus`` and ``minus`` lists of
    equal length of cell selectors (known config keys and valid values), the paper's ``claim``,
    optional ``finding`` text and ``margin`` (> 0)."""
    if not isinstance(contrasts, list):
        raise SpecError(f"{path}: contrasts must be a list, got {contrasts!r}")
    checked, names = [], set()
    for number, contrast in enumerate(contrasts, start=1):
        where = f"{path}: contrasts[{number}]"
        if not isinstance(contrast, dict):
            raise SpecError(f"{where}: expected a mapping with {sorted(CONTRAST_KEYS)}")
        unknown = sorted(set(contrast) - CONTRAST_KEYS)
        missing = sorted({"name", "plus", "minus", "claim"} - set(contrast))
        if unknown or missing:
            raise SpecError(f"{where}: unknown key(s) {unknown}, missing key(s) {missing}")
        name = contrast["name"]
        if not isinstance(name, str) or not name.strip() or name in names:
            raise SpecError(f"{where}: name={name!r}: expected a unique non-empty string")
        names.add(name)
        sides = {}
        for side in ("plus", "minus"):
            selectors = contrast[side]
            if not isinstance(selectors, list) or not selectors:
                raise SpecError(f"{where}: {side}={selectors!r}: expected a list of selectors")
            sides[side] = tuple(_check_selector(s, task, f"{where}.{side}") for s in selectors)
        if len(sides["plus"]) != len(sides["minus"]):
            raise SpecError(
                f"{where}: plus and minus must list as many cells (a contrast's weights sum "
                f"to 0), got {len(sides['plus'])} and {len(sides['minus'])}"
            )
        if contrast["claim"] not in CLAIMS:
            raise SpecError(
                f"{where}: claim={contrast['claim']!r}: expected one of {', '.join(CLAIMS)}"
            )
        margin = contrast.get("margin", MARGIN)
        if (
            isinstance(margin, bool)
            or not isinstance(margin, (int, float))
            or not 0 < margin < math.inf
        ):
            raise SpecError(f"{where}: margin={margin!r}: expected a number > 0 (finite)")
        checked.append(
            Contrast(
                name=name,
                plus=sides["plus"],
                minus=sides["minus"],
                claim=contrast["claim"],
                finding=str(contrast.get("finding", "")).strip(),
                margin=float(margin),
            )
        )
    return tuple(checked)
