"""Figures with seaborn, saved as PNG and SVG (``save``).

* ``sensitivity_figure``: a metric vs each technique's hyperparameter (one panel per
  technique), with and without post-processing, the baseline as a dashed reference line with
  its band, and a 95% confidence band over seeds (over cases when there is one seed).
* ``heatmap_figure``: the two-dimensional grids (adversarial ε x l, calibration τ x ν) as
  heatmaps of the mean metric, coloured around the baseline (blue better, red worse).
* ``logit_figure`` and ``logit_shift_figure``: logit distributions of each class's voxels on
  training vs test cases, and the shift of the mean logit (001 Figs. 3-5, 7-8).
* ``fraction_figure``: sensitivity, precision and DSC vs training fraction (001 Fig. 1).

Figures are ``matplotlib.figure.Figure`` objects made without pyplot (no global state, no
display needed); styles are applied through seaborn's context managers only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy import stats

from analysis.render import pretty_label, value_text
from analysis.tables import (
    BASELINE,
    HP_NAMES,
    HP_PREFIX,
    LOWER_IS_BETTER,
    METHOD_NAMES,
    PERCENT,
    _select,
    fraction_label,
    method_name,
    plain,
)

LABELS = {"dsc": "DSC (%)", "sensitivity": "Sensitivity (%)", "precision": "Precision (%)",
          "hd95": "HD95 (mm)", "hd95_max": "HD95, max of directed (mm)", "iou": "IoU (%)"}
PP_NAMES = {True: "w/ post-processing", False: "w/o post-processing"}
STYLE = {"axes.spines.top": False, "axes.spines.right": False}

__all__ = ["fraction_figure", "heatmap_figure", "logit_figure", "logit_shift_figure", "save",
           "sensitivity_figure", "varying_hyperparameters"]


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


def _t_interval(values) -> tuple[float, float]:
    """95% Student-t interval of the mean (seaborn ``errorbar`` callable)."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        mean = values.mean() if len(values) else np.nan
        return mean, mean
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def varying_hyperparameters(rows: pd.DataFrame, technique: str) -> list[str]:
    """The ``hp_*`` columns whose value differs between the settings of ``technique``."""
    own = rows[rows["technique"] == technique]
    settings = own.drop_duplicates("param_label")
    return [c for c in own.columns if c.startswith(HP_PREFIX)
            and settings[c].notna().all() and settings[c].nunique() > 1]


def _units(rows: pd.DataFrame, keys: list[str], metric: str) -> tuple[pd.DataFrame, str]:
    """Per (keys, seed) means of ``metric`` over cases (finite values, percent where the
    tables use percent), or per (keys, case) values when there is only one seed; and the name
    of the unit the band is over."""
    ok = rows[rows["status"] == "ok"]
    values = ok[metric].where(np.isfinite(ok[metric].to_numpy(float)))
    if metric in PERCENT or metric == "iou":
        values = values * 100.0
    unit = "seed" if ok["seed"].nunique() > 1 else "case_id"
    frame = ok[keys + [unit]].assign(value=values)
    data = frame.groupby(keys + [unit], sort=False, observed=True)["value"].mean().reset_index()
    data = plain(data, [*keys, unit])
    return data, ("seeds" if unit == "seed" else "cases (one seed)")


def _ordered_techniques(techniques) -> list[str]:
    rank = {name: i for i, name in enumerate(METHOD_NAMES)}
    return sorted(set(techniques), key=lambda t: (rank.get(t, len(rank)), t))


def _grid(count: int, columns: int, width: float, height: float):
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(max(width * columns, 6.4), height * rows + 0.8),
                    layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return figure, list(axes.flat[:count])


def _legend_below(figure: Figure, axes, title: str | None = None, columns: int = 4) -> None:
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
        if ax.get_legend():
            ax.get_legend().remove()
    if handles:
        figure.legend(handles, labels, loc="outside lower center",
                      ncols=min(len(labels), columns),
                      title=title, frameon=False)


