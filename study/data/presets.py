"""The synthetic presets as declarations: channels, layout, default generator parameters and
the values the generator accepts. Standard library only, so that the dataset registry (and the
study-file validation that reads it) imports no imaging stack; generation itself is
:mod:`study.data.synthetic`.

Parameters (all presets): ``version`` (must equal :data:`VERSION`), ``cases`` (2 to
:data:`MAX_CASES`), ``shape`` [D, H, W] (>= 16 each), ``spacing`` [D, H, W] mm written to
the headers, ``seed``,
``lesions`` [min, max] per case, ``lesion_scale`` (size multiplier), ``contrast`` [low, high]
(per-case lesion visibility, 1 = the preset's tissue tables), ``phenotypes`` (synthetic-brats:
the tumour looks a case is drawn from: ``ring``, ``solid``, ``non_enhancing``), ``channel_jitter``
(synthetic-brats: std of the log of a per-case, per-channel contrast factor), ``texture``
(amplitude of smooth tissue texture), ``noise`` (white noise std), ``bias`` (bias-field
amplitude; MR only).
MR intensities are relative to white matter = 1 (``noise``/``texture`` in those units) and
written as int16 x 1000; CT values are HU (``noise``/``texture`` in HU). Every parameter is part
of the trial identity; ``version`` names the generator algorithm, so data made by an older
generator is never mistaken for the current one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

VERSION = 2  # bump when study.data.synthetic draws different data from the same parameters
CHANNELS: dict[str, tuple[str, ...]] = {
    "synthetic-brats": ("t1", "t1ce", "t2", "flair"),
    "synthetic-atlas": ("t1w",),
    "synthetic-kits": ("ct",),
}
LAYOUTS = {"synthetic-brats": "brats", "synthetic-atlas": "atlas", "synthetic-kits": "kits19"}
PHENOTYPES = ("ring", "solid", "non_enhancing")
_COMMON = {"version": VERSION, "cases": 40, "seed": 0}
MAX_CASES = 10_000  # a typo guard: every case is generated and written to disk
DEFAULTS: dict[str, dict[str, Any]] = {
    "synthetic-brats": {**_COMMON, "shape": [48, 48, 48], "spacing": [1.0, 1.0, 1.0],
                        "lesions": [1, 3], "lesion_scale": 1.0, "contrast": [0.35, 1.2],
                        "phenotypes": ["ring"], "channel_jitter": 0.5, "texture": 0.05,
                        "noise": 0.03, "bias": 0.1},
    "synthetic-atlas": {**_COMMON, "shape": [56, 56, 56], "spacing": [1.0, 1.0, 1.0],
                        "lesions": [1, 2], "lesion_scale": 1.0, "contrast": [0.4, 0.9],
                        "texture": 0.05, "noise": 0.03, "bias": 0.1},
    "synthetic-kits": {**_COMMON, "shape": [32, 80, 80], "spacing": [3.2, 1.6, 1.6],
                       "lesions": [1, 1], "lesion_scale": 1.0, "contrast": [0.4, 1.0],
                       "texture": 12.0, "noise": 12.0, "bias": 0.0},
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _number(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: _is_number(v) and low <= v <= high


def _integer(low: int, high: float = math.inf) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and low <= v <= high


def _list(n: int, item: Callable[[Any], bool], ordered: bool = False) -> Callable[[Any], bool]:
    """A list of ``n`` values each passing ``item``; ``ordered``: non-decreasing."""
    return lambda v: (isinstance(v, list) and len(v) == n and all(map(item, v))
                      and (not ordered or all(a <= b for a, b in pairwise(v))))


# parameter -> (valid?, what is expected); ``version`` is checked on its own.
_Rules = dict[str, tuple[Callable[[Any], bool], str]]
_MR_RULES: _Rules = {
    "cases": (_integer(2, MAX_CASES), f"an integer 2..{MAX_CASES:,}"),
    "seed": (_integer(0), "a non-negative integer"),
    "shape": (_list(3, _integer(16, 512)), "3 integers in [16, 512]"),
    "spacing": (_list(3, _number(0.1, 10)), "3 numbers in [0.1, 10] mm"),
    "lesions": (_list(2, _integer(1, 8), ordered=True), "[min, max] with 1 <= min <= max <= 8"),
    "lesion_scale": (_number(0.25, 4), "a number in [0.25, 4]"),
    "contrast": (_list(2, lambda v: _number(0, 3)(v) and v > 0, ordered=True),
                 "[low, high] with 0 < low <= high <= 3"),
    "phenotypes": (lambda v: isinstance(v, list) and bool(v) and all(p in PHENOTYPES for p in v),
                   f"a non-empty list of {', '.join(map(repr, PHENOTYPES))}"),
    "channel_jitter": (_number(0, 2), "a number in [0, 2]"),
    "texture": (_number(0, 1), "a number in [0, 1]"),
    "noise": (_number(0, 1), "a number in [0, 1]"),
    "bias": (_number(0, 0.5), "a number in [0, 0.5]"),
}
_CT_RULES: _Rules = {**_MR_RULES, "texture": (_number(0, 200), "a number in [0, 200] HU"),
                     "noise": (_number(0, 200), "a number in [0, 200] HU")}
_RULES = {"synthetic-brats": _MR_RULES, "synthetic-atlas": _MR_RULES,
          "synthetic-kits": _CT_RULES}


def check_params(preset: str, params: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the parameter, the value and what was expected if
    ``params`` are not a complete, valid parameter set of ``preset``, e.g.
    ``"cases: expected an integer >= 2, got 1"``."""
    if preset not in DEFAULTS:
        raise ValueError(f"unknown synthetic preset {preset!r} (known: {', '.join(DEFAULTS)})")
    unknown = sorted(set(params) - set(DEFAULTS[preset]))
    missing = sorted(set(DEFAULTS[preset]) - set(params))
    if unknown or missing:
        raise ValueError(f"{preset}: unknown parameters {unknown}, missing {missing}")
    if params["version"] != VERSION:
        raise ValueError(f"version: this code generates version {VERSION}, got "
                         f"{params['version']!r}")
    for name in DEFAULTS[preset]:
        if name == "version":
            continue
        valid, expected = _RULES[preset][name]
        if not valid(params[name]):
            raise ValueError(f"{name}: expected {expected}, got {params[name]!r}")
