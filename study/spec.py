"""Study files and technique search spaces: load YAML, validate once, name file and key on error.

A *search space* (``search_spaces/<technique>.yaml``) declares one technique's hyperparameters:
the papers' sensitivity grid and an optimisation range for each. A *study*
(``search_spaces/studies/<name>.yaml``) names a dataset, training fractions, a model, seeds, a
training budget and the techniques to sweep. Both are plain YAML read with ``yaml.safe_load``;
every unknown key, wrong type or out-of-range value raises :class:`SpecError` naming the file
and the dotted key.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SEARCH_SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"

# Hyperparameter name -> symbol the papers print (results column is ``hp_<name>``).
HYPERPARAMETER_SYMBOLS: dict[str, str] = {
    "m": "m",
    "gamma": "γ",
    "eps": "ε",
    "l": "l",
    "mixup_m": "m",
    "mixup_alpha": "α",
    "tau": "τ",
    "nu": "ν",
    "bg_aug_prob": "p",
    "beta": "β",
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# YAML 1.1 (PyYAML) reads `1e-5` as a string: accept such numbers where a float is expected.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class SpecError(ValueError):
    """A study or search-space file is malformed; the message names the file and key."""


class _Node:
    """A mapping being validated, with the file and dotted key path it came from."""

    def __init__(self, data: Any, source: str, path: str = ""):
        self.source, self.path = source, path
        if not isinstance(data, Mapping):
            self.fail(f"expected a mapping, got {type(data).__name__} {data!r}")
        self.data = dict(data)
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, problem: str, key: str | None = None) -> None:
        where = key if key is not None else (self.path or "<top level>")
        raise SpecError(f"{self.source}: {where}: {problem}")

    def get(
        self,
        name: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Callable[[Any], bool] | None = None,
        expect: str = "",
    ) -> Any:
        """Return ``data[name]`` converted to ``kind``; fail naming the key if invalid."""
        self._seen.add(name)
        if name not in self.data:
            if default is ...:
                self.fail("required key is missing", self.key(name))
            return default
        return self.convert(self.data[name], kind, self.key(name), check, expect)

    def convert(self, value, kind, key, check=None, expect=""):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if float in kinds and isinstance(value, str) and _FLOAT_TEXT.match(value):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok or (check is not None and not check(value)):
            wanted = expect or " or ".join(k.__name__ for k in kinds)
            self.fail(f"expected {wanted}, got {value!r}", key)
        return value

    def child(self, name: str, default: Any = ...) -> _Node:
        value = self.get(name, (dict,), default={} if default is not ... else ...)
        return _Node(value, self.source, self.key(name))

    def list_of(self, name, kind, check=None, expect="", default=...) -> list:
        items = self.get(name, list, default=default)
        if not items:
            self.fail("expected a non-empty list", self.key(name))
        return [
            self.convert(v, kind, f"{self.key(name)}[{i}]", check, expect)
            for i, v in enumerate(items)
        ]

    def done(self) -> None:
        """Fail on keys that were never read (typos must not be silently ignored)."""
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            known = ", ".join(sorted(self._seen))
            self.fail(f"unknown key {unknown[0]!r} (known keys: {known})", self.key(unknown[0]))


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"{path}: cannot read: {error.strerror}") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from error


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter's optimisation range (grid values live in :class:`SearchSpace`)."""

    name: str
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class SearchSpace:
    """A technique's hyperparameters: grid points (the papers' sensitivity grid) and ranges."""

    technique: str
    description: str
    hyperparameters: tuple[Hyperparameter, ...]
    grid: tuple[dict[str, float], ...]  # () for techniques without hyperparameters

    def settings(self) -> list[dict[str, float]]:
        """The grid points to sweep; one empty setting for a technique without any."""
        return [dict(point) for point in self.grid] or [{}]


def _parse_grid(
    node: _Node, hyperparameters: Sequence[Hyperparameter]
) -> tuple[dict[str, float], ...]:
    """``grid`` is either {name: [values]} (Cartesian product) or [{name: value}, ...].

    Every value must lie in its hyperparameter's optimisation range.
    """
    names = [h.name for h in hyperparameters]
    if "grid" not in node.data:
        if names:
            node.fail("required key is missing", node.key("grid"))
        node._seen.add("grid")
        return ()
    raw = node.get("grid", (dict, list))
    key = node.key("grid")
    if isinstance(raw, dict):
        grid_node = _Node(raw, node.source, key)
        axes = [
            grid_node.list_of(name, float, expect="a list of numbers") for name in names
        ]
        grid_node.done()
        points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
    else:
        points = []
        for i, item in enumerate(raw):
            point_node = _Node(item, node.source, f"{key}[{i}]")
            points.append({name: point_node.get(name, float) for name in names})
            point_node.done()
    if not points:
        node.fail("expected at least one grid point", key)
    for i, point in enumerate(points):
        for h in hyperparameters:
            if not h.low <= point[h.name] <= h.high:
                node.fail(
                    f"{h.name}={point[h.name]} lies outside its range [{h.low}, {h.high}]",
                    f"{key}[{i}]",
                )
    return tuple(points)


