"""The papers' tables from the ``cases`` table (DESIGN.md "contract — analysis API").

* ``sensitivity_table``: one block of 000 Table IV (every setting of every technique at one
  dataset, fraction and post-processing; the vanilla baseline first).
* ``best_settings`` / ``best_hyperparameters``: the setting chosen per technique and training
  fraction, as 000 Tables I-III print it.
* ``comparison_table``: technique rows x fraction columns of DSC/SEN/PRC/HD at the chosen
  settings, with the best and second best per column ranked (001 Tables II-IV, 000 VI-VIII).

Means are taken over cases, then over seeds; DSC, sensitivity and precision in percent, HD95 in
mm. Each metric is averaged over the cases where it is finite; ``hd95_left_out`` counts the
(case, seed) pairs whose HD95 is infinite or undefined (an empty prediction must not silently
improve a mean HD). Only rows of trials with status ``ok`` enter the means; ``n_diverged``
counts the seeds that diverged.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import ResultsError, check_cases

# Display names as the papers print them, in the papers' row order.
METHOD_NAMES = {
    "vanilla": "Vanilla",
    "large_margin": "Large margin loss",
    "asym_large_margin": "Asymmetric large margin loss",
    "focal": "Focal loss",
    "asym_focal": "Asymmetric focal loss",
    "adversarial": "Adversarial training",
    "asym_adversarial": "Asymmetric adversarial training",
    "mixup": "Mixup",
    "asym_mixup": "Asymmetric mixup",
    "asym_augmentation": "Asymmetric augmentation",
    "margin_calibration": "Margin calibration",
    "combination": "Symmetric combination",
    "asym_combination": "Asymmetric combination",
    "dsc": "DSC loss",
    "jaccard": "Jaccard loss",
    "f_beta": "F-beta loss",
}
# How the papers name each hyperparameter (000 Tables I-III use the symbol after the method).
HP_NAMES = {
    "hp_m": "m", "hp_gamma": "γ", "hp_eps": "ε", "hp_l": "l", "hp_mixup_m": "m",
    "hp_mixup_alpha": "α", "hp_tau": "τ", "hp_nu": "ν", "hp_bg_aug_prob": "p(background)",
    "hp_beta": "β",
}
BASELINE = "vanilla"
METRICS = ("dsc", "sensitivity", "precision", "hd95", "hd95_max")
PERCENT = ("dsc", "sensitivity", "precision")
LOWER_IS_BETTER = ("hd95", "hd95_max")
RANKED = ("dsc", "sensitivity", "precision", "hd95")
HP_PREFIX = "hp_"
# Means closer than this (percentage points) count as equal: DSC equal to the baseline's up
# to floating-point noise is not "worse".
TIE = 1e-9

__all__ = ["METHOD_NAMES", "best_hyperparameters", "best_settings", "comparison_table",
           "fraction_label", "method_name", "selection_description", "sensitivity_table"]


def method_name(technique: str) -> str:
    return METHOD_NAMES.get(technique, technique)


def fraction_label(fraction: float) -> str:
    """``0.05`` -> ``5%``, ``0.125`` -> ``12.5%``."""
    return f"{round(fraction * 100, 6):g}%"


def plain(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """``columns`` as plain strings (``load`` gives categoricals; small tables sort and map
    by value)."""
    for column in columns:
        if column in frame.columns and isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(str)
    return frame


def _hp_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(HP_PREFIX)]


def _choose(values: list, what: str, given, context: str):
    if given is not None:
        return given
    if len(values) > 1:
        raise ValueError(f"results of several {what}s {values}{context}: pass {what}=")
    return values[0]


def _select(cases: pd.DataFrame, dataset: str, model: str | None,
            class_name: str | None) -> tuple[pd.DataFrame, str, str]:
    """Rows of one dataset, model and class; ``ValueError`` names what has no results."""
    check_cases(cases)
    if cases.empty:
        raise ValueError("no results: the cases table is empty (no finished trial yet)")
    mask = (cases["dataset"] == dataset).to_numpy(bool, copy=True)
    if not mask.any():
        raise ValueError(f"no results for dataset {dataset!r} "
                         f"(have {sorted(cases['dataset'].unique())})")
    models = sorted(cases.loc[mask, "model"].unique())
    model = _choose(models, "model", model, f" for dataset {dataset!r}")
    mask &= (cases["model"] == model).to_numpy(bool)
    if not mask.any():
        raise ValueError(f"no results for model {model!r} of dataset {dataset!r} "
                         f"(have {models})")
    classes = sorted(cases.loc[mask, "class_name"].unique())
    class_name = _choose(classes, "class_name", class_name, "")
    mask &= (cases["class_name"] == class_name).to_numpy(bool)
    if not mask.any():
        raise ValueError(f"no results for class {class_name!r} (have {classes})")
    # Only the columns the tables read: filtering a million rows moves every column kept.
    keep = [c for c in cases.columns if c in _NEEDED or c.startswith(HP_PREFIX)]
    return cases.loc[mask, keep], model, class_name


_NEEDED = {*METRICS, "technique", "param_label", "dataset", "model", "fraction", "seed",
           "case_id", "class_name", "postprocessed", "status", "trial_id"}


def _at_fraction(rows: pd.DataFrame, fraction: float, postprocessed: bool,
                 dataset: str) -> pd.DataFrame:
    block = rows[np.isclose(rows["fraction"].to_numpy(float), fraction)]
    if block.empty:
        have = ", ".join(f"{f:g}" for f in sorted(rows["fraction"].unique()))
        raise ValueError(f"no results for dataset {dataset!r} at fraction {fraction:g} "
                         f"(have {have})")
    block = block[block["postprocessed"] == postprocessed]
    if block.empty:
        raise ValueError(f"no {'post-processed' if postprocessed else 'raw'} results for "
                         f"dataset {dataset!r} at fraction {fraction:g}")
    return block


def _settings(block: pd.DataFrame) -> pd.DataFrame:
    """One row per (technique, param_label) of one block (one dataset, model, class,
    fraction, post-processing): means over cases then seeds, spreads and counts."""
    keys = ["technique", "param_label"]
    hp_columns = _hp_columns(block)
    index = block.groupby(keys, sort=False)[hp_columns].first() if hp_columns else \
        block.groupby(keys, sort=False).size().to_frame("_n").drop(columns="_n")
    ok = block[block["status"].to_numpy() == "ok"]
    values = ok[list(METRICS)].astype(float)
    finite = values.where(np.isfinite(values.to_numpy()))
    by_setting = [ok["technique"], ok["param_label"]]
    per_seed = finite.groupby([*by_setting, ok["seed"]], sort=False).mean()
    means = per_seed.groupby(level=[0, 1], sort=False).mean()
    means[list(PERCENT)] *= 100.0
    table = index.join(means, how="left")
    table["n_cases"] = ok.groupby(keys, sort=False)["case_id"].nunique()
    table["n_seeds"] = ok.groupby(keys, sort=False)["seed"].nunique()
    diverged = block[block["status"].to_numpy() == "diverged"]
    table["n_diverged"] = diverged.groupby(keys, sort=False)["seed"].nunique()
    per_case = finite["dsc"].groupby([*by_setting, ok["case_id"]], sort=False).mean()
    table["dsc_std"] = per_case.groupby(level=[0, 1], sort=False).std(ddof=0) * 100.0
    table["dsc_seed_std"] = per_seed["dsc"].groupby(level=[0, 1], sort=False).std(ddof=1) * 100
    table["hd95_left_out"] = (~np.isfinite(values["hd95"])).groupby(by_setting).sum()
    for column in ("n_cases", "n_seeds", "n_diverged", "hd95_left_out"):
        table[column] = table[column].fillna(0).astype("int64")
    table = table.reset_index().rename(columns={"param_label": "parameter"})
    return plain(table, ["technique", "parameter"])


def _order(table: pd.DataFrame) -> pd.DataFrame:
    """Baseline first, then techniques in the papers' order, settings by hyperparameter value."""
    rank = {name: i for i, name in enumerate(METHOD_NAMES)}
    order = table.assign(_rank=table["technique"].map(rank).fillna(len(rank)))
    order = order.sort_values(["_rank", "technique", *_hp_columns(table), "parameter"],
                              na_position="first", kind="stable")
    order = order.drop(columns="_rank").reset_index(drop=True)
    order.insert(0, "method", order["technique"].map(method_name))
    return order


