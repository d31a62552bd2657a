"""Study files and technique search spaces: load YAML, validate once, name file and key on error.

A *search space* (``search_spaces/<technique>.yaml``) declares one technique's hyperparameters:
the papers' sensitivity grid and an optimisation range for each. A *study*
(``search_spaces/studies/<name>.yaml``) names a dataset, training fractions, a model, seeds, a
training budget and the techniques to sweep. Both are plain YAML read with ``yaml.safe_load``;
every unknown key, wrong type or out-of-range value raises :class:`SpecError` naming the file
and the dotted key.
"""

from __future__ import annotations

import difflib
import itertools
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

import yaml

from study.catalog import (
    AUGMENTATION_REGIMES,
    HYPERPARAMETERS,
    MIXUP_LAMBDAS,
    SAMPLING_SCHEMES,
    TECHNIQUES,
    UPDATE_RULES,
)

SEARCH_SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")  # study and technique names (no paths)
MAX_ITERATIONS = 10_000_000  # a typo guard: the papers' longest budget is 250,000
MAX_FILE_BYTES = 1_000_000
MAX_YAML_VALUES = 100_000
MAX_GRID_POINTS = 10_000  # per technique entry; a study's trials are limited by expansion
MAX_MESSAGE_VALUE = 120  # characters of a value quoted in an error message


def _short(value: Any) -> str:
    """A value (``repr``) or an exception (its text) for an error message, cut to
    :data:`MAX_MESSAGE_VALUE` characters."""
    text = str(value) if isinstance(value, Exception) else repr(value)
    if len(text) <= MAX_MESSAGE_VALUE:
        return text
    return f"{text[:MAX_MESSAGE_VALUE]}... ({len(text):,} characters)"
# YAML 1.1 (PyYAML) reads `1e-5` as a string: accept such numbers where a float is expected.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class SpecError(ValueError):
    """A study or search-space file is malformed; the message names the file and key."""


class _Check(TypedDict):
    """A value test and what it expects, as :meth:`_Node.get` and :meth:`_Node.list_of` take
    them (``check``, ``expect``)."""

    check: Callable[[Any], object]
    expect: str


