"""The papers' tables from the ``cases`` table.

* ``sensitivity_table``: one block of 000 Table IV (every setting of every method at one
  dataset, fraction and post-processing; the vanilla baseline first).
* ``best_settings`` / ``best_hyperparameters``: the setting chosen per method and training
  fraction, as 000 Tables I-III print it.
* ``comparison_table``: method rows x fraction columns of DSC/SEN/PRC/HD at the chosen
  settings, with the best and second best per column ranked (001 Tables II-IV, 000 VI-VIII).

A *method* is a technique, or a technique rerun under a changed regime (the ``variant``
column: ``Vanilla - w/o augmentation``, ``Vanilla - 80 % tumour``, as 001 Tables II-IV list
them); each is its own row, named by ``method_name`` from the catalog (``study.catalog``:
method names, their order and the hyperparameters' symbols are defined there only) and placed
right after its technique's plain row. The baseline is vanilla without a variant.

Every table reports the test split (``split == "test"``: the papers' tables; a frame without
a ``split`` column holds test rows only; ``train`` rows, evaluated training cases, enter only
001 Fig. 1's train-vs-test figure). ``best_settings`` may instead choose each method's
setting on the validation split (``select_on="validation"``: cases held out of the training
pool) and still reports the chosen setting's test metrics.

Means are taken over cases, then over seeds; DSC, sensitivity and precision in percent, HD95 in
mm. Each metric is averaged over the cases where it is finite; ``hd95_left_out`` counts the
(case, seed) pairs whose HD95 is infinite or undefined (an empty prediction must not silently
improve a mean HD). Only rows of trials with status ``ok`` enter the means: ``n_seeds`` counts
those seeds, ``n_diverged`` the seeds that diverged, and ``all_diverged`` marks a setting whose
every seed diverged (metrics NaN; never chosen; a method whose every setting diverged keeps
one row, marked, instead of vanishing from the chosen settings).

Against the vanilla baseline, DSC is compared by a two-sided Wilcoxon signed-rank test over
cases: each case's DSC is first averaged over the seeds, so n is the number of cases (the seeds
of one case are repeated measurements of it, not independent samples); the p-values of one
table (one fraction of a comparison) are Holm-corrected.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import check_cases
from study.catalog import HP_PREFIX, HYPERPARAMETERS, TECHNIQUES
from study.results import CASE_SPLITS, SPLITS, TEST, VALIDATION

BASELINE = "vanilla"  # the baseline is this technique without a variant
METRICS = ("dsc", "sensitivity", "precision", "hd95", "hd95_max")
PERCENT = ("dsc", "sensitivity", "precision")
LOWER_IS_BETTER = ("hd95", "hd95_max")
RANKED = ("dsc", "sensitivity", "precision", "hd95")
# Means closer than this (percentage points) count as equal: DSC equal to the baseline's up
# to floating-point noise is not "worse".
TIE = 1e-9

__all__ = ["ClassTables", "best_hyperparameters", "best_settings", "comparison_table",
           "diverged_column", "fraction_label", "hp_symbol", "method_list", "method_name",
           "method_order", "methods", "selection_description", "sensitivity_table",
           "split_rows", "table_columns", "variant_labels", "variants", "wilcoxon",
           "wilcoxon_columns"]


def method_name(technique: str, variant: str | None = None) -> str:
    """The method as the papers' tables name it: the catalog's name of ``technique``
    (``Asymmetric focal loss``), followed by `` - <variant>`` for a rerun under a changed
    regime (``Vanilla - w/o augmentation``, 001 Tables II-IV); an id the catalog does not know
    is printed as it is."""
    name = TECHNIQUES[technique].method if technique in TECHNIQUES else str(technique)
    return name if _plain(variant) else f"{name} - {variant}"


def _plain(variant) -> bool:
    """Whether ``variant`` means "no variant" (null, or the empty internal key)."""
    return variant is None or variant == "" or bool(pd.isna(variant))


def hp_symbol(column: str) -> str:
    """The symbol the papers print for the hyperparameter of column ``column`` (``hp_gamma``
    -> ``γ``)."""
    return HYPERPARAMETERS[column.removeprefix(HP_PREFIX)].symbol


def fraction_label(fraction: float) -> str:
    """``0.05`` -> ``5%``, ``0.125`` -> ``12.5%``."""
    return f"{round(fraction * 100, 6):g}%"


def plain(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """``columns`` as plain strings (``load`` gives categoricals; small tables sort and map
    by value)."""
    for column in columns:
        if column in frame.columns and isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object)
    return frame


def variants(rows: pd.DataFrame) -> pd.Series:
    """Each row's variant as a categorical with ``""`` for none (grouping keys cannot be
    null); a frame without a ``variant`` column (written before it existed) has none."""
    if "variant" not in rows.columns:
        return pd.Series(pd.Categorical.from_codes(np.zeros(len(rows), np.int64), pd.Index([""])),
                         index=rows.index)
    given = pd.Categorical(rows["variant"])  # a categorical column is not copied
    labels = [str(label) for label in given.categories if str(label) != ""]
    # old category -> new code; the last entry serves the null code -1
    lookup = np.array([labels.index(str(c)) + 1 if str(c) != "" else 0
                       for c in given.categories] + [0], np.int64)
    return pd.Series(pd.Categorical.from_codes(lookup[given.codes], pd.Index(["", *labels])),
                     index=rows.index)


def variant_labels(keys: pd.Series) -> pd.Series:
    """The ``variant`` column of a table from ``variants`` keys: None where there is none."""
    keys = keys.astype(object)
    return keys.where(keys != "", None)


def methods(rows: pd.DataFrame) -> pd.Series:
    """Each row's method name (``method_name`` of its technique and variant), categorical."""
    technique = pd.Categorical(rows["technique"])
    variant = variants(rows).array
    width = len(variant.categories)
    pairs = technique.codes.astype(np.int64) * width + variant.codes
    unique, inverse = np.unique(pairs, return_inverse=True)
    names = [method_name(technique.categories[u // width], variant.categories[u % width])
             for u in unique]
    if len(set(names)) < len(names):  # two pairs printed alike: no categorical
        return pd.Series(np.array(names, dtype=object)[inverse], index=rows.index)
    return pd.Series(pd.Categorical.from_codes(inverse.reshape(-1), pd.Index(names)),
                     index=rows.index)


def method_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort keys putting methods in the papers' order: techniques in the catalog's row order
    (an unknown id after them), each technique's plain rows first, then its variants by name
    (``_rank``, ``_technique``, ``_variant``); ``frame`` needs ``technique`` and may have
    ``variant``."""
    rank = {name: i for i, name in enumerate(TECHNIQUES)}
    technique = frame["technique"].astype(object)
    return pd.DataFrame({"_rank": technique.map(rank).fillna(len(rank)).astype(float),
                         "_technique": technique, "_variant": variants(frame).astype(object)},
                        index=frame.index)


def method_list(rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(method, technique, variant)`` of every method of ``rows`` in the papers' order
    (``method_order``; variant ``""`` where there is none)."""
    pairs = pd.DataFrame({"technique": rows["technique"].astype(object),
                          "variant": variants(rows).astype(object)}).drop_duplicates()
    pairs = pd.concat([pairs, method_order(pairs)], axis=1).sort_values(
        ["_rank", "_technique", "_variant"], kind="stable")
    return [(method_name(t, v), t, v) for t, v in zip(pairs["technique"], pairs["variant"],
                                                      strict=True)]


def _hp_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(HP_PREFIX)]


def _choose(values: list, what: str, given, context: str):
    if given is not None:
        return given
    if len(values) > 1:
        raise ValueError(f"results of several {what}s {values}{context}: pass {what}=")
    return values[0]


def _split_mask(cases: pd.DataFrame, split: str) -> np.ndarray:
    """Which rows of ``cases`` are on ``split`` (``CASE_SPLITS``: the ``train`` rows are
    evaluated training cases, for 001 Fig. 1 only); without a ``split`` column every row is
    a test row (results written before the column existed)."""
    if split not in CASE_SPLITS:
        raise ValueError(f"split: expected one of {CASE_SPLITS}, got {split!r}")
    if "split" not in cases.columns:
        return np.full(len(cases), split == TEST)
    return (cases["split"] == split).to_numpy(bool)


def _no_validation(cases: pd.DataFrame, datasets) -> str:
    studies = sorted(map(str, cases["study"].unique())) if "study" in cases.columns else []
    study = f"study {studies[0]!r}" if len(studies) == 1 else "the results"
    return (f"select_on='validation': {study} has no validation results for dataset(s) "
            f"{sorted(map(str, datasets))}; set dataset.validation_cases in the study file (cases "
            "held out of the training pool, evaluated like the test cases) and run its trials")


def split_rows(cases: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of ``cases`` on ``split`` (``"test"``, ``"validation"`` or ``"train"``; a
    frame without a ``split`` column holds test rows only). Raises ``ValueError`` for
    ``"validation"`` when a dataset of ``cases`` has no validation rows, naming the study and
    the dataset and saying how to get them (``dataset.validation_cases``)."""
    mask = _split_mask(cases, split)
    rows = cases if mask.all() else cases[mask]  # all on ``split``: no copy of every column
    if split == VALIDATION:
        lacking = set(cases["dataset"].unique()) - set(rows["dataset"].unique())
        if lacking:
            raise ValueError(_no_validation(cases, lacking))
    return rows


def _select(cases: pd.DataFrame, dataset: str, model: str | None, class_name: str | None,
            split: str = TEST) -> tuple[pd.DataFrame, str, str]:
    """Rows of one dataset, model, class and split; ``ValueError`` names what has no
    results."""
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
    mask &= _split_mask(cases, split)
    if not mask.any():
        if split == VALIDATION:
            raise ValueError(_no_validation(cases, [dataset]))
        raise ValueError(f"no {split} results for dataset {dataset!r}")
    keep = table_columns(cases)
    # Rows already selected (a class of the report) are not copied.
    return (cases[keep] if mask.all() else cases.loc[mask, keep]), model, class_name


_NEEDED = {*METRICS, "technique", "variant", "param_label", "dataset", "model", "fraction",
           "seed", "case_id", "class_name", "postprocessed", "status", "trial_id", "split",
           "study"}


def table_columns(cases: pd.DataFrame) -> list[str]:
    """The columns of ``cases`` that the tables of one class (and their figures) read:
    filtering a million rows moves every column kept."""
    return [c for c in cases.columns if c in _NEEDED or c.startswith(HP_PREFIX)]


SETTING = ["method", "parameter"]  # identifies a setting in every table
BLOCK = ["fraction", "postprocessed"]  # a block of one dataset, model and class


def _codes(column: pd.Series, by_value: bool = False) -> tuple[np.ndarray, pd.Index]:
    """Integer codes of ``column`` (-1 for null) and the values they stand for; with
    ``by_value`` the codes follow the sorted values (a loaded categorical's follow the order
    in which its values were first read)."""
    values = pd.Categorical(column)  # a categorical column is not copied
    codes, categories = values.codes.astype(np.int64), values.categories
    if by_value and not categories.is_monotonic_increasing:
        order = np.argsort(categories.to_numpy(object), kind="stable")
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        codes = np.where(codes >= 0, rank[codes], -1)
        categories = categories[order]
    return codes, categories


def _group_codes(columns: list[pd.Series], by_value: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One integer per row naming its combination of the values of ``columns`` (ordered by
    the first column's codes, then the second's...), and the first row of each combination.
    With ``by_value`` the integers follow the sorted values, nulls last, as the groups of
    ``groupby(columns, dropna=False)``. One integer key groups several times faster than
    several categorical ones."""
    combined = np.zeros(len(columns[0]), np.int64)
    size = 1  # the number of possible combinations
    for column in columns:
        codes, values = _codes(column, by_value)
        key = np.where(codes >= 0, codes, len(values)) if by_value else codes + 1
        combined = combined * (len(values) + 1) + key
        size *= len(values) + 1
    if size > 4 * len(combined) + 1024:  # sparse: sort
        _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
        return inverse.reshape(-1), first
    # dense: count instead of sorting (the same numbers, several times faster)
    found = np.bincount(combined, minlength=size) > 0
    first = np.full(size, len(combined))
    np.minimum.at(first, combined, np.arange(len(combined)))
    return (np.cumsum(found) - 1)[combined], first[found]


def _aggregate(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Every setting (technique, variant, param_label) of every block (fraction,
    post-processing) of ``rows``, in one grouped pass over all of them.

    Returns one row per (block, setting), blocks then settings in their values' order:
    ``method, fraction, postprocessed, technique, variant`` (None where there is none),
    ``parameter``, the ``hp_*`` columns, the means over cases then seeds, spreads and counts
    that ``sensitivity_table`` documents; and each setting's DSC per case averaged over its
    seeds (the Wilcoxon pairs), indexed by (row of that table, case code)."""
    variant = variants(rows)
    keys = {"fraction": rows["fraction"], "postprocessed": rows["postprocessed"],
            "technique": rows["technique"], "variant": variant,
            "param_label": rows["param_label"]}
    cell, first = _group_codes(list(keys.values()))
    table = plain(pd.DataFrame({k: v.iloc[first].to_numpy() for k, v in keys.items()}),
                  ["technique", "variant", "param_label"])
    hp_columns = _hp_columns(rows)
    table = table.join(rows[hp_columns].groupby(cell).first())
    status = rows["status"]  # compared as categorical codes: no string per row
    ok, diverged = (status == "ok").to_numpy(bool), (status == "diverged").to_numpy(bool)
    values = rows.loc[ok, list(METRICS)].astype(float)
    finite = values.where(np.isfinite(values.to_numpy()))
    at, seed = cell[ok], rows["seed"].to_numpy()[ok]
    case = _codes(rows["case_id"])[0][ok]
    per_seed = finite.groupby([at, seed]).mean()
    means = per_seed.groupby(level=0).mean()
    means[list(PERCENT)] *= 100.0
    table = table.join(means)
    table["n_cases"] = pd.Series(case).groupby(at).nunique()
    table["n_seeds"] = pd.Series(seed).groupby(at).nunique()
    table["n_diverged"] = pd.Series(rows["seed"].to_numpy()[diverged]).groupby(
        cell[diverged]).nunique()
    per_case = finite["dsc"].groupby([at, case]).mean()
    table["dsc_std"] = per_case.groupby(level=0).std(ddof=0) * 100.0
    table["dsc_seed_std"] = per_seed["dsc"].groupby(level=0).std(ddof=1) * 100
    table["hd95_left_out"] = pd.Series(~np.isfinite(values["hd95"].to_numpy())).groupby(
        at).sum()
    for column in ("n_cases", "n_seeds", "n_diverged", "hd95_left_out"):
        table[column] = table[column].fillna(0).astype("int64")
    table["all_diverged"] = (table["n_seeds"] == 0) & (table["n_diverged"] > 0)
    table = table.rename(columns={"param_label": "parameter"})
    table.insert(0, "method", [method_name(t, v) for t, v in
                               zip(table["technique"], table["variant"], strict=True)])
    table["variant"] = variant_labels(table["variant"])
    # The Wilcoxon pairs average every DSC over the seeds, an infinite one included (the
    # case then drops out of the test); without infinite DSC that is the mean above.
    if np.isinf(values["dsc"].to_numpy()).any():
        per_case = values["dsc"].groupby([at, case]).mean()
    return table, per_case


class _Blocks:
    """The settings of every block of some rows (``_aggregate``), by block."""

    def __init__(self, rows: pd.DataFrame):
        table, self._per_case = _aggregate(rows)
        # pandas-stubs types the keys of a groupby on a list as Hashable: (fraction, pp) here
        self._tables: dict[tuple[float, bool], pd.DataFrame] = (
            dict(iter(table.groupby(BLOCK, sort=True))) if len(rows)  # type: ignore[arg-type]
            else {})

    def fractions(self, postprocessed: bool | None = None) -> list[float]:
        """The fractions with rows (with ``postprocessed`` rows, unless None), ascending."""
        return sorted({f for f, pp in self._tables if postprocessed in (None, pp)})

    def near(self, fraction: float, postprocessed: bool | None) -> float | None:
        """The fraction of a ``postprocessed`` block (any block if None) equal to ``fraction``
        up to rounding."""
        return next((f for f in self.fractions(postprocessed) if np.isclose(f, fraction)),
                    None)

    def settings(self, fraction: float, postprocessed: bool) -> pd.DataFrame:
        """One row per setting of the block (the ``_aggregate`` columns but the block's)."""
        return self._tables[(fraction, postprocessed)].drop(columns=BLOCK).reset_index(
            drop=True)

    def used(self) -> pd.DataFrame:
        """Per technique (index) and ``hp_*`` column, whether any setting sets it."""
        table = pd.concat(self._tables.values())
        return table[_hp_columns(table)].notna().groupby(table["technique"]).any()

    def versus_baseline(self, table: pd.DataFrame, fraction: float,
                        postprocessed: bool) -> pd.DataFrame:
        """Add ``worse_than_baseline`` and the Holm-corrected ``p_value`` of a paired
        Wilcoxon signed-rank test of DSC against the baseline to ``table``, settings of the
        block (``fraction``, ``postprocessed``). The pairs are cases: each case's DSC is
        averaged over the setting's seeds first, so n is the number of cases both settings
        have a finite DSC for, however many seeds there are."""
        is_base = _is_baseline(table)
        table = table.copy()
        if not is_base.any():
            table["worse_than_baseline"] = False
            table["p_value"] = np.nan
            return table
        base_dsc = table.loc[is_base, "dsc"].iloc[0]
        table["worse_than_baseline"] = ~is_base & (table["dsc"] < base_dsc - TIE)
        cells = self._tables[(fraction, postprocessed)]
        wide = self._per_case.loc[cells.index[0]:cells.index[-1]].unstack(0)  # case x cell
        position = {cell: j for j, cell in enumerate(wide.columns)}
        columns = {(str(m), str(p)): position[cell] for m, p, cell in
                   zip(cells["method"], cells["parameter"], cells.index, strict=True)
                   if cell in position}
        values = wide.to_numpy(float)
        base_column = columns.get(tuple(table.loc[is_base, SETTING].astype(str).iloc[0]))
        raw = np.full(len(table), np.nan)
        if base_column is not None:
            found = {row: columns.get((str(method), str(label)))
                     for row, (baseline, method, label) in enumerate(zip(
                         is_base, table["method"], table["parameter"], strict=True))
                     if not baseline and not pd.isna(label)}
            tested = {row: column for row, column in found.items() if column is not None}
            raw[list(tested)] = wilcoxon_columns(values[:, list(tested.values())],
                                                 values[:, base_column])
        table["p_value"] = _holm(pd.Series(raw, index=table.index)).to_numpy()
        return table


def _is_baseline(table: pd.DataFrame) -> np.ndarray:
    """The baseline row: vanilla without a variant (a vanilla variant of another experiment,
    ``w/o augmentation`` or ``80 % tumour``, is compared with it like any other row); the
    first such row, none when the table has none."""
    chosen = ((table["technique"] == BASELINE) & table["variant"].isna()).to_numpy(bool)
    first = np.zeros(len(table), bool)
    if chosen.any():
        first[int(np.argmax(chosen))] = True
    return first


def _order(table: pd.DataFrame, *then: str) -> pd.DataFrame:
    """Methods in the papers' order (``method_order``: the baseline first, vanilla variants
    right after it, each technique's variants right after its plain rows), then by ``then``
    (default: settings by hyperparameter value)."""
    keys = list(then) or [*_hp_columns(table), "parameter"]
    order = pd.concat([table, method_order(table)], axis=1)
    order = order.sort_values(["_rank", "_technique", "_variant", *keys], na_position="first",
                              kind="stable")
    return order.drop(columns=["_rank", "_technique", "_variant"]).reset_index(drop=True)


def _holm(p_values: pd.Series) -> pd.Series:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), NaN kept as NaN: the i-th
    smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    valid = p_values.dropna().sort_values()
    m = len(valid)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * valid.to_numpy()))
    out = pd.Series(np.nan, index=p_values.index)
    out[valid.index] = adjusted
    return out


def wilcoxon(values: np.ndarray, base: np.ndarray) -> float:
    """The two-sided p-value of scipy's Wilcoxon signed-rank test of the pairs
    ``(values[i], base[i])`` where both are finite (scipy chooses the exact or the asymptotic
    distribution); NaN when fewer than two such pairs remain or every one is a tie."""
    keep = np.isfinite(values) & np.isfinite(base)
    values, base = values[keep], base[keep]
    if len(values) < 2 or not np.any(values != base):
        return np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(values, base).pvalue)


