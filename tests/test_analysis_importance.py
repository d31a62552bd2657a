"""Hyperparameter importance: the exact functional ANOVA of full grids (known decompositions,
agreement with optuna's fANOVA estimate of the same shares) and the fallback to that estimate
where the points are no full grid."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

from analysis import hyperparameter_importance, load
from analysis._synthetic import store_trial
from analysis.importance import fanova_shares, grid_anova
from study.results import ResultStore

needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="optuna's fANOVA needs scikit-learn")


def _grid(*levels, repeats: int = 1) -> np.ndarray:
    """Every combination of ``levels`` (one point each, ``repeats`` times)."""
    return np.array([p for p in itertools.product(*levels) for _ in range(repeats)], float)


def test_additive_function_splits_by_the_variances_of_its_terms():
    """f = a(x) + b(y): the main effects' shares are var(a) / (var(a) + var(b)) and
    var(b) / (...), the interaction's 0; seeds moving every setting alike change nothing."""
    x, y = np.array([0.5, 1.0, 2.0, 4.0]), np.array([1e-4, 1e-3, 1e-2])
    points = _grid(x, y, repeats=3)
    seed = np.tile([0.0, 0.01, 0.02], len(points) // 3)
    a, b = np.sin(3 * x), np.log10(y) ** 2 / 10
    shares = grid_anova(points, np.sin(3 * points[:, 0]) + np.log10(points[:, 1]) ** 2 / 10
                        + seed)
    assert shares is not None and set(shares) == {(0,), (1,), (0, 1)}
    total = a.var() + b.var()
    assert shares[(0,)] == pytest.approx(a.var() / total)
    assert shares[(1,)] == pytest.approx(b.var() / total)
    assert shares[(0, 1)] == pytest.approx(0.0, abs=1e-12)


def test_pure_interaction_is_the_interaction_term():
    """f = (x - mean x)(y - mean y) has no main effect: the interaction holds all the variance;
    with a third hyperparameter that does nothing, the triple interaction and every set with
    it hold none."""
    points = _grid([1.0, 2.0, 3.0], [0.0, 1.0])
    shares = grid_anova(points, (points[:, 0] - 2.0) * (points[:, 1] - 0.5))
    assert shares == pytest.approx({(0,): 0.0, (1,): 0.0, (0, 1): 1.0}, abs=1e-12)
    points = _grid([1.0, 2.0, 3.0], [0.0, 1.0], [5.0, 6.0])
    shares = grid_anova(points, (points[:, 0] - 2.0) * (points[:, 1] - 0.5))
    assert shares is not None and len(shares) == 7
    assert shares[(0, 1)] == pytest.approx(1.0)
    assert sum(v for k, v in shares.items() if k != (0, 1)) == pytest.approx(0.0, abs=1e-12)


def test_cells_weigh_alike_and_shares_sum_to_one():
    """The decomposition is of the cell means: a cell with more seeds does not weigh more;
    on arbitrary cell means of three hyperparameters the shares of all seven components sum
    to 1."""
    rng = np.random.default_rng(0)
    points = _grid([1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0, 3.0, 4.0])
    means = rng.normal(size=len(points))
    shares = grid_anova(points, means)
    assert shares is not None and sum(shares.values()) == pytest.approx(1.0)
    extra = np.concatenate([points, np.repeat(points[:1], 5, axis=0)])
    noise = np.array([0.1, -0.1, 0.2, -0.2, 0.0])  # five more seeds of cell 0, same mean
    again = grid_anova(extra, np.concatenate([means, means[0] + noise]))
    assert again == pytest.approx(shares)


def test_missing_combination_is_no_grid_and_bad_shapes_are_named():
    points = _grid([1.0, 2.0], [1.0, 2.0, 3.0])
    assert grid_anova(points[:-1], np.arange(5.0)) is None
    with pytest.raises(ValueError, match="expected shape"):
        grid_anova(points, np.arange(5.0))


@needs_sklearn
def test_optuna_fanova_estimates_the_same_main_effects_on_a_smooth_grid():
    """optuna's fANOVA fits a random forest to the points and estimates the same shares: on a
    smooth function of an 8 x 8 grid its main effects agree with the exact ones within 0.05,
    and its rest (every interaction) with the exact interaction."""
    points = _grid(np.linspace(0, 1, 8), np.linspace(0, 1, 8))
    x, y = points.T
    score = np.sin(2 * x) + 0.5 * y + 0.3 * x * y
    exact = grid_anova(points, score)
    estimate = fanova_shares(points, score, seed=0, n_trees=64)
    assert exact is not None and exact[(0,)] > 0.7 and exact[(1,)] > 0.2
    assert estimate[(0,)] == pytest.approx(exact[(0,)], abs=0.05)
    assert estimate[(1,)] == pytest.approx(exact[(1,)], abs=0.05)
    assert estimate[None] == pytest.approx(exact[(0, 1)], abs=0.05)
    assert sum(estimate.values()) == pytest.approx(1.0)


def _store_sweep(store: ResultStore, settings, dsc_of) -> None:
    for seed in (0, 1):
        for tau, nu in settings:
            store_trial(store, "margin_calibration", {"tau": tau, "nu": nu}, seed,
                        [dsc_of(tau, nu) + 0.01 * seed, dsc_of(tau, nu) - 0.01 * seed])


@needs_sklearn
def test_points_that_are_no_full_grid_fall_back_to_the_estimate(tmp_path):
    """Margin calibration's listed settings (5 of the 2 x 4 combinations of τ and ν): the
    table holds optuna's estimate (main effects and the rest as ``interactions``, summing to
    1) and ``estimated`` names the method and why."""
    store = ResultStore(str(tmp_path))
    _store_sweep(store, [(1, 10), (1, 1), (10, 1), (10, 0.1), (10, 0.01)],
                 lambda tau, nu: 0.3 + 0.02 * tau + 0.001 * nu)
    result = hyperparameter_importance(load(str(tmp_path)), "d")
    assert result.estimated == {"Margin calibration": "5 of the 8 combinations of τ, ν (no "
                                                      "full grid)"}
    shares = result.table.set_index("parameter")["importance"]
    assert set(shares.index) == {"τ", "ν", "interactions"} and shares["τ"] > 0.5
    assert shares.sum() == pytest.approx(1.0)
    assert result.table.set_index("parameter").loc["interactions", "column"] == "hp_tau:hp_nu"


def test_a_score_that_does_not_vary_is_skipped(tmp_path):
    store = ResultStore(str(tmp_path))
    _store_sweep(store, itertools.product((1, 10), (0.1, 1)), lambda tau, nu: 0.5)
    result = hyperparameter_importance(load(str(tmp_path)), "d")
    assert result.table.empty
    assert result.skipped == {"Margin calibration": "the mean score is the same at every "
                                                    "setting: no variance to share"}