def _holm(p_values: pd.Series) -> pd.Series:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), NaN kept as NaN."""
    valid = p_values.dropna().sort_values()
    m = len(valid)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * valid.to_numpy()))
    out = pd.Series(np.nan, index=p_values.index)
    out[valid.index] = adjusted
    return out


def _wilcoxon(values: np.ndarray, base: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p over finite pairs; NaN when not computable."""
    keep = np.isfinite(values) & np.isfinite(base)
    values, base = values[keep], base[keep]
    if len(values) < 2 or not np.any(values != base):
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(values, base).pvalue)


def _versus_baseline(table: pd.DataFrame, block: pd.DataFrame) -> pd.DataFrame:
    """Add ``worse_than_baseline`` and Holm-corrected ``p_value`` (paired Wilcoxon of DSC over
    (case, seed) pairs against the baseline) to a table of settings of ``block``."""
    is_base = (table["technique"] == BASELINE).to_numpy()
    ok = block[block["status"].to_numpy() == "ok"]
    table = table.copy()
    if not is_base.any():
        table["worse_than_baseline"] = False
        table["p_value"] = np.nan
        return table
    base_dsc = table.loc[is_base, "dsc"].iloc[0]
    table["worse_than_baseline"] = ~is_base & (table["dsc"] < base_dsc - TIE)
    pairs = ok.groupby(["case_id", "seed", "technique", "param_label"], sort=False,
                       observed=True)["dsc"].mean()
    wide = pairs.unstack(["technique", "param_label"])  # (case, seed) x setting
    columns = {(str(t), str(p)): j for j, (t, p) in enumerate(wide.columns)}
    values = wide.to_numpy(float)
    base_column = columns.get((BASELINE, str(table.loc[is_base, "parameter"].iloc[0])))
    raw = []
    for baseline, technique, label in zip(is_base, table["technique"], table["parameter"],
                                          strict=True):
        column = columns.get((str(technique), str(label)))
        if baseline or base_column is None or column is None:
            raw.append(np.nan)
            continue
        raw.append(_wilcoxon(values[:, column], values[:, base_column]))
    table["p_value"] = _holm(pd.Series(raw, index=table.index)).to_numpy()
    return table