class _Node:
    """A mapping being validated, with the file and dotted key path it came from."""

    def __init__(self, data: Any, source: str, path: str = ""):
        self.source, self.path = source, path
        if not isinstance(data, Mapping):
            self.fail(f"expected a mapping, got {type(data).__name__} {_short(data)}")
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
        check: Callable[[Any], object] | None = None,
        expect: str = "",
    ) -> Any:
        """Return ``data[name]`` converted to ``kind``; fail naming the key if invalid."""
        self._seen.add(name)
        if name not in self.data:
            if default is ...:
                near = difflib.get_close_matches(name, [str(k) for k in self.data], n=1)
                hint = f" (found {near[0]!r}: did you mean {name!r}?)" if near else ""
                self.fail(f"required key is missing{hint}", self.key(name))
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
            self.fail(f"expected {wanted}, got {_short(value)}", key)
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
        unknown = sorted(set(self.data) - self._seen, key=str)
        if unknown:
            known = ", ".join(sorted(self._seen))
            near = difflib.get_close_matches(str(unknown[0]), sorted(self._seen), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            self.fail(f"unknown key {unknown[0]!r} ({hint}known keys: {known})",
                      self.key(unknown[0]))


def _expanded_values(root: yaml.Node) -> int:
    """How many values a composed YAML document holds once its aliases are expanded (an
    alias counts the whole subtree it points to, as the constructed data will hold it)."""
    memo: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in memo:
            return memo[id(node)]
        memo[id(node)] = 1  # a recursive alias counts once; safe_load builds a cycle for it
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        memo[id(node)] = total
        return total

    return size(root)


def _read_yaml(path: Path) -> Any:
    """The YAML document of ``path``, refusing what could exhaust the machine before it is
    built: files over :data:`MAX_FILE_BYTES` and documents whose aliases expand to more than
    :data:`MAX_YAML_VALUES` values (a "billion laughs" file of a few hundred bytes)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SpecError(f"{path}: {path.stat().st_size:,} bytes; a study or search-space "
                            f"file holds at most {MAX_FILE_BYTES:,}")
        raw = path.read_bytes()
    except OSError as error:
        raise SpecError(f"{path}: cannot read: {error.strerror}") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start}: "
                        f"{raw[error.start:error.start + 1]!r}); save it as UTF-8") from error
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_values(node) > MAX_YAML_VALUES:
            raise SpecError(f"{path}: its aliases expand to more than {MAX_YAML_VALUES:,} "
                            "values; write the values out or use fewer aliases")
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


def _parse_points(node: _Node, key: str, raw: Any, hyperparameters: Sequence[Hyperparameter],
                  technique: str) -> list[dict[str, float]]:
    """Grid points from ``{name: [values]}`` (Cartesian product) or ``[{name: value}, ...]``
    (a single mapping is one point). A combination's points may give any non-empty subset of
    its hyperparameters (the paired ones together: :meth:`study.catalog.Technique.check`);
    every other technique's give all of them. Every value must lie in its hyperparameter's
    optimisation range."""
    names = [h.name for h in hyperparameters]
    info = TECHNIQUES.get(technique)
    combination = info is not None and info.combination
    if isinstance(raw, dict) and not combination and all(isinstance(v, list)
                                                         for v in raw.values()):
        grid_node = _Node(raw, node.source, key)
        axes = [grid_node.list_of(name, float, expect="a list of numbers") for name in names]
        grid_node.done()
        count = math.prod(len(axis) for axis in axes)
        if count > MAX_GRID_POINTS:
            node.fail(f"{' x '.join(str(len(a)) for a in axes)} = {count:,} grid points; at most "
                      f"{MAX_GRID_POINTS:,} per technique", key)
        points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
    else:
        items = [raw] if isinstance(raw, dict) else raw
        if not isinstance(items, list):
            node.fail(f"expected a mapping or a list of mappings, got {_short(raw)}", key)
        points = []
        for i, item in enumerate(items):
            where = key if isinstance(raw, dict) else f"{key}[{i}]"
            point_node = _Node(item, node.source, where)
            point = {name: point_node.get(name, float) for name in names
                     if not combination or name in point_node.data}
            point_node.done()
            if info is not None:
                try:
                    info.check(point)
                except ValueError as error:
                    point_node.fail(str(error))
            points.append(point)
    if not points:
        node.fail("expected at least one grid point", key)
    for i, point in enumerate(points):
        for h in hyperparameters:
            if h.name in point and not h.low <= point[h.name] <= h.high:
                node.fail(f"{h.name}={point[h.name]} lies outside its range [{h.low}, {h.high}]",
                          f"{key}[{i}]" if len(points) > 1 else key)
    return points


def _parse_grid(node: _Node, hyperparameters: Sequence[Hyperparameter], technique: str
                ) -> tuple[dict[str, float], ...]:
    """The ``grid`` key of a search space or a study's technique entry (:func:`_parse_points`)."""
    names = [h.name for h in hyperparameters]
    if "grid" not in node.data:
        if names:
            node.fail("required key is missing", node.key("grid"))
        node._seen.add("grid")
        return ()
    raw = node.get("grid", (dict, list))
    return tuple(_parse_points(node, node.key("grid"), raw, hyperparameters, technique))


def load_search_space(path: str | Path) -> SearchSpace:
    """Load and validate one technique's search space file."""
    path = Path(path)
    node = _Node(_read_yaml(path), str(path))
    technique = node.get("technique", str, check=NAME_PATTERN.match,
                         expect="a lower-case identifier")
    description = node.get("description", str, default="")
    params_node = node.child("hyperparameters", default={})
    hyperparameters = []
    for name in params_node.data:
        if name not in HYPERPARAMETERS:
            params_node.fail(
                f"unknown hyperparameter {name!r} (known: {', '.join(HYPERPARAMETERS)})",
                params_node.key(name),
            )
        param = params_node.child(name)
        low = param.get("low", float)
        high = param.get("high", float, check=partial(operator.lt, low),  # low < high
                         expect=f"> low={low}")
        log = param.get("log", bool, default=False)
        if log and low <= 0:
            param.fail(f"log range needs low > 0, got {low}", param.key("low"))
        param.done()
        hyperparameters.append(Hyperparameter(name, low, high, log))
    params_node.done()
    grid = _parse_grid(node, hyperparameters, technique)
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
    """Which data a study uses. ``synthetic`` holds generator parameters for synthetic presets;
    ``validation_cases`` are held out of the training pool and evaluated like the test cases,
    for choosing settings on data the tables do not report (0 = none, as the papers).

    An own dataset (``layout: nnunet`` or ``msd``, :mod:`study.data.inline`) also has its
    ``layout``, the ``sha256`` of its ``dataset.json`` and its resolved ``options`` (classes,
    rare, lcc, preprocessing); ``test_cases`` is ``None`` when its folder holds its own labelled
    test set."""

    name: str
    test_cases: int | None
    root: str | None = None
    synthetic: Mapping[str, Any] = field(default_factory=dict)
    validation_cases: int = 0
    layout: str | None = None
    sha256: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingSpec:
    """How every trial of an experiment trains.

    ``input_patch``: the training segment the network reads (DeepMedic: its normal-resolution
    segment, 37^3 in the papers; the U-Net: its patch) and ``output_patch`` the voxels it
    labels, derived from the model (DeepMedic 37^3 -> 21^3; the U-Net the same size).
    ``lr``: initial learning rate, None = the model's paper value (``study.models.recipes``).
    ``sampling``: ``balanced`` — a share ``fg_fraction`` of the patches centred on foreground,
    the rest on background (DeepMedic, 001 §V-A.1) — or ``nnunet`` — per batch the last
    ``round(B * fg_fraction)`` patches centred on a voxel of a uniformly chosen foreground
    class, the others random crops (nnU-Net, 001 §V-A.4).
    ``update``: ``summed`` — one optimizer step on the sum of the clean and the regularizers'
    losses (001 eq. 14, 17, 22) — or ``sequential`` — one step per loss term, in the reference
    code's order (2x the updates for adversarial training or mixup, 3x for both).
    ``mixup_lambda``: asymmetric mixup's λ ~ Beta(α, α) as eq. 18 writes it (``paper``) or
    scaled by (1 - m) as the reference code draws it (``code``).
    ``validate_every``: iterations between periodic validations (0 = none; monitoring only,
    not part of a trial's identity).
    ``pretrain``: iterations of plain cross-entropy pre-training before the technique's
    objective takes over (003 §4: CE pre-training, then fine-tuning with each loss), counted
    within ``iterations`` (0 = none, as the experiments of 001, 000 and 004)."""

    iterations: int
    batch_size: int
    input_patch: tuple[int, int, int]
    output_patch: tuple[int, int, int]
    lr: float | None
    fg_fraction: float
    checkpoint_every: int
    validate_every: int = 0
    sampling: str = "balanced"
    update: str = "summed"
    mixup_lambda: str = "paper"
    pretrain: int = 0


@dataclass(frozen=True)
class TechniqueRun:
    """One technique of a study with the settings (grid points) to run: the same at every
    fraction (``settings``) or given per training fraction (``by_fraction``, as 000 Tables I-III
    list them)."""

    technique: str
    settings: tuple[dict[str, float], ...]
    by_fraction: Mapping[float, tuple[dict[str, float], ...]] | None = None

    def settings_at(self, fraction: float) -> tuple[dict[str, float], ...]:
        if self.by_fraction is None:
            return self.settings
        return self.by_fraction[fraction]

    def all_settings(self) -> tuple[dict[str, float], ...]:
        if self.by_fraction is None:
            return self.settings
        return tuple(p for points in self.by_fraction.values() for p in points)


@dataclass(frozen=True)
class StudySpec:
    """One experiment of a study file: a dataset, its fractions, a model, its regularisation
    regime and the techniques to sweep.

    ``augmentation``: the regime every trial trains with (``none``, ``deepmedic``,
    ``nnunet``: :mod:`study.data.augmentation`); eq. 21's gate (``bg_aug_prob``) acts on it.
    ``variant``: a short label that sets this experiment's rows apart from another experiment
    of the same study with the same techniques (001 Table III "w/o augmentation"), printed in
    every setting's label. ``mirroring``: test-time augmentation by averaging the logits over
    all flips of the three axes (nnU-Net's inference, 001 §V-A.4)."""

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
    augmentation: str = "none"
    variant: str | None = None
    mirroring: bool = False


def _parse_dataset(node: _Node) -> DatasetSpec:
    from study.data import inline
    from study.data.registry import DATASETS  # the dataset registry owns the known names

    if "layout" in node.data:
        return _parse_own_dataset(node)
    given = [key for key in inline.OPTIONS if key in node.data]
    if given:
        node.fail("the declared datasets fix their classes and preprocessing; this option is "
                  "for an own dataset (`layout: nnunet` or `layout: msd` with `root`)",
                  node.key(given[0]))
    name = node.get("name", str, check=lambda v: v in DATASETS,
                    expect=f"one of {', '.join(DATASETS)}")  # synthetic presets first
    info = DATASETS[name]
    # Real datasets default to the papers' test-set size (001 §V-A) where one is declared.
    default_test = info.test_cases if info.test_cases is not None else ...
    test_cases = node.get("test_cases", int, default=default_test, check=lambda v: v > 0,
                          expect="a positive integer")
    validation_cases = node.get("validation_cases", int, default=0, check=lambda v: v >= 0,
                                expect="an integer >= 0")
    root = node.get("root", str, default=None)
    synthetic = node.get("synthetic", dict, default=None)
    node.done()
    if info.synthetic:
        if root is not None:
            node.fail(f"{name} is generated (into --data-dir); `root` is only for real "
                      "datasets", node.key("root"))
        try:
            synthetic = info.validate_synthetic(synthetic or {}, node.key("synthetic"))
        except ValueError as error:  # names the parameter under its dotted key
            raise SpecError(f"{node.source}: {error}") from error
    else:
        if synthetic is not None:
            node.fail(f"{name} is a real dataset; generator parameters are only for the "
                      "synthetic presets", node.key("synthetic"))
        if root is None:
            node.fail(f"a real dataset needs `root`, the folder holding its cases "
                      f"({info.description})", node.key("root"))
        synthetic = {}
    return DatasetSpec(name, test_cases, root, synthetic, validation_cases)


def _parse_own_dataset(node: _Node) -> DatasetSpec:
    """An own dataset described by its folder's ``dataset.json`` (:mod:`study.data.inline`:
    options, defaults, region labels); reads that file, no image."""
    from study.data import inline
    from study.data.registry import DATASETS

    layout = node.get("layout", str, check=lambda v: v in inline.LAYOUTS,
                      expect=f"one of {', '.join(inline.LAYOUTS)} (or no `layout` and a "
                      "declared dataset's `name`)")
    root = node.get("root", str, check=lambda v: bool(v.strip()),
                    expect="the dataset folder holding dataset.json")
    name = node.get("name", str, default=None, check=lambda v: v not in DATASETS
                    and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) is not None,
                    expect="a name of letters, digits, '_', '-', '.' that no declared dataset "
                    "has")
    test_cases = node.get("test_cases", int, default=None, check=lambda v: v > 0,
                          expect="a positive integer")
    validation_cases = node.get("validation_cases", int, default=0, check=lambda v: v >= 0,
                                expect="an integer >= 0")
    options = {key: node.data[key] for key in inline.OPTIONS if key in node.data}
    node._seen.update(inline.OPTIONS)
    node.done()
    try:
        declared = inline.declare(layout, root, options, node.path or "dataset")
    except ValueError as error:  # names the option's dotted key, or dataset.json's problems
        raise SpecError(f"{node.source}: {error}") from error
    own_test = inline.has_own_test_set(layout, root)
    if own_test and test_cases is not None:
        node.fail(f"{root} has labelled imagesTs/ + labelsTs/, its own test set; remove "
                  "test_cases (or labelsTs/, to hold cases out of imagesTr/ instead)",
                  node.key("test_cases"))
    if not own_test and test_cases is None:
        node.fail(f"required key is missing: the number of imagesTr cases held out as the test "
                  f"set ({root} has no labelled imagesTs/ + labelsTs/)", node.key("test_cases"))
    if name is None:
        name = inline.default_name(root)
        if name in DATASETS:
            node.fail(f"the folder's name {name!r} is a declared dataset's; give the dataset "
                      "another `name`", node.key("name"))
    return DatasetSpec(name, test_cases, root, {}, validation_cases, layout,
                       declared["sha256"], declared["options"])


