"""Figures with matplotlib and seaborn, saved as PNG and SVG (``save``).

* ``sensitivity_figure``: a metric vs each method's hyperparameter at one training fraction,
  with or without post-processing (000 Table IV as a figure), one panel per method.
* ``heatmap_figure``: the two-dimensional grids (adversarial ε x l, calibration τ x ν) as
  heatmaps of the mean metric, coloured around the baseline (blue better, red worse).
* ``fraction_figure``: sensitivity, precision and DSC vs training fraction at the chosen
  settings (001 Fig. 1), one column per method beside the baseline.
* ``train_test_figure``: sensitivity and precision on training vs test cases by training
  fraction at the chosen settings (001 Fig. 1's train-test gap), one column per method.
* ``logit_figure`` and ``logit_shift_figure``: logit distributions of each class's voxels on
  training vs test cases, and the shift of the mean logit (001 Figs. 3-5, 7-8).
* ``loss_curve_figure``: each loss and its gradient vs the true-class logit (000 Fig. 1,
  001 Fig. 9), from ``study.loss_curves``.
* ``intensity_figure`` and ``class_distribution_figure``: a dataset's intensity histograms per
  class and channel (001 Fig. 10) and its voxels per class (001 Fig. 11), from
  ``study data check --figures``.

What the metric figures draw: each case as a grey dot (its metric averaged over the seeds),
jittered beside the mean over those cases; the mean with its 95% percentile-bootstrap
confidence interval over cases (``bootstrap_interval``: cases resampled, seeded, clipped to the
metric's range, so a DSC interval never leaves [0, 100] %); the vanilla baseline (without a
variant) as a dashed black line with its interval as a grey band, named in the legend. A
method is a (technique, variant), named as the tables name it. Figures carry no titles: the
report's captions say what a figure shows; axes say what is plotted and in which unit, and a
log axis says "(log scale)".

Figures are ``matplotlib.figure.Figure`` objects made without pyplot (no global state, no
display needed); styles are applied through seaborn's context managers only.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.typing import LineStyleType

from analysis.names import class_label
from analysis.render import value_text
from analysis.tables import (
    BASELINE,
    LOWER_IS_BETTER,
    PERCENT,
    _select,
    fraction_label,
    hp_symbol,
    method_list,
    method_name,
    methods,
    plain,
    variants,
)
from study.catalog import HP_PREFIX, HYPERPARAMETERS
from study.results import TEST, TRAIN

LABELS = {"dsc": "DSC (%)", "sensitivity": "Sensitivity (%)", "precision": "Precision (%)",
          "hd95": "HD95 (mm)", "hd95_max": "HD95, max of directed (mm)", "iou": "IoU (%)"}
# The values a metric can take (percent, mm): confidence intervals are clipped to them.
RANGES = {"dsc": (0.0, 100.0), "sensitivity": (0.0, 100.0), "precision": (0.0, 100.0),
          "iou": (0.0, 100.0), "hd95": (0.0, math.inf), "hd95_max": (0.0, math.inf)}
PP_NAMES = {True: "w/ post-processing", False: "w/o post-processing"}
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
STYLE = {"axes.spines.top": False, "axes.spines.right": False}
BASELINE_COLOUR = (0.0, 0.0, 0.0)
CASE_COLOUR = (0.55, 0.55, 0.55)
JITTER = 0.18  # half-width of the case dots' jitter, as a share of the gap between positions
# What the metric figures draw, in words, for their captions.
DRAWN = (f"Grey dots: test cases (each averaged over the seeds), jittered beside their mean; "
         f"markers and error bars: mean over cases and its {CONFIDENCE:.0%} percentile-bootstrap "
         f"confidence interval ({BOOTSTRAP_RESAMPLES:,} resamples of the cases); dashed black "
         f"line and grey band: the {method_name(BASELINE)} baseline's mean and interval.")
LOGITS_DRAWN = ("one colour per logit channel; solid: training cases, dashed: test cases; "
                "histograms of the voxels of all seeds, as densities.")

__all__ = ["DRAWN", "LOGITS_DRAWN", "bootstrap_interval", "case_values",
           "class_distribution_figure", "fraction_figure", "heatmap_figure", "intensity_figure",
           "logit_figure", "logit_shift_figure", "loss_curve_figure", "save",
           "sensitivity_figure", "train_test_figure", "varying_hyperparameters"]


def _legend_entries(axes: np.ndarray) -> tuple[list[Any], list[str]]:
    """The (handle, label) pairs of every distinct label drawn on ``axes``, first one kept:
    the entries of one legend shared by a grid of panels."""
    handles: list[Any] = []
    labels: list[str] = []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    return handles, labels


@contextmanager
def _context():
    """seaborn's style and scale, applied while a figure is being drawn."""
    with sns.axes_style("whitegrid", STYLE), sns.plotting_context("notebook", font_scale=0.9):
        yield


