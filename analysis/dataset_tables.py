"""Tables over every class of a dataset, or over the extra metrics of the later papers, from
the ``cases`` (and ``trials``) tables; one row group per setting of every method (a
technique, or its rerun under a ``variant``), at each training fraction, with and without
post-processing, on the test split.

* ``per_class_table``: 000 Table V (abdomen): per class DSC, sensitivity and precision, with
  ``AVG`` (mean over every foreground class) and ``AVG_r`` (mean over the rare classes the
  dataset declares, ``rare_classes``).
* ``iou_table``: the columns of 003 Table 1: each class's IoU pooled over the test cases
  (``ΣTP / Σ(pred + ref - TP)``, 003 eq. 2 over a dataset), mIoU (their mean over the
  foreground classes: 003 §2 averages ``IoU_k`` over ``k = 1..c``, class 0 being the
  background), pixel accuracy (``Σ correct voxels / Σ voxels`` over the test cases, each case
  counted once) and the mean final validation loss of the trials (``trials`` table).
* ``distance_table``: 004's evaluation (§4.3): DSC, Jaccard (IoU), aRVD, ABD and HD95, each as
  mean ± std over the test cases.

Means are taken as the other tables take them (``analysis.tables``): over the cases of a seed,
then over seeds; only rows of trials with status ``ok`` count, and a metric is averaged over
the cases where it is finite. Ratios are in percent (aRVD too: 004 gives it as a percentage),
distances in mm. A column written before the results contract had it (null) gives NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import check_cases
from analysis.tables import (
    _codes,
    _group_codes,
    _order,
    _split_mask,
    method_name,
    plain,
    variant_labels,
    variants,
)
from study.data.registry import DATASETS
from study.results import TEST

AVERAGE, RARE_AVERAGE = "AVG", "AVG_r"  # 000 Table V's averages over all and rare classes
SETTING_KEYS = ["fraction", "postprocessed", "technique", "variant", "param_label"]
# 004 §4.3: the metrics of its table, in its order; percent for the ratios.
DISTANCE_METRICS = ("dsc", "iou", "arvd", "abd", "hd95")
PERCENT = ("dsc", "sensitivity", "precision", "iou", "arvd")

__all__ = ["AVERAGE", "DISTANCE_METRICS", "RARE_AVERAGE", "class_order", "distance_table",
           "has_values", "iou_table", "per_class_table", "rare_classes"]


def rare_classes(dataset: str) -> tuple[str, ...] | None:
    """The rare classes ``dataset`` declares (``study.data.registry``: 000 §F takes BTCV
    classes 4, 5 and 8-13); None for a dataset the registry does not declare."""
    info = DATASETS.get(dataset)
    return None if info is None else tuple(info.rare)


def class_order(dataset: str, present) -> list[str]:
    """The classes of ``present`` in the dataset's label order (the registry's), any class it
    does not declare after them by name."""
    info = DATASETS.get(dataset)
    declared = [c for c in (info.classes if info is not None else ()) if c in set(present)]
    return declared + sorted(set(map(str, present)) - set(declared))


def has_values(cases: pd.DataFrame, *columns: str) -> bool:
    """Whether every one of ``columns`` exists in ``cases`` with a value on some test row
    (results written before a column joined the contract hold it as null)."""
    test = _split_mask(cases, TEST)
    return all(c in cases.columns and bool((cases[c].notna().to_numpy() & test).any())
               for c in columns)


def _rows(cases: pd.DataFrame, dataset: str, model: str | None
          ) -> tuple[pd.DataFrame, np.ndarray, str]:
    """``cases`` with ``variant`` as a grouping key (``""`` for none), which of its rows are
    the test rows of one dataset and model (the tables read those: no row is copied) and the
    model; ValueError names what has none."""
    check_cases(cases)
    use = _split_mask(cases, TEST) & (cases["dataset"] == dataset).to_numpy(bool)
    if not use.any():
        raise ValueError(f"no test results for dataset {dataset!r}")
    models = sorted(map(str, cases["model"][use].unique()))
    if model is None:
        if len(models) > 1:
            raise ValueError(f"results of several models {models} for dataset {dataset!r}: "
                             "pass model=")
        model = models[0]
    use &= (cases["model"] == model).to_numpy(bool)
    if not use.any():
        raise ValueError(f"no results for model {model!r} of dataset {dataset!r} "
                         f"(have {models})")
    return cases.assign(variant=variants(cases)), use, model


def _keyed(rows: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Each row's group of ``keys`` as one integer, in the order of
    ``rows.groupby(keys, dropna=False)``'s groups (by value, nulls last), and the keys of each
    group (one row per integer; strings as plain strings)."""
    cell, first = _group_codes([rows[k] for k in keys], by_value=True)
    return cell, plain(rows[keys].iloc[first].reset_index(drop=True), keys)


