"""The sensitivity table (000 Table IV layout) and its Markdown rendering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import markdown, sensitivity_table
from analysis.report import write_report

CASES = [f"case{i}" for i in range(8)]


def _rows(technique, label, dsc_by_case, seed=0, hp=None, postprocessed=True, status="ok",
          cases=8):
    rows = []
    for case, dsc in zip(CASES[:cases], dsc_by_case, strict=True):
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


def test_worse_rows_marked(cases):
    """Exactly the rows with mean DSC below the baseline are marked; the baseline and the
    diverged setting have no p-value."""
    table = sensitivity_table(cases, "d", 0.05, postprocessed=True).set_index("parameter")
    assert table["worse_than_baseline"].to_dict() == {
        "—": False, "γ = 0.5": True, "γ = 2": False, "γ = 3": False, "γ = 4": False}
    assert table["p_value"].isna().to_dict() == {
        "—": True, "γ = 0.5": False, "γ = 2": False, "γ = 3": True, "γ = 4": False}


def exact_signed_rank_p(differences) -> float:
    """Two-sided exact p of Wilcoxon's signed-rank test by enumerating all 2^n sign patterns
    (distinct, nonzero |differences|): 2 P(W+ <= min(w+, total - w+)), capped at 1."""
    d = np.asarray(differences, float)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1.0
    signs = (np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1  # every pattern
    null = signs @ ranks
    observed = ranks[d > 0].sum()
    return min(1.0, 2 * np.mean(null <= min(observed, ranks.sum() - observed)))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment by hand: the i-th smallest (i = 0, 1, ...) of m p-values
    becomes the running maximum of min(1, (m - i) p)."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - i) * p_values[j]))
        adjusted[j] = running
    return adjusted


# Case-level DSC differences from the baseline, distinct in magnitude (no ties): the first two
# are better on every case (exact p = 2/2^8 each), the third mixed.
DIFFERENCES = {1.0: 0.01 * np.arange(1, 9), 2.0: 0.011 * np.arange(1, 9),
               3.0: 0.01 * np.arange(1, 9) * np.array([1, -1, 1, -1, 1, 1, -1, 1])}


def test_p_values_are_holm_corrected_case_level_wilcoxon():
    """p-values equal Holm's adjustment, computed by hand, of exact signed-rank p-values over
    the 8 case means (2 seeds each, averaged first). The two equal smallest p-values show
    the step-down's running maximum: the second is 3p, not 2p."""
    base = np.linspace(0.40, 0.61, 8)
    spread = np.linspace(0.001, 0.008, 8)  # seeds differ, their mean is the case's value
    rows = []
    for seed, sign in ((0, 1), (1, -1)):
        rows += _rows("vanilla", "—", base + sign * spread[::-1], seed=seed)
        for gamma, d in DIFFERENCES.items():
            rows += _rows("asym_focal", f"γ = {gamma:g}", base + d + sign * spread, seed=seed,
                          hp=gamma)
    table = sensitivity_table(pd.DataFrame(rows), "d", 0.05, True).set_index("parameter")
    raw = [exact_signed_rank_p(d) for d in DIFFERENCES.values()]
    assert raw[0] == raw[1] == 2 / 2 ** 8 and 0.3 < raw[2] < 1
    expected = holm(raw)
    got = [table.loc[f"γ = {gamma:g}", "p_value"] for gamma in DIFFERENCES]
    assert got == pytest.approx(expected, rel=1e-9)
    assert got[0] == got[1] == pytest.approx(3 * 2 / 2 ** 8) and got[2] == pytest.approx(raw[2])