def wilcoxon_columns(values: np.ndarray, base: np.ndarray) -> np.ndarray:
    """:func:`wilcoxon` of each column of ``values`` against ``base``: bit for bit the p-values
    of one call per column, in fewer scipy calls. The columns whose every pair is finite, with
    more than 50 pairs, go to scipy in one call: there scipy takes the asymptotic p of each
    column on its own (below 51 pairs it chooses exact or not from the whole call, so those
    columns are tested one by one), the same p as one call each."""
    out = np.full(values.shape[1], np.nan)
    together = (np.isfinite(values).all(axis=0) & bool(np.isfinite(base).all())
                & (len(base) > 50) & (values != base[:, None]).any(axis=0))
    if together.any():
        batch = values[:, together]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[together] = stats.wilcoxon(batch, np.repeat(base[:, None], batch.shape[1],
                                                            axis=1), axis=0).pvalue
    for column in np.flatnonzero(~together):
        out[column] = wilcoxon(values[:, column], base)
    return out


COUNTS = ["n_cases", "n_seeds", "n_diverged", "all_diverged"]
COLUMNS = ["method", "parameter", "technique", "variant", *METRICS, *COUNTS, "dsc_std",
           "dsc_seed_std", "hd95_left_out", "worse_than_baseline", "p_value"]