def _by_keys(table, groups: pd.DataFrame):
    """``table`` (a frame or series indexed by the group integers of ``_keyed``) indexed by
    the groups' keys."""
    keys = groups.iloc[np.asarray(table.index, np.int64)]
    return table.set_axis(pd.MultiIndex.from_frame(keys))


def _finite(rows: pd.DataFrame, metrics) -> pd.DataFrame:
    values = rows[list(metrics)].astype(float)
    return values.where(np.isfinite(values.to_numpy()))


def _over_cases_then_seeds(rows: pd.DataFrame, use: np.ndarray, keys: list[str], metrics
                           ) -> pd.DataFrame:
    """Per group of ``keys`` (rows ``use``): each metric's mean over the cases of a seed, then
    over seeds (finite values of ``ok`` rows), ``<metric>_std`` (std over cases of each
    case's mean over seeds), ``n_cases`` and ``n_seeds``."""
    ok = use & (rows["status"] == "ok").to_numpy(bool)
    cell, groups = _keyed(rows, keys)
    at, seed = cell[ok], rows["seed"].to_numpy()[ok]
    case = _codes(rows["case_id"], by_value=True)[0][ok]
    values = _finite(rows.loc[ok, list(metrics)], metrics)
    means = values.groupby([at, seed]).mean().groupby(level=0).mean()
    per_case = values.groupby([at, case]).mean()
    out = means.join(per_case.groupby(level=0).std(ddof=0).add_suffix("_std"))
    out["n_cases"] = pd.Series(case).groupby(at).nunique()
    out["n_seeds"] = pd.Series(seed).groupby(at).nunique()
    for metric in metrics:
        if metric in PERCENT:
            out[[metric, f"{metric}_std"]] *= 100.0
    return _by_keys(out, groups)


def _settings(table: pd.DataFrame, rows: pd.DataFrame, use: np.ndarray, *then: str
              ) -> pd.DataFrame:
    """``table`` (``SETTING_KEYS`` and more as columns) with ``method`` and the settings'
    ``hp_*`` values (of the first row ``use`` of each), ``param_label`` as ``parameter``, the
    variant as None where there is none, in the papers' order: fraction ascending,
    post-processed first, methods as the tables order them (``tables._order``), then
    ``then``."""
    table = table.rename(columns={"param_label": "parameter"})
    hp = [c for c in rows.columns if c.startswith("hp_")]
    used = np.flatnonzero(use)
    first = _group_codes([rows["technique"].iloc[used], rows["param_label"].iloc[used]])[1]
    setting = ["technique", "param_label"]
    values = plain(rows[[*setting, *hp]].iloc[np.sort(used[first])], setting).set_index(
        setting)[hp]
    at = pd.MultiIndex.from_arrays([table["technique"], table["parameter"]])
    table = table.assign(**{c: values[c].reindex(at).to_numpy() for c in hp})
    table.insert(0, "method", [method_name(t, v) for t, v in
                               zip(table["technique"], table["variant"], strict=True)])
    table = _order(table, *hp, "parameter", *then)
    table = table.sort_values(["fraction", "postprocessed"], ascending=[True, False],
                              kind="stable").reset_index(drop=True)
    table["variant"] = variant_labels(table["variant"])
    return table