def load_search_space(path: str | Path) -> SearchSpace:
    """Load and validate one technique's search space file."""
    path = Path(path)
    node = _Node(_read_yaml(path), str(path))
    technique = node.get("technique", str, check=_NAME.match, expect="a lower-case identifier")
    description = node.get("description", str, default="")
    params_node = node.child("hyperparameters", default={})
    hyperparameters = []
    for name in params_node.data:
        if name not in HYPERPARAMETER_SYMBOLS:
            params_node.fail(
                f"unknown hyperparameter {name!r} (known: {', '.join(HYPERPARAMETER_SYMBOLS)})",
                params_node.key(name),
            )
        param = params_node.child(name)
        low = param.get("low", float)
        high = param.get("high", float, check=lambda v, low=low: v > low, expect=f"> low={low}")
        log = param.get("log", bool, default=False)
        if log and low <= 0:
            param.fail(f"log range needs low > 0, got {low}", param.key("low"))
        param.done()
        hyperparameters.append(Hyperparameter(name, low, high, log))
    params_node.done()
    grid = _parse_grid(node, hyperparameters)
    node.done()
    if path.stem != technique:
        node.fail(f"technique {technique!r} must match the file name {path.name!r}", "technique")
    return SearchSpace(technique, description, tuple(hyperparameters), grid)


def load_search_spaces(directory: str | Path = SEARCH_SPACES_DIR) -> dict[str, SearchSpace]:
    """Every ``<technique>.yaml`` directly inside ``directory``, keyed by technique id."""
    spaces = [load_search_space(p) for p in sorted(Path(directory).glob("*.yaml"))]
    return {space.technique: space for space in spaces}


@dataclass(frozen=True)
class DatasetSpec:
    """Which data a study uses. ``synthetic`` holds generator parameters for synthetic presets."""

    name: str
    test_cases: int
    root: str | None = None
    synthetic: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingSpec:
    """``patch``: the output patch the loss sees (the model asks for the input it needs:
    the same for the U-Net, the wider context of its pathways for DeepMedic, e.g. 21^3 for
    DeepMedic's 37^3 normal-resolution segments); ``lr``: initial learning rate, None = the
    model's paper value (``study.models.recipes``); ``validate_every``: iterations between
    periodic validations (0 = none; monitoring only, not part of a trial's identity)."""

    iterations: int
    batch_size: int
    patch: tuple[int, int, int]
    lr: float | None
    fg_fraction: float
    checkpoint_every: int
    validate_every: int = 0


@dataclass(frozen=True)
class TechniqueRun:
    """One technique of a study with the settings (grid points) to run."""

    technique: str
    settings: tuple[dict[str, float], ...]


@dataclass(frozen=True)
class StudySpec:
    name: str
    description: str
    source: str
    dataset: DatasetSpec
    fractions: tuple[float, ...]
    model: str
    model_preset: str
    seeds: tuple[int, ...]
    training: TrainingSpec
    techniques: tuple[TechniqueRun, ...]


def _parse_dataset(node: _Node) -> DatasetSpec:
    from study.data.registry import DATASETS  # the dataset registry owns the known names

    name = node.get("name", str, check=lambda v: v in DATASETS,
                    expect=f"one of {', '.join(DATASETS)}")  # synthetic presets first
    info = DATASETS[name]
    # Real datasets default to the papers' test-set size (001 §V-A) where one is declared.
    default_test = info.test_cases if info.test_cases is not None else ...
    test_cases = node.get("test_cases", int, default=default_test, check=lambda v: v > 0,
                          expect="a positive integer")
    root = node.get("root", str, default=None)
    synthetic = node.get("synthetic", dict, default=None)
    node.done()
    if info.synthetic:
        if root is not None:
            node.fail(f"{name} is generated (into --data-dir); `root` is only for real "
                      "datasets", node.key("root"))
        synthetic = info.validate_synthetic(synthetic or {}, node.source, node.key("synthetic"))
    else:
        if synthetic is not None:
            node.fail(f"{name} is a real dataset; generator parameters are only for the "
                      "synthetic presets", node.key("synthetic"))
        if root is None:
            node.fail(f"a real dataset needs `root`, the folder holding its cases "
                      f"({info.description})", node.key("root"))
        synthetic = {}
    return DatasetSpec(name, test_cases, root, synthetic)


def _parse_training(node: _Node) -> TrainingSpec:
    positive = {"check": lambda v: v > 0, "expect": "a positive integer"}
    patch = node.list_of("patch", int, **positive)
    if len(patch) != 3:
        node.fail(f"expected 3 patch sizes (D, H, W), got {patch}", node.key("patch"))
    spec = TrainingSpec(
        iterations=node.get("iterations", int, **positive),
        batch_size=node.get("batch_size", int, **positive),
        patch=tuple(patch),
        lr=node.get("lr", float, default=None, check=lambda v: v > 0,
                    expect="a positive number"),
        fg_fraction=node.get("fg_fraction", float, default=0.5,
                             check=lambda v: 0 <= v <= 1, expect="a number in [0, 1]"),
        checkpoint_every=node.get("checkpoint_every", int, default=0,
                                  check=lambda v: v >= 0, expect="an integer >= 0"),
        validate_every=node.get("validate_every", int, default=0,
                                check=lambda v: v >= 0, expect="an integer >= 0"),
    )
    node.done()
    return spec