def _choice(node: _Node, name: str, choices: Sequence[str], default: str) -> str:
    return node.get(name, str, default=default, check=lambda v: v in choices,
                    expect=f"one of {', '.join(choices)}")


def _parse_training(node: _Node, model: str, preset: str) -> TrainingSpec:
    from study.models import output_patch

    if "patch" in node.data:
        node.fail("renamed: write `input_patch`, the training segment the network reads "
                  "(DeepMedic: its normal-resolution segment, 37^3 in the papers, labelling "
                  "21^3 voxels; the U-Net: its patch)", node.key("patch"))
    positive: _Check = {"check": lambda v: v > 0, "expect": "a positive integer"}
    input_patch = tuple(node.list_of("input_patch", int, **positive))
    if len(input_patch) != 3:
        node.fail(f"expected 3 sizes (D, H, W), got {list(input_patch)}",
                  node.key("input_patch"))
    try:
        output = output_patch(model, preset, input_patch)
    except ValueError as error:
        node.fail(str(error), node.key("input_patch"))
    iterations = node.get("iterations", int, check=lambda v: 0 < v <= MAX_ITERATIONS,
                          expect=f"a positive integer <= {MAX_ITERATIONS:,}")
    spec = TrainingSpec(
        iterations=iterations,
        batch_size=node.get("batch_size", int, **positive),
        input_patch=input_patch,
        output_patch=output,
        lr=node.get("lr", float, default=None, check=lambda v: v > 0,
                    expect="a positive number"),
        fg_fraction=node.get("fg_fraction", float, default=0.5,
                             check=lambda v: 0 <= v <= 1, expect="a number in [0, 1]"),
        checkpoint_every=node.get("checkpoint_every", int, default=0,
                                  check=lambda v: v >= 0, expect="an integer >= 0"),
        validate_every=node.get("validate_every", int, default=0,
                                check=lambda v: v >= 0, expect="an integer >= 0"),
        sampling=_choice(node, "sampling", SAMPLING_SCHEMES, "balanced"),
        update=_choice(node, "update", UPDATE_RULES, "summed"),
        mixup_lambda=_choice(node, "mixup_lambda", MIXUP_LAMBDAS, "paper"),
        pretrain=node.get("pretrain", int, default=0, check=lambda v: 0 <= v < iterations,
                          expect=f"an integer >= 0 and < training.iterations ({iterations:,}); "
                          "the CE pre-training counts within the budget"),
    )
    node.done()
    return spec


