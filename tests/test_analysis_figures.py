"""Figures a reviewer accepts: percentile-bootstrap intervals within the metric's range, every
case drawn beside the means, the baseline drawn and named in the legend, axes that say what
they show (in which unit, on which scale), no titles (the report's captions carry them) and
methods named as the tables name them. Checked on the ``Figure`` objects the functions
return."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from scipy import stats

from analysis import best_settings, load_results, logit_histograms
from analysis import figures as fig
from analysis._synthetic import store_trial, write_study
from study.results import ResultStore

BASE = np.array([0.40, 0.45, 0.50, 0.55, 0.60, 0.65])
CASES = len(BASE)
GAMMAS = (1.0, 2.0, 4.0)
BASELINE_MEAN = "Vanilla (baseline): mean"


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Vanilla, its rerun w/o augmentation, asymmetric focal loss (3 settings) and
    adversarial training (a two-dimensional grid) at two fractions, 2 seeds, 6 cases."""
    store = ResultStore(str(tmp_path_factory.mktemp("results")))
    for fraction in (0.1, 1.0):
        for seed in (0, 1):
            store_trial(store, "vanilla", {}, seed, BASE, fraction=fraction)
            store_trial(store, "vanilla", {}, seed, BASE - 0.05, fraction=fraction,
                        variant="w/o augmentation")
            for gamma in GAMMAS:
                store_trial(store, "asym_focal", {"gamma": gamma}, seed, BASE + 0.01 * gamma,
                            fraction=fraction)
            for eps in (1e-6, 1e-5):
                for norm in (5.0, 10.0):
                    store_trial(store, "asym_adversarial", {"eps": eps, "l": norm}, seed,
                                BASE + norm / 1000, fraction=fraction)
    return load_results(store.uri).cases