def save(figure: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.svg``; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, extra in ((".png", {"dpi": 150}), (".svg", {"metadata": {"Date": None}})):
        path = stem.parent / f"{stem.name}{suffix}"  # not with_suffix: stems hold "0.05"
        figure.savefig(path, bbox_inches="tight", **extra)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------- statistics

def _metric(metric: str) -> str:
    if metric not in RANGES:
        raise ValueError(f"metric: expected one of {tuple(RANGES)}, got {metric!r}")
    return metric


def bootstrap_interval(values, metric: str = "dsc", *, resamples: int = BOOTSTRAP_RESAMPLES,
                       confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap confidence interval of the mean of ``values`` (one per case,
    in the metric's unit: percent or mm): ``resamples`` resamples of the cases with
    replacement, drawn with ``seed``; the interval holds the middle ``confidence`` of their
    means, clipped to the metric's range (``RANGES``: a DSC near 0 gets no negative bound,
    as a t-interval would give). Non-finite values are left out; ``(nan, nan)`` without any,
    ``(v, v)`` with one. Raises ``ValueError`` for an unknown ``metric``."""
    low_bound, high_bound = RANGES[_metric(metric)]
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return (float(np.clip(low, low_bound, high_bound)),
            float(np.clip(high, low_bound, high_bound)))


def case_values(rows: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """One row per (``keys``, case) of the trials with status ``ok``: ``value``, the case's
    finite ``metric`` averaged over the seeds (percent where the tables print percent).
    ``keys`` may name ``method`` (``tables.methods``)."""
    _metric(metric)
    ok = rows[rows["status"] == "ok"]
    if "method" in keys:
        ok = ok.assign(method=methods(ok))
    values = ok[metric].astype(float)
    values = values.where(np.isfinite(values.to_numpy()))
    if metric in PERCENT or metric == "iou":
        values = values * 100.0
    frame = ok[[*keys, "case_id"]].assign(value=values)
    data = frame.groupby([*keys, "case_id"], sort=False, observed=True)["value"].mean()
    return plain(data.reset_index(), [*keys, "case_id"])


def _summary(values: pd.Series, metric: str) -> tuple[float, float, float]:
    """Mean and bootstrap interval of one setting's case values."""
    finite = values.to_numpy(float)
    finite = finite[np.isfinite(finite)]
    mean = float(finite.mean()) if len(finite) else math.nan
    return (mean, *bootstrap_interval(finite, metric))


# ---------------------------------------------------------------------------- drawing

def _grid(count: int, columns: int, width: float, height: float, **share):
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(max(width * columns, 6.4), height * rows + 0.9),
                    layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, **share)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return figure, axes


def _positions(values: np.ndarray, log: bool) -> np.ndarray:
    """Where ``values`` lie along the axis as drawn (log10 on a log axis)."""
    return np.log10(values) if log else np.asarray(values, float)


def _strip(ax, x: float, values: np.ndarray, log: bool, gap: float,
           rng: np.random.Generator) -> None:
    """The cases at ``x`` as grey dots, jittered across ``JITTER`` x ``gap`` (the smallest gap
    between positions, in drawn units) so that they do not hide each other."""
    values = values[np.isfinite(values)]
    if not len(values):
        return
    offsets = rng.uniform(-JITTER * gap, JITTER * gap, len(values))
    where = _positions(np.array([x]), log)[0] + offsets
    ax.scatter(10 ** where if log else where, values, s=7, color=CASE_COLOUR, alpha=0.45,
               linewidths=0, zorder=1)


def _gap(x: np.ndarray, log: bool) -> float:
    drawn = np.unique(_positions(x, log))
    return float(np.diff(drawn).min()) if len(drawn) > 1 else 1.0


def _means(ax, x, summary: np.ndarray, colour, linestyle: LineStyleType = "-") -> None:
    """Means (line and markers) with their confidence intervals as error bars."""
    mean, low, high = summary.T
    shown = np.isfinite(mean)
    ax.errorbar(np.asarray(x, float)[shown], mean[shown],
                yerr=[mean[shown] - low[shown], high[shown] - mean[shown]], color=colour,
                marker="o", markersize=4.5, linewidth=1.5, capsize=3, zorder=3,
                linestyle=linestyle)


def _log_axis(values: np.ndarray) -> bool:
    """Whether positive values spread over enough decades for a log axis (the papers' grids
    and fractions are roughly geometric)."""
    values = np.asarray(values, float)
    return bool(len(values) > 1 and values.min() > 0 and values.max() / values.min() >= 8)


def _ticks(ax, x: Sequence[float], log: bool) -> None:
    if log:
        ax.set_xscale("log")
        ax.minorticks_off()
    grid = sorted(set(x))
    if len(grid) <= 10:
        ax.set_xticks(grid, [value_text(v) for v in grid], rotation=45 if len(grid) > 6 else 0)


def _legend(figure: Figure, method: str) -> None:
    """The figure's one legend, below it: the method's means and intervals, the cases, the
    baseline and its interval."""
    interval = f"{CONFIDENCE:.0%} bootstrap CI over cases"
    handles = [
        Line2D([], [], color=sns.color_palette("colorblind")[0], marker="o", markersize=4.5,
               linewidth=1.5, label=f"{method}: mean and {interval}"),
        Line2D([], [], color=CASE_COLOUR, marker="o", linestyle="", markersize=4, alpha=0.6,
               label="one test case (mean over seeds)"),
        Line2D([], [], color=BASELINE_COLOUR, linestyle="--", linewidth=1.2,
               label=f"{method_name(BASELINE)} (baseline): mean"),
        Patch(color=BASELINE_COLOUR, alpha=0.15, linewidth=0,
              label=f"{method_name(BASELINE)} (baseline): {interval}")]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)