def _parse_techniques(
    items: Sequence[Any], source: str, spaces: Mapping[str, SearchSpace],
    fractions: Sequence[float], key_prefix: str = "techniques",
) -> tuple[TechniqueRun, ...]:
    """Technique entries: a technique id (its search space's grid), or a mapping with
    ``technique`` and either ``grid`` (replaces the search space's grid) or ``by_fraction``
    (``{fraction: setting or [settings]}`` covering every fraction of the experiment)."""
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
        settings = tuple(space.settings())
        by_fraction = None
        if "grid" in node.data and "by_fraction" in node.data:
            node.fail("give either `grid` or `by_fraction`, not both", node.key("by_fraction"))
        if "grid" in node.data:
            settings = _parse_grid(node, space.hyperparameters, technique) or ({},)
        elif "by_fraction" in node.data:
            by_fraction = _parse_by_fraction(node, space, fractions)
            settings = ()
        node.done()
        runs.append(TechniqueRun(technique, settings, by_fraction))
    names = [run.technique for run in runs]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise SpecError(f"{source}: {key_prefix}: {sorted(duplicated)[0]!r} is listed twice")
    return tuple(runs)


def _parse_by_fraction(node: _Node, space: SearchSpace, fractions: Sequence[float]
                       ) -> dict[float, tuple[dict[str, float], ...]]:
    if not space.hyperparameters:
        node.fail(f"{space.technique} has no hyperparameters to give per fraction",
                  node.key("by_fraction"))
    raw = node.get("by_fraction", dict)
    key = node.key("by_fraction")
    out: dict[float, tuple[dict[str, float], ...]] = {}
    for fraction_key, value in raw.items():
        fraction = node.convert(fraction_key, float, f"{key}.{fraction_key}",
                                lambda v: 0 < v <= 1, "a fraction in (0, 1]")
        match = [f for f in fractions if math.isclose(f, fraction, rel_tol=1e-9)]
        if not match:
            node.fail(f"{fraction:g} is not a fraction of this experiment "
                      f"({', '.join(f'{f:g}' for f in fractions)})", f"{key}.{fraction_key}")
        out[match[0]] = tuple(_parse_points(node, f"{key}.{fraction_key}", value,
                                            space.hyperparameters, space.technique))
    missing = [f for f in fractions if f not in out]
    if missing:
        node.fail(f"no setting for fraction(s) {', '.join(f'{f:g}' for f in missing)}", key)
    return {f: out[f] for f in fractions}


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

    ``experiments`` lets one study cover several datasets, models or regimes: each
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
            raise SpecError(f"{path}: experiments[{i}]: expected a mapping, got {_short(entry)}")
        if "name" in entry:
            raise SpecError(f"{path}: experiments[{i}].name: the study's name is set once, "
                            "at the top level")
        specs.append(_parse_study(_Node({**base, **entry}, str(path), f"experiments[{i}]"),
                                  path, spaces))
    return specs


