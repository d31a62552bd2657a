"""The tables over every class and the later papers' metrics (000 Table V, 003 Table 1, 004
§4.3) and 001 Fig. 1's train-vs-test figure, from results written through the real writer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import figures as fig
from analysis import load_results, write_report
from analysis._synthetic import store_trial, write_study
from analysis.dataset_tables import (
    AVERAGE,
    RARE_AVERAGE,
    distance_table,
    has_values,
    iou_table,
    per_class_table,
    rare_classes,
)
from analysis.render import distance_grid, iou_grid, per_class_grid, to_latex, to_markdown
from analysis.tables import ClassTables, best_settings
from study.results import ResultStore

CLASSES = ("background", "kidney", "tumour", "cyst")
TECHNIQUES = ["vanilla", "asym_focal"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_study(root, techniques=TECHNIQUES, classes=CLASSES, cases=4, seeds=(0, 1),
                train_cases=3, later=True, logits=False)
    return load_results(str(root))


def test_rare_classes_come_from_the_dataset_declaration():
    assert rare_classes("synthetic-kits") == ("tumour",)
    assert len(rare_classes("btcv")) == 8 and "gallbladder" in rare_classes("btcv")
    assert rare_classes("not-declared") is None


def test_per_class_table_averages_the_class_means(study):
    """Each class's DSC is the class's own table's mean (``ClassTables``); AVG is the mean of
    the class means, AVG_r that of the rare classes."""
    table = per_class_table(study.cases, "synthetic-kits", rare=["tumour", "cyst"])
    assert list(dict.fromkeys(table["class_name"])) == ["kidney", "tumour", "cyst", AVERAGE,
                                                        RARE_AVERAGE]
    at = table[(table["fraction"] == 0.5) & table["postprocessed"]
               & (table["technique"] == "asym_focal") & (table["parameter"] == "γ = 2")]
    by_class = at.set_index("class_name")
    for class_name in ("kidney", "tumour", "cyst"):
        own = ClassTables(study.cases, "synthetic-kits", None, class_name).sensitivity(0.5, True)
        expected = own.set_index("parameter").loc["γ = 2"]
        assert by_class.loc[class_name, "dsc"] == pytest.approx(expected["dsc"])
        assert by_class.loc[class_name, "sensitivity"] == pytest.approx(
            expected["sensitivity"])
    assert by_class.loc[AVERAGE, "dsc"] == pytest.approx(
        by_class.loc[["kidney", "tumour", "cyst"], "dsc"].mean())
    assert by_class.loc[RARE_AVERAGE, "dsc"] == pytest.approx(
        by_class.loc[["tumour", "cyst"], "dsc"].mean())
    assert by_class["rare"].to_dict() == {"kidney": False, "tumour": True, "cyst": True,
                                          AVERAGE: False, RARE_AVERAGE: True}
    # the declaration's rare classes by default (synthetic-kits: tumour)
    default = per_class_table(study.cases, "synthetic-kits")
    assert set(default.loc[default["rare"], "class_name"]) == {"tumour", RARE_AVERAGE}
    with pytest.raises(ValueError, match=r"rare: classes \['liver'\] have no results"):
        per_class_table(study.cases, "synthetic-kits", rare=["liver"])
    grid = per_class_grid(table, "Table V")
    assert [name for name, _ in grid.header[0]][1:] == ["kidney", "tumour (r)", "cyst (r)",
                                                        AVERAGE, RARE_AVERAGE]
    assert "AVG\\_r" in to_latex(grid) and "| **" in to_markdown(grid)


def _known(tmp_path):
    """Two seeds of one setting with known voxel counts: case 0 has TP 6 of pred 8 / ref 10,
    case 1 TP 1 of pred 2 / ref 4; cases of 100 and 300 voxels, 90 and 240 correct."""
    store = ResultStore(str(tmp_path))
    later = {"tp_voxels": [6, 1], "pred_voxels": [8, 2], "ref_voxels": [10, 4],
             "case_voxels": [100, 300], "case_correct_voxels": [90, 240],
             "arvd": [0.2, np.nan], "abd": [1.0, 3.0]}
    for seed, loss in ((0, 0.2), (1, 0.4)):
        store_trial(store, "vanilla", {}, seed, [0.6, 0.3], later=later, final_val_loss=loss)
    return load_results(str(tmp_path))


def test_iou_is_pooled_over_cases_and_pixel_accuracy_counts_each_case_once(tmp_path):
    results = _known(tmp_path)
    table = iou_table(results.cases, results.trials, "d")
    row = table[table["postprocessed"]].iloc[0]
    assert row["iou"] == pytest.approx(100 * 7 / (10 + 14 - 7))  # not the mean of 6/12, 1/5
    assert row["miou"] == pytest.approx(row["iou"])  # one foreground class
    assert row["pixel_accuracy"] == pytest.approx(100 * 330 / 400)  # not (90% + 80%) / 2
    assert row["val_loss"] == pytest.approx(0.3)
    assert row["n_seeds"] == 2
    # without the trials table the loss is unknown
    assert np.isnan(iou_table(results.cases, None, "d")["val_loss"]).all()
    assert "0.300" in to_markdown(iou_grid(table, "003"))


def test_miou_is_the_mean_over_foreground_classes(study):
    table = iou_table(study.cases, study.trials, "synthetic-kits")
    for _, setting in table.groupby(["method", "parameter", "fraction", "postprocessed"]):
        assert len(setting) == 3
        assert setting["miou"].iloc[0] == pytest.approx(setting["iou"].mean())
    assert (table["pixel_accuracy"] > 90).all() and (table["val_loss"] > 0).all()


def test_distance_table_gives_mean_and_std_over_cases(tmp_path):
    results = _known(tmp_path)
    row = distance_table(results.cases, "d").iloc[0]
    assert row["abd"] == pytest.approx(2.0) and row["abd_std"] == pytest.approx(1.0)
    assert row["arvd"] == pytest.approx(20.0)  # the case without a finite aRVD left out
    assert row["dsc"] == pytest.approx(45.0) and row["dsc_std"] == pytest.approx(15.0)
    assert row["n_cases"] == 2
    text = to_markdown(distance_grid(distance_table(results.cases, "d"), "004"))
    assert "| Vanilla | — | 45.0 ± 15.0 |" in text


def test_results_without_the_later_columns_get_none_of_these_tables(tmp_path):
    store = ResultStore(str(tmp_path / "results"))
    store_trial(store, "vanilla", {}, 0, [0.5, 0.6])
    cases = load_results(str(tmp_path / "results")).cases
    assert not has_values(cases, "tp_voxels") and not has_values(cases, "arvd", "abd")
    with pytest.raises(ValueError, match="no tp_voxels"):
        iou_table(cases, None, "d")
    names = {p.name for p in write_report(cases, tmp_path / "report", figures=False)}
    assert not any(n.startswith(("iou_", "distances_", "classes_")) for n in names)


def test_report_holds_the_new_tables(study, tmp_path):
    names = {p.name for p in write_report(study, tmp_path, figures=False)}
    for stem in ("classes_synthetic-kits_unet-tiny", "iou_synthetic-kits_unet-tiny",
                 "distances_synthetic-kits_unet-tiny_tumour"):
        assert {f"{stem}.md", f"{stem}.tex", f"{stem}.csv"} <= names
    index = (tmp_path / "index.md").read_text()
    assert "(000 Table V)" in index and "(003 Table 1)" in index and "(004 §4.3)" in index


@pytest.mark.slow
def test_report_holds_the_train_test_figure(tmp_path):
    write_study(tmp_path / "results", techniques=["vanilla"], classes=CLASSES[:3], cases=3,
                train_cases=2, later=True, logits=False)
    out = tmp_path / "report"
    names = {p.relative_to(out).as_posix()
             for p in write_report(load_results(str(tmp_path / "results")), out)}
    assert "figures/train-test_synthetic-kits_unet-tiny_tumour.png" in names
    index = (out / "index.md").read_text()
    assert "on training vs test cases by amount of training data (001 Fig. 1)" in index


def test_train_test_figure_draws_both_splits_per_method(study):
    chosen = best_settings(study.cases, "synthetic-kits", class_name="tumour")
    figure = fig.train_test_figure(study.cases, chosen, "synthetic-kits",
                                   class_name="tumour")
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert len(axes) == 2 * len(TECHNIQUES)  # sensitivity and precision rows
    # the training cases fit better (the synthetic gap): the dashed means lie above
    ax = axes[0]
    test, train = (line.get_ydata() for line in ax.lines
                   if line.get_linestyle() in ("-", "--") and len(line.get_ydata()) == 2)
    assert (np.asarray(train) > np.asarray(test)).all()
    no_train = study.cases[study.cases["split"] != "train"]
    with pytest.raises(ValueError, match="no train results"):
        fig.train_test_figure(no_train, chosen, "synthetic-kits", class_name="tumour")


def _reordered(cases):
    """``cases`` whose string columns' categories are in reverse order (as a study whose ids
    were first read in another order loads them)."""
    out = cases.copy()
    for column in ("technique", "param_label", "class_name", "case_id", "variant"):
        values = out[column].cat
        out[column] = values.reorder_categories(list(values.categories)[::-1])
    return out


def test_tables_do_not_depend_on_how_the_strings_are_stored(study):
    """The tables group the loaded categoricals by their codes; the order in which the values
    were first read, or plain strings, give the same tables to the last bit (means, and the
    spreads over cases, are taken in the same order)."""
    loaded = study.cases
    plain = loaded.astype({c: object for c in loaded.columns
                           if isinstance(loaded[c].dtype, pd.CategoricalDtype)})
    for cases in (_reordered(loaded), plain):
        pd.testing.assert_frame_equal(per_class_table(cases, "synthetic-kits"),
                                      per_class_table(loaded, "synthetic-kits"),
                                      check_exact=True)
        pd.testing.assert_frame_equal(iou_table(cases, study.trials, "synthetic-kits"),
                                      iou_table(loaded, study.trials, "synthetic-kits"),
                                      check_exact=True)
        pd.testing.assert_frame_equal(distance_table(cases, "synthetic-kits",
                                                     class_name="tumour"),
                                      distance_table(loaded, "synthetic-kits",
                                                     class_name="tumour"), check_exact=True)
