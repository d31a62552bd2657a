"""The ``split`` column: every table reports the test split; settings may be chosen on the
validation split instead, and are then still reported with their test metrics."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import (
    best_hyperparameters,
    best_settings,
    comparison_table,
    load_results,
    selection_description,
    sensitivity_table,
    write_report,
)
from analysis.__main__ import main
from analysis._synthetic import store_trial
from study.results import ResultStore

TEST_CASES = np.array([0.40, 0.45, 0.50, 0.55, 0.60])
VALIDATION_CASES = np.array([0.30, 0.35, 0.70])
# (hp, test offset, validation offset): on test γ = 2 is best, on validation γ = 1.
FOCAL = [({"gamma": 1.0}, 0.02, 0.20), ({"gamma": 2.0}, 0.06, 0.05)]


def _study(root, validation=True):
    store = ResultStore(str(root))
    held_out = (lambda offset: VALIDATION_CASES + offset) if validation else (lambda _: ())
    for seed in (0, 1):
        store_trial(store, "vanilla", {}, seed, TEST_CASES, validation=held_out(0.0))
        for hp, test, validation_offset in FOCAL:
            store_trial(store, "asym_focal", hp, seed, TEST_CASES + test,
                        validation=held_out(validation_offset))
    return load_results(str(root)).cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return _study(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def without_validation(tmp_path_factory):
    return _study(tmp_path_factory.mktemp("results"), validation=False)


def test_tables_report_the_test_split_only(cases, without_validation):
    """Validation rows change no number of the sensitivity table."""
    assert set(cases["split"]) == {"test", "validation"}
    with_rows = sensitivity_table(cases, "d", 0.5, True)
    without = sensitivity_table(without_validation, "d", 0.5, True)
    assert with_rows.equals(without)
    assert with_rows.loc[0, "dsc"] == pytest.approx(100 * TEST_CASES.mean())
    assert (with_rows["n_cases"] == len(TEST_CASES)).all()


def test_selection_on_validation_reports_test_metrics(cases):
    """Test selection picks γ = 2, validation selection γ = 1; both report the chosen
    setting's test DSC, ``score`` is the selection split's."""
    on_test = best_settings(cases, "d").set_index("technique").loc["asym_focal"]
    on_validation = best_settings(cases, "d", select_on="validation")
    focal = on_validation.set_index("technique").loc["asym_focal"]
    assert on_test["parameter"] == "γ = 2" and focal["parameter"] == "γ = 1"
    assert on_test["score"] == on_test["dsc"]
    assert focal["score"] == pytest.approx(100 * (VALIDATION_CASES.mean() + 0.20))
    assert focal["dsc"] == pytest.approx(100 * (TEST_CASES.mean() + 0.02))
    compared = comparison_table(cases, "d", True, select_on="validation")
    row = compared.set_index("technique").loc["asym_focal"]
    assert row["parameter"] == "γ = 1" and row["dsc"] == pytest.approx(focal["dsc"])
    assert row["n_cases"] == len(TEST_CASES)
    wide = best_hyperparameters(cases, "d", select_on="validation")
    assert wide.set_index("technique").loc["asym_focal", "50%"] == 1.0


def test_captions_say_which_split_selected(cases, tmp_path):
    assert "mean test DSC" in selection_description()
    assert "validation" in selection_description(select_on="validation")
    index = write_report(cases, tmp_path, figures=False, select_on="validation")[-1]
    text = index.read_text()
    assert text.count("highest mean validation (cases held out of training) DSC") >= 3
    csv = (tmp_path / "comparison_d_unet-tiny_tumour_pp.csv").read_text()
    assert "asym_focal,,0.5,γ = 1," in csv  # technique, no variant, fraction, setting


def test_validation_selection_without_validation_rows_says_what_to_set(without_validation,
                                                                       tmp_path, capsys):
    with pytest.raises(ValueError, match=r"study 's' has no validation results for "
                                         r"dataset\(s\) \['d'\].*dataset\.validation_cases"):
        best_settings(without_validation, "d", select_on="validation")
    with pytest.raises(ValueError, match="dataset.validation_cases"):
        write_report(without_validation, tmp_path / "report", select_on="validation")
    root = tmp_path / "results"
    _study(root, validation=False)
    assert main([str(root), "--out", str(tmp_path / "out"), "--select-on", "validation",
                 "--no-figures", "--quiet"]) == 2
    assert "dataset.validation_cases" in capsys.readouterr().err
    with pytest.raises(ValueError, match="select_on: expected one of"):
        best_settings(without_validation, "d", select_on="train")


def test_a_technique_without_validation_rows_is_named(tmp_path):
    store = ResultStore(str(tmp_path))
    store_trial(store, "vanilla", {}, 0, TEST_CASES, validation=VALIDATION_CASES)
    store_trial(store, "asym_focal", {"gamma": 1.0}, 0, TEST_CASES)
    with pytest.raises(ValueError, match=r"\['Asymmetric focal loss'\] at fraction 0.5 of "
                                         "dataset 'd' have test but no validation results"):
        best_settings(load_results(str(tmp_path)).cases, "d", select_on="validation")


def _with_training_cases(root, train: bool):
    store = ResultStore(str(root))
    for seed in (0, 1):
        for technique, hp, offset in (("vanilla", {}, 0.0), ("asym_focal", {"gamma": 1.0}, 0.02),
                                      ("asym_focal", {"gamma": 2.0}, 0.06)):
            store_trial(store, technique, hp, seed, TEST_CASES + offset,
                        train=(0.9, 0.95, 0.99) if train else ())
    return load_results(str(root)).cases


def test_training_case_rows_change_no_table(tmp_path):
    """Rows of evaluated training cases (``split == "train"``, 001 Fig. 1) enter no table:
    every table and every report file is the same with and without them."""
    with_train = _with_training_cases(tmp_path / "a", True)
    without = _with_training_cases(tmp_path / "b", False)
    assert set(with_train["split"]) == {"test", "train"}
    for build in (lambda c: sensitivity_table(c, "d", 0.5, True), lambda c: best_settings(c, "d"),
                  lambda c: comparison_table(c, "d", False),
                  lambda c: best_hyperparameters(c, "d")):
        assert build(with_train).equals(build(without))
    assert comparison_table(with_train, "d", True).loc[0, "n_cases"] == len(TEST_CASES)
    written = [write_report(cases, tmp_path / name, figures=False)
               for name, cases in (("ra", with_train), ("rb", without))]
    names = [[p.name for p in paths] for paths in written]
    assert names[0] == names[1]
    for a, b in zip(*written, strict=True):
        assert a.read_text() == b.read_text(), a.name