def _is_baseline(frame: pd.DataFrame) -> np.ndarray:
    return ((frame["technique"] == BASELINE).to_numpy() & (variants(frame) == "").to_numpy())


def varying_hyperparameters(rows: pd.DataFrame, technique: str,
                            variant: str | None = None) -> list[str]:
    """The ``hp_*`` columns whose value differs between the settings of ``technique`` (rerun
    as ``variant``, None for its plain rows)."""
    own = rows[(rows["technique"] == technique).to_numpy()
               & (variants(rows) == (variant or "")).to_numpy()]
    settings = own.drop_duplicates("param_label")
    return [c for c in own.columns if c.startswith(HP_PREFIX)
            and settings[c].notna().all() and settings[c].nunique() > 1]


# ---------------------------------------------------------------------------- figures

def _rows_at(cases, dataset, fraction, model, class_name):
    rows, model, class_name = _select(cases, dataset, model, class_name)
    rows = rows[np.isclose(rows["fraction"].to_numpy(float), fraction)]
    if rows.empty:
        raise ValueError(f"no results for dataset {dataset!r} at fraction {fraction:g}")
    return rows


def _baseline_summary(rows: pd.DataFrame, metric: str) -> tuple[float, float, float]:
    base = rows[_is_baseline(rows)]
    if base.empty:
        return math.nan, math.nan, math.nan
    return _summary(case_values(base, [], metric)["value"], metric)