def sensitivity_table(cases: pd.DataFrame, dataset: str, fraction: float, postprocessed: bool,
                      model: str | None = None, class_name: str | None = None) -> pd.DataFrame:
    """One row per (method, setting), the vanilla baseline first (000 Table IV, one block), on
    the test split. A method is a technique, or a technique rerun under a changed regime
    (``variant``): ``Vanilla - w/o augmentation`` follows the baseline and is compared with it
    like any other row.

    Columns: ``method, parameter, technique, variant`` (None where there is none), ``dsc,
    sensitivity, precision, hd95, hd95_max`` (means over cases then seeds; percent / mm),
    ``n_cases, n_seeds`` (cases and seeds with status ``ok``), ``n_diverged`` (seeds that
    diverged), ``all_diverged`` (every seed diverged: the metrics are NaN), ``dsc_std`` (std
    over cases of the seed-mean DSC, percent), ``dsc_seed_std`` (std over seeds of the
    case-mean DSC; NaN with one seed), ``hd95_left_out`` ((case, seed) pairs whose HD95 is
    inf/NaN, left out of the HD mean), ``worse_than_baseline`` (mean DSC below the
    baseline's; False for the baseline and when there is no baseline) and ``p_value``
    (two-sided Wilcoxon signed-rank test of DSC against the baseline over cases, each case's
    DSC averaged over seeds first, so n = number of cases; Holm-corrected within the table;
    NaN where not computable), then the ``hp_*`` columns. ``model`` and ``class_name`` may be
    left out when the results hold only one. Raises ``ValueError`` naming what has no results
    and ``ResultsError`` for missing columns.
    """
    return ClassTables(cases, dataset, model, class_name).sensitivity(fraction, postprocessed)


