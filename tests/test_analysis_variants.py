"""Methods are (technique, variant) pairs named by the catalog: a rerun under a changed regime
(``Vanilla - w/o augmentation``, 001 Tables II-IV) is its own row right after its technique's
plain row, compared with the baseline (vanilla without a variant) like any other; the method
names, their order and the hyperparameter symbols come from ``study.catalog`` only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from analysis import (
    best_hyperparameters,
    best_settings,
    comparison_grid,
    comparison_table,
    load_results,
    sensitivity_grid,
    sensitivity_table,
    to_markdown,
)
from analysis._synthetic import store_trial
from study import catalog
from study.results import ResultStore

BASE = np.array([0.40, 0.45, 0.50, 0.55, 0.60, 0.65])
WITHOUT = "w/o augmentation"
# (technique, variant, hp, DSC offset): the variant's best γ (1) is not the plain one's (2).
TRIALS = [
    ("vanilla", None, {}, 0.0),
    ("vanilla", WITHOUT, {}, -0.05),
    ("asym_focal", None, {"gamma": 1.0}, 0.02),
    ("asym_focal", None, {"gamma": 2.0}, 0.04),
    ("asym_focal", WITHOUT, {"gamma": 1.0}, 0.01),
    ("asym_focal", WITHOUT, {"gamma": 2.0}, -0.03),
]
VANILLA_WITHOUT = "Vanilla - w/o augmentation"
FOCAL_WITHOUT = "Asymmetric focal loss - w/o augmentation"


def _store(root, trials=TRIALS, seeds=(0, 1)):
    store = ResultStore(str(root))
    for technique, variant, hp, offset in trials:
        for seed in seeds:
            # seeds differ by a case-dependent amount, so no two settings tie exactly
            store_trial(store, technique, hp, seed, BASE + offset + 0.003 * seed * BASE,
                        variant=variant)
    return load_results(str(root)).cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("results"))


def test_sensitivity_rows_name_variants_after_their_technique(cases):
    table = sensitivity_table(cases, "d", 0.5, True)
    assert list(table["method"]) == ["Vanilla", VANILLA_WITHOUT, "Asymmetric focal loss",
                                     "Asymmetric focal loss", FOCAL_WITHOUT, FOCAL_WITHOUT]
    assert table["variant"].tolist() == [None, WITHOUT, None, None, WITHOUT, WITHOUT]
    assert list(table["parameter"]) == ["—", "—", "γ = 1", "γ = 2", "γ = 1", "γ = 2"]
    by = table.set_index(["method", "parameter"])
    assert by.loc[(VANILLA_WITHOUT, "—"), "dsc"] == pytest.approx(
        100 * (BASE.mean() - 0.05) + 0.15 * BASE.mean())


def test_the_baseline_is_vanilla_without_a_variant(cases):
    """The vanilla variant is compared with the plain vanilla like any other row: shaded when
    worse, with a p-value; the baseline itself has neither."""
    table = sensitivity_table(cases, "d", 0.5, True).set_index(["method", "parameter"])
    assert table["worse_than_baseline"].to_dict() == {
        ("Vanilla", "—"): False, (VANILLA_WITHOUT, "—"): True,
        ("Asymmetric focal loss", "γ = 1"): False, ("Asymmetric focal loss", "γ = 2"): False,
        (FOCAL_WITHOUT, "γ = 1"): False, (FOCAL_WITHOUT, "γ = 2"): True}
    assert np.isnan(table.loc[("Vanilla", "—"), "p_value"])
    assert table.drop(index=[("Vanilla", "—")])["p_value"].notna().all()
    text = to_markdown(sensitivity_grid({"b": table.reset_index()}, "c"))
    assert f"| ▼ | {VANILLA_WITHOUT} | — |" in text


def test_without_a_plain_vanilla_there_is_no_baseline(tmp_path):
    only_variant = [t for t in TRIALS if not (t[0] == "vanilla" and t[1] is None)]
    table = sensitivity_table(_store(tmp_path, only_variant), "d", 0.5, True)
    assert not table["worse_than_baseline"].any() and table["p_value"].isna().all()


def test_best_settings_and_hyperparameters_per_variant(cases):
    """Each method chooses its own setting: γ = 2 for the plain technique, γ = 1 for its
    rerun w/o augmentation; 000 Tables I-III get one row per method and hyperparameter."""
    chosen = best_settings(cases, "d").set_index("method")
    assert list(chosen.index) == ["Vanilla", VANILLA_WITHOUT, "Asymmetric focal loss",
                                  FOCAL_WITHOUT]
    assert chosen.loc["Asymmetric focal loss", "parameter"] == "γ = 2"
    assert chosen.loc[FOCAL_WITHOUT, ["parameter", "variant"]].tolist() == ["γ = 1", WITHOUT]
    wide = best_hyperparameters(cases, "d")
    assert list(wide["method"]) == ["Asymmetric focal loss", FOCAL_WITHOUT]
    assert list(wide["50%"]) == [2.0, 1.0] and list(wide["hyperparameter"]) == ["γ", "γ"]


def test_comparison_compares_the_vanilla_variant_with_the_baseline(cases):
    table = comparison_table(cases, "d", True).set_index("method")
    assert list(table.index) == ["Vanilla", VANILLA_WITHOUT, "Asymmetric focal loss",
                                 FOCAL_WITHOUT]
    assert table.loc[VANILLA_WITHOUT, "worse_than_baseline"]
    assert np.isfinite(table.loc[VANILLA_WITHOUT, "p_value"])
    assert np.isnan(table.loc["Vanilla", "p_value"])
    assert table.loc["Asymmetric focal loss", "rank_dsc"] == 1
    text = to_markdown(comparison_grid(table.reset_index(), "c"))
    assert f"| {VANILLA_WITHOUT} | ▼ " in text and f"| {FOCAL_WITHOUT} |" in text


def test_results_without_a_variant_column_read_as_before(cases):
    """A cases frame written before the variant column existed: every row plain."""
    plain = cases[cases["variant"].isna()]
    old = plain.drop(columns="variant")
    assert sensitivity_table(old, "d", 0.5, True).equals(sensitivity_table(plain, "d", 0.5,
                                                                           True))
    assert comparison_table(old, "d", True).equals(comparison_table(plain, "d", True))


def _one_trial_each(root) -> pd.DataFrame:
    """One trial of every technique in the catalog, each with the hyperparameters it needs."""
    store = ResultStore(str(root))
    for technique in catalog.TECHNIQUES.values():
        hp = {name: 0.5 for name in technique.required or technique.optional[:1]}
        for pair in catalog.PAIRED:  # half a pair is refused by the catalog's check
            if set(pair) & set(hp):
                hp.update({name: 0.5 for name in pair if name in technique.hyperparameters})
        technique.check(hp)
        store_trial(store, technique.id, hp, 0, BASE)
    return load_results(str(root)).cases


def test_every_catalog_technique_is_named_and_ordered_by_the_catalog(tmp_path, monkeypatch):
    """Method names, row order and hyperparameter symbols are the catalog's, read when the
    table is made: renaming a method or a symbol in the catalog (and nothing else) renames
    it in the tables."""
    cases = _one_trial_each(tmp_path)
    table = comparison_table(cases, "d", True)
    assert list(table["method"]) == [t.method for t in catalog.TECHNIQUES.values()]
    text = to_markdown(comparison_grid(table, "c"))
    assert all(f"| {t.method} |" in text for t in catalog.TECHNIQUES.values())
    wide = best_hyperparameters(cases, "d")
    assert all(catalog.HYPERPARAMETERS[c.removeprefix(catalog.HP_PREFIX)].symbol == symbol
               for c, symbol in zip(wide["column"], wide["hyperparameter"], strict=True))

    focal = catalog.TECHNIQUES["asym_focal"]
    monkeypatch.setitem(catalog.TECHNIQUES, "asym_focal",
                        dataclasses.replace(focal, method="Renamed focal loss"))
    monkeypatch.setitem(catalog.HYPERPARAMETERS, "gamma",
                        dataclasses.replace(catalog.HYPERPARAMETERS["gamma"], symbol="g"))
    assert "Renamed focal loss" in set(comparison_table(cases, "d", True)["method"])
    wide = best_hyperparameters(cases, "d").set_index("method")
    assert wide.loc["Renamed focal loss", "hyperparameter"] == "g"