def per_class_table(cases: pd.DataFrame, dataset: str, model: str | None = None, *,
                    rare=None) -> pd.DataFrame:
    """000 Table V: per setting of every method, fraction and post-processing, the DSC,
    sensitivity and precision of every foreground class (percent; means over cases then
    seeds), then ``AVG`` (the mean of the class means over every class) and ``AVG_r`` (over
    the ``rare`` classes; default: those the dataset declares, ``rare_classes``; no
    ``AVG_r`` rows without any).

    Long form, one row per (setting, class): ``method, technique, variant, parameter,
    fraction, postprocessed, class_name`` (``AVG`` / ``AVG_r`` for the averages), ``rare``
    (the class is rare; True for ``AVG_r``), ``dsc, sensitivity, precision, n_cases,
    n_seeds`` (of the class; the fewest over the averaged classes), then the ``hp_*``
    columns; classes in the dataset's label order. Raises ``ValueError`` naming the dataset
    or model without test results, or a ``rare`` class the results do not hold."""
    rows, use, _ = _rows(cases, dataset, model)
    classes = class_order(dataset, rows["class_name"][use].unique())
    if rare is None:
        rare = rare_classes(dataset) or ()
    elif set(rare) - set(classes):
        raise ValueError(f"rare: classes {sorted(set(rare) - set(classes))} have no results "
                         f"for dataset {dataset!r} (have {classes})")
    rare = [c for c in classes if c in set(rare)]
    metrics = ("dsc", "sensitivity", "precision")
    per_class = _over_cases_then_seeds(rows, use, [*SETTING_KEYS, "class_name"], metrics)
    per_class = per_class.drop(columns=[f"{m}_std" for m in metrics])
    averages = []
    for name, chosen in ((AVERAGE, classes), (RARE_AVERAGE, rare)):
        if not chosen:
            continue
        part = per_class[per_class.index.get_level_values("class_name").isin(chosen)]
        mean = part.groupby(level=SETTING_KEYS, dropna=False).agg(
            {**dict.fromkeys(metrics, "mean"), "n_cases": "min", "n_seeds": "min"})
        averages.append(mean.assign(class_name=name).set_index("class_name", append=True))
    table = pd.concat([per_class, *averages]).reset_index()
    position = {c: i for i, c in enumerate([*classes, AVERAGE, RARE_AVERAGE])}
    table = _settings(table.assign(_class=table["class_name"].map(position)), rows, use,
                      "_class")
    table["rare"] = table["class_name"].isin([*rare, RARE_AVERAGE])
    hp = [c for c in table.columns if c.startswith("hp_")]
    return table[["method", "technique", "variant", "parameter", "fraction", "postprocessed",
                  "class_name", "rare", *metrics, "n_cases", "n_seeds", *hp]]


def _ok(rows: pd.DataFrame, use: np.ndarray, column: str) -> np.ndarray:
    """The rows ``use`` of ``ok`` trials that hold ``column``."""
    return use & (rows["status"] == "ok").to_numpy(bool) & rows[column].notna().to_numpy()


def _pooled_iou(rows: pd.DataFrame, use: np.ndarray) -> pd.Series:
    """Per (setting, class): the IoU of the voxels pooled over the test cases (rows ``use``)
    of a seed, ``ΣTP / Σ(pred + ref - TP)`` (NaN where the class is absent from both),
    averaged over seeds, in percent."""
    ok = _ok(rows, use, "tp_voxels")
    cell, groups = _keyed(rows, [*SETTING_KEYS, "class_name"])
    sums = rows.loc[ok, ["tp_voxels", "pred_voxels", "ref_voxels"]].groupby(
        [cell[ok], rows["seed"].to_numpy()[ok]]).sum().astype(float)
    union = sums["pred_voxels"] + sums["ref_voxels"] - sums["tp_voxels"]
    iou = (sums["tp_voxels"] / union.where(union > 0)).rename("iou")
    return _by_keys(100.0 * iou.groupby(level=0).mean(), groups)


def _pixel_accuracy(rows: pd.DataFrame, use: np.ndarray) -> pd.Series:
    """Per setting: ``Σ correct voxels / Σ voxels`` over the test cases (rows ``use``) of a
    seed (each case once, though its counts repeat on every class row), averaged over seeds,
    in percent."""
    ok = np.flatnonzero(_ok(rows, use, "case_voxels"))
    first = _group_codes([rows[c].iloc[ok] for c in ("trial_id", "case_id", "postprocessed")])[1]
    once = np.sort(ok[first])  # the first row of each case of a trial
    cell, groups = _keyed(rows, SETTING_KEYS)
    sums = rows[["case_correct_voxels", "case_voxels"]].iloc[once].groupby(
        [cell[once], rows["seed"].to_numpy()[once]]).sum().astype(float)
    accuracy = sums["case_correct_voxels"] / sums["case_voxels"].where(sums["case_voxels"] > 0)
    return _by_keys(100.0 * accuracy.groupby(level=0).mean(), groups)


def _final_val_loss(trials: pd.DataFrame | None, dataset: str, model: str) -> pd.Series:
    """Per (technique, variant, param_label, fraction): the mean final validation loss of the
    setting's ``ok`` trials (NaN where none recorded one)."""
    keys = ["technique", "variant", "param_label", "fraction"]
    if trials is None or "final_val_loss" not in trials.columns or trials.empty:
        return pd.Series(dtype=float, index=pd.MultiIndex.from_tuples([], names=keys))
    own = trials[((trials["dataset"] == dataset) & (trials["model"] == model)
                  & (trials["status"] == "ok")).to_numpy(bool)]
    own = plain(own.assign(variant=variants(own)), ["technique", "variant", "param_label"])
    return own.groupby(keys, dropna=False)["final_val_loss"].mean()


