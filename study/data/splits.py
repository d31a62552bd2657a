"""Fixed test set and nested, deterministic training fractions (papers 001 §V-A, 000).

The sorted case ids are shuffled once with a fixed seed that does not depend on the trial
(every trial of a study sees the same test set); the test set is the first ``test_cases`` of
that order (a dataset with its own labelled test set, nnU-Net's ``imagesTs/`` + ``labelsTs/``,
tests on those instead and shuffles the other cases) and a fraction f trains on the first n(f)
of the rest, so smaller fractions are always subsets of larger ones (the 5 % cases are inside
the 10 % ones).

n(f) is the papers' count where one is declared for the pool (``counts``, e.g. BRATS 190 ->
95 / 38 / 19 / 10, ATLAS 145 -> 73 / 57 / 43, KiTS 140 -> 70 / 28 / 14 / 7, abdomen 20 -> 5;
:attr:`study.data.registry.DatasetInfo.train_counts`), used when the pool has exactly
``counts[1.0]`` cases; otherwise ``f * pool`` rounded half up. A fraction that gives zero
training cases is an error, never an empty run. Optional validation cases (for choosing
settings, never reported as test results) come from the end of the pool, outside every
fraction's training cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

SPLIT_SEED = 20190613  # fixed: splits are part of the dataset, not of a trial


def train_count(pool: int, fraction: float, counts: Mapping[float, int] | None = None) -> int:
    """Training cases for ``fraction`` of a pool of ``pool`` cases (see the module docstring)."""
    if counts and counts.get(1.0) == pool:
        for declared, n in counts.items():
            if math.isclose(declared, fraction, rel_tol=1e-9):
                return int(n)
    return math.floor(fraction * pool + 0.5)


def _order(case_ids: Sequence[str], test_cases: int | None, validation_cases: int,
           given_test: Sequence[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """(test, training pool, validation) in the fixed shuffled order; ``given_test``: the
    dataset's own test set (``test_cases`` must then be ``None``), the pool the other ids."""
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("case ids must be unique")
    if validation_cases < 0:
        raise ValueError(f"validation_cases: expected an integer >= 0, got {validation_cases}")
    given = set(given_test)
    if given and (test_cases is not None or not given <= set(ids)):
        raise ValueError(f"test_cases: the dataset's own test set ({len(given)} cases) replaces "
                         f"test_cases, expected None, got {test_cases!r}; test ids not among "
                         f"the cases: {sorted(given - set(ids))}")
    if given:
        held = 0
    elif test_cases is None:
        raise ValueError("test_cases: expected the number of cases to hold out, got None (the "
                         "dataset has no test set of its own)")
    else:
        held = test_cases
    pool_ids = [i for i in ids if i not in given]
    if not (given or held > 0) or held >= len(pool_ids) - validation_cases:
        raise ValueError(f"test_cases: expected 1..{len(ids) - validation_cases - 1} for "
                         f"{len(ids)} cases with {validation_cases} validation case(s), "
                         f"got {test_cases}" if not given else
                         f"{len(pool_ids)} training case(s) besides the dataset's own test set "
                         f"leave none with {validation_cases} validation case(s)")
    order = [pool_ids[i] for i in np.random.default_rng(SPLIT_SEED).permutation(len(pool_ids))]
    rest = order[held:]
    cut = len(rest) - validation_cases
    return (sorted(given) or order[:held]), rest[:cut], rest[cut:]


def split(case_ids: Sequence[str], test_cases: int | None, fraction: float,
          counts: Mapping[float, int] | None = None, validation_cases: int = 0,
          given_test: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Return (train ids, test ids), both sorted.

    ``validation_cases`` are taken from the end of the training pool (:func:`validation`)
    before the fraction is applied, so the nested training subsets stay nested.
    ``given_test``: the dataset's own labelled test cases (nnU-Net ``imagesTs/`` +
    ``labelsTs/``, :func:`study.data.loader.given_test_cases`), which are then the test set
    instead of ``test_cases`` held out (``test_cases`` must be ``None``); the training pool is
    every other case.

    Raises ``ValueError`` for a fraction outside (0, 1], a test set that leaves no training
    pool, duplicate ids, or a fraction that rounds to zero training cases.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    test, pool, _ = _order(case_ids, test_cases, validation_cases, given_test)
    n_train = train_count(len(pool), fraction, counts)
    if n_train == 0:
        raise ValueError(f"fraction {fraction} of a training pool of {len(pool)} cases rounds "
                         "to zero cases")
    return sorted(pool[:n_train]), sorted(test)


def validation(case_ids: Sequence[str], test_cases: int | None, validation_cases: int,
               given_test: Sequence[str] = ()) -> list[str]:
    """The ``validation_cases`` held out of the training pool (sorted; the same for every
    fraction and trial), for choosing settings on cases that neither train nor test."""
    return sorted(_order(case_ids, test_cases, validation_cases, given_test)[2])
