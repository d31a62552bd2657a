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
from study.logit_stats import SPLITS, LogitSummary, MalformedLogitStats, from_json

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
    with_stats = trials[trials["logit_stats"].notna() & (trials["status"] == "ok")]
    with_stats = with_stats.assign(variant=variants(with_stats))
    columns = [*KEYS, "trial_id", "seed", "split", "true_class", "logit_class", "voxels",
               "mean", "std", "hist", "bin_edges"]
    parsed, counts = [], []
    for trial_id, text in zip(with_stats["trial_id"], with_stats["logit_stats"], strict=True):
        try:
            edges, summaries = from_json(text, trial_id)
        except MalformedLogitStats as error:
            raise ResultsError(f"trials/{trial_id}.parquet: column 'logit_stats' is not "
                               f"the documented JSON ({error})") from None
        parsed.append((edges, summaries))
        counts.append(len(summaries))
    # Each trial's identity repeated over its entries, column by column.
    at = np.repeat(np.arange(len(with_stats)), counts)
    out = {c: with_stats[c].to_numpy()[at] for c in [*KEYS, "trial_id", "seed"]}
    entries = [entry for _, summaries in parsed for entry in summaries]
    for i, name in enumerate(LogitSummary._fields):
        out[name] = [entry[i] for entry in entries]
    out["bin_edges"] = [edges for edges, summaries in parsed for _ in summaries]
    return pd.DataFrame(out, columns=columns)


def _pooled(stats: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of ``keys`` (in order of first appearance): the statistics of its rows
    pooled as one larger sample (voxel-weighted mean; std from the pooled second moment;
    NaN without voxels) and ``n_trials``, the rows pooled."""
    grouped = stats.groupby(keys, sort=False)
    ids = grouped.ngroup().to_numpy()
    size = grouped.size()
    n = stats["voxels"].to_numpy(float)
    mean = stats["mean"].to_numpy(float)
    std = stats["std"].to_numpy(float)
    weights = np.where(n > 0, n, 0.0)

    def total(values: np.ndarray) -> np.ndarray:  # NaN terms count as 0, as nansum does
        return np.bincount(ids, np.where(np.isnan(values), 0.0, values), len(size))

    voxels = np.bincount(ids, n, len(size))
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = total(weights * mean) / voxels
        second = total(weights * (std ** 2 + mean ** 2)) / voxels
    empty = voxels == 0
    spread = np.sqrt(np.maximum(second - pooled ** 2, 0.0))
    return pd.DataFrame({"mean": np.where(empty, np.nan, pooled),
                         "std": np.where(empty, np.nan, spread),
                         "n_trials": size.to_numpy()}, index=size.index)


def logit_shift_table(trials: pd.DataFrame, statistics: pd.DataFrame | None = None
                      ) -> pd.DataFrame:
    """Per (dataset, model, technique, setting, fraction, true class, logit class): the
    pooled mean and std of the logit on training and on test voxels and the shift
    ``|mean_test| - |mean_train|`` (001 Fig. 3, right part). Columns: ``dataset, model, method,
    technique, variant, parameter, fraction, true_class, logit_class, train_mean, train_std,
    test_mean, test_std, shift, n_trials``, then the setting's ``hp_*`` values; methods in the
    papers' order (the baseline first), settings by value. ``statistics``:
    ``logit_statistics(trials)`` when already computed (parsing the JSON of every trial is
    most of the work)."""
    stats = logit_statistics(trials) if statistics is None else statistics
    hp = [c for c in trials.columns if c.startswith(HP_PREFIX)]
    columns = ["dataset", "model", "method", "technique", "variant", "parameter", "fraction",
               "true_class", "logit_class", "train_mean", "train_std", "test_mean", "test_std",
               "shift", "n_trials", *hp]
    if stats.empty:
        return pd.DataFrame(columns=columns)
    keys = [*KEYS, "true_class", "logit_class", "split"]
    wide = _pooled(stats, keys).unstack("split")
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


def logit_histograms(trials: pd.DataFrame, statistics: pd.DataFrame | None = None
                     ) -> pd.DataFrame:
    """Pooled histograms per (dataset, model, technique, variant, setting, fraction, split,
    true class, logit class): columns as the keys plus ``voxels``, ``hist`` (summed counts),
    ``bin_edges`` and ``density`` (counts / (voxels x bin width), integrating to 1 over the
    clipped range); ``variant`` is None where there is none. ``statistics`` as
    ``logit_shift_table`` takes it."""
    stats = logit_statistics(trials) if statistics is None else statistics
    if stats.empty:
        return stats.assign(density=[])
    keys = [*KEYS, "split", "true_class", "logit_class"]
    ids = stats.groupby(keys, sort=False).ngroup().to_numpy()
    starts = np.unique(ids, return_index=True)[1]  # each group's first row
    hists = stats["hist"].to_list()
    summed: np.ndarray | list[np.ndarray]
    if len({len(h) for h in hists}) == 1:  # one bin layout: add every group's at once
        summed = np.zeros((len(starts), len(hists[0])))
        np.add.at(summed, ids, np.stack(hists))
    else:
        summed = [np.sum(np.stack([hists[i] for i in np.flatnonzero(ids == g)]), axis=0)
                  for g in range(len(starts))]
    out = stats.iloc[starts][keys].reset_index(drop=True)
    totals = [hist.sum() for hist in summed]
    edges = stats["bin_edges"].to_numpy()[starts]
    out["voxels"] = np.array(totals, float).astype(np.int64)
    out["hist"] = list(summed)
    out["bin_edges"] = list(edges)
    out["density"] = [hist / (total * np.diff(e)) if total else hist
                      for hist, total, e in zip(summed, totals, edges, strict=True)]
    out["variant"] = variant_labels(out["variant"])
    return out
