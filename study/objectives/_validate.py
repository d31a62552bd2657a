"""Argument checks shared by every objective: validated once, with errors naming the value."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_label_checks = os.environ.get("STUDY_CHECK_LABELS", "") == "1"


def set_label_checks(enabled: bool) -> bool:
    """Turn the label-value checks on or off; return the previous setting.

    The checks (every hard label in ``0..C-1`` or ``ignore_index``; soft targets finite and
    non-negative) read tensor values, which on a GPU waits for every queued kernel once per
    loss or regularizer call. They are off by default, so a training step never synchronises;
    set the environment variable ``STUDY_CHECK_LABELS=1`` (read at import) or call this to
    debug a data pipeline. Shapes and dtypes are always checked.
    """
    global _label_checks
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    previous, _label_checks = _label_checks, enabled
    return previous


def label_checks() -> bool:
    """Whether the label-value checks of :func:`set_label_checks` are on."""
    return _label_checks


def check_labels(target: torch.Tensor, num_classes: int, ignore_index: int | None) -> None:
    """Every label is in ``0..C-1`` or equals ``ignore_index`` (when label checks are on)."""
    if not _label_checks:
        return
    labels = target.long()
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        raise ValueError(f"target contains labels {torch.unique(labels[bad])[:5].tolist()} "
                         f"outside 0..{num_classes - 1} (ignore_index={ignore_index})")


def check_soft_target(probs: torch.Tensor) -> None:
    """A soft target is finite and non-negative (when label checks are on)."""
    if _label_checks and (bool((probs < 0).any()) or not bool(torch.isfinite(probs).all())):
        raise ValueError("soft target must be finite and non-negative")


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` after checking it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


def check_real(name: str, value: float, *, low: float | None = None, low_open: bool = False,
               high: float | None = None) -> float:
    """Return ``value`` as a float after checking it is finite and within [low, high].

    Raises ``ValueError`` naming ``name`` and the value (``TypeError`` for non-numbers).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        bound = ">" if low_open else ">="
        raise ValueError(f"{name} must be {bound} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def check_form(form: str) -> str:
    """Check the ``form`` keyword: ``"ce"`` or ``"dsc"``."""
    return check_choice("form", form, ("ce", "dsc"))


def check_ignore_index(ignore_index: int | None) -> int | None:
    """Check ``ignore_index``: ``None`` or an int."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    return ignore_index


def as_class_vector(name: str, values: Sequence[float] | torch.Tensor | None, *,
                    low: float | None = 0.0, high: float | None = None) -> tuple[float, ...] | None:
    """Return a per-class vector (e.g. ``rare`` or ``weight``) as a tuple of floats, or None.

    Every entry must be finite and within [low, high]. The length is checked against the
    number of classes of the logits at call time (:func:`check_length`).
    """
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        if values.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {tuple(values.shape)}")
        values = values.detach().cpu().double().tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of floats, got {values!r}")
    out = []
    for k, v in enumerate(values):
        out.append(check_real(f"{name}[{k}]", v, low=low, high=high))
    if not out:
        raise ValueError(f"{name} must not be empty")
    return tuple(out)


def check_length(name: str, vector: tuple[float, ...], num_classes: int) -> None:
    """Raise ``ValueError`` if a per-class vector does not have one entry per class."""
    if len(vector) != num_classes:
        raise ValueError(
            f"{name} has {len(vector)} entries but the logits have {num_classes} classes: "
            f"{name}={list(vector)}"
        )


def check_logits(logits: torch.Tensor) -> None:
    """Check logits: a floating tensor ``[N, C, *spatial]`` with ``C >= 2``."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"logits must be a floating tensor, got dtype {logits.dtype}")
    if logits.ndim < 2:
        raise ValueError(
            f"logits must have shape [N, C, *spatial], got shape {tuple(logits.shape)}"
        )
    if logits.shape[1] < 2:
        raise ValueError(
            f"logits must have at least 2 classes on dim 1, got shape {tuple(logits.shape)}"
        )
