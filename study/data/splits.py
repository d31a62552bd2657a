"""Fixed test set and nested, deterministic training fractions (papers 001 §V-A, 000).

The case ids are shuffled once with a fixed seed that does not depend on the trial (every
trial of a study sees the same test set); the test set is the first ``test_cases`` of that
order and a fraction f trains on the first ``round(f * pool)`` of the rest, so smaller
fractions are always subsets of larger ones (the 5 % cases are inside the 10 % ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLIT_SEED = 20190613  # fixed: splits are part of the dataset, not of a trial


def split(case_ids: Sequence[str], test_cases: int, fraction: float) -> tuple[list, list]:
    """Return (train ids, test ids); raise ``ValueError`` if either would be empty."""
    ids = sorted(case_ids)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    if not 0 < test_cases < len(ids):
        raise ValueError(f"test_cases: expected 1..{len(ids) - 1} for {len(ids)} cases, "
                         f"got {test_cases}")
    order = [ids[i] for i in np.random.default_rng(SPLIT_SEED).permutation(len(ids))]
    test, pool = order[:test_cases], order[test_cases:]
    n_train = round(fraction * len(pool))
    if n_train == 0:
        raise ValueError(f"fraction {fraction} of a training pool of {len(pool)} cases rounds "
                         "to zero cases")
    return sorted(pool[:n_train]), sorted(test)
