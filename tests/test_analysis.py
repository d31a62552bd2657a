"""The sensitivity table (000 Table IV layout) and its Markdown rendering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import markdown, sensitivity_table
from analysis.report import write_report

CASES = [f"case{i}" for i in range(8)]


def _rows(technique, label, dsc_by_case, seed=0, hp=None, postprocessed=True, status="ok"):
    rows = []
    for case, dsc in zip(CASES, dsc_by_case, strict=True):
        rows.append({"study": "s", "trial_id": f"{technique}{label}{seed}", "dataset": "d",
                     "model": "unet-tiny", "technique": technique, "fraction": 0.05,
                     "seed": seed, "param_label": label, "hp_gamma": hp, "hp_m": None,
                     "case_id": case, "class_name": "tumour_core",
                     "postprocessed": postprocessed, "dsc": dsc, "sensitivity": dsc,
                     "precision": 0.8, "iou": dsc / (2 - dsc), "hd95": 10.0 * (1 - dsc) + 1,
                     "hd95_max": 20.0, "pred_voxels": 10, "ref_voxels": 10, "status": status})
    return rows


@pytest.fixture
def cases():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.6, 8)
    rows = _rows("vanilla", "—", base)
    rows += _rows("asym_focal", "γ = 4", base + 0.05, hp=4.0)
    rows += _rows("asym_focal", "γ = 0.5", base - 0.02 + rng.normal(0, 0.01, 8), hp=0.5)
    rows += _rows("asym_focal", "γ = 2", base + 0.1, hp=2.0)
    rows += _rows("asym_focal", "γ = 2", base + 0.2, seed=1, hp=2.0)
    rows += _rows("asym_focal", "γ = 3", [np.nan] * 8, hp=3.0, status="diverged")
    return pd.DataFrame(rows)


def test_baseline_first_settings_in_grid_order(cases):
    """Vanilla first, then the technique's settings sorted by value (not by label text)."""
    table = sensitivity_table(cases, "d", 0.05, postprocessed=True)
    assert list(table["parameter"]) == ["—", "γ = 0.5", "γ = 2", "γ = 3", "γ = 4"]
    assert list(table["method"][:2]) == ["Vanilla", "Asymmetric focal loss"]


def test_means_over_cases_then_seeds_in_percent(cases):
    """DSC = mean over seeds of the per-seed case means, x100; diverged seeds are counted."""
    table = sensitivity_table(cases, "d", 0.05, postprocessed=True).set_index("parameter")
    base = cases[cases["technique"] == "vanilla"]["dsc"].mean()
    assert table.loc["γ = 2", "dsc"] == pytest.approx(100 * (base + 0.15))
    assert table.loc["γ = 2", "n_seeds"] == 2 and table.loc["γ = 2", "n_cases"] == 8
    assert table.loc["γ = 3", "n_diverged"] == 1 and np.isnan(table.loc["γ = 3", "dsc"])
    assert table.loc["—", "hd95"] == pytest.approx(10 * (1 - base) + 1)


def test_worse_rows_marked_and_p_values_holm_corrected(cases):
    """Exactly the rows with mean DSC below the baseline are marked; p-values are the
    Wilcoxon test's, Holm-adjusted (x3 for the smallest of 3 testable settings)."""
    table = sensitivity_table(cases, "d", 0.05, postprocessed=True).set_index("parameter")
    assert table["worse_than_baseline"].to_dict() == {
        "—": False, "γ = 0.5": True, "γ = 2": False, "γ = 3": False, "γ = 4": False}
    base = cases[cases["technique"] == "vanilla"].set_index("case_id")["dsc"]
    low = cases[cases["param_label"] == "γ = 0.5"].set_index("case_id")["dsc"]
    raw = stats.wilcoxon(low, base).pvalue
    adjusted = table["p_value"].dropna().sort_values()
    assert len(adjusted) == 3 and np.isnan(table.loc["γ = 3", "p_value"])
    assert raw * 3 >= adjusted.iloc[0] - 1e-12
    assert (adjusted.diff().dropna() >= 0).all() and (adjusted <= 1).all()


def test_markdown_marks_worse_rows_and_names_method_once(cases):
    """Rendered rows: ▼ on worse rows only, method printed on the first row of its group."""
    blocks = {"w/ post-processing": sensitivity_table(cases, "d", 0.05, True)}
    text = markdown(blocks, "caption")
    rows = [line for line in text.splitlines() if "γ =" in line or "| — |" in line]
    assert rows[0].startswith("|  | Vanilla | — |")
    assert rows[1].startswith("| ▼ | Asymmetric focal loss | γ = 0.5 |")
    assert rows[2].startswith("|  |  | γ = 2 |")
    assert sum("▼" in r for r in rows) == 1


def test_errors_name_what_is_missing(cases):
    """Asking for a fraction or class without results is a clear ValueError."""
    with pytest.raises(ValueError, match="fraction 0.5"):
        sensitivity_table(cases, "d", 0.5, True)
    with pytest.raises(ValueError, match="class 'kidney'"):
        sensitivity_table(cases, "d", 0.05, True, class_name="kidney")


def test_report_has_both_blocks_and_says_what_is_missing(cases, tmp_path):
    """The report index holds every table with and without post-processing, and partial
    studies say how many trials are missing."""
    both = pd.concat([cases, cases.assign(postprocessed=False)])
    paths = write_report(both, tmp_path, missing=3)
    index = paths[-1].read_text()
    assert "3 trial(s) have no results yet" in index
    assert index.count("**w/ post-processing**") == 1 and "**w/o post-processing**" in index
    assert all(p.exists() for p in paths)


def test_results_restrict_keeps_only_the_named_trials(cases):
    """A report covers the current study file's trials only: rows of other trial ids (an
    edited study's old trials) are dropped from cases and trials."""
    from analysis.load import Results

    trials = cases[["trial_id"]].drop_duplicates()
    results = Results(cases=cases, trials=trials, source="x", incomplete=["vanilla—0", "zz"])
    kept = results.restrict({"vanilla—0"})
    assert set(kept.cases["trial_id"]) == {"vanilla—0"} == set(kept.trials["trial_id"])
    assert kept.incomplete == ["vanilla—0"]
