"""The papers' sensitivity table (000 Table IV) from the ``cases`` table.

Means are taken over cases, then over seeds; DSC, sensitivity and precision in percent, HD95 in
mm. Each metric is averaged over the cases where it is finite; ``hd95_left_out`` counts the
(case, seed) pairs whose HD95 is infinite or undefined (an empty prediction must not silently
improve a mean HD). Only rows of trials with status ``ok`` enter the means; ``n_diverged``
counts the seeds that diverged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

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
    "combination": "Combination",
    "asym_combination": "Asymmetric combination",
    "dsc": "DSC loss",
    "jaccard": "Jaccard loss",
    "f_beta": "F-beta loss",
}
BASELINE = "vanilla"
PERCENT = ("dsc", "sensitivity", "precision")
HP_PREFIX = "hp_"


def _select(cases: pd.DataFrame, dataset: str, fraction: float, postprocessed: bool,
            model: str | None, class_name: str | None) -> pd.DataFrame:
    rows = cases[(cases["dataset"] == dataset)
                 & np.isclose(cases["fraction"], fraction)
                 & (cases["postprocessed"] == postprocessed)]
    if rows.empty:
        raise ValueError(f"no results for dataset {dataset!r} at fraction {fraction:g}")
    if model is not None:
        rows = rows[rows["model"] == model]
    elif rows["model"].nunique() > 1:
        raise ValueError(f"results of several models {sorted(rows['model'].unique())}: "
                         "pass model=")
    classes = sorted(rows["class_name"].unique())
    if class_name is None:
        if len(classes) > 1:
            raise ValueError(f"results of several classes {classes}: pass class_name=")
        class_name = classes[0]
    rows = rows[rows["class_name"] == class_name]
    if rows.empty:
        raise ValueError(f"no results for class {class_name!r} (have {classes})")
    return rows


def _order(settings: pd.DataFrame) -> pd.DataFrame:
    rank = {name: i for i, name in enumerate(METHOD_NAMES)}
    hp_columns = [c for c in settings.columns if c.startswith(HP_PREFIX)]
    settings = settings.assign(_rank=settings["technique"].map(rank).fillna(len(rank)))
    return settings.sort_values(["_rank", "technique", *hp_columns], na_position="first")


def _holm(p_values: pd.Series) -> pd.Series:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), NaN kept as NaN."""
    valid = p_values.dropna().sort_values()
    m = len(valid)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * valid.to_numpy()))
    out = pd.Series(np.nan, index=p_values.index)
    out[valid.index] = adjusted
    return out


def _paired_p(setting: pd.DataFrame, baseline: pd.DataFrame) -> float:
    """Two-sided Wilcoxon signed-rank p of DSC against the baseline over (case, seed) pairs."""
    pairs = setting.merge(baseline, on=["case_id", "seed"], suffixes=("", "_base"))
    pairs = pairs[np.isfinite(pairs["dsc"]) & np.isfinite(pairs["dsc_base"])]
    differences = pairs["dsc"] - pairs["dsc_base"]
    if len(pairs) < 2 or not differences.any():
        return np.nan
    return float(stats.wilcoxon(pairs["dsc"], pairs["dsc_base"]).pvalue)


def sensitivity_table(cases: pd.DataFrame, dataset: str, fraction: float, postprocessed: bool,
                      model: str | None = None, class_name: str | None = None) -> pd.DataFrame:
    """One row per (technique, setting), the vanilla baseline first.

    Columns: ``method, parameter, technique, dsc, sensitivity, precision, hd95, hd95_max``
    (percent / mm), ``n_cases, n_seeds, n_diverged, dsc_std`` (std over cases of the seed-mean
    DSC, in percent), ``hd95_left_out``, ``worse_than_baseline`` (mean DSC below the
    baseline's; False for the baseline and when there is no baseline) and ``p_value``
    (Wilcoxon signed-rank vs the baseline over (case, seed) pairs, Holm-corrected within the
    table; NaN where not computable). Raises ``ValueError`` naming what has no results.
    """
    rows = _select(cases, dataset, fraction, postprocessed, model, class_name)
    hp_columns = [c for c in rows.columns if c.startswith(HP_PREFIX)]
    keys = ["technique", "param_label"]
    ok = rows[rows["status"] == "ok"]
    out = []
    for (technique, label), group in rows.groupby(keys, sort=False):
        good = ok[(ok["technique"] == technique) & (ok["param_label"] == label)]
        record = {"technique": technique, "parameter": label,
                  **group.iloc[0][hp_columns].to_dict(),
                  "n_seeds": good["seed"].nunique(), "n_cases": good["case_id"].nunique(),
                  "n_diverged": group.loc[group["status"] == "diverged", "seed"].nunique()}
        for metric in ("dsc", "sensitivity", "precision", "hd95", "hd95_max"):
            finite = good[np.isfinite(good[metric])]
            per_seed = finite.groupby("seed")[metric].mean()
            scale = 100.0 if metric in PERCENT else 1.0
            record[metric] = per_seed.mean() * scale if len(per_seed) else np.nan
        per_case = good.groupby("case_id")["dsc"].mean()
        record["dsc_std"] = per_case.std(ddof=0) * 100 if len(per_case) else np.nan
        record["hd95_left_out"] = int((~np.isfinite(good["hd95"])).sum())
        out.append(record)
    table = _order(pd.DataFrame(out)).reset_index(drop=True)
    table.insert(0, "method", table["technique"].map(METHOD_NAMES).fillna(table["technique"]))
    is_base = table["technique"] == BASELINE
    base_rows = ok[ok["technique"] == BASELINE]
    if is_base.any():
        base_dsc = table.loc[is_base, "dsc"].iloc[0]
        table["worse_than_baseline"] = ~is_base & (table["dsc"] < base_dsc)
        raw_p = pd.Series([
            np.nan if base else _paired_p(
                ok[(ok["technique"] == t) & (ok["param_label"] == p)], base_rows)
            for base, t, p in zip(is_base, table["technique"], table["parameter"], strict=True)
        ])
        table["p_value"] = _holm(raw_p)
    else:
        table["worse_than_baseline"] = False
        table["p_value"] = np.nan
    return table.drop(columns=["_rank"])