def _parse_study(node: _Node, path: Path, spaces: Mapping[str, SearchSpace]) -> StudySpec:
    from study.models import MODELS

    name = node.get("name", str, check=NAME_PATTERN.match,
                    expect="a lower-case name of letters, digits, '_', '-', '.'")
    description = node.get("description", str, default="")
    dataset = _parse_dataset(node.child("dataset"))
    fractions = tuple(dict.fromkeys(node.list_of(
        "fractions", float, check=lambda v: 0 < v <= 1, expect="a fraction in (0, 1]")))
    model_node = node.child("model")
    model = model_node.get("name", str, check=lambda v: v in MODELS,
                           expect=f"one of {', '.join(MODELS)}")
    preset = model_node.get("preset", str, default="tiny",
                            check=lambda v: v in MODELS[model],
                            expect=f"one of {', '.join(sorted(MODELS[model]))}")
    model_node.done()
    seeds = node.list_of("seeds", int, default=[0], check=lambda v: v >= 0,
                         expect="a non-negative integer")
    training = _parse_training(node.child("training"), model, preset)
    augmentation = _choice(node, "augmentation", AUGMENTATION_REGIMES, "none")
    variant = node.get("variant", str, default=None, check=lambda v: 0 < len(v) <= 40,
                       expect="a short label (1-40 characters)")
    inference = node.child("inference", default={})
    mirroring = inference.get("mirroring", bool, default=False)
    inference.done()
    techniques = _parse_techniques(node.list_of("techniques", (str, dict)), str(path), spaces,
                                   fractions, node.key("techniques"))
    node.done()
    return StudySpec(
        name=name,
        description=description,
        source=str(path),
        dataset=dataset,
        fractions=fractions,
        model=model,
        model_preset=preset,
        seeds=tuple(dict.fromkeys(seeds)),
        training=training,
        techniques=techniques,
        augmentation=augmentation,
        variant=variant,
        mirroring=mirroring,
    )
