"""Settings whose seeds diverged: marked in every table and every format, never silently
dropped; a partly diverged setting reports the seeds that did not diverge and how many did."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from analysis import (
    best_hyperparameters,
    best_hyperparameters_grid,
    best_settings,
    comparison_grid,
    comparison_table,
    load_results,
    sensitivity_grid,
    sensitivity_table,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
    write_report,
)
from analysis._synthetic import store_trial
from study.results import ResultStore

BASE = np.array([0.40, 0.45, 0.50, 0.55, 0.60, 0.65])
# (technique, hp, DSC offset, status of seeds 0, 1, 2)
TRIALS = [
    ("vanilla", {}, 0.0, ("ok", "ok", "ok")),
    ("asym_focal", {"gamma": 1.0}, 0.05, ("ok", "ok", "ok")),
    ("asym_focal", {"gamma": 2.0}, 0.08, ("ok", "ok", "diverged")),  # partly
    ("asym_focal", {"gamma": 4.0}, 0.10, ("diverged",) * 3),  # every seed
    ("asym_large_margin", {"m": 0.5}, 0.0, ("diverged",) * 3),  # every setting
    ("asym_large_margin", {"m": 1.0}, 0.0, ("diverged",) * 3),
    ("focal", {"gamma": 2.0}, 0.0, ("diverged",) * 3),  # its only setting
]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    store = ResultStore(str(root))
    for technique, hp, offset, statuses in TRIALS:
        for seed, status in enumerate(statuses):
            store_trial(store, technique, hp, seed, BASE + offset + 0.01 * seed, status=status)
    return load_results(str(root)).cases


@pytest.fixture(scope="module")
def sensitivity(cases):
    return sensitivity_table(cases, "d", 0.5, True)


@pytest.fixture(scope="module")
def comparison(cases):
    return comparison_table(cases, "d", True)


def test_sensitivity_table_counts_finite_and_diverged_seeds(sensitivity):
    """Every seed diverged: all_diverged, no metrics, kept in the table. Some seeds: means and
    n_seeds over the others, n_diverged says how many did."""
    table = sensitivity.set_index(["technique", "parameter"])
    every, partly = table.loc[("asym_focal", "γ = 4")], table.loc[("asym_focal", "γ = 2")]
    assert every["all_diverged"] and np.isnan(every["dsc"])
    assert (every["n_seeds"], every["n_diverged"]) == (0, 3)
    assert not partly["all_diverged"] and (partly["n_seeds"], partly["n_diverged"]) == (2, 1)
    assert partly["dsc"] == pytest.approx(100 * (BASE.mean() + 0.08 + 0.005))
    assert sensitivity["all_diverged"].sum() == 4  # γ = 4, m = 0.5, m = 1, focal γ = 2


def test_best_settings_keep_techniques_whose_every_setting_diverged(cases):
    """A diverged setting is never chosen; a technique with nothing else keeps one marked row
    (its setting when it has one, no setting when several all diverged)."""
    chosen = best_settings(cases, "d").set_index("technique")
    assert chosen.loc["asym_focal", "parameter"] == "γ = 2"
    assert chosen.loc["asym_focal", ["n_seeds", "n_diverged"]].tolist() == [2, 1]
    assert not chosen.loc["asym_focal", "all_diverged"]
    several, only = chosen.loc["asym_large_margin"], chosen.loc["focal"]
    assert several["all_diverged"] and several["parameter"] is None
    assert np.isnan(several["hp_m"]) and np.isnan(several["score"])
    assert several["n_diverged"] == 3
    assert only["all_diverged"] and only["parameter"] == "γ = 2" and only["hp_gamma"] == 2.0
    wide = best_hyperparameters(cases, "d").set_index("technique")
    assert wide.loc["asym_large_margin", "all_diverged_50%"]
    assert np.isnan(wide.loc["asym_large_margin", "50%"])
    assert wide.loc["focal", "all_diverged_50%"] and wide.loc["focal", "50%"] == 2.0
    assert not wide.loc["asym_focal", "all_diverged_50%"]


def test_comparison_keeps_diverged_rows_unranked(comparison):
    table = comparison.set_index("technique")
    assert list(comparison["technique"]) == ["vanilla", "asym_large_margin", "focal",
                                             "asym_focal"]
    assert table.loc[["asym_large_margin", "focal"], "all_diverged"].all()
    assert table.loc[["asym_large_margin", "focal"], "rank_dsc"].isna().all()
    assert not table.loc[["asym_large_margin", "focal"], "worse_than_baseline"].any()
    assert table.loc["asym_focal", ["n_seeds", "n_diverged"]].tolist() == [2, 1]
    assert table.loc["asym_focal", "rank_dsc"] == 1


@pytest.mark.parametrize("render", [to_markdown, to_latex, to_html])
def test_every_format_shows_the_marks(sensitivity, comparison, cases, render):
    """``diverged (3/3 seeds)`` in place of the metrics, ``‡`` after a partly diverged DSC and
    a note saying how many of its seeds diverged, in Markdown, LaTeX and HTML."""
    dagger = r"$^\ddagger$" if render is to_latex else "‡"
    text = render(sensitivity_grid({"w/ post-processing": sensitivity}, "Sensitivity"))
    every = next(line for line in text.splitlines() if "4" in line and "diverged (3/3" in line)
    assert "γ" in every or r"\gamma" in every
    assert text.count("diverged (3/3 seeds)") == 4 and f"{dagger}" in text
    assert "diverged (1/3 seeds)" in text
    text = render(comparison_grid(comparison, "Comparison"))
    assert text.count("diverged (3/3 seeds)") == 2
    assert "Asymmetric focal loss at 50%: diverged (1/3 seeds)" in text.replace(r"\%", "%")
    text = render(best_hyperparameters_grid(best_hyperparameters(cases, "d"), "Chosen"))
    assert text.count("diverged") >= 3  # m and focal's γ cells, and the note


def test_csv_carries_the_flags(sensitivity, comparison):
    for table in (sensitivity, comparison):
        frame = pd.read_csv(io.StringIO(to_csv(table)))
        assert frame["all_diverged"].dtype == bool and frame["all_diverged"].sum() >= 2
        assert 1 in set(frame["n_diverged"])


def test_report_marks_them(cases, tmp_path):
    index = write_report(cases, tmp_path, figures=False)[-1].read_text()
    assert "diverged (3/3 seeds)" in index and "diverged (1/3 seeds)" in index
