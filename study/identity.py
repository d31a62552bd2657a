"""The trial identity: the frozen, typed trial config and the ``trial_id`` of its canonical JSON.

:class:`TrialConfig` is what every stage after expansion (``study.expand.expand``) reads: the
trial's dataset, training fraction, model, technique, hyperparameters, seed, training budget
and segments, augmentation regime and test-time mirroring. Its :meth:`TrialConfig.to_dict` is
the canonical dict Ray Tune and ``study.json`` carry; :meth:`TrialConfig.from_dict` reads one
back, rejecting unknown and missing keys by name. Keys that are absent from the identity of
some trials stay absent: ``training.update``, ``training.mixup_lambda`` and
``training.pretrain`` where the trial has none (``None``, ``None``, ``0``), the dataset's
``synthetic`` parameters and an own dataset's ``layout``/``sha256``/``options`` where the
dataset has none (``None``), so that ``from_dict(d).to_dict() == d`` and every id stays the
same.

``trial_id`` is the first 16 hex digits of the SHA-256 of the canonical JSON (sorted keys,
compact separators, floats normalised to 12 significant digits, ``-0.0`` -> ``0.0``), so the
same study file expands to the same ids in any process on any machine. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")


def _normalise(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"trial configs hold finite numbers only, got {value!r}")
        return float(f"{value:.12g}") + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    raise TypeError(f"trial configs hold JSON values only, got {type(value).__name__}")


def canonical_json(config: Mapping[str, Any] | None) -> str:
    """The canonical JSON text of a trial config (what ``trial_id`` hashes); ``null`` for
    none (the failed row of a param without one)."""
    return json.dumps(
        _normalise(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def trial_id(config: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit id of a trial config."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:16]


class FrozenMap(Mapping[str, V], Generic[V]):
    """An immutable, hashable mapping (a trial config's hyperparameters and JSON objects)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, V] | None = None):
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


def _freeze(value: Any) -> Any:
    """A JSON value with its objects as :class:`FrozenMap` and its arrays as tuples."""
    if isinstance(value, Mapping):
        return FrozenMap({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """The JSON value of a frozen one (objects as dicts, arrays as lists)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _keys(data: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
          ) -> Mapping[str, Any]:
    """``data`` as a mapping holding every ``required`` key and no key beyond ``optional``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"trial config {where}: expected a mapping, got {data!r}")
    missing = [k for k in required if k not in data]
    unknown = sorted(set(data) - {*required, *optional})
    if missing or unknown:
        raise ValueError(f"trial config {where}".rstrip() + ": " + "; ".join(
            ([f"missing key(s) {missing}"] if missing else [])
            + ([f"unknown key(s) {unknown} (known: {', '.join((*required, *optional))})"]
               if unknown else [])))
    return data


def _typed(value: Any, kind: type | tuple[type, ...], where: str, expect: str) -> Any:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ValueError(f"trial config {where}: expected {expect}, got {value!r}")
    if not isinstance(value, kind):
        raise ValueError(f"trial config {where}: expected {expect}, got {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    return _typed(value, int, where, "an integer")


def _number(value: Any, where: str) -> float:
    return _typed(value, (int, float), where, "a number")


def _str(value: Any, where: str) -> str:
    return _typed(value, str, where, "a string")


def _object(value: Any, where: str) -> FrozenMap[Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"trial config {where}: expected a mapping, got {value!r}")
    return _freeze(value)


def _patch(value: Any, where: str) -> tuple[int, int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"trial config {where}: expected 3 integers, got {value!r}")
    a, b, c = (_int(v, where) for v in value)
    return a, b, c


@dataclass(frozen=True, slots=True)
class DatasetConfig:
    """Which data a trial uses: a declared or synthetic dataset by ``name`` (``synthetic``:
    its generator parameters), or an own dataset (``layout``, the ``sha256`` of its
    ``dataset.json`` and its resolved ``options``; never its folder). ``test_cases`` is
    ``None`` where the dataset holds its own labelled test set."""

    name: str
    test_cases: int | None
    validation_cases: int
    synthetic: FrozenMap[Any] | None = None
    layout: str | None = None
    sha256: str | None = None
    options: FrozenMap[Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "test_cases": self.test_cases,
                               "validation_cases": self.validation_cases}
        if self.synthetic is not None:
            out["synthetic"] = _thaw(self.synthetic)
        if self.layout is not None:
            out.update(layout=self.layout, sha256=self.sha256, options=_thaw(self.options))
        return out

    @classmethod
    def from_dict(cls, data: Any) -> DatasetConfig:
        own = ("layout", "sha256", "options")
        d = _keys(data, "dataset", ("name", "test_cases", "validation_cases"),
                  ("synthetic", *own))
        if any(k in d for k in own):
            _keys(d, "dataset (an own dataset)", ("name", "test_cases", "validation_cases",
                                                  *own), ("synthetic",))
        test_cases = d["test_cases"]
        return cls(_str(d["name"], "dataset.name"),
                   None if test_cases is None else _int(test_cases, "dataset.test_cases"),
                   _int(d["validation_cases"], "dataset.validation_cases"),
                   _object(d["synthetic"], "dataset.synthetic") if "synthetic" in d else None,
                   _str(d["layout"], "dataset.layout") if "layout" in d else None,
                   _str(d["sha256"], "dataset.sha256") if "sha256" in d else None,
                   _object(d["options"], "dataset.options") if "options" in d else None)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The network: a model of ``study.models`` and its preset."""

    name: str
    preset: str

    @property
    def label(self) -> str:
        """``name-preset``: the ``model`` column of the results tables."""
        return f"{self.name}-{self.preset}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "preset": self.preset}

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        d = _keys(data, "model", ("name", "preset"))
        return cls(_str(d["name"], "model.name"), _str(d["preset"], "model.preset"))


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """How the trial trains (``study.spec.TrainingSpec`` documents each field): the budget,
    batch, segments (``input_patch`` read, ``output_patch`` labelled), learning rate (``None``:
    the model's paper value), foreground share and sampling scheme. ``update`` (the update
    rule) is ``None`` where it is not part of the identity (a technique that adds no batch:
    the rules coincide; train with ``summed``), ``mixup_lambda`` ``None`` except for
    asymmetric mixup (train with ``paper``), ``pretrain`` 0 for no CE pre-training (003 §4)."""

    iterations: int
    batch_size: int
    input_patch: tuple[int, int, int]
    output_patch: tuple[int, int, int]
    lr: float | None
    fg_fraction: float
    sampling: str
    update: str | None = None
    mixup_lambda: str | None = None
    pretrain: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "iterations": self.iterations, "batch_size": self.batch_size,
            "input_patch": list(self.input_patch), "output_patch": list(self.output_patch),
            "lr": self.lr, "fg_fraction": self.fg_fraction, "sampling": self.sampling}
        if self.update is not None:
            out["update"] = self.update
        if self.mixup_lambda is not None:
            out["mixup_lambda"] = self.mixup_lambda
        if self.pretrain:  # absent when 0: trials without pre-training keep their ids
            out["pretrain"] = self.pretrain
        return out

    @classmethod
    def from_dict(cls, data: Any) -> TrainingConfig:
        d = _keys(data, "training", ("iterations", "batch_size", "input_patch", "output_patch",
                                     "lr", "fg_fraction", "sampling"),
                  ("update", "mixup_lambda", "pretrain"))
        pretrain = _int(d["pretrain"], "training.pretrain") if "pretrain" in d else 0
        if "pretrain" in d and pretrain < 1:
            raise ValueError(f"trial config training.pretrain: expected a positive integer "
                             f"(no pre-training leaves the key out), got {pretrain}")
        return cls(_int(d["iterations"], "training.iterations"),
                   _int(d["batch_size"], "training.batch_size"),
                   _patch(d["input_patch"], "training.input_patch"),
                   _patch(d["output_patch"], "training.output_patch"),
                   None if d["lr"] is None else _number(d["lr"], "training.lr"),
                   _number(d["fg_fraction"], "training.fg_fraction"),
                   _str(d["sampling"], "training.sampling"),
                   _str(d["update"], "training.update") if "update" in d else None,
                   _str(d["mixup_lambda"], "training.mixup_lambda") if "mixup_lambda" in d
                   else None,
                   pretrain)


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    """How the trial predicts whole volumes: with test-time mirroring (001 §V-A.4) or not."""

    mirroring: bool

    def to_dict(self) -> dict[str, Any]:
        return {"mirroring": self.mirroring}

    @classmethod
    def from_dict(cls, data: Any) -> InferenceConfig:
        d = _keys(data, "inference", ("mirroring",))
        return cls(_typed(d["mirroring"], bool, "inference.mirroring", "true or false"))


TRIAL_KEYS = ("dataset", "fraction", "model", "technique", "hp", "seed", "training",
              "augmentation", "inference")


@dataclass(frozen=True, slots=True)
class TrialConfig:
    """One trial's identity (see the module docstring): ``hp`` maps the technique's
    hyperparameters to their values (empty for techniques without any)."""

    dataset: DatasetConfig
    fraction: float
    model: ModelConfig
    technique: str
    hp: FrozenMap[float]
    seed: int
    training: TrainingConfig
    augmentation: str
    inference: InferenceConfig

    def to_dict(self) -> dict[str, Any]:
        """The canonical dict (what Ray Tune and ``study.json`` carry)."""
        return {"dataset": self.dataset.to_dict(), "fraction": self.fraction,
                "model": self.model.to_dict(), "technique": self.technique,
                "hp": dict(self.hp), "seed": self.seed, "training": self.training.to_dict(),
                "augmentation": self.augmentation, "inference": self.inference.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> TrialConfig:
        """The typed config of a canonical dict; ``ValueError`` naming any missing or unknown
        key and any value of the wrong type."""
        d = _keys(data, "", TRIAL_KEYS)
        hp = d["hp"]
        if not isinstance(hp, Mapping):
            raise ValueError(f"trial config hp: expected a mapping, got {hp!r}")
        return cls(DatasetConfig.from_dict(d["dataset"]), _number(d["fraction"], "fraction"),
                   ModelConfig.from_dict(d["model"]), _str(d["technique"], "technique"),
                   FrozenMap({_str(k, "hp"): _number(v, f"hp.{k}") for k, v in hp.items()}),
                   _int(d["seed"], "seed"), TrainingConfig.from_dict(d["training"]),
                   _str(d["augmentation"], "augmentation"),
                   InferenceConfig.from_dict(d["inference"]))

    @property
    def trial_id(self) -> str:
        """The id of this config (:func:`trial_id` of :meth:`to_dict`)."""
        return trial_id(self.to_dict())