def test_seeds_do_not_inflate_the_number_of_pairs():
    """5 cases x 3 seeds, the setting better on every one of the 15 (case, seed) pairs:
    pairing (case, seed) would give p = 2/2^15 < 0.05, but the seeds of a case are not
    independent; paired over the 5 case means, p = 2/2^5 = 0.0625, not significant."""
    base = np.array([0.40, 0.45, 0.50, 0.55, 0.60])
    rows, pairs = [], []
    for seed in range(3):
        better = base + 0.01 * np.arange(1, 6) + 0.001 * seed
        pairs += list(better - base)
        rows += _rows("vanilla", "—", base, seed=seed, cases=5)
        rows += _rows("asym_focal", "γ = 2", better, seed=seed, hp=2.0, cases=5)
    assert exact_signed_rank_p(pairs) == 2 / 2 ** 15 < 0.05
    table = sensitivity_table(pd.DataFrame(rows), "d", 0.05, True).set_index("parameter")
    assert table.loc["γ = 2", "p_value"] == pytest.approx(2 / 2 ** 5)
    assert table.loc["γ = 2", ["n_cases", "n_seeds"]].tolist() == [5, 3]


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

    trials = cases[["trial_id", "status"]].drop_duplicates()
    results = Results(cases=cases, trials=trials, source="x", incomplete=["vanilla—0", "zz"])
    kept = results.restrict({"vanilla—0"})
    assert set(kept.cases["trial_id"]) == {"vanilla—0"} == set(kept.trials["trial_id"])
    assert kept.incomplete == ["vanilla—0"]


def test_wilcoxon_columns_equal_one_test_per_column():
    """Testing every setting against the baseline in one scipy call gives, bit for bit, the
    p-values of one call per setting: many cases (asymptotic) with ties, zeros and a setting
    equal to the baseline, few cases (exact or permutation, decided per setting), and NaN
    pairs (left out per setting)."""
    from analysis.tables import wilcoxon, wilcoxon_columns

    rng = np.random.default_rng(3)
    for n in (60, 250, 12, 30):
        base = np.round(rng.uniform(0.3, 0.8, n), 2)
        values = np.column_stack([
            base + rng.normal(0, 0.05, n), np.round(base + rng.normal(0.01, 0.03, n), 2),
            base, np.where(rng.random(n) < 0.3, base, base + 0.01), base + 0.02])
        values[::7, 4] = np.nan
        expected = [wilcoxon(values[:, j], base) for j in range(values.shape[1])]
        got = wilcoxon_columns(values, base)
        np.testing.assert_array_equal(got, expected)
        assert np.isnan(got[2]) and np.isfinite(got[[0, 1, 3, 4]]).all()


def test_class_tables_share_one_choice_of_settings():
    """The report's per-class tables equal the module's functions, and the settings chosen
    once are reused (the comparison's rows are the chosen settings)."""
    from analysis import best_hyperparameters, best_settings, comparison_table
    from analysis.tables import ClassTables

    rng = np.random.default_rng(1)
    rows = []
    for fraction in (0.05, 0.5):
        for seed in (0, 1, 2):
            for technique, label, hp, shift in (("vanilla", "—", None, 0.0),
                                                ("asym_focal", "γ = 2", 2.0, 0.05),
                                                ("asym_focal", "γ = 4", 4.0, -0.03)):
                for pp in (True, False):
                    part = _rows(technique, label, rng.uniform(0.4, 0.6, 8) + shift,
                                 seed=seed, hp=hp, postprocessed=pp)
                    rows += [{**r, "fraction": fraction} for r in part]
    cases = pd.DataFrame(rows)
    tables = ClassTables(cases, "d")
    pd.testing.assert_frame_equal(tables.comparison(False), comparison_table(cases, "d", False),
                                  check_exact=True)
    pd.testing.assert_frame_equal(tables.best_hyperparameters(),
                                  best_hyperparameters(cases, "d"), check_exact=True)
    chosen = best_settings(cases, "d")
    pd.testing.assert_frame_equal(tables.best_settings(), chosen, check_exact=True)
    compared = tables.comparison(True)
    assert list(compared["parameter"]) == list(chosen["parameter"])
    assert tables.fractions() == [0.05, 0.5] and tables.has_block(0.5, False)