def _wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (long method names in
    axis labels)."""
    return "\n".join(textwrap.wrap(text, width)) or text


def _tick_labels(settings: pd.DataFrame, varying: list[str]) -> list[str]:
    """One tick label per setting: the varying hyperparameters' values (one per line, with
    the symbol when several vary), as the papers print them."""
    if len(varying) == 1:
        return [value_text(v) for v in settings[varying[0]]]
    return ["\n".join(f"{hp_symbol(c)}={value_text(row[c])}" for c in varying)
            for _, row in settings.iterrows()]


def sensitivity_figure(cases: pd.DataFrame, dataset: str, fraction: float,
                       model: str | None = None, class_name: str | None = None,
                       metric: str = "dsc", postprocessed: bool = True,
                       columns: int = 4) -> Figure:
    """``metric`` vs each method's hyperparameter at one training fraction, with or without
    post-processing (000 Table IV as a figure): one panel per method besides the baseline,
    all on one y scale. The x axis holds the method's settings in grid order, evenly spaced
    (the papers' grids are irregular: 0.1, 0.15, ..., 0.4, 0.8), labelled with the values of
    the hyperparameters that vary (see ``heatmap_figure`` for two-dimensional grids). Each
    panel shows the cases, the means with bootstrap intervals and the baseline (module
    docstring)."""
    rows = _rows_at(cases, dataset, fraction, model, class_name)
    rows = rows[rows["postprocessed"] == postprocessed]
    if rows.empty:
        raise ValueError(f"no {PP_NAMES[postprocessed]} results for dataset {dataset!r} at "
                         f"fraction {fraction:g}")
    shown = [m for m in method_list(rows) if not (m[1] == BASELINE and m[2] == "")]
    if not shown:
        raise ValueError(f"no method besides the baseline at fraction {fraction:g}")
    rows = rows.assign(method=methods(rows))
    data = case_values(rows, ["method", "param_label"], metric)
    base = _baseline_summary(rows, metric)
    colour = sns.color_palette("colorblind")[0]
    rng = np.random.default_rng(0)
    with _context():
        figure, axes = _grid(len(shown), columns, 3.3, 2.9, sharey=True)
        for ax, (method, technique, variant) in zip(axes.flat, shown, strict=False):
            own = rows[rows["method"] == method]
            varying = varying_hyperparameters(own, technique, variant)
            hp = [c for c in own.columns if c.startswith(HP_PREFIX)]
            settings = own.drop_duplicates("param_label").sort_values(
                hp, na_position="first", kind="stable")
            x = np.arange(len(settings), dtype=float)
            values = data[data["method"] == method]
            summary = []
            for label, position in zip(settings["param_label"], x, strict=True):
                cases_at = values.loc[values["param_label"] == label, "value"]
                _strip(ax, position, cases_at.to_numpy(float), False, 1.0, rng)
                summary.append(_summary(cases_at, metric))
            _means(ax, x, np.array(summary, float), colour)
            _draw_baseline(ax, base)
            ax.set_xlim(-0.6, len(x) - 0.4)
            symbols = ", ".join(hp_symbol(c) for c in varying) or "no hyperparameter"
            ax.set_xlabel(f"{_wrap(method, 36)}\n{symbols}")
            ax.set_xticks(x, _tick_labels(settings, varying) if varying else [""] * len(x),
                          fontsize=8 if len(varying) < 2 else 7)
        for ax in axes[:, 0]:
            ax.set_ylabel(LABELS[metric])
        _legend(figure, "method at a setting")
    return figure


def _draw_baseline(ax, summary: tuple[float, float, float]) -> None:
    mean, low, high = summary
    if not np.isfinite(mean):
        return
    ax.axhline(mean, color=BASELINE_COLOUR, linestyle="--", linewidth=1.2, zorder=2)
    if high > low:
        ax.axhspan(low, high, color=BASELINE_COLOUR, alpha=0.15, linewidth=0, zorder=0)


def _hp_name(column: str) -> str:
    """``ε: random start of the adversarial direction (001 eq. 14-16)``, from the catalog."""
    hp = HYPERPARAMETERS[column.removeprefix(HP_PREFIX)]
    return f"{hp.symbol}: {hp.meaning}"


def heatmap_figure(cases: pd.DataFrame, dataset: str, fraction: float, technique: str,
                   model: str | None = None, class_name: str | None = None,
                   metric: str = "dsc", variant: str | None = None) -> Figure:
    """The mean ``metric`` over a method's two-dimensional grid (e.g. adversarial ε x l,
    calibration τ x ν), one heatmap per post-processing, coloured around the baseline's mean
    (blue better, red worse; the baseline is marked on the colour bar and named in the
    legend); cells the grid does not hold are blank."""
    rows = _rows_at(cases, dataset, fraction, model, class_name)
    varying = varying_hyperparameters(rows, technique, variant)
    if len(varying) != 2:
        raise ValueError(f"{method_name(technique, variant)}: a heatmap needs two varying "
                         f"hyperparameters, have {[hp_symbol(v) for v in varying]}")
    first, second = varying
    method = method_name(technique, variant)
    rows = rows.assign(method=methods(rows))
    own = rows[rows["method"] == method]
    settings = own.drop_duplicates("param_label")
    blocks = [pp for pp in (True, False) if pp in set(rows["postprocessed"])]
    lower = metric in LOWER_IS_BETTER
    handles = []
    with _context():
        figure, axes = _grid(len(blocks), 2, 4.2, 3.4)
        for ax, postprocessed in zip(axes.flat, blocks, strict=False):
            block = own[own["postprocessed"] == postprocessed]
            means = case_values(block, ["param_label"], metric).groupby("param_label")[
                "value"].mean()
            grid = settings.assign(value=settings["param_label"].map(means).astype(float))
            table = grid.pivot_table(index=first, columns=second, values="value",
                                     aggfunc="mean").sort_index().sort_index(axis=1)
            base = _baseline_summary(rows[rows["postprocessed"] == postprocessed], metric)[0]
            finite = np.isfinite(base)
            cells = table.to_numpy(float)
            spread = (float(np.nanmax(np.abs(cells - base)))
                      if finite and np.isfinite(cells).any() else None)
            label = f"{LABELS[metric]}, {PP_NAMES[postprocessed]}"
            with warnings.catch_warnings():  # seaborn's own use of Colormap.set_bad
                warnings.simplefilter("ignore", PendingDeprecationWarning)
                sns.heatmap(table, ax=ax, annot=True, fmt=".1f", mask=table.isna(),
                            cmap="RdBu_r" if lower else "RdBu", center=base if finite else None,
                            vmin=base - spread if spread else None,
                            vmax=base + spread if spread else None, linewidths=0.5,
                            linecolor="white", cbar_kws={"label": label})
            if finite:
                ax.collections[0].colorbar.ax.axhline(base, color=BASELINE_COLOUR,
                                                      linewidth=2)
                handles.append(Line2D([], [], color=BASELINE_COLOUR, linewidth=2, label=(
                    f"{method_name(BASELINE)} (baseline), {PP_NAMES[postprocessed]}: "
                    f"{base:.1f} (on the colour bar)")))
            ax.set_yticks(np.arange(len(table.index)) + 0.5,
                          [value_text(v) for v in table.index], rotation=0)
            ax.set_xticks(np.arange(len(table.columns)) + 0.5,
                          [value_text(v) for v in table.columns], rotation=0)
            ax.grid(False)
            ax.set_ylabel(_wrap(_hp_name(first), 30))
            ax.set_xlabel(_wrap(_hp_name(second), 44))
        if handles:
            figure.legend(handles=handles, loc="outside lower center", ncols=1, frameon=False)
    return figure


def fraction_figure(cases: pd.DataFrame, chosen: pd.DataFrame, dataset: str,
                    model: str | None = None, class_name: str | None = None,
                    postprocessed: bool = True,
                    metrics: Sequence[str] = ("sensitivity", "precision", "dsc")) -> Figure:
    """001 Fig. 1: each metric (one row of panels) vs training fraction, one column per method
    at the setting ``chosen`` (``best_settings``) picked at each fraction, the baseline in
    every panel: cases, means with bootstrap intervals, and the baseline's mean and interval
    at each fraction (module docstring)."""
    rows, model, class_name = _select(cases, dataset, model, class_name)
    rows = rows[rows["postprocessed"] == postprocessed]
    picked = pd.MultiIndex.from_arrays([chosen["method"], chosen["fraction"],
                                        chosen["parameter"]])
    rows = rows.assign(method=methods(rows))
    index = pd.MultiIndex.from_arrays([rows["method"], rows["fraction"], rows["param_label"]])
    rows = rows[index.isin(picked)]
    if rows.empty:
        raise ValueError(f"no results at the chosen settings for dataset {dataset!r}")
    every = method_list(rows)
    shown = [m for m in every if not (m[1] == BASELINE and m[2] == "")] or every
    fractions = np.array(sorted(rows["fraction"].unique()), float) * 100.0
    log = _log_axis(fractions)
    gap = _gap(fractions, log)
    colour = sns.color_palette("colorblind")[0]
    rng = np.random.default_rng(0)
    base_rows = rows[_is_baseline(rows)]
    with _context():
        figure = Figure(figsize=(max(2.7 * len(shown), 6.4), 2.3 * len(metrics) + 1.2),
                        layout="constrained")
        axes = figure.subplots(len(metrics), len(shown), squeeze=False, sharex=True,
                               sharey="row")
        for i, metric in enumerate(metrics):
            data = case_values(rows, ["method", "fraction"], metric)
            base = [_summary(data.loc[(data["method"] == method_name(BASELINE))
                                      & np.isclose(data["fraction"], f / 100), "value"], metric)
                    for f in fractions] if len(base_rows) else []
            for j, (method, _, _) in enumerate(shown):
                ax = axes[i, j]
                own = data[data["method"] == method]
                summary = []
                for f in fractions:
                    at = own.loc[np.isclose(own["fraction"], f / 100), "value"]
                    _strip(ax, f, at.to_numpy(float), log, gap, rng)
                    summary.append(_summary(at, metric))
                _means(ax, fractions, np.array(summary, float), colour)
                if base:
                    mean, low, high = np.array(base, float).T
                    ax.plot(fractions, mean, color=BASELINE_COLOUR, linestyle="--",
                            linewidth=1.2, zorder=2)
                    ax.fill_between(fractions, low, high, color=BASELINE_COLOUR, alpha=0.15,
                                    linewidth=0, zorder=0)
                _ticks(ax, list(fractions), log)
                if j == 0:
                    ax.set_ylabel(LABELS[metric])
                if i == len(metrics) - 1:
                    ax.set_xlabel(f"{_wrap(method, 28)}\ntraining data (%"
                                  + (", log scale)" if log else ")"))
        _legend(figure, "method at its chosen setting")
    return figure


SPLIT_NAMES = {TRAIN: "training cases", TEST: "test cases"}
TRAIN_TEST_DRAWN = (f"Solid: test cases, dashed: training cases (a fixed subset of each "
                    f"trial's own), each the mean over cases (each averaged over the seeds) "
                    f"with its {CONFIDENCE:.0%} percentile-bootstrap confidence interval "
                    f"({BOOTSTRAP_RESAMPLES:,} resamples of the cases).")


def train_test_figure(cases: pd.DataFrame, chosen: pd.DataFrame, dataset: str,
                      model: str | None = None, class_name: str | None = None,
                      postprocessed: bool = True,
                      metrics: Sequence[str] = ("sensitivity", "precision")) -> Figure:
    """001 Fig. 1: each metric (one row of panels) of the class on the training cases a trial
    evaluated (``split == "train"``) and on the test cases, vs training fraction, one column
    per method (the baseline included) at the setting ``chosen`` (``best_settings``) picked
    at each fraction: the gap between the curves is the overfitting the paper shows for the
    rare class. Means over cases (each averaged over the seeds) with bootstrap intervals
    (``bootstrap_interval``). Raises ``ValueError`` when there are no training rows at the
    chosen settings."""
    test, model, class_name = _select(cases, dataset, model, class_name)
    train = _select(cases, dataset, model, class_name, TRAIN)[0]
    rows = pd.concat([test.assign(_split=TEST), train.assign(_split=TRAIN)])
    rows = rows[rows["postprocessed"] == postprocessed]
    rows = rows.assign(method=methods(rows))
    picked = pd.MultiIndex.from_arrays([chosen["method"], chosen["fraction"],
                                        chosen["parameter"]])
    index = pd.MultiIndex.from_arrays([rows["method"], rows["fraction"], rows["param_label"]])
    rows = rows[index.isin(picked)]
    if not (rows["_split"] == TRAIN).any():
        raise ValueError(f"no training-case results at the chosen settings for dataset "
                         f"{dataset!r}, class {class_name!r}")
    shown = method_list(rows)
    fractions = np.array(sorted(rows["fraction"].unique()), float) * 100.0
    log = _log_axis(fractions)
    palette = sns.color_palette("colorblind")
    styles: dict[str, tuple[tuple[float, float, float], LineStyleType]] = {
        TEST: (palette[0], "-"), TRAIN: (palette[1], "--")}
    with _context():
        figure = Figure(figsize=(max(2.7 * len(shown), 6.4), 2.3 * len(metrics) + 1.2),
                        layout="constrained")
        axes = figure.subplots(len(metrics), len(shown), squeeze=False, sharex=True,
                               sharey="row")
        for i, metric in enumerate(metrics):
            data = case_values(rows, ["method", "_split", "fraction"], metric)
            for j, (method, _, _) in enumerate(shown):
                ax = axes[i, j]
                for split, (colour, line) in styles.items():
                    own = data[(data["method"] == method) & (data["_split"] == split)]
                    summary = np.array([_summary(own.loc[np.isclose(own["fraction"], f / 100),
                                                         "value"], metric)
                                        for f in fractions], float)
                    _means(ax, fractions, summary, colour, line)
                _ticks(ax, list(fractions), log)
                if j == 0:
                    ax.set_ylabel(LABELS[metric])
                if i == len(metrics) - 1:
                    ax.set_xlabel(f"{_wrap(method, 28)}\ntraining data (%"
                                  + (", log scale)" if log else ")"))
        handles = [Line2D([], [], color=colour, linestyle=line, marker="o", markersize=4.5,
                          label=f"{SPLIT_NAMES[split]}: mean and {CONFIDENCE:.0%} bootstrap "
                                "CI over cases")
                   for split, (colour, line) in styles.items()]
        figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    return figure


def _x_range(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """The logit range holding all but 0.2% of each curve's mass (plus one bin)."""
    lows, highs = [], []
    for centres, density in curves:
        mass = np.cumsum(density)
        if not len(mass) or mass[-1] <= 0:
            continue
        mass = mass / mass[-1]
        lows.append(centres[np.searchsorted(mass, 0.001)])
        highs.append(centres[min(int(np.searchsorted(mass, 0.999)), len(centres) - 1)])
    if not lows:
        return -10.0, 10.0
    step = abs(centres[1] - centres[0]) if len(centres) > 1 else 1.0
    return min(lows) - step, max(highs) + step