COLUMNS = ["method", "parameter", "technique", *METRICS, "n_cases", "n_seeds", "n_diverged",
           "dsc_std", "dsc_seed_std", "hd95_left_out", "worse_than_baseline", "p_value"]


def _sensitivity(block: pd.DataFrame) -> pd.DataFrame:
    table = _versus_baseline(_order(_settings(block)), block)
    return table[COLUMNS + _hp_columns(table)]


def sensitivity_table(cases: pd.DataFrame, dataset: str, fraction: float, postprocessed: bool,
                      model: str | None = None, class_name: str | None = None) -> pd.DataFrame:
    """One row per (technique, setting), the vanilla baseline first (000 Table IV, one block).

    Columns: ``method, parameter, technique, dsc, sensitivity, precision, hd95, hd95_max``
    (means over cases then seeds; percent / mm), ``n_cases, n_seeds, n_diverged``,
    ``dsc_std`` (std over cases of the seed-mean DSC, percent), ``dsc_seed_std`` (std over
    seeds of the case-mean DSC; NaN with one seed), ``hd95_left_out`` ((case, seed) pairs whose
    HD95 is inf/NaN, left out of the HD mean), ``worse_than_baseline`` (mean DSC below the
    baseline's; False for the baseline and when there is no baseline) and ``p_value``
    (two-sided Wilcoxon signed-rank test of DSC against the baseline over (case, seed) pairs,
    Holm-corrected within the table; NaN where not computable), then the ``hp_*`` columns.
    ``model`` and ``class_name`` may be left out when the results hold only one. Raises
    ``ValueError`` naming what has no results and ``ResultsError`` for missing columns.
    """
    rows, _, _ = _select(cases, dataset, model, class_name)
    return _sensitivity(_at_fraction(rows, fraction, postprocessed, dataset))


