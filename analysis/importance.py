"""Hyperparameter importance per method and training fraction with optuna's fANOVA evaluator.

For one dataset (model, class), the completed trials (status ``ok``, a finite score) of each
method (a technique, or a technique rerun under a variant) at each training fraction become
the trials of an in-memory optuna study: the parameters are the method's hyperparameters
that take more than one value there; the objective is the trial's mean DSC over test cases.
fANOVA (Hutter et al. 2014, as ``optuna.importance.FanovaImportanceEvaluator``) fits a random
forest to (parameters -> objective) and splits its variance among the parameters; the table
gives each parameter's normalised share. The training fraction is not a hyperparameter: the
papers tune at each fraction (000 Tables I-III), and pooling fractions would let the amount
of data, which always matters, crowd out the hyperparameters. A method at a fraction with
fewer than ``min_trials`` completed trials or without two varying hyperparameters (one
hyperparameter's share is 1 trivially) is skipped, with the reason in ``skipped``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

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

__all__ = ["Importance", "hyperparameter_importance"]


@dataclass
class Importance:
    """``table``: one row per (method, fraction, hyperparameter) with ``method, technique,
    variant, fraction, parameter`` (the symbol), ``column`` (``hp_*``), ``importance,
    n_trials`` (the importances of a method at a fraction sum to 1); ``skipped``: the methods
    with hyperparameters left out somewhere, ``{method: reason}`` (the fractions named unless
    the reason holds at every one); ``unavailable``: why nothing was computed, if so."""

    table: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    unavailable: str | None = None  # why nothing was computed (e.g. scikit-learn missing)


def _trial_scores(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per completed trial: its technique, variant, method, fraction, ``hp_*`` and
    ``score`` (mean ``metric`` over its finite rows)."""
    ok = rows[rows["status"] == "ok"]
    ok = ok.assign(method=methods(ok), variant=variants(ok))
    hp = [c for c in ok.columns if c.startswith(HP_PREFIX)]
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


def hyperparameter_importance(cases: pd.DataFrame, dataset: str, model: str | None = None,
                              class_name: str | None = None, *, metric: str = "dsc",
                              postprocessed: bool = True, min_trials: int = MIN_TRIALS,
                              seed: int = 0, n_trees: int = 64) -> Importance:
    """fANOVA importance of each method's hyperparameters at each training fraction for the
    mean test ``metric`` of a trial, with or without post-processing; the fraction itself is
    never a parameter. Methods without hyperparameters (vanilla and its variants) have no
    rows. Deterministic for a given ``seed``."""
    import optuna
    from optuna.distributions import BaseDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(logging.WARNING)
    try:
        FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    except ImportError as error:  # optuna's fANOVA fits scikit-learn's random forests
        unavailable = ("optuna's fANOVA evaluator needs scikit-learn, which is not installed "
                       "(pip install scikit-learn)" if "sklearn" in str(error) else
                       "optuna's fANOVA evaluator is unavailable "
                       f"({str(error).splitlines()[0]})")
        return Importance(pd.DataFrame(columns=COLUMNS), {}, unavailable)
    rows, _, _ = _select(cases, dataset, model, class_name)
    rows = rows[rows["postprocessed"] == postprocessed]
    scores = _trial_scores(rows, metric)
    out: list[dict] = []
    skipped: dict[str, str] = {}
    for method, trials in scores.groupby("method", sort=False):
        hp = [c for c in trials.columns if c.startswith(HP_PREFIX) and trials[c].notna().any()]
        if not hp:
            continue  # no hyperparameters (vanilla): nothing to rank
        reasons: dict[float, str] = {}
        for fraction, group in trials.groupby("fraction", sort=True):
            varying = [c for c in hp if group[c].notna().all() and group[c].nunique() > 1]
            reason = _skip_reason(group, varying, min_trials)
            if reason:
                # pandas-stubs types groupby keys as any scalar; "fraction" holds floats
                reasons[fraction] = reason  # type: ignore[index]
                continue
            distributions: dict[str, BaseDistribution] = {}
            for c in varying:
                low, high = float(group[c].min()), float(group[c].max())
                distributions[c] = FloatDistribution(low, high, log=low > 0 and high / low >= 100)
            study = optuna.create_study(direction="maximize")
            study.add_trials([
                optuna.trial.create_trial(params={c: float(v) for c, v in zip(varying, values,
                                                                              strict=True)},
                                          distributions=distributions, value=float(score))
                for values, score in zip(group[varying].to_numpy(float),
                                         group["score"].to_numpy(float), strict=True)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importances = get_param_importances(
                    study, evaluator=FanovaImportanceEvaluator(n_trees=n_trees, seed=seed))
            first = group.iloc[0]
            for column, importance in importances.items():
                out.append({"method": method, "technique": first["technique"],
                            "variant": first["variant"] or None, "fraction": fraction,
                            "parameter": hp_symbol(column), "column": column,
                            "importance": importance, "n_trials": len(group)})
        if reasons:
            # pandas-stubs types groupby keys as any scalar; "method" holds str
            why = _reasons(reasons, trials["fraction"].nunique())
            skipped[method] = why  # type: ignore[index]
    return Importance(pd.DataFrame(out, columns=COLUMNS), skipped)