def _matches(rows: pd.DataFrame, chosen: dict) -> np.ndarray:
    """Rows whose columns hold the values of ``chosen`` (floats compared with tolerance,
    ``variant`` None meaning none)."""
    mask = np.ones(len(rows), bool)
    for column, value in chosen.items():
        if column == "variant":
            mask &= (variants(rows) == ("" if value is None or pd.isna(value) else value)
                     ).to_numpy()
            continue
        column_values = rows[column].to_numpy()
        mask &= (np.isclose(column_values.astype(float), value)
                 if isinstance(value, float) else column_values == value)
    return mask


def logit_figure(histograms: pd.DataFrame, dataset: str, model: str,
                 panels: Sequence[tuple[str, dict]]) -> Figure:
    """Logit distributions, training (solid) vs test (dashed) cases: one row per true class
    (the voxels of that class), one column per panel; each panel draws every logit channel.
    ``histograms`` is ``analysis.logits.logit_histograms(trials)``; ``panels`` is a list of
    ``(name, {column: value})`` choosing the setting and fraction of each column (its name
    ends the column's x label), e.g. ``[("5% training data", {"technique": "vanilla",
    "variant": None, "fraction": 0.05}), ...]`` (001 Fig. 3) or one column per method at one
    fraction (Fig. 7)."""
    rows = histograms[(histograms["dataset"] == dataset) & (histograms["model"] == model)]
    if rows.empty:
        raise ValueError(f"no logit statistics for dataset {dataset!r}, model {model!r}")
    true_classes = list(dict.fromkeys(rows["true_class"]))
    true_classes = true_classes[1:] + true_classes[:1]  # foreground first, background last
    logit_classes = list(dict.fromkeys(rows["logit_class"]))
    colours = dict(zip(logit_classes, sns.color_palette("colorblind", len(logit_classes)),
                       strict=True))
    selections = [rows[_matches(rows, chosen)] for _, chosen in panels]
    curves = [(0.5 * (r.bin_edges[1:] + r.bin_edges[:-1]), r.density)
              for s in selections for r in s.itertuples()]
    low, high = _x_range(curves)
    with _context():
        figure = Figure(figsize=(2.9 * len(panels) + 0.6, 2.1 * len(true_classes) + 1.0),
                        layout="constrained")
        axes = figure.subplots(len(true_classes), len(panels), squeeze=False, sharex=True)
        for j, ((name, _), selected) in enumerate(zip(panels, selections, strict=True)):
            for i, true_class in enumerate(true_classes):
                ax = axes[i, j]
                for r in selected[selected["true_class"] == true_class].itertuples():
                    ax.stairs(r.density, r.bin_edges, color=colours[r.logit_class],
                              linestyle="-" if r.split == "train" else "--", linewidth=1.3,
                              label=f"{class_label(r.logit_class)} logit, "
                                    f"{SPLIT_NAMES.get(r.split, r.split)}")
                ax.set_xlim(low, high)
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{class_label(true_class)} voxels:\ndensity")
                if i == len(true_classes) - 1:
                    ax.set_xlabel(f"logit value\n{name}")
        handles, labels = _legend_entries(axes)
        figure.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    return figure