def selection_description(metric: str = "dsc", postprocessed: bool = True,
                          selection_cases: Collection[str] | None = None) -> str:
    """How ``best_settings`` chose, in words (for captions)."""
    name = {"dsc": "DSC", "sensitivity": "sensitivity", "precision": "precision",
            "hd95": "HD95", "hd95_max": "HD95 (max)"}.get(metric, metric)
    best = "lowest" if metric in LOWER_IS_BETTER else "highest"
    where = ("test" if selection_cases is None
             else f"selection ({len(selection_cases)} held-out cases)")
    pp = "with" if postprocessed else "without"
    return f"{best} mean {where} {name} {pp} post-processing"


def best_settings(cases: pd.DataFrame, dataset: str, model: str | None = None,
                  class_name: str | None = None, *, metric: str = "dsc",
                  postprocessed: bool = True,
                  selection_cases: Collection[str] | None = None) -> pd.DataFrame:
    """The setting chosen per (technique, fraction): the one with the best mean ``metric``
    (highest; lowest for HD) over cases then seeds, with (``postprocessed=True``) or without
    post-processing, on the test cases, or on ``selection_cases`` only when given (a held-out
    subset; choosing on the test cases, as the papers report, flatters the chosen settings).
    Settings whose every seed diverged are never chosen.

    Returns one row per (technique, fraction) in the papers' order: ``technique, method,
    fraction, parameter, score`` (the metric of the chosen setting, percent / mm),
    ``n_seeds`` and the ``hp_*`` columns of the chosen setting.
    """
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    rows, _, _ = _select(cases, dataset, model, class_name)
    rows = rows[rows["postprocessed"] == postprocessed]
    if selection_cases is not None:
        rows = rows[rows["case_id"].isin(list(selection_cases))]
        if rows.empty:
            raise ValueError("selection_cases: none of these cases has results")
    out = []
    for fraction, block in rows.groupby("fraction", sort=True):
        settings = _settings(block).dropna(subset=[metric])
        if settings.empty:
            continue
        ascending = metric in LOWER_IS_BETTER
        settings = settings.sort_values([metric, "n_seeds"], ascending=[ascending, False],
                                        kind="stable")
        chosen = settings.groupby("technique", sort=False).head(1)
        out.append(chosen.assign(fraction=fraction, score=chosen[metric]))
    if not out:
        raise ValueError(f"no finite {metric} for dataset {dataset!r}: every trial diverged")
    table = _order(pd.concat(out, ignore_index=True))
    rank = {name: i for i, name in enumerate(METHOD_NAMES)}
    table = table.assign(_r=table["technique"].map(rank).fillna(len(rank)))
    table = table.sort_values(["_r", "technique", "fraction"], kind="stable").drop(columns="_r")
    return table[["technique", "method", "fraction", "parameter", "score", "n_seeds",
                  *_hp_columns(table)]].reset_index(drop=True)


def best_hyperparameters(cases: pd.DataFrame, dataset: str, model: str | None = None,
                         class_name: str | None = None, *, metric: str = "dsc",
                         postprocessed: bool = True,
                         selection_cases: Collection[str] | None = None) -> pd.DataFrame:
    """000 Tables I-III: one row per (technique, hyperparameter), one column per training
    fraction (labelled ``5%``, ``10%``...) holding the chosen value (NaN where the technique
    has no result at that fraction). Chosen as ``best_settings`` says (default: highest mean
    test DSC with post-processing; ``metric``, ``postprocessed`` and ``selection_cases`` change
    that). Techniques without hyperparameters (vanilla) have no row. Columns: ``method,
    technique, hyperparameter, column`` (the ``hp_*`` name), then the fractions."""
    chosen = best_settings(cases, dataset, model, class_name, metric=metric,
                           postprocessed=postprocessed, selection_cases=selection_cases)
    fractions = sorted(chosen["fraction"].unique())
    rows = []
    for technique, group in chosen.groupby("technique", sort=False):
        for column in _hp_columns(group):
            if group[column].isna().all():
                continue
            by_fraction = group.set_index("fraction")[column]
            rows.append({"method": method_name(technique), "technique": technique,
                         "hyperparameter": HP_NAMES.get(column, column.removeprefix(HP_PREFIX)),
                         "column": column,
                         **{fraction_label(f): by_fraction.get(f, np.nan) for f in fractions}})
    columns = ["method", "technique", "hyperparameter", "column",
               *[fraction_label(f) for f in fractions]]
    return pd.DataFrame(rows, columns=columns)