def selection_description(metric: str = "dsc", postprocessed: bool = True,
                          select_on: str = TEST) -> str:
    """How ``best_settings`` chose, in words, naming the split that chose (for captions)."""
    if select_on not in SPLITS:
        raise ValueError(f"select_on: expected one of {SPLITS}, got {select_on!r}")
    name = {"dsc": "DSC", "sensitivity": "sensitivity", "precision": "precision",
            "hd95": "HD95", "hd95_max": "HD95 (max)"}.get(metric, metric)
    best = "lowest" if metric in LOWER_IS_BETTER else "highest"
    where = "test" if select_on == TEST else "validation (cases held out of training)"
    pp = "with" if postprocessed else "without"
    return f"{best} mean {where} {name} {pp} post-processing"


def _every_setting_diverged(settings: pd.DataFrame) -> pd.DataFrame:
    """One row per method of ``settings`` (one block) whose every setting diverged on every
    seed: the setting itself when there is one, else ``parameter`` None and the ``hp_*`` NaN
    (no setting was chosen); ``n_diverged`` the most seeds any setting had."""
    rows = []
    for _, group in settings.groupby("method", sort=False):
        if not group["all_diverged"].all():
            continue
        row = group.iloc[[0]].copy()
        if len(group) > 1:
            row["parameter"] = None
            row[_hp_columns(group)] = np.nan
            row["n_diverged"] = group["n_diverged"].max()
        rows.append(row)
    return pd.concat(rows) if rows else settings.iloc[:0]


