"""``study.loss_curves`` (000 Fig. 1, 001 Fig. 9): each technique's loss and its gradient vs
the true-class logit of one two-class voxel, from the real objectives, and
``study figures losses``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import study.objectives as obj
from study import loss_curves

SAMPLES = (-3.0, -0.5, 0.0, 1.25, 4.0)
RARE = [0.0, 1.0]


@pytest.fixture(scope="module")
def curves() -> pd.DataFrame:
    return loss_curves.loss_curves(SAMPLES)


def _curve(curves: pd.DataFrame, technique: str, form: str, true_class: str) -> pd.DataFrame:
    rows = curves[(curves["technique"] == technique) & (curves["form"] == form)
                  & (curves["true_class"] == true_class)]
    assert rows["logit"].tolist() == list(SAMPLES), (technique, form, true_class)
    return rows


def _direct(objective: obj.Objective, true_class: int, logit: float) -> float:
    z = torch.zeros(1, 2, 1, dtype=torch.float64)
    z[0, true_class, 0] = logit
    return float(objective(z, torch.full((1, 1), true_class, dtype=torch.int64)))


# The objective classes built by hand (not through the technique builders), per curve.
DIRECT = {
    ("vanilla", "ce"): obj.CrossEntropyLoss(),
    ("vanilla", "dsc"): obj.DiceLoss(),
    ("large_margin", "ce"): obj.LargeMarginLoss(1.0),
    ("asym_large_margin", "ce"): obj.LargeMarginLoss(1.0, rare=RARE),
    ("asym_large_margin", "dsc"): obj.LargeMarginLoss(1.0, rare=RARE, form="dsc"),
    ("focal", "ce"): obj.FocalLoss(2.0),
    ("focal", "dsc"): obj.FocalLoss(2.0, form="dsc"),
    ("asym_focal", "ce"): obj.FocalLoss(2.0, rare=RARE),
    ("combination", "ce"): obj.MarginFocalLoss(1.0, 2.0),
    ("asym_combination", "dsc"): obj.MarginFocalLoss(1.0, 2.0, rare=RARE, form="dsc"),
    ("margin_calibration", "ce"): obj.MarginCalibrationLoss(10.0, 1.0, loss_curves.COUNTS),
    ("dsc_squared", "dsc"): obj.DiceLoss(squared=True),
    ("jaccard", "dsc"): obj.JaccardLoss(),
    ("f_beta", "dsc"): obj.FBetaLoss(2.0),
}


@pytest.mark.parametrize(("technique", "form"), sorted(DIRECT))
def test_values_equal_the_objective_evaluated_directly(curves, technique, form):
    """Every curve's value at the sample logits is the objective class's own value on that
    voxel (true-class logit z, other logit 0), for a rare- and a common-class voxel."""
    for name in loss_curves.TRUE_CLASSES[form]:
        rows = _curve(curves, technique, form, loss_curves.CLASS_NAMES[name])
        expected = [_direct(DIRECT[technique, form], name, z) for z in SAMPLES]
        np.testing.assert_allclose(rows["value"], expected, rtol=1e-12, atol=1e-12)


def test_cross_entropy_matches_000_eq_5(curves):
    """Reference values: CE of a voxel with p_t = sigmoid(z) is softplus(-z) and its gradient
    p_t - 1 (000 eq. 5), for either class."""
    for true_class in ("rare", "common"):
        rows = _curve(curves, "vanilla", "ce", true_class)
        z = np.asarray(SAMPLES)
        np.testing.assert_allclose(rows["value"], np.log1p(np.exp(-z)), rtol=1e-12)
        np.testing.assert_allclose(rows["gradient"], 1 / (1 + np.exp(-z)) - 1, rtol=1e-12)


def test_gradients_equal_finite_differences(curves):
    """dL/dz_t of every curve equals the central difference of the objective's value."""
    h = 1e-6
    for technique, hp in loss_curves.SETTINGS:
        for form, objective in loss_curves.objectives(technique, hp).items():
            for name in loss_curves.TRUE_CLASSES[form]:
                rows = _curve(curves, technique, form, loss_curves.CLASS_NAMES[name])
                fd = [(loss_curves.evaluate(objective, name, z + h)[0]
                       - loss_curves.evaluate(objective, name, z - h)[0]) / (2 * h)
                      for z in SAMPLES]
                np.testing.assert_allclose(rows["gradient"], fd, rtol=1e-6, atol=1e-8,
                                           err_msg=f"{technique} {form} class {name}")


@pytest.mark.parametrize(("asymmetric", "true_class", "same_as"), [
    ("asym_focal", "common", "focal"),              # eq. 11: r = 0 keeps the attenuation
    ("asym_focal", "rare", "vanilla"),              # r = 1: plain CE
    ("asym_large_margin", "rare", "large_margin"),  # eq. 6: the margin on the rare class only
    ("asym_large_margin", "common", "vanilla"),
    ("asym_combination", "rare", "large_margin"),   # eq. 22: margin on rare, focal on common
    ("asym_combination", "common", "focal"),
])
def test_asymmetric_losses_are_their_symmetric_form_on_one_class(curves, asymmetric,
                                                                 true_class, same_as):
    """001 §IV: the asymmetric loss is the symmetric technique on the class it keeps, and CE
    (or the other technique) on the class it leaves alone, so it differs from its symmetric
    form on one of the two classes."""
    rows = _curve(curves, asymmetric, "ce", true_class)
    other = _curve(curves, same_as, "ce", true_class)
    for column in ("value", "gradient"):
        np.testing.assert_allclose(rows[column], other[column], rtol=1e-12, atol=1e-15)
    symmetric = asymmetric.removeprefix("asym_")
    assert any(not np.allclose(_curve(curves, asymmetric, "ce", c)["value"],
                               _curve(curves, symmetric, "ce", c)["value"])
               for c in ("rare", "common"))


def test_every_setting_has_its_rows_and_bad_logits_are_refused(curves):
    """CE forms for both classes, DSC forms for the rare class only; labels name the method
    and setting as the papers print them."""
    counts = curves.groupby(["form", "true_class"])["technique"].nunique().to_dict()
    assert counts == {("ce", "common"): 8, ("ce", "rare"): 8, ("dsc", "rare"): 10}
    assert "Asymmetric focal loss (γ = 2)" in set(curves["loss"])
    assert curves[["value", "gradient"]].map(math.isfinite).all().all()
    with pytest.raises(ValueError, match="logits: expected a non-empty 1-D array"):
        loss_curves.loss_curves([0.0, float("nan")])


def test_figures_losses_writes_the_table_and_the_figure(tmp_path, monkeypatch, capsys):
    """``study figures losses DIR`` writes the CSV (the table) and the figure as PNG and
    SVG, and prints their paths; the figure has a loss row and a gradient row per setting."""
    from analysis.figures import loss_curve_figure
    from study.cli import main

    monkeypatch.setattr(loss_curves, "LOGITS", np.array(SAMPLES))
    assert main(["figures", "losses", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    names = ["loss_curves.csv", "loss_curves.png", "loss_curves.svg"]
    assert printed == [str(tmp_path / "out" / n) for n in names]
    assert all((tmp_path / "out" / n).stat().st_size > 0 for n in names)
    table = pd.read_csv(tmp_path / "out" / "loss_curves.csv")
    pd.testing.assert_frame_equal(table, loss_curves.loss_curves(SAMPLES), check_dtype=False)
    figure = loss_curve_figure(table)
    assert len(figure.axes) == 2 * table["setting"].nunique()
    assert len(figure.legends[0].get_texts()) == table["loss"].nunique()