def logit_shift_figure(shift: pd.DataFrame, dataset: str, model: str,
                       technique: str = BASELINE, parameter: str | None = None,
                       variant: str | None = None) -> Figure:
    """001 Fig. 3 (right): the shift ``|ẑ_test| - |ẑ_train|`` of each logit's mean for the
    voxels of each class, vs training fraction, for one setting of one method (``shift`` is
    ``analysis.logits.logit_shift_table(trials)``; seeds pooled)."""
    rows = shift[(shift["dataset"] == dataset) & (shift["model"] == model)]
    rows = rows[_matches(rows, {"technique": technique, "variant": variant})]
    if parameter is not None:
        rows = rows[rows["parameter"] == parameter]
    if rows.empty:
        raise ValueError(f"no logit statistics of {method_name(technique, variant)} for "
                         f"{dataset!r}, {model!r}")
    rows = rows.assign(fraction_label=rows["fraction"].map(fraction_label),
                       series=[f"{class_label(t)} voxels, {class_label(lg)} logit" for t, lg in
                               zip(rows["true_class"], rows["logit_class"], strict=True)])
    order = [fraction_label(f) for f in sorted(rows["fraction"].unique())]
    with _context():
        figure = Figure(figsize=(max(6.4, 1.3 * len(order) + 2.5), 3.8), layout="constrained")
        ax = figure.subplots()
        sns.barplot(rows, x="fraction_label", y="shift", hue="series", order=order, ax=ax,
                    palette="colorblind", errorbar=None)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("training data (% of the training cases)")
        ax.set_ylabel(r"$\Delta|\hat{z}| = |\hat{z}_{test}| - |\hat{z}_{train}|$ (logit units)")
        handles, labels = ax.get_legend_handles_labels()
        legend = ax.get_legend()
        if legend is None:
            raise ValueError(f"expected seaborn's barplot to draw a legend of the series "
                             f"{sorted(rows['series'].unique())}, got none")
        legend.remove()
        figure.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    return figure