def _parse_techniques(
    items: Sequence[Any], source: str, spaces: Mapping[str, SearchSpace],
    key_prefix: str = "techniques",
) -> tuple[TechniqueRun, ...]:
    from study.techniques import TECHNIQUES  # techniques the trial runner can build

    runs = []
    for i, item in enumerate(items):
        key = f"{key_prefix}[{i}]"
        node = _Node(item if isinstance(item, dict) else {"technique": item}, source, key)
        technique = node.get("technique", str)
        if technique not in spaces:
            node.fail(
                f"unknown technique {technique!r}: no search space file "
                f"search_spaces/{technique}.yaml (known: {', '.join(sorted(spaces))})",
                node.key("technique"),
            )
        if technique not in TECHNIQUES:
            node.fail(
                f"technique {technique!r} has a search space but the trial runner cannot build "
                f"it yet (buildable: {', '.join(sorted(TECHNIQUES))})",
                node.key("technique"),
            )
        space = spaces[technique]
        settings = space.settings()
        if "grid" in node.data:
            settings = [dict(p) for p in _parse_grid(node, space.hyperparameters)] or [{}]
        node.done()
        runs.append(TechniqueRun(technique, tuple(settings)))
    names = [run.technique for run in runs]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise SpecError(f"{source}: {key_prefix}: {sorted(duplicated)[0]!r} is listed twice")
    return tuple(runs)


def load_study(path: str | Path, spaces_dir: str | Path = SEARCH_SPACES_DIR) -> StudySpec:
    """Load and validate a single-experiment study file (see :func:`load_studies`)."""
    specs = load_studies(path, spaces_dir)
    if len(specs) != 1:
        raise SpecError(f"{path}: experiments: this needs a single-experiment study, the file "
                        f"has {len(specs)}")
    return specs[0]


def load_studies(path: str | Path, spaces_dir: str | Path = SEARCH_SPACES_DIR
                 ) -> list[StudySpec]:
    """Load and validate a study file: one spec, or one per entry of ``experiments``.

    ``experiments`` lets one study cover several datasets and models (paper-full): each
    entry is a mapping of study keys (``dataset``, ``model``, ``fractions``, ``training``,
    ``techniques``, ``seeds``) laid over the file's top-level keys, which act as defaults.
    Errors in an entry name it (``experiments[1].dataset.name``).
    """
    path = Path(path)
    data = _read_yaml(path)
    spaces = load_search_spaces(spaces_dir)
    if not isinstance(data, dict) or "experiments" not in data:
        return [_parse_study(_Node(data, str(path)), path, spaces)]
    entries = data["experiments"]
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{path}: experiments: expected a non-empty list of mappings")
    base = {key: value for key, value in data.items() if key != "experiments"}
    specs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SpecError(f"{path}: experiments[{i}]: expected a mapping, got {entry!r}")
        if "name" in entry:
            raise SpecError(f"{path}: experiments[{i}].name: the study's name is set once, "
                            "at the top level")
        specs.append(_parse_study(_Node({**base, **entry}, str(path), f"experiments[{i}]"),
                                  path, spaces))
    return specs


def _parse_study(node: _Node, path: Path, spaces: Mapping[str, SearchSpace]) -> StudySpec:
    name = node.get("name", str, check=_NAME.match,
                    expect="a lower-case name of letters, digits, '_', '-', '.'")
    description = node.get("description", str, default="")
    dataset = _parse_dataset(node.child("dataset"))
    fractions = node.list_of("fractions", float, check=lambda v: 0 < v <= 1,
                             expect="a fraction in (0, 1]")
    from study.models import MODELS, patch_problem

    model_node = node.child("model")
    model = model_node.get("name", str, check=lambda v: v in MODELS,
                           expect=f"one of {', '.join(MODELS)}")
    preset = model_node.get("preset", str, default="tiny",
                            check=lambda v: v in MODELS[model],
                            expect=f"one of {', '.join(sorted(MODELS[model]))}")
    model_node.done()
    seeds = node.list_of("seeds", int, default=[0], check=lambda v: v >= 0,
                         expect="a non-negative integer")
    training = _parse_training(node.child("training"))
    problem = patch_problem(model, preset, training.patch)
    if problem:
        node.fail(problem, node.key("training.patch"))
    techniques = _parse_techniques(node.list_of("techniques", (str, dict)), str(path), spaces,
                                   node.key("techniques"))
    node.done()
    return StudySpec(
        name=name,
        description=description,
        source=str(path),
        dataset=dataset,
        fractions=tuple(dict.fromkeys(fractions)),
        model=model,
        model_preset=preset,
        seeds=tuple(dict.fromkeys(seeds)),
        training=training,
        techniques=techniques,
    )