def iou_table(cases: pd.DataFrame, trials: pd.DataFrame | None, dataset: str,
              model: str | None = None) -> pd.DataFrame:
    """003 Table 1's columns per setting of every method, fraction and post-processing: the
    IoU of each foreground class pooled over the test cases (``ΣTP / Σ(pred + ref - TP)``,
    per seed, then averaged over seeds), ``miou`` (the mean of those over the classes, the
    background left out as 003 §2 defines mIoU), ``pixel_accuracy`` (``Σ
    case_correct_voxels / Σ case_voxels`` over the test cases, each case once) and
    ``val_loss`` (mean final validation loss of the setting's trials, from ``trials``; NaN
    when None or not recorded). Percentages; NaN where the results predate a column.

    Long form, one row per (setting, class): ``method, technique, variant, parameter,
    fraction, postprocessed, class_name, iou, miou, pixel_accuracy, val_loss, n_seeds``,
    then the ``hp_*`` columns; classes in the dataset's label order."""
    rows, use, model = _rows(cases, dataset, model)
    classes = class_order(dataset, rows["class_name"][use].unique())
    iou = _pooled_iou(rows, use).reset_index()
    if iou.empty:
        raise ValueError(f"no pooled IoU for dataset {dataset!r}: its results have no "
                         "tp_voxels (written before the column existed)")
    settings = iou.groupby(SETTING_KEYS, dropna=False)["iou"].mean().rename("miou")
    settings = pd.concat([settings, _pixel_accuracy(rows, use).rename("pixel_accuracy")],
                         axis=1)
    ok = use & (rows["status"] == "ok").to_numpy(bool)
    cell, groups = _keyed(rows, SETTING_KEYS)
    seeds = pd.Series(rows["seed"].to_numpy()[ok]).groupby(cell[ok]).nunique()
    settings = settings.join(_by_keys(seeds, groups).rename("n_seeds"))
    loss = _final_val_loss(trials, dataset, model)
    at = pd.MultiIndex.from_arrays([settings.index.get_level_values(k) for k in
                                    ("technique", "variant", "param_label", "fraction")])
    settings["val_loss"] = loss.reindex(at).to_numpy(float)
    table = iou.merge(settings.reset_index(), on=SETTING_KEYS, how="left")
    position = {c: i for i, c in enumerate(classes)}
    table = _settings(table.assign(_class=table["class_name"].map(position)), rows, use,
                      "_class")
    hp = [c for c in table.columns if c.startswith("hp_")]
    return table[["method", "technique", "variant", "parameter", "fraction", "postprocessed",
                  "class_name", "iou", "miou", "pixel_accuracy", "val_loss", "n_seeds", *hp]]


def distance_table(cases: pd.DataFrame, dataset: str, model: str | None = None,
                   class_name: str | None = None) -> pd.DataFrame:
    """004's table (§4.3) per setting of every method, fraction and post-processing, for one
    class: ``dsc, iou`` (Jaccard), ``arvd`` (``|V_pred - V_ref| / V_ref``), in percent,
    ``abd`` (average boundary distance) and ``hd95`` in mm, each the mean over cases then
    seeds with ``<metric>_std`` (std over the test cases of each case's mean over seeds),
    ``n_cases, n_seeds``, then the ``hp_*`` columns. A case where a metric is not finite
    (aRVD without reference voxels, HD95 of an empty prediction) is left out of that
    metric's mean. ``class_name`` may be left out when the results hold one class."""
    rows, use, _ = _rows(cases, dataset, model)
    classes = sorted(map(str, rows["class_name"][use].unique()))
    if class_name is None:
        if len(classes) > 1:
            raise ValueError(f"results of several classes {classes} for dataset {dataset!r}: "
                             "pass class_name=")
        class_name = classes[0]
    use = use & (rows["class_name"] == class_name).to_numpy(bool)
    if not use.any():
        raise ValueError(f"no results for class {class_name!r} (have {classes})")
    table = _over_cases_then_seeds(rows, use, SETTING_KEYS, DISTANCE_METRICS).reset_index()
    table = _settings(table, rows, use)
    hp = [c for c in table.columns if c.startswith("hp_")]
    spread = [f"{m}_std" for m in DISTANCE_METRICS]
    return table[["method", "technique", "variant", "parameter", "fraction", "postprocessed",
                  *DISTANCE_METRICS, *spread, "n_cases", "n_seeds", *hp]]