# ---------------------------------------------------------------------------- supplement

def loss_curve_figure(curves: pd.DataFrame) -> Figure:
    """000 Fig. 1 / 001 Fig. 9 with the gradients of 000 eq. 5-8: each loss (top row) and its
    derivative by the true-class logit (bottom row) vs that logit, one column per setting
    (form and true class), one colour per technique, dashed for the asymmetric variants.
    ``curves`` is ``study.loss_curves.loss_curves()``: columns ``technique``, ``loss`` (the
    legend name), ``asymmetric``, ``setting``, ``logit``, ``value``, ``gradient``."""
    missing = {"technique", "loss", "asymmetric", "setting", "logit", "value", "gradient"} \
        - set(curves.columns)
    if missing or curves.empty:
        raise ValueError(f"loss curves: expected rows with the columns of "
                         f"study.loss_curves.COLUMNS, got {len(curves)} rows missing "
                         f"{sorted(missing)}")
    settings = list(dict.fromkeys(curves["setting"]))
    families = list(dict.fromkeys(t.removeprefix("asym_") for t in curves["technique"]))
    colours = dict(zip(families, sns.color_palette("colorblind", len(families)), strict=True))
    rows = (("value", "loss"), ("gradient", r"$\partial L / \partial z_t$"))
    with _context():
        figure = Figure(figsize=(3.4 * len(settings) + 0.6, 6.4), layout="constrained")
        axes = figure.subplots(2, len(settings), squeeze=False, sharex=True)
        for j, setting in enumerate(settings):
            selected = curves[curves["setting"] == setting]
            for (technique, loss, asymmetric), line in selected.groupby(
                    ["technique", "loss", "asymmetric"], sort=False):
                for i, (column, _) in enumerate(rows):
                    axes[i, j].plot(line["logit"], line[column], label=loss, linewidth=1.4,
                                    color=colours[technique.removeprefix("asym_")],
                                    linestyle="--" if asymmetric else "-")
            for i, (_, name) in enumerate(rows):
                axes[i, j].axhline(0, color="black", linewidth=0.6)
                if j == 0:
                    axes[i, j].set_ylabel(name)
            axes[1, j].set_xlabel(f"true-class logit $z_t$ (other logit 0)\n{setting}")
        handles, labels = _legend_entries(axes)
        figure.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    return figure


