"""Logit statistics of the ``trials`` table: the train-vs-test logit shift of 001 §III-A.

Each trial stores ``logit_stats`` as JSON (format, writer and reader in ``study.logit_stats``):
for the voxels of one true class, the count, mean, std and histogram of one logit channel, on
training cases and on test cases. Statistics of the seeds of one setting are pooled
(voxel-weighted mean and std, histograms added), which is what one larger run would give. The
shift of the mean is 001 Fig. 3's ``Δẑ = |ẑ_test| - |ẑ_train|``. A setting belongs to a
method, a (technique, variant) as in the tables; ``variant`` is None where there is none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import ResultsError
from analysis.tables import method_name, method_order, variant_labels, variants
from study.catalog import HP_PREFIX
from study.logit_stats import SPLITS, MalformedLogitStats, from_json

KEYS = ["dataset", "model", "technique", "variant", "param_label", "fraction"]

__all__ = ["logit_histograms", "logit_shift_table", "logit_statistics"]


def logit_statistics(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, split, true class, logit class) of the trials with logit
    statistics: the identity columns, ``split, true_class, logit_class, voxels, mean, std`` and
    ``hist`` (NumPy counts over ``bin_edges``); ``variant`` is ``""`` where there is none (a
    grouping key). Raises ``ResultsError`` naming the trial whose ``logit_stats`` is not the
    documented JSON."""
    missing = [c for c in [*KEYS, "trial_id", "seed", "status", "logit_stats"]
               if c not in trials.columns and c != "variant"]  # variant: later column
    if missing:
        raise ResultsError(f"trials table: missing column(s) {', '.join(map(repr, missing))}")
    rows = []
    with_stats = trials[trials["logit_stats"].notna() & (trials["status"] == "ok")]
    with_stats = with_stats.assign(variant=variants(with_stats))
    for trial in with_stats.itertuples(index=False):
        try:
            edges, summaries = from_json(trial.logit_stats, trial.trial_id)
        except MalformedLogitStats as error:
            raise ResultsError(f"trials/{trial.trial_id}.parquet: column 'logit_stats' is not "
                               f"the documented JSON ({error})") from None
        identity = {**{k: getattr(trial, k) for k in KEYS}, "trial_id": trial.trial_id,
                    "seed": trial.seed}
        rows.extend({**identity, **summary._asdict(), "bin_edges": edges}
                    for summary in summaries)
    columns = [*KEYS, "trial_id", "seed", "split", "true_class", "logit_class", "voxels",
               "mean", "std", "hist", "bin_edges"]
    return pd.DataFrame(rows, columns=columns)


def _pool(group: pd.DataFrame) -> pd.Series:
    n = group["voxels"].to_numpy(float)
    total = n.sum()
    mean = group["mean"].to_numpy(float)
    std = group["std"].to_numpy(float)
    if total == 0:
        return pd.Series({"voxels": 0, "mean": np.nan, "std": np.nan, "n_trials": len(group)})
    weights = np.where(n > 0, n, 0.0)
    pooled = np.nansum(weights * mean) / total
    second = np.nansum(weights * (std ** 2 + mean ** 2)) / total
    return pd.Series({"voxels": int(total), "mean": pooled,
                      "std": float(np.sqrt(max(second - pooled ** 2, 0.0))),
                      "n_trials": len(group)})


def logit_shift_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, technique, setting, fraction, true class, logit class): the
    pooled mean and std of the logit on training and on test voxels and the shift
    ``|mean_test| - |mean_train|`` (001 Fig. 3, right part). Columns: ``dataset, model, method,
    technique, variant, parameter, fraction, true_class, logit_class, train_mean, train_std,
    test_mean, test_std, shift, n_trials``, then the setting's ``hp_*`` values; methods in the
    papers' order (the baseline first), settings by value."""
    stats = logit_statistics(trials)
    hp = [c for c in trials.columns if c.startswith(HP_PREFIX)]
    columns = ["dataset", "model", "method", "technique", "variant", "parameter", "fraction",
               "true_class", "logit_class", "train_mean", "train_std", "test_mean", "test_std",
               "shift", "n_trials", *hp]
    if stats.empty:
        return pd.DataFrame(columns=columns)
    keys = [*KEYS, "true_class", "logit_class", "split"]
    pooled = stats.groupby(keys, sort=False)[["voxels", "mean", "std"]].apply(_pool)
    wide = pooled.unstack("split")
    out = pd.DataFrame(index=wide.index)
    for split in SPLITS:
        for value in ("mean", "std"):
            out[f"{split}_{value}"] = wide[(value, split)] if (value, split) in wide else np.nan
    out["shift"] = out["test_mean"].abs() - out["train_mean"].abs()
    counts = wide["n_trials"].max(axis=1) if "n_trials" in wide.columns.get_level_values(0) \
        else 0
    out["n_trials"] = pd.Series(counts, index=wide.index).fillna(0).astype("int64")
    out = out.reset_index().rename(columns={"param_label": "parameter"})
    out["method"] = [method_name(t, v) for t, v in zip(out["technique"], out["variant"],
                                                       strict=True)]
    values = trials.drop_duplicates(["technique", "param_label"]).set_index(
        ["technique", "param_label"])[hp]
    setting = pd.MultiIndex.from_arrays([out["technique"], out["parameter"]])
    out = pd.concat([out.assign(**{c: values[c].reindex(setting).to_numpy() for c in hp}),
                     method_order(out)], axis=1)
    out = out.sort_values(["dataset", "model", "_rank", "_technique", "_variant", "fraction",
                           *hp, "parameter", "true_class", "logit_class"], kind="stable",
                          na_position="first")
    out["variant"] = variant_labels(out["variant"])
    return out[columns].reset_index(drop=True)


def logit_histograms(trials: pd.DataFrame) -> pd.DataFrame:
    """Pooled histograms per (dataset, model, technique, variant, setting, fraction, split,
    true class, logit class): columns as the keys plus ``voxels``, ``hist`` (summed counts),
    ``bin_edges`` and ``density`` (counts / (voxels x bin width), integrating to 1 over the
    clipped range); ``variant`` is None where there is none."""
    stats = logit_statistics(trials)
    if stats.empty:
        return stats.assign(density=[])
    keys = [*KEYS, "split", "true_class", "logit_class"]
    rows = []
    for key, group in stats.groupby(keys, sort=False):
        hist = np.sum(np.stack(group["hist"].to_list()), axis=0)
        edges = group["bin_edges"].iloc[0]
        total = hist.sum()
        density = hist / (total * np.diff(edges)) if total else hist
        rows.append({**dict(zip(keys, key, strict=True)), "voxels": int(total), "hist": hist,
                     "bin_edges": edges, "density": density})
    out = pd.DataFrame(rows)
    out["variant"] = variant_labels(out["variant"])
    return out