def _choose_in_block(reported: pd.DataFrame, scores: pd.Series, metric: str) -> pd.DataFrame:
    """Per method, the setting of ``reported`` (test ``_settings`` of one block) with the best
    finite ``scores`` (aligned with ``reported``), more seeds breaking ties; methods whose
    every setting diverged as ``_every_setting_diverged`` says."""
    scored = reported.assign(score=scores.to_numpy(float)).dropna(subset=["score"])
    scored = scored.sort_values(["score", "n_seeds"], kind="stable",
                                ascending=[metric in LOWER_IS_BETTER, False])
    chosen = scored.groupby("method", sort=False).head(1)
    rest = reported[~reported["method"].isin(chosen["method"])]
    return pd.concat([chosen, _every_setting_diverged(rest).assign(score=np.nan)])


def best_settings(cases: pd.DataFrame, dataset: str, model: str | None = None,
                  class_name: str | None = None, *, metric: str = "dsc",
                  postprocessed: bool = True, select_on: str = TEST) -> pd.DataFrame:
    """The setting chosen per (method, fraction): the one with the best mean ``metric``
    (highest; lowest for HD) over cases then seeds, with (``postprocessed=True``) or without
    post-processing, on the split ``select_on``: ``"test"`` (the default, only because the
    papers chose so; it flatters the chosen settings) or ``"validation"`` (cases held out of
    the training pool). Either way the metrics reported are the chosen setting's on the test
    split. Ties go to the setting with more seeds. Settings whose every seed diverged are
    never chosen; a method whose every setting diverged keeps one row with ``all_diverged``
    True (see below). A method is a (technique, variant), as in ``sensitivity_table``.

    Returns one row per (method, fraction) in the papers' order: ``technique, variant,
    method, fraction, parameter`` (None when a method's several settings all diverged),
    ``score`` (``metric`` of the chosen setting on ``select_on``, percent / mm), ``dsc,
    sensitivity, precision, hd95, hd95_max`` (test), ``n_cases, n_seeds, n_diverged,
    all_diverged`` (test counts) and the ``hp_*`` columns of the chosen setting. Raises
    ``ValueError`` for an unknown ``metric`` / ``select_on``, and for
    ``select_on="validation"`` when the results have no validation rows for this dataset (or
    for a method at a fraction), naming the study and dataset and the study-file key that
    adds them (``dataset.validation_cases``).
    """
    return ClassTables(cases, dataset, model, class_name).best_settings(
        metric=metric, postprocessed=postprocessed, select_on=select_on)