def intensity_figure(histograms: pd.DataFrame, intensity: str = "intensity") -> Figure:
    """001 Fig. 10: the intensity histogram of each class's voxels, one panel per image
    channel, as densities (each class's counts divided by its voxels and the bin width, so the
    rare foreground is visible beside the background). ``histograms`` has one row per
    (``channel``, ``class``, bin): ``bin_low``, ``bin_high``, ``voxels``
    (``study.data.check``); ``intensity`` names the x axis."""
    missing = {"channel", "class", "bin_low", "bin_high", "voxels"} - set(histograms.columns)
    if missing or histograms.empty:
        raise ValueError(f"intensity histograms: expected rows with channel, class, bin_low, "
                         f"bin_high and voxels, got {len(histograms)} rows missing "
                         f"{sorted(missing)}")
    channels = list(dict.fromkeys(histograms["channel"]))
    classes = list(dict.fromkeys(histograms["class"]))
    colours = dict(zip(classes, sns.color_palette("colorblind", len(classes)), strict=True))
    with _context():
        figure, axes = _grid(len(channels), 4, 3.2, 2.8)
        for ax, channel in zip(axes.flat, channels, strict=False):
            for name in classes:
                rows = histograms[(histograms["channel"] == channel)
                                  & (histograms["class"] == name)]
                total = rows["voxels"].sum()
                if not total:
                    continue
                edges = np.append(rows["bin_low"].to_numpy(float), rows["bin_high"].iloc[-1])
                density = rows["voxels"].to_numpy(float) / (total * np.diff(edges))
                ax.stairs(density, edges, color=colours[name], linewidth=1.3,
                          label=f"{class_label(name)} ({int(total):,} voxels)")
            ax.set_xlabel(f"{intensity}\n{channel}")
            ax.set_ylabel("density")
        handles, labels = _legend_entries(axes)
        figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
                      frameon=False)
    return figure


def class_distribution_figure(classes: pd.DataFrame) -> Figure:
    """001 Fig. 11: the total number of voxels of each class over the dataset's cases (log
    scale), rare classes (``rare``, 001 §IV's r = 1) in their own colour. ``classes`` has one
    row per class: ``class_index``, ``class``, ``rare``, ``voxels``, ``cases_present``,
    ``cases`` (``study.data.check``)."""
    missing = {"class_index", "class", "rare", "voxels", "cases_present", "cases"} \
        - set(classes.columns)
    if missing or classes.empty:
        raise ValueError(f"class distribution: expected one row per class with class_index, "
                         f"class, rare, voxels, cases_present and cases, got {len(classes)} "
                         f"rows missing {sorted(missing)}")
    palette = sns.color_palette("colorblind", 2)
    colour = {False: palette[0], True: palette[1]}
    with _context():
        figure = Figure(figsize=(max(4.8, 0.55 * len(classes) + 2.0), 3.6), layout="constrained")
        ax = figure.subplots()
        x = np.arange(len(classes))
        ax.bar(x, classes["voxels"].to_numpy(float),
               color=[colour[bool(r)] for r in classes["rare"]])
        ax.set_yscale("log")
        ax.set_xticks(x, [f"{k} {class_label(n)}" for k, n in
                          zip(classes["class_index"], classes["class"], strict=True)],
                      rotation=45 if len(classes) > 4 else 0, ha="right" if len(classes) > 4
                      else "center")
        ax.set_xlabel(f"class (voxels of {int(classes['cases'].iloc[0])} cases)")
        ax.set_ylabel("voxels (log scale)")
        figure.legend(handles=[Patch(color=colour[False], label="common class"),
                               Patch(color=colour[True], label="rare class (r = 1)")],
                      loc="outside lower center", ncols=2, frameon=False)
    return figure