def sensitivity_figure(cases: pd.DataFrame, dataset: str, fraction: float,
                       model: str | None = None, class_name: str | None = None,
                       metric: str = "dsc", columns: int = 4) -> Figure:
    """``metric`` vs each technique's hyperparameter at one training fraction: one panel per
    technique, one line per post-processing; the baseline's mean as a dashed line of the same
    colour with its band; bands are 95% t-intervals over seeds (over cases with one seed).
    Techniques with several varying hyperparameters are plotted against their settings'
    labels (see ``heatmap_figure`` for two-dimensional grids)."""
    rows, model, class_name = _select(cases, dataset, model, class_name)
    rows = rows[np.isclose(rows["fraction"].to_numpy(float), fraction)]
    if rows.empty:
        raise ValueError(f"no results for dataset {dataset!r} at fraction {fraction:g}")
    techniques = [t for t in _ordered_techniques(rows["technique"]) if t != BASELINE]
    if not techniques:
        raise ValueError(f"no technique besides the baseline at fraction {fraction:g}")
    data, unit = _units(rows, ["technique", "param_label", "postprocessed"], metric)
    settings = rows.drop_duplicates(["technique", "param_label"]).set_index(
        ["technique", "param_label"])
    palette = dict(zip([True, False], sns.color_palette("colorblind", 2), strict=True))
    with _context():
        figure, axes = _grid(len(techniques), columns, 3.4, 2.9)
        for ax, technique in zip(axes, techniques, strict=True):
            own = data[data["technique"] == technique].copy()
            varying = varying_hyperparameters(rows, technique)
            if len(varying) == 1:
                x = varying[0]
                own[x] = [settings.loc[(technique, p), x] for p in own["param_label"]]
                values = own[x].to_numpy(float)
                if values.min() > 0 and values.max() / values.min() >= 5:
                    ax.set_xscale("log")  # the papers' grids are roughly geometric
                    ax.minorticks_off()
                grid_values = sorted(set(values))
                if len(grid_values) <= 10:
                    ax.set_xticks(grid_values, [value_text(v) for v in grid_values],
                                  rotation=45 if len(grid_values) > 6 else 0)
                xlabel = HP_NAMES.get(x, x)
            else:
                x = "setting"
                order = sorted(own["param_label"].unique(), key=lambda p: tuple(
                    np.nan_to_num(settings.loc[(technique, p)].filter(like=HP_PREFIX)
                                  .to_numpy(float), nan=-np.inf)))
                position = {p: i for i, p in enumerate(order)}
                own[x] = own["param_label"].map(position)
                ax.set_xticks(range(len(order)), [pretty_label(p) for p in order],
                              rotation=35, ha="right", fontsize=7)
                xlabel = "setting"
            own["post-processing"] = own["postprocessed"].map(PP_NAMES)
            for postprocessed, colour in palette.items():
                base = data[(data["technique"] == BASELINE)
                            & (data["postprocessed"] == postprocessed)]["value"]
                if base.notna().any():
                    low, high = _t_interval(base)
                    ax.axhline(base.mean(), color=colour, linestyle="--", linewidth=1.2,
                               label=f"vanilla, {PP_NAMES[postprocessed]}")
                    if high > low:
                        ax.axhspan(low, high, color=colour, alpha=0.07, linewidth=0)
            sns.lineplot(own, x=x, y="value", hue="post-processing", ax=ax, marker="o",
                         errorbar=_t_interval, err_style="band",
                         palette={PP_NAMES[k]: v for k, v in palette.items()},
                         hue_order=[PP_NAMES[True], PP_NAMES[False]], markersize=5)
            ax.set_title(method_name(technique), fontsize=10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(LABELS.get(metric, metric))
        _legend_below(figure, axes, columns=2)
        figure.suptitle(f"{dataset}, {class_name}, {fraction_label(fraction)} training data, "
                        f"{model} — band: 95% CI over {unit}", fontsize=10)
    return figure


def _heatmap(table: pd.DataFrame, ax, base: float, spread: float | None, lower: bool,
             metric: str) -> None:
    finite = np.isfinite(base)
    sns.heatmap(table, ax=ax, annot=True, fmt=".1f", mask=table.isna(),
                cmap="RdBu_r" if lower else "RdBu", center=base if finite else None,
                vmin=base - spread if spread else None, vmax=base + spread if spread else None,
                linewidths=0.5, linecolor="white", cbar_kws={"label": LABELS.get(metric, metric)})


def heatmap_figure(cases: pd.DataFrame, dataset: str, fraction: float, technique: str,
                   model: str | None = None, class_name: str | None = None,
                   metric: str = "dsc") -> Figure:
    """The mean ``metric`` over a technique's two-dimensional grid (e.g. adversarial ε x l,
    calibration τ x ν), one heatmap per post-processing, coloured around the baseline's mean
    (blue better, red worse); cells the grid does not hold are blank."""
    rows, model, class_name = _select(cases, dataset, model, class_name)
    rows = rows[np.isclose(rows["fraction"].to_numpy(float), fraction)]
    varying = varying_hyperparameters(rows, technique)
    if len(varying) != 2:
        raise ValueError(f"{technique}: a heatmap needs two varying hyperparameters, "
                         f"have {[HP_NAMES.get(v, v) for v in varying]}")
    first, second = varying
    data, _ = _units(rows, ["technique", "param_label", "postprocessed"], metric)
    means = data.groupby(["technique", "param_label", "postprocessed"])["value"].mean()
    settings = rows[rows["technique"] == technique].drop_duplicates("param_label")
    blocks = [pp for pp in (True, False) if pp in set(rows["postprocessed"])]
    lower = metric in LOWER_IS_BETTER
    with _context():
        figure, axes = _grid(len(blocks), 2, 4.2, 3.4)
        for ax, postprocessed in zip(axes, blocks, strict=True):
            grid = settings.assign(value=[means.get((technique, p, postprocessed), np.nan)
                                          for p in settings["param_label"]])
            table = grid.pivot_table(index=first, columns=second, values="value",
                                     aggfunc="mean").sort_index().sort_index(axis=1)
            base = means.get((BASELINE, "—", postprocessed), np.nan)
            if np.isnan(base):
                base_rows = means.loc[BASELINE] if BASELINE in means.index else None
                base = np.nan if base_rows is None else base_rows.xs(
                    postprocessed, level=-1).mean()
            finite = table.to_numpy(float)
            spread = np.nanmax(np.abs(finite - base)) if np.isfinite(base) else None
            with warnings.catch_warnings():  # seaborn's own use of Colormap.set_bad
                warnings.simplefilter("ignore", PendingDeprecationWarning)
                _heatmap(table, ax, base, spread, lower, metric)
            ax.set_yticks(np.arange(len(table.index)) + 0.5,
                          [value_text(v) for v in table.index], rotation=0)
            ax.set_xticks(np.arange(len(table.columns)) + 0.5,
                          [value_text(v) for v in table.columns], rotation=0)
            ax.grid(False)
            ax.set_ylabel(HP_NAMES.get(first, first))
            ax.set_xlabel(HP_NAMES.get(second, second))
            baseline = f"vanilla {base:.1f}" if np.isfinite(base) else "no baseline"
            ax.set_title(f"{PP_NAMES[postprocessed]} ({baseline})", fontsize=10)
        figure.suptitle(f"{method_name(technique)}: {dataset}, {class_name}, "
                        f"{fraction_label(fraction)} training data, {model}", fontsize=10)
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
        highs.append(centres[min(np.searchsorted(mass, 0.999), len(centres) - 1)])
    if not lows:
        return -10.0, 10.0
    step = abs(centres[1] - centres[0]) if len(centres) > 1 else 1.0
    return min(lows) - step, max(highs) + step


def logit_figure(histograms: pd.DataFrame, dataset: str, model: str,
                 panels: Sequence[tuple[str, dict]], title: str = "") -> Figure:
    """Logit distributions, training (solid) vs test (dashed): one row per true class (the
    voxels of that class), one column per panel; each panel draws every logit channel.
    ``histograms`` is ``analysis.logits.logit_histograms(trials)``; ``panels`` is a list of
    ``(title, {column: value})`` choosing the setting and fraction of each column, e.g.
    ``[("5%", {"technique": "vanilla", "fraction": 0.05}), ...]`` (001 Fig. 3) or one column
    per technique at one fraction (Fig. 7)."""
    rows = histograms[(histograms["dataset"] == dataset) & (histograms["model"] == model)]
    if rows.empty:
        raise ValueError(f"no logit statistics for dataset {dataset!r}, model {model!r}")
    true_classes = list(dict.fromkeys(rows["true_class"]))
    true_classes = true_classes[1:] + true_classes[:1]  # foreground first, background last
    logit_classes = list(dict.fromkeys(rows["logit_class"]))
    colours = dict(zip(logit_classes, sns.color_palette("colorblind", len(logit_classes)),
                       strict=True))
    selections = []
    for _, chosen in panels:
        mask = np.ones(len(rows), bool)
        for column, value in chosen.items():
            column_values = rows[column].to_numpy()
            mask &= (np.isclose(column_values.astype(float), value)
                     if isinstance(value, float) else column_values == value)
        selections.append(rows[mask])
    curves = [(0.5 * (r.bin_edges[1:] + r.bin_edges[:-1]), r.density)
              for s in selections for r in s.itertuples()]
    low, high = _x_range(curves)
    with _context():
        figure = Figure(figsize=(2.9 * len(panels) + 0.4, 2.2 * len(true_classes) + 0.6),
                        layout="constrained")
        axes = figure.subplots(len(true_classes), len(panels), squeeze=False, sharex=True)
        for j, ((panel_title, _), selected) in enumerate(zip(panels, selections, strict=True)):
            for i, true_class in enumerate(true_classes):
                ax = axes[i, j]
                for r in selected[selected["true_class"] == true_class].itertuples():
                    ax.stairs(r.density, r.bin_edges, color=colours[r.logit_class],
                              linestyle="-" if r.split == "train" else "--", linewidth=1.3,
                              label=f"z[{r.logit_class}], {r.split}")
                ax.set_xlim(low, high)
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(panel_title, fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"{true_class}\nvoxels", fontsize=9)
                if i == len(true_classes) - 1:
                    ax.set_xlabel("logit value")
        _legend_below(figure, list(axes.flat), columns=2)
        figure.suptitle(title or f"Logits of {dataset}, {model}: train (solid) vs test "
                        "(dashed)", fontsize=10)
    return figure


def logit_shift_figure(shift: pd.DataFrame, dataset: str, model: str,
                       technique: str = BASELINE, parameter: str | None = None) -> Figure:
    """001 Fig. 3 (right): the shift ``|ẑ_test| - |ẑ_train|`` of each logit's mean for the
    voxels of each class, vs training fraction, for one setting (``shift`` is
    ``analysis.logits.logit_shift_table(trials)``)."""
    rows = shift[(shift["dataset"] == dataset) & (shift["model"] == model)
                 & (shift["technique"] == technique)]
    if parameter is not None:
        rows = rows[rows["parameter"] == parameter]
    if rows.empty:
        raise ValueError(f"no logit statistics of {technique} for {dataset!r}, {model!r}")
    rows = rows.assign(fraction_label=rows["fraction"].map(fraction_label),
                       series=[f"{t} voxels, z[{lg}]" for t, lg in
                               zip(rows["true_class"], rows["logit_class"], strict=True)])
    order = [fraction_label(f) for f in sorted(rows["fraction"].unique())]
    with _context():
        figure = Figure(figsize=(max(6.4, 1.3 * len(order) + 2.5), 3.8), layout="constrained")
        ax = figure.subplots()
        sns.barplot(rows, x="fraction_label", y="shift", hue="series", order=order, ax=ax,
                    palette="colorblind", errorbar=None)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("training data")
        ax.set_ylabel(r"$\Delta|\hat{z}| = |\hat{z}_{test}| - |\hat{z}_{train}|$")
        _legend_below(figure, [ax], columns=2)
        label = f" ({pretty_label(parameter)})" if parameter and parameter != "—" else ""
        figure.suptitle(f"Shift of the mean logit, {method_name(technique)}{label}: "
                        f"{dataset}, {model}", fontsize=10)
    return figure


def fraction_figure(cases: pd.DataFrame, chosen: pd.DataFrame, dataset: str,
                    model: str | None = None, class_name: str | None = None,
                    postprocessed: bool = True,
                    metrics: Sequence[str] = ("sensitivity", "precision", "dsc")) -> Figure:
    """001 Fig. 1: sensitivity, precision and DSC vs training fraction, one line per technique
    at the setting ``chosen`` (``best_settings``) picked at each fraction, the baseline in
    black; bands are 95% t-intervals over seeds (over cases with one seed)."""
    rows, model, class_name = _select(cases, dataset, model, class_name)
    rows = rows[rows["postprocessed"] == postprocessed]
    picked = chosen.set_index(["technique", "fraction", "parameter"]).index
    index = pd.MultiIndex.from_arrays([rows["technique"], rows["fraction"],
                                       rows["param_label"]])
    rows = rows[index.isin(picked)]
    if rows.empty:
        raise ValueError(f"no results at the chosen settings for dataset {dataset!r}")
    techniques = _ordered_techniques(rows["technique"])
    palette = dict(zip(techniques, sns.color_palette("colorblind", len(techniques)),
                       strict=True))
    if BASELINE in palette:
        palette[BASELINE] = (0.0, 0.0, 0.0)
    names = {t: method_name(t) for t in techniques}
    with _context():
        figure, axes = _grid(len(metrics), len(metrics), 3.4, 3.0)
        unit = ""
        for ax, metric in zip(axes, metrics, strict=True):
            data, unit = _units(rows, ["technique", "fraction"], metric)
            data["percent"] = data["fraction"] * 100
            data["method"] = data["technique"].map(names)
            sns.lineplot(data, x="percent", y="value", hue="method", ax=ax, marker="o",
                         errorbar=_t_interval, hue_order=[names[t] for t in techniques],
                         palette={names[t]: c for t, c in palette.items()}, markersize=5)
            fractions = sorted(data["percent"].unique())
            if len(fractions) > 1 and fractions[-1] / fractions[0] >= 8:
                ax.set_xscale("log")
            ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
            ax.minorticks_off()
            ax.set_xlabel("training data (%)")
            ax.set_ylabel(LABELS.get(metric, metric))
        _legend_below(figure, axes)
        figure.suptitle(f"{dataset}, {class_name}, {model}, {PP_NAMES[postprocessed]} — "
                        f"band: 95% CI over {unit}", fontsize=10)
    return figure