def diverged_column(label: str) -> str:
    """The ``best_hyperparameters`` column flagging, for the fraction column ``label``,
    methods whose every setting diverged there."""
    return f"all_diverged_{label}"


def best_hyperparameters(cases: pd.DataFrame, dataset: str, model: str | None = None,
                         class_name: str | None = None, *, metric: str = "dsc",
                         postprocessed: bool = True, select_on: str = TEST) -> pd.DataFrame:
    """000 Tables I-III: one row per (method, hyperparameter), one column per training
    fraction (labelled ``5%``, ``10%``...) holding the chosen value (NaN where the method has
    no result at that fraction, or where its several settings all diverged), then one
    boolean column per fraction (``all_diverged_5%``...: every setting of the method diverged
    on every seed there). Chosen as ``best_settings`` says (default: highest mean test DSC
    with post-processing; ``metric``, ``postprocessed`` and ``select_on`` change that).
    Methods without hyperparameters (vanilla and its variants) have no row. Columns:
    ``method, technique, variant, hyperparameter`` (the symbol, ``γ``), ``meaning`` (what it
    is, from the catalog), ``column`` (the ``hp_*`` name), the fractions, the flags."""
    return ClassTables(cases, dataset, model, class_name).best_hyperparameters(
        metric=metric, postprocessed=postprocessed, select_on=select_on)