def _visible(figure):
    return [ax for ax in figure.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def _legend_texts(figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


def _case_dots(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def _assert_untitled(figure) -> None:
    assert figure.get_suptitle() == ""
    assert all(ax.get_title(loc) == "" for ax in figure.axes for loc in ("left", "center",
                                                                        "right"))


def test_bootstrap_interval_stays_in_the_metric_range():
    """A DSC near 0: a t-interval goes below 0 %, the percentile bootstrap does not; the
    interval holds the mean, is reproducible for a seed and resamples >= 1000 times."""
    values = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 12.0])
    t_low = values.mean() - stats.t.ppf(0.975, len(values) - 1) * stats.sem(values)
    assert t_low < 0
    low, high = fig.bootstrap_interval(values, "dsc")
    assert 0.0 <= low <= values.mean() <= high <= 100.0
    assert fig.bootstrap_interval(values, "dsc") == (low, high)
    assert fig.BOOTSTRAP_RESAMPLES >= 1000
    near_full = 100.0 - values
    assert fig.bootstrap_interval(near_full, "dsc")[1] <= 100.0
    assert fig.bootstrap_interval(values, "hd95")[0] >= 0.0
    assert fig.bootstrap_interval([np.nan, 3.0], "dsc") == (3.0, 3.0)
    assert all(math.isnan(v) for v in fig.bootstrap_interval([], "dsc"))
    with pytest.raises(ValueError, match="metric: expected one of"):
        fig.bootstrap_interval(values, "accuracy")


def test_bootstrap_interval_narrows_with_more_cases():
    rng = np.random.default_rng(1)
    few, many = rng.normal(50, 10, 10), rng.normal(50, 10, 400)
    width = [np.subtract(*fig.bootstrap_interval(v, "dsc")[::-1]) for v in (few, many)]
    assert width[1] < width[0] / 4  # ~ 1/sqrt(n)


def test_sensitivity_figure(cases, tmp_path):
    """One panel per method besides the baseline (the vanilla rerun included), every case a
    dot, the baseline in the legend, labelled axes, no titles; PNG and SVG written."""
    figure = fig.sensitivity_figure(cases, "d", 0.1, postprocessed=True)
    axes = _visible(figure)
    labels = [ax.get_xlabel() for ax in axes]
    assert labels == ["Vanilla - w/o augmentation\nno hyperparameter",
                      "Asymmetric focal loss\nγ", "Asymmetric adversarial training\nε, l"]
    assert axes[0].get_ylabel() == "DSC (%)"
    assert [_case_dots(ax) for ax in axes] == [CASES, CASES * len(GAMMAS), CASES * 4]
    assert [t.get_text() for t in axes[1].get_xticklabels()] == ["1", "2", "4"]
    assert BASELINE_MEAN in _legend_texts(figure)
    assert any("bootstrap CI" in text for text in _legend_texts(figure))
    assert not any("asym_" in label or "unet" in label for label in labels)
    _assert_untitled(figure)
    paths = fig.save(figure, tmp_path / "sensitivity")
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in paths[1].read_bytes()[:500]


def test_error_bars_are_the_bootstrap_interval(cases):
    """The error bar of a setting spans its bootstrap interval over the case values (each
    case averaged over its seeds), clipped to [0, 100] %."""
    figure = fig.sensitivity_figure(cases, "d", 0.1, postprocessed=True)
    ax = _visible(figure)[1]  # asymmetric focal loss
    bars = next(c for c in ax.collections if not isinstance(c, PathCollection))
    spans = [segment[:, 1] for segment in bars.get_segments()]
    for gamma, (low, high) in zip(GAMMAS, spans, strict=True):
        values = 100 * (BASE + 0.01 * gamma)
        assert (low, high) == pytest.approx(fig.bootstrap_interval(values, "dsc"))


def test_fraction_figure(cases):
    """001 Fig. 1: a row per metric, a column per method at its chosen setting, the cases
    as dots, the baseline in every panel and the legend; a log axis says so."""
    chosen = best_settings(cases, "d")
    figure = fig.fraction_figure(cases, chosen, "d")
    axes = np.array(figure.axes).reshape(3, -1)
    assert axes.shape[1] == 3  # vanilla rerun, focal, adversarial
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["Sensitivity (%)", "Precision (%)",
                                                      "DSC (%)"]
    assert axes[-1, 1].get_xlabel() == "Asymmetric focal loss\ntraining data (%, log scale)"
    assert all(ax.get_xscale() == "log" for ax in axes.flat)
    assert all(_case_dots(ax) == 2 * CASES for ax in axes.flat)  # two fractions
    assert all(any(line.get_linestyle() == "--" for line in ax.get_lines()) for ax in axes.flat)
    assert BASELINE_MEAN in _legend_texts(figure)
    _assert_untitled(figure)


def test_heatmap_figure(cases):
    figure = fig.heatmap_figure(cases, "d", 0.1, "asym_adversarial")
    axes = [ax for ax in _visible(figure) if ax.get_xlabel()]
    assert len(axes) == 2
    assert all(ax.get_xlabel().startswith("l: ") and ax.get_ylabel().startswith("ε: ")
               for ax in axes)
    colour_bars = [ax.get_ylabel() for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert colour_bars == ["DSC (%), w/ post-processing", "DSC (%), w/o post-processing"]
    assert all(text.startswith("Vanilla (baseline)") for text in _legend_texts(figure))
    _assert_untitled(figure)


def test_logit_figures_are_labelled(tmp_path):
    write_study(tmp_path, techniques=["vanilla"], fractions=(0.1, 0.5), seeds=(0,), cases=2,
                classes=("background", "tumour_core"))
    trials = load_results(str(tmp_path)).trials
    panels = [(f"{f:g} training data", {"technique": "vanilla", "variant": None,
                                        "fraction": f}) for f in (0.1, 0.5)]
    figure = fig.logit_figure(logit_histograms(trials), "synthetic-kits", "unet-tiny", panels)
    axes = np.array(figure.axes).reshape(2, 2)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["tumour core voxels:\ndensity",
                                                      "background voxels:\ndensity"]
    assert axes[-1, 0].get_xlabel() == "logit value\n0.1 training data"
    assert "tumour core logit, test cases" in _legend_texts(figure)
    _assert_untitled(figure)
