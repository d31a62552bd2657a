"""Hyperparameter importance per method and training fraction: the functional ANOVA of the
trials' mean score over the method's hyperparameters (Hutter et al. 2014).

For one dataset (model, class), the completed trials (status ``ok``, a finite score) of each
method (a technique, or a technique rerun under a variant) at each training fraction are
points (setting -> score): the setting is the method's hyperparameters that take more than
one value there, the score the trial's mean metric (DSC) over test cases. Functional ANOVA
writes the score as a sum of components, one per non-empty set U of hyperparameters (main
effects for one, interactions for several), whose variances add up to the variance of the
score over the setting space; the ``importance`` column is each component's share of that
total: the share of the score's variance the hyperparameter (``parameter`` a symbol, ``column``
its ``hp_*``) or the interaction (``"τ × ν"``, columns ``"hp_tau:hp_nu"``) explains. A
method's shares at a fraction sum to 1.

* A full grid (every combination of the varying hyperparameters' levels present, any number
  of seeds each; the sweeps of ``study.spec`` given as ``{name: [values]}``): the
  decomposition is computed exactly from the cell means, each level weighted alike: the main
  effect of i is the variance over i's levels of the mean over the other hyperparameters,
  an interaction's component follows by inclusion-exclusion of such marginal means
  (``grid_anova``). No model, no randomness.
* Any other set of points (settings listed one by one that do not fill their grid, as the
  papers' adversarial and margin calibration sweeps; optimise-mode studies; a grid with
  cells still missing): optuna's ``FanovaImportanceEvaluator`` (scikit-learn's random forest
  and optuna's tree code; needs scikit-learn) estimates the main effects' shares of the
  forest's variance (``fanova_shares``); the rest, all interactions together, is one row
  ``"interactions"`` (columns: every varying one, ``:``-joined). Such methods are named in
  ``Importance.estimated``.

The training fraction is not a hyperparameter: the papers tune at each fraction (000 Tables
I-III), and pooling fractions would let the amount of data, which always matters, crowd out
the hyperparameters. A method at a fraction with fewer than ``min_trials`` completed trials,
without two varying hyperparameters (one hyperparameter's share is 1 trivially) or whose
mean score is the same at every setting is skipped, with the reason in ``skipped``.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.tables import (
    _select,
    fraction_label,
    hp_symbol,
    method_order,
    methods,
    variants,
)
from study.catalog import HP_PREFIX

MIN_TRIALS = 4
COLUMNS = ["method", "technique", "variant", "fraction", "parameter", "column", "importance",
           "n_trials"]

__all__ = ["Importance", "fanova_shares", "grid_anova", "hyperparameter_importance"]


@dataclass
class Importance:
    """``table``: one row per (method, fraction, component) with ``method, technique,
    variant, fraction, parameter`` (the symbol, ``"τ × ν"`` for an interaction,
    ``"interactions"`` for all of them together), ``column`` (``hp_*``, ``:``-joined for
    several), ``importance`` (the component's share of the variance of the score; a method's
    shares at a fraction sum to 1), ``n_trials``; ``skipped``: the methods left out somewhere,
    ``{method: reason}``; ``estimated``: the methods whose points are no full grid somewhere,
    estimated with optuna's fANOVA, ``{method: why}`` (in both, the fractions are named
    unless the text holds at every one)."""

    table: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    estimated: dict[str, str] = field(default_factory=dict)


def _constant(values: np.ndarray) -> bool:
    """Whether ``values`` are equal up to rounding (1e-12 of their magnitude)."""
    return bool(np.ptp(values) <= 1e-12 * max(1.0, float(np.abs(values).max())))


def grid_anova(values: np.ndarray, scores: np.ndarray) -> dict[tuple[int, ...], float] | None:
    """The exact functional ANOVA (Hutter et al. 2014, with the uniform measure over each
    hyperparameter's levels) of ``scores`` over the settings ``values`` (one row per
    point, one column per hyperparameter), or None when the points are no full grid (a
    combination of levels without a point). Returns ``{U: V_U / V}`` for every non-empty set
    ``U`` of columns (sorted tuples of indices): ``V`` the variance of the cell means (the
    mean score of each combination), ``V_U`` the variance of the component
    ``f_U = sum over W in U of (-1)^(|U|-|W|) m_W``, ``m_W`` the mean of the cell means over
    the columns not in ``W``. The shares sum to 1; NaN when the cell means are all equal
    (``_constant``)."""
    if values.ndim != 2 or len(values) != len(scores):
        raise ValueError(f"values: expected shape (points, hyperparameters) matching the "
                         f"{len(scores)} scores, got {values.shape}")
    levels = [np.unique(column, return_inverse=True) for column in values.T]
    shape = tuple(len(unique) for unique, _ in levels)
    cell = np.ravel_multi_index(tuple(codes.reshape(-1) for _, codes in levels), shape)
    counts = np.bincount(cell, minlength=int(np.prod(shape)))
    if not counts.all():
        return None
    means = (np.bincount(cell, weights=scores, minlength=counts.size) / counts).reshape(shape)
    total = math.nan if _constant(means) else means.var()
    dims = range(len(shape))
    # m_W, kept with W's axes (the others of length 1)
    marginal: dict[tuple[int, ...], Any] = {(): means.mean()}
    shares = {}
    for size in range(1, len(shape) + 1):
        for subset in itertools.combinations(dims, size):
            others = tuple(d for d in dims if d not in subset)
            marginal[subset] = means.mean(axis=others, keepdims=True)
            component = sum((-1) ** (size - len(w)) * marginal[w]
                            for k in range(size + 1) for w in itertools.combinations(subset, k))
            shares[subset] = float(np.mean(np.square(component)) / total)
    return shares


def fanova_shares(values: np.ndarray, scores: np.ndarray, seed: int, n_trees: int
                  ) -> dict[tuple[int, ...] | None, float]:
    """optuna's fANOVA estimate (a random forest of ``n_trees`` trees, seeded by ``seed``) of
    the shares of the variance of ``scores`` over the settings ``values`` (one row per point,
    one column per hyperparameter, as :func:`grid_anova`), for any set of points: ``{(i,):
    share}`` for the main effect of each column and, under None, the rest (every interaction
    together, at least 0). Raises ``ImportError`` when scikit-learn is missing."""
    import optuna
    from optuna.distributions import BaseDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    evaluator = FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    optuna.logging.set_verbosity(logging.WARNING)
    names = [str(i) for i in range(values.shape[1])]
    distributions: dict[str, BaseDistribution] = {
        name: FloatDistribution(float(column.min()), float(column.max()))
        for name, column in zip(names, values.T, strict=True)}
    study = optuna.create_study(direction="maximize")
    study.add_trials([
        optuna.trial.create_trial(params=dict(zip(names, map(float, point), strict=True)),
                                  distributions=distributions, value=float(score))
        for point, score in zip(values, scores, strict=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main = get_param_importances(study, evaluator=evaluator, normalize=False)
    shares: dict[tuple[int, ...] | None, float] = {(int(n),): float(v) for n, v in main.items()}
    shares[None] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def _trial_scores(rows: pd.DataFrame, metric: str, postprocessed: bool) -> pd.DataFrame:
    """One row per completed trial: its technique, variant, method, fraction, ``hp_*`` and
    ``score`` (mean ``metric`` over its finite rows with/without post-processing)."""
    hp = [c for c in rows.columns if c.startswith(HP_PREFIX)]
    keep = [c for c in ("trial_id", "technique", "variant", "fraction", metric, *hp)
            if c in rows.columns]  # a frame written before ``variant`` existed has none
    ok = rows.loc[((rows["status"] == "ok") & (rows["postprocessed"] == postprocessed)
                   ).to_numpy(bool), keep]
    ok = ok.assign(method=methods(ok), variant=variants(ok))
    values = ok[metric].where(np.isfinite(ok[metric].to_numpy(float)))
    per_trial = values.groupby(ok["trial_id"], sort=False, observed=True).mean().rename("score")
    identity = ok.groupby("trial_id", sort=False, observed=True)[
        ["technique", "variant", "method", "fraction", *hp]].first()
    scores = identity.join(per_trial).dropna(subset=["score"])
    scores = pd.concat([scores, method_order(scores)], axis=1)
    return scores.sort_values(["_rank", "_technique", "_variant", "fraction"], kind="stable")


def _reasons(by_fraction: dict[float, str], fractions: int) -> str:
    """One text for the reasons a method was skipped at each fraction: a reason that holds at
    every one of the ``fractions`` is said once, others name their fractions."""
    grouped: dict[str, list[float]] = {}
    for fraction, reason in by_fraction.items():
        grouped.setdefault(reason, []).append(fraction)
    return "; ".join(reason if len(where) == fractions
                     else f"{reason} at {', '.join(map(fraction_label, where))}"
                     for reason, where in grouped.items())


def _skip_reason(group: pd.DataFrame, varying: list[str], min_trials: int) -> str | None:
    if len(group) < min_trials:
        return f"{len(group)} completed trial(s), fANOVA needs at least {min_trials}"
    if len(varying) < 2:
        what = ", ".join(hp_symbol(c) for c in varying) or "none"
        return f"one hyperparameter varies at most ({what}): its share would be 1 trivially"
    return None


def _component(columns: list[str], key: tuple[int, ...] | None) -> tuple[str, str]:
    """``(parameter, column)`` of a component: a hyperparameter, an interaction of several
    (``"τ × ν"``, ``"hp_tau:hp_nu"``) or, under None, every interaction together."""
    if key is None:
        return "interactions", ":".join(columns)
    return (" × ".join(hp_symbol(columns[i]) for i in key),
            ":".join(columns[i] for i in key))


def _no_grid(group: pd.DataFrame, varying: list[str]) -> str:
    cells = int(np.prod([group[c].nunique() for c in varying]))
    found = len(group[varying].drop_duplicates())
    return (f"{found} of the {cells} combinations of "
            f"{', '.join(hp_symbol(c) for c in varying)} (no full grid)")


def hyperparameter_importance(cases: pd.DataFrame, dataset: str, model: str | None = None,
                              class_name: str | None = None, *, metric: str = "dsc",
                              postprocessed: bool = True, min_trials: int = MIN_TRIALS,
                              seed: int = 0, n_trees: int = 64) -> Importance:
    """The importance of each method's hyperparameters and their interactions at each training
    fraction for the mean test ``metric`` of a trial, with or without post-processing (see
    the module): exact on full grids, optuna's fANOVA estimate (``seed``, ``n_trees``)
    elsewhere; the fraction is never a parameter. Methods without hyperparameters (vanilla
    and its variants) have no rows. Deterministic for a given ``seed``."""
    rows, _, _ = _select(cases, dataset, model, class_name)
    scores = _trial_scores(rows, metric, postprocessed)
    out: list[dict] = []
    skipped: dict[str, str] = {}
    estimated: dict[str, str] = {}
    for method, trials in scores.groupby("method", sort=False, observed=True):
        hp = [c for c in trials.columns if c.startswith(HP_PREFIX) and trials[c].notna().any()]
        if not hp:
            continue  # no hyperparameters (vanilla): nothing to rank
        reasons: dict[float, str] = {}
        estimates: dict[float, str] = {}
        for fraction, group in trials.groupby("fraction", sort=True):
            varying = [c for c in hp if group[c].notna().all() and group[c].nunique() > 1]
            reason = _skip_reason(group, varying, min_trials)
            shares: dict[tuple[int, ...] | None, float] = {}
            if reason is None:
                values, score = group[varying].to_numpy(float), group["score"].to_numpy(float)
                exact = grid_anova(values, score)
                if exact is not None:
                    shares.update(exact.items())
                elif not _constant(score):
                    note = _no_grid(group, varying)
                    try:
                        shares = fanova_shares(values, score, seed, n_trees)
                        # pandas-stubs types groupby keys as any scalar: "fraction" holds floats
                        estimates[fraction] = note  # type: ignore[index]
                    except ImportError as error:  # optuna's fANOVA fits scikit-learn forests
                        reason = (f"{note}, and optuna's fANOVA estimate needs scikit-learn "
                                  f"({str(error).splitlines()[0]}; pip install scikit-learn)")
                if reason is None and not (shares and all(map(math.isfinite, shares.values()))):
                    reason = "the mean score is the same at every setting: no variance to share"
            if reason is not None:
                reasons[fraction] = reason  # type: ignore[index]
                continue
            first = group.iloc[0]
            for key, importance in sorted(shares.items(), key=lambda item: -item[1]):
                parameter, column = _component(varying, key)
                out.append({"method": method, "technique": first["technique"],
                            "variant": first["variant"] or None, "fraction": fraction,
                            "parameter": parameter, "column": column,
                            "importance": importance, "n_trials": len(group)})
        fractions = trials["fraction"].nunique()
        # pandas-stubs types groupby keys as any scalar; "method" holds str
        if reasons:
            skipped[method] = _reasons(reasons, fractions)  # type: ignore[index]
        if estimates:
            estimated[method] = _reasons(estimates, fractions)  # type: ignore[index]
    return Importance(pd.DataFrame(out, columns=COLUMNS), skipped, estimated)