def _ranks(values: pd.Series, lower_is_better: bool) -> pd.Series:
    """Dense ranks of the values as printed (one decimal): equal printed numbers rank equal."""
    shown = values.round(1)
    return shown.rank(method="dense", ascending=lower_is_better).astype("Int64")


def comparison_table(cases: pd.DataFrame, dataset: str, postprocessed: bool,
                     model: str | None = None, class_name: str | None = None, *,
                     metric: str = "dsc", select_postprocessed: bool = True,
                     select_on: str = TEST) -> pd.DataFrame:
    """001 Tables II-IV / 000 Tables VI-VIII in long form: one row per (method, fraction) at
    the setting ``best_settings`` chose (by ``metric``, with post-processing unless
    ``select_postprocessed=False``, on the split ``select_on``), evaluated on the test split
    with or without post-processing (``postprocessed``). A method is a (technique, variant):
    ``Vanilla - w/o augmentation`` is a row after the baseline, compared with it.

    Columns: ``method, technique, variant, fraction, parameter, dsc, sensitivity, precision,
    hd95, hd95_max, n_cases, n_seeds, n_diverged, all_diverged`` (a method whose every setting
    diverged keeps its row, metrics NaN), ``dsc_std, hd95_left_out, worse_than_baseline``
    (DSC below the baseline's at that fraction), ``p_value`` (Wilcoxon vs baseline over
    cases, seeds averaged first; Holm-corrected within the fraction), ``rank_dsc,
    rank_sensitivity, rank_precision, rank_hd95`` (1 = best, 2 = second best within the
    fraction, on the values as printed; HD: lower is better) and the ``hp_*`` columns of the
    setting.
    """
    return ClassTables(cases, dataset, model, class_name).comparison(
        postprocessed, metric=metric, select_postprocessed=select_postprocessed,
        select_on=select_on)