def _ranks(values: pd.Series, lower_is_better: bool) -> pd.Series:
    """Dense ranks of the values as printed (one decimal): equal printed numbers rank equal."""
    shown = values.round(1)
    return shown.rank(method="dense", ascending=lower_is_better).astype("Int64")


def comparison_table(cases: pd.DataFrame, dataset: str, postprocessed: bool,
                     model: str | None = None, class_name: str | None = None, *,
                     metric: str = "dsc", select_postprocessed: bool = True,
                     selection_cases: Collection[str] | None = None) -> pd.DataFrame:
    """001 Tables II-IV / 000 Tables VI-VIII in long form: one row per (technique, fraction)
    at the setting ``best_settings`` chose (by ``metric``, with post-processing unless
    ``select_postprocessed=False``, on ``selection_cases`` if given, which are then left out
    here), evaluated with or without post-processing (``postprocessed``).

    Columns: ``method, technique, fraction, parameter, dsc, sensitivity, precision, hd95,
    hd95_max, n_cases, n_seeds, dsc_std, hd95_left_out, worse_than_baseline`` (DSC below the
    baseline's at that fraction), ``p_value`` (Wilcoxon vs baseline, Holm-corrected within the
    fraction) and ``rank_dsc, rank_sensitivity, rank_precision, rank_hd95`` (1 = best, 2 =
    second best within the fraction, on the values as printed; HD: lower is better).
    """
    chosen = best_settings(cases, dataset, model, class_name, metric=metric,
                           postprocessed=select_postprocessed, selection_cases=selection_cases)
    rows, _, _ = _select(cases, dataset, model, class_name)
    rows = rows[rows["postprocessed"] == postprocessed]
    if selection_cases is not None:
        rows = rows[~rows["case_id"].isin(list(selection_cases))]
    if rows.empty:
        raise ValueError(f"no {'post-processed' if postprocessed else 'raw'} results for "
                         f"dataset {dataset!r}")
    keep = chosen.set_index(["fraction", "technique", "parameter"]).index
    out = []
    for fraction, block in rows.groupby("fraction", sort=True):
        settings = _settings(block)
        index = pd.MultiIndex.from_arrays([np.full(len(settings), fraction),
                                           settings["technique"], settings["parameter"]])
        settings = settings[index.isin(keep)]
        if settings.empty:
            continue
        table = _versus_baseline(_order(settings), block)
        for column in RANKED:
            table[f"rank_{column}"] = _ranks(table[column], column in LOWER_IS_BETTER)
        out.append(table.assign(fraction=fraction))
    if not out:
        raise ValueError(f"no results for dataset {dataset!r} at the chosen settings")
    table = pd.concat(out, ignore_index=True)
    rank = {name: i for i, name in enumerate(METHOD_NAMES)}
    table = table.assign(_r=table["technique"].map(rank).fillna(len(rank)))
    table = table.sort_values(["_r", "technique", "fraction"], kind="stable")
    columns = ["method", "technique", "fraction", "parameter", *METRICS, "n_cases", "n_seeds",
               "dsc_std", "hd95_left_out", "worse_than_baseline", "p_value",
               *[f"rank_{c}" for c in RANKED]]
    return table[columns].reset_index(drop=True)


def blocks(cases: pd.DataFrame):
    """``((dataset, model, class_name, fraction, postprocessed), rows)`` for every block of
    ``cases``, grouped once (the report builds all tables from these)."""
    check_cases(cases)
    keys = ["dataset", "model", "class_name", "fraction", "postprocessed"]
    yield from cases.groupby(keys, sort=True, observed=True)


def sensitivity_from_block(block: pd.DataFrame) -> pd.DataFrame:
    """``sensitivity_table`` of rows that are already one block (see ``blocks``)."""
    if block.empty:
        raise ResultsError("empty block")
    return _sensitivity(block)
