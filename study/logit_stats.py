"""Logit statistics of a trial (001 §III-A, Fig. 3) and their JSON format.

For the voxels of each true class in the region of interest, the values of each logit channel
on training cases and on test cases: their number, mean, standard deviation and histogram over
fixed bins (:data:`LOGIT_BINS`, the same for every trial, so that histograms of several trials
add). Comparing the train and test means gives 001 Fig. 3's shift ``|ẑ_test| - |ẑ_train|``.

The ``logit_stats`` column of the ``trials`` table holds them as JSON, written by
:func:`to_json` and read (and validated) by :func:`from_json`, this module being the one
definition of the format::

    {"bin_edges": [e_0, ..., e_B],
     "train" | "test": {TRUE CLASS: {LOGIT CLASS:
                        {"voxels": n, "mean": m, "std": s, "hist": [c_0, ..., c_B-1]}}}}

``hist[i]`` counts the values in ``[e_i, e_i+1)`` (the last bin also holds ``e_B``) after
clipping to ``[e_0, e_B]``; ``mean`` and ``std`` (population) are ``null`` without voxels.
NumPy only: the analysis reads the format without the training stack.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

LOGIT_BINS = np.linspace(-30.0, 30.0, 61)  # fixed bins so histograms add across trials
SPLITS = ("train", "test")  # the cases whose logits are summarised
ENTRY_FIELDS = ("voxels", "mean", "std", "hist")


class LogitStats:
    """Per (true class, logit channel) running count, mean, std and :data:`LOGIT_BINS`
    histogram of the logits of the cases :meth:`add` saw (001 §III-A, Fig. 3)."""

    def __init__(self, num_classes: int):
        shape = (num_classes, num_classes)
        self.count = np.zeros(shape)
        self.total = np.zeros(shape)
        self.squares = np.zeros(shape)
        self.hist = np.zeros((*shape, len(LOGIT_BINS) - 1), np.int64)

    def add(self, logits: np.ndarray, label: np.ndarray, roi: np.ndarray) -> None:
        """Add one case: ``logits`` ``(C, *S)``, ``label`` (true class per voxel) and ``roi``
        (boolean) of shape ``S``; voxels outside the ROI are left out."""
        for t in range(self.count.shape[0]):
            voxels = logits[:, (label == t) & roi].astype(np.float64)
            for k, values in enumerate(voxels):
                self.count[t, k] += values.size
                self.total[t, k] += values.sum()
                self.squares[t, k] += (values ** 2).sum()
                clipped = np.clip(values, LOGIT_BINS[0], LOGIT_BINS[-1])
                self.hist[t, k] += np.histogram(clipped, LOGIT_BINS)[0]

    def as_dict(self, class_names: Sequence[str]) -> dict:
        """``{true class: {logit class: {voxels, mean, std, hist}}}``, one split of the JSON
        format (module docstring)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for t, true_name in enumerate(class_names):
            out[true_name] = {}
            for k, logit_name in enumerate(class_names):
                n = self.count[t, k]
                mean: float | None = None
                std: float | None = None
                if n:
                    mean = self.total[t, k] / n
                    std = math.sqrt(max(self.squares[t, k] / n - mean ** 2, 0.0))
                out[true_name][logit_name] = {"voxels": int(n), "mean": mean, "std": std,
                                              "hist": self.hist[t, k].tolist()}
        return out


def to_json(stats: Mapping[str, LogitStats], class_names: Sequence[str]) -> str:
    """The ``logit_stats`` JSON (module docstring) of ``stats`` (split -> statistics, splits
    from :data:`SPLITS`), classes named by ``class_names`` in label order."""
    unknown = sorted(set(stats) - set(SPLITS))
    if unknown:
        raise ValueError(f"logit statistics: unknown split(s) {unknown} "
                         f"(expected {', '.join(SPLITS)})")
    document: dict = {"bin_edges": LOGIT_BINS.tolist()}
    document.update({split: stats[split].as_dict(class_names) for split in SPLITS
                     if split in stats})
    return json.dumps(document)


class LogitSummary(NamedTuple):
    """One entry of the JSON format: the ``voxels`` of true class ``true_class`` in the
    ``split`` cases, the ``mean`` and ``std`` of their ``logit_class`` logit (NaN without
    voxels) and its histogram ``hist`` (float counts over the document's bin edges)."""

    split: str
    true_class: str
    logit_class: str
    voxels: int
    mean: float
    std: float
    hist: np.ndarray


class MalformedLogitStats(ValueError):
    """A ``logit_stats`` document that is not the JSON format; names the trial and the field
    (a dotted path such as ``test.kidney.tumour.hist``; ``""`` for the whole document)."""

    def __init__(self, trial: str, field: str, problem: str):
        where = f"field {field!r}" if field else "document"
        super().__init__(f"trial {trial}: logit_stats {where}: {problem}")
        self.trial, self.field = trial, field


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def from_json(text: str, trial: str) -> tuple[np.ndarray, list[LogitSummary]]:
    """Read and validate the ``logit_stats`` JSON of trial ``trial``: its bin edges and one
    :class:`LogitSummary` per (split, true class, logit class), in the document's order (a
    split that is absent has none).

    Raises :class:`MalformedLogitStats` (a ``ValueError``) naming the trial and the first
    field that is not as the format says."""

    def fail(field: str, problem: str) -> MalformedLogitStats:
        return MalformedLogitStats(trial, field, problem)

    def mapping(value, field: str) -> dict:
        if not isinstance(value, dict):
            raise fail(field, f"expected an object, got {type(value).__name__}")
        return value

    try:
        document = json.loads(text)
    except (TypeError, ValueError) as error:
        raise fail("", f"not JSON ({error})") from None
    document = mapping(document, "")
    edges = document.get("bin_edges")
    if (not isinstance(edges, list) or len(edges) < 2 or not all(map(_is_number, edges))
            or not np.all(np.diff(edges) > 0)):
        raise fail("bin_edges", f"expected at least 2 increasing numbers, got {edges!r}")
    edges = np.asarray(edges, float)
    summaries = []
    for split in SPLITS:
        for true_class, by_logit in mapping(document.get(split, {}), split).items():
            for logit_class, entry in mapping(by_logit, f"{split}.{true_class}").items():
                field = f"{split}.{true_class}.{logit_class}"
                entry = mapping(entry, field)
                missing = [key for key in ENTRY_FIELDS if key not in entry]
                if missing:
                    raise fail(field, f"missing {', '.join(missing)}")
                voxels, hist = entry["voxels"], entry["hist"]
                if not isinstance(voxels, int) or isinstance(voxels, bool) or voxels < 0:
                    raise fail(f"{field}.voxels", f"expected a count, got {voxels!r}")
                for key in ("mean", "std"):
                    if entry[key] is not None and not _is_number(entry[key]):
                        raise fail(f"{field}.{key}", f"expected a number or null, "
                                                     f"got {entry[key]!r}")
                if not isinstance(hist, list) or not all(map(_is_number, hist)):
                    raise fail(f"{field}.hist", "expected a list of counts")
                if len(hist) != len(edges) - 1:
                    raise fail(f"{field}.hist", f"{len(hist)} bins for {len(edges)} bin edges")
                summaries.append(LogitSummary(
                    split, true_class, logit_class, voxels,
                    math.nan if entry["mean"] is None else float(entry["mean"]),
                    math.nan if entry["std"] is None else float(entry["std"]),
                    np.asarray(hist, float)))
    return edges, summaries
