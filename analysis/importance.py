"""Hyperparameter importance per technique with optuna's fANOVA evaluator.

For one dataset (model, class), the completed trials of each technique (status ``ok``, a finite
score) become the trials of an in-memory optuna study: parameters are the technique's
hyperparameters that take more than one value and, when the study has several, the training
fraction; the objective is the trial's mean DSC over test cases. fANOVA (Hutter et al. 2014, as
``optuna.importance.FanovaImportanceEvaluator``) fits a random forest to (parameters ->
objective) and splits its variance among the parameters; the table gives each parameter's
normalised share. A technique with fewer than ``min_trials`` completed trials or without a
pair of varying parameters (one parameter's share is 1 trivially) is skipped, with the reason
in ``skipped``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.tables import HP_NAMES, HP_PREFIX, _select, method_name

MIN_TRIALS = 4

__all__ = ["Importance", "hyperparameter_importance"]


@dataclass
class Importance:
    """``table``: one row per (technique, parameter) with ``method, technique, parameter,
    column, importance, n_trials`` (importances of a technique sum to 1); ``skipped``: the
    techniques with hyperparameters left out, ``{technique: reason}``; ``unavailable``: why
    nothing was computed, if so."""

    table: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    unavailable: str | None = None  # why nothing was computed (e.g. scikit-learn missing)


def _name(column: str) -> str:
    return "fraction" if column == "fraction" else HP_NAMES.get(column, column)


def _trial_scores(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    ok = rows[rows["status"] == "ok"]
    hp = [c for c in ok.columns if c.startswith(HP_PREFIX)]
    values = ok[metric].where(np.isfinite(ok[metric].to_numpy(float)))
    per_trial = values.groupby(ok["trial_id"], sort=False).mean().rename("score")
    identity = ok.groupby("trial_id", sort=False)[["technique", "fraction", *hp]].first()
    return identity.join(per_trial).dropna(subset=["score"])


def hyperparameter_importance(cases: pd.DataFrame, dataset: str, model: str | None = None,
                              class_name: str | None = None, *, metric: str = "dsc",
                              postprocessed: bool = True, min_trials: int = MIN_TRIALS,
                              seed: int = 0, n_trees: int = 64) -> Importance:
    """fANOVA importance of each technique's hyperparameters (and of the training fraction
    when there are several) for the mean test ``metric`` of a trial, with or without
    post-processing. Deterministic for a given ``seed``."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(logging.WARNING)
    columns = ["method", "technique", "parameter", "column", "importance", "n_trials"]
    try:
        FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    except ImportError as error:  # optuna's fANOVA fits scikit-learn's random forests
        reason = ("optuna's fANOVA evaluator needs scikit-learn, which is not installed "
                  "(pip install scikit-learn)" if "sklearn" in str(error) else
                  f"optuna's fANOVA evaluator is unavailable ({str(error).splitlines()[0]})")
        return Importance(pd.DataFrame(columns=columns), {}, reason)
    rows, _, _ = _select(cases, dataset, model, class_name)
    rows = rows[rows["postprocessed"] == postprocessed]
    scores = _trial_scores(rows, metric)
    out, skipped = [], {}
    for technique, group in scores.groupby("technique", sort=False):
        hp = [c for c in group.columns if c.startswith(HP_PREFIX) and group[c].notna().any()]
        if not hp:
            continue  # no hyperparameters (the baseline): nothing to rank
        candidates = [*hp, "fraction"]
        varying = [c for c in candidates
                   if group[c].notna().all() and group[c].nunique() > 1]
        if len(group) < min_trials:
            skipped[technique] = (f"{len(group)} completed trial(s), fANOVA needs at least "
                                  f"{min_trials}")
            continue
        if len(varying) < 2:
            what = ", ".join(_name(c) for c in varying) or "none"
            skipped[technique] = (f"one parameter varies at most ({what}): its share would "
                                  "be 1 trivially")
            continue
        distributions = {}
        for c in varying:
            low, high = float(group[c].min()), float(group[c].max())
            distributions[c] = FloatDistribution(low, high, log=low > 0 and high / low >= 100)
        study = optuna.create_study(direction="maximize")
        study.add_trials([
            optuna.trial.create_trial(params={c: float(getattr(t, c)) for c in varying},
                                      distributions=distributions, value=float(t.score))
            for t in group.itertuples(index=False)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = get_param_importances(
                study, evaluator=FanovaImportanceEvaluator(n_trees=n_trees, seed=seed))
        for column, importance in importances.items():
            out.append({"method": method_name(technique), "technique": technique,
                        "parameter": _name(column), "column": column, "importance": importance,
                        "n_trials": len(group)})
    return Importance(pd.DataFrame(out, columns=columns), skipped)