class ClassTables:
    """Every table of one dataset, model and class from aggregates computed once: the means,
    spreads, counts and per-case DSC of every setting of every block in one grouped pass
    (``sensitivity``, ``best_settings``, ``comparison`` and the Wilcoxon tests read them),
    and the settings chosen once per rule (``comparison`` and ``best_hyperparameters`` reuse
    ``best_settings``). The module's functions of the same names build one of these per call;
    the report builds one per class. ``model`` and ``class_name`` may be left out when
    ``cases`` holds only one; ``ValueError`` names what has no test results."""

    def __init__(self, cases: pd.DataFrame, dataset: str, model: str | None = None,
                 class_name: str | None = None):
        self.rows, self.model, self.class_name = _select(cases, dataset, model, class_name)
        self.dataset = dataset
        self._cases = cases  # the validation rows are selected when a rule asks for them
        self._test = _Blocks(self.rows)
        self._validation: _Blocks | None = None
        self._chosen: dict[tuple, pd.DataFrame] = {}

    def fractions(self) -> list[float]:
        """The training fractions with test results, ascending."""
        return self._test.fractions()

    def has_block(self, fraction: float, postprocessed: bool) -> bool:
        """Whether there are test results at ``fraction`` with/without post-processing."""
        return self._test.near(fraction, postprocessed) is not None

    def sensitivity(self, fraction: float, postprocessed: bool) -> pd.DataFrame:
        """``sensitivity_table`` of this class."""
        if self._test.near(fraction, None) is None:
            have = ", ".join(f"{f:g}" for f in self.fractions())
            raise ValueError(f"no results for dataset {self.dataset!r} at fraction "
                             f"{fraction:g} (have {have})")
        at = self._test.near(fraction, postprocessed)
        if at is None:
            raise ValueError(f"no {'post-processed' if postprocessed else 'raw'} results for "
                             f"dataset {self.dataset!r} at fraction {fraction:g}")
        table = self._test.versus_baseline(_order(self._test.settings(at, postprocessed)),
                                           at, postprocessed)
        return table[COLUMNS + _hp_columns(table)]

    def _held_out(self) -> _Blocks:
        if self._validation is None:
            rows, _, _ = _select(self._cases, self.dataset, self.model, self.class_name,
                                 VALIDATION)
            self._validation = _Blocks(rows)
        return self._validation

    def best_settings(self, *, metric: str = "dsc", postprocessed: bool = True,
                      select_on: str = TEST) -> pd.DataFrame:
        """``best_settings`` of this class (computed once per rule)."""
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
        if select_on not in SPLITS:
            raise ValueError(f"select_on: expected one of {SPLITS}, got {select_on!r}")
        rule = (metric, postprocessed, select_on)
        if rule not in self._chosen:
            self._chosen[rule] = self._choose(metric, postprocessed, select_on)
        return self._chosen[rule].copy()

    def _choose(self, metric: str, postprocessed: bool, select_on: str) -> pd.DataFrame:
        held_out = self._held_out() if select_on == VALIDATION else None
        out = []
        for fraction in self._test.fractions(postprocessed):
            reported = self._test.settings(fraction, postprocessed)
            scores = reported[metric]
            if held_out is not None:
                near = held_out.near(fraction, postprocessed)
                chooser = (held_out.settings(near, postprocessed) if near is not None
                           else reported.iloc[:0])
                lacking = sorted(set(reported["method"]) - set(chooser["method"]))
                if lacking:
                    raise ValueError(f"select_on='validation': {lacking} at fraction "
                                     f"{fraction:g} of dataset {self.dataset!r} have test but "
                                     "no validation results")
                scores = reported[SETTING].merge(chooser[[*SETTING, metric]], how="left",
                                                 on=SETTING)[metric]
            out.append(_choose_in_block(reported, scores, metric).assign(fraction=fraction))
        if not out:
            raise ValueError(f"no {'post-processed' if postprocessed else 'raw'} results for "
                             f"dataset {self.dataset!r}")
        table = _order(pd.concat(out, ignore_index=True), "fraction")
        return table[["technique", "variant", "method", "fraction", "parameter", "score",
                      *METRICS, *COUNTS, *_hp_columns(table)]]

    def best_hyperparameters(self, *, metric: str = "dsc", postprocessed: bool = True,
                             select_on: str = TEST) -> pd.DataFrame:
        """``best_hyperparameters`` of this class."""
        chosen = self.best_settings(metric=metric, postprocessed=postprocessed,
                                    select_on=select_on)
        used = self._test.used()
        hp_columns = _hp_columns(self.rows)
        labels = {f: fraction_label(f) for f in sorted(chosen["fraction"].unique())}
        out = []
        for method, group in chosen.groupby("method", sort=False):
            by_fraction = group.set_index("fraction")
            technique, variant = group["technique"].iloc[0], group["variant"].iloc[0]
            diverged = {diverged_column(label): bool(by_fraction["all_diverged"].get(f, False))
                        for f, label in labels.items()}
            for column in hp_columns:
                if not used.loc[technique, column]:
                    continue
                hp = HYPERPARAMETERS[column.removeprefix(HP_PREFIX)]
                out.append({"method": method, "technique": technique, "variant": variant,
                            "hyperparameter": hp.symbol, "meaning": hp.meaning,
                            "column": column, **{label: by_fraction[column].get(f, np.nan)
                                                 for f, label in labels.items()}, **diverged})
        columns = ["method", "technique", "variant", "hyperparameter", "meaning", "column",
                   *labels.values(), *map(diverged_column, labels.values())]
        return pd.DataFrame(out, columns=columns)

    def comparison(self, postprocessed: bool, *, metric: str = "dsc",
                   select_postprocessed: bool = True, select_on: str = TEST) -> pd.DataFrame:
        """``comparison_table`` of this class."""
        chosen = self.best_settings(metric=metric, postprocessed=select_postprocessed,
                                    select_on=select_on)
        fractions = self._test.fractions(postprocessed)
        if not fractions:
            raise ValueError(f"no {'post-processed' if postprocessed else 'raw'} results for "
                             f"dataset {self.dataset!r}")
        out = []
        for fraction in fractions:
            picked = chosen[np.isclose(chosen["fraction"].to_numpy(float), fraction)]
            settings = self._test.settings(fraction, postprocessed)
            at = pd.MultiIndex.from_frame(settings[SETTING]).isin(
                pd.MultiIndex.from_frame(picked[SETTING]))
            # A method whose several settings all diverged has no setting to look up.
            unset = picked[picked["parameter"].isna()].drop(columns=["score", "fraction"])
            unset = unset.assign(hd95_left_out=0)
            table = pd.concat([settings[at], unset], ignore_index=True)
            if table.empty:
                continue
            table = self._test.versus_baseline(_order(table), fraction, postprocessed)
            for column in RANKED:
                table[f"rank_{column}"] = _ranks(table[column], column in LOWER_IS_BETTER)
            out.append(table.assign(fraction=fraction))
        if not out:
            raise ValueError(f"no results for dataset {self.dataset!r} at the chosen settings")
        table = _order(pd.concat(out, ignore_index=True), "fraction")
        columns = ["method", "technique", "variant", "fraction", "parameter", *METRICS,
                   *COUNTS, "dsc_std", "hd95_left_out", "worse_than_baseline", "p_value",
                   *[f"rank_{c}" for c in RANKED], *_hp_columns(table)]
        return table[columns]
