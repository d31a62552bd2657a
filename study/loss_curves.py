"""Loss value and gradient vs the true-class logit, for every technique's loss (000 Fig. 1,
001 Fig. 9 and the gradient analysis of 000 eq. 5-8).

One voxel of a two-class problem: the true class's logit ``z_t`` runs over :data:`LOGITS`,
the other logit stays 0, so ``p_t = sigmoid(z_t)``. Class 1 is the rare (foreground) class
(``r = [0, 1]``, 001 §IV), class 0 the common one. Each loss is the one a trial trains with,
built by :func:`study.techniques.build_training` from the real objective classes, and both the
value and ``dL/dz_t`` come from the objective itself (autograd through its ``forward``/
``backward``), never from re-derived formulas:

* CE forms (``form="ce"``): the DeepMedic loss of each technique (001 eq. 1, 4-7, 10-11, 22;
  003 eq. 27-29), for a rare-class and a common-class voxel. The re-weighted CE (000 eq. 5) is
  CE times its class's constant weight and is left out of :data:`SETTINGS`.
* DSC forms (``form="dsc"``): the DSC term of the U-Net loss (001 eq. 3, 8-9, 12-13) and the
  region losses (001 Table II F-beta; 004 squared DSC and Jaccard), for a rare-class voxel
  only. The region losses average the foreground classes (background excluded), so on a
  single common-class voxel they would only measure the false positive of an empty class.

The class counts of margin calibration are :data:`COUNTS`, a 99:1 imbalance.
:func:`write` saves the table as CSV and the figure (:func:`analysis.figures.loss_curve_figure`)
as PNG and SVG: ``study figures losses DIR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from study import catalog
from study.objectives import SumLoss
from study.techniques import Context, build_training

RARE_CLASS, COMMON_CLASS = 1, 0
RARE = (0.0, 1.0)  # r: class 1 is the rare class (001 §IV)
COUNTS = (990_000, 10_000)  # training voxels per class (margin calibration's n_k)
LOGITS = np.round(np.linspace(-6.0, 6.0, 121), 6)  # the true-class logit z_t, step 0.1
# Each technique whose loss differs from the baseline, at one setting of the papers' grids
# (001 Table VIII: m = 1, gamma = 2; 003: tau = 10, nu = 1; 001 Table II: F2). The DSC loss
# alone (``dsc``) is the DSC term of the vanilla U-Net loss and is drawn as that.
SETTINGS: tuple[tuple[str, dict[str, float]], ...] = (
    ("vanilla", {}),
    ("large_margin", {"m": 1.0}), ("asym_large_margin", {"m": 1.0}),
    ("focal", {"gamma": 2.0}), ("asym_focal", {"gamma": 2.0}),
    ("combination", {"m": 1.0, "gamma": 2.0}), ("asym_combination", {"m": 1.0, "gamma": 2.0}),
    ("margin_calibration", {"tau": 10.0, "nu": 1.0}),
    ("dsc_squared", {}), ("jaccard", {}), ("f_beta", {"beta": 2.0}),
)
FORM_NAMES = {"ce": "CE forms", "dsc": "DSC forms"}
CLASS_NAMES = {RARE_CLASS: "rare", COMMON_CLASS: "common"}
TRUE_CLASSES = {"ce": (RARE_CLASS, COMMON_CLASS), "dsc": (RARE_CLASS,)}
COLUMNS = ("technique", "loss", "asymmetric", "form", "true_class", "setting", "logit", "value",
           "gradient")


def objectives(technique: str, hp: dict[str, float]) -> dict[str, nn.Module]:
    """The two-class training loss of ``technique`` with ``hp``, per form: ``"ce"`` (the
    DeepMedic loss, or the technique's own voxel-wise loss) and/or ``"dsc"`` (the DSC term of
    the U-Net's CE + DSC loss, or a region loss). Raises ``ValueError`` as
    :func:`~study.techniques.build_training`."""
    context = Context(RARE, dsc_term=False, class_counts=lambda: np.asarray(COUNTS))
    family = catalog.technique(technique).family
    loss = build_training(technique, hp, context).loss
    if family == "region":
        return {"dsc": loss}
    if family != "regularized":
        return {"ce": loss}
    unet = build_training(technique, hp, replace(context, dsc_term=True)).loss
    if not isinstance(unet, SumLoss) or len(unet.terms) != 2:
        raise ValueError(f"{technique}: expected the U-Net loss to be CE form + DSC form, "
                         f"got {unet}")
    return {"ce": loss, "dsc": unet.terms[1]}


def evaluate(objective: nn.Module, true_class: int, logit: float) -> tuple[float, float]:
    """``(L, dL/dz_t)`` of ``objective`` on one voxel labelled ``true_class`` whose logit of
    that class is ``logit`` and whose other logit is 0 (float64, autograd)."""
    z = torch.zeros(1, 2, 1, dtype=torch.float64)
    z[0, true_class, 0] = float(logit)
    z.requires_grad_(True)
    value = objective(z, torch.full((1, 1), true_class, dtype=torch.int64))
    (grad,) = torch.autograd.grad(value, z)
    return float(value.detach()), float(grad[0, true_class, 0])


def loss_label(technique: str, hp: dict[str, float]) -> str:
    """The legend name: the papers' method name and setting, e.g. ``Focal loss (γ = 2)``."""
    method = catalog.technique(technique).method
    return f"{method} ({catalog.param_label(hp)})" if hp else method


def loss_curves(logits: Sequence[float] | np.ndarray | None = None,
                settings: Sequence[tuple[str, dict[str, float]]] = SETTINGS) -> pd.DataFrame:
    """One row per (technique, form, true class, logit): :data:`COLUMNS`. ``loss`` is the
    legend name, ``setting`` the panel (e.g. ``CE forms, rare-class voxel``), ``value`` the
    loss and ``gradient`` ``dL/dz_t``. ``logits``: the true-class logits (default
    :data:`LOGITS`)."""
    grid = np.asarray(LOGITS if logits is None else logits, dtype=float)
    if grid.ndim != 1 or not grid.size or not np.all(np.isfinite(grid)):
        raise ValueError(f"logits: expected a non-empty 1-D array of finite values, got "
                         f"{grid.tolist()!r}")
    rows = []
    for technique, hp in settings:
        asymmetric = catalog.technique(technique).asymmetric
        for form, objective in objectives(technique, hp).items():
            for true_class in TRUE_CLASSES[form]:
                setting = f"{FORM_NAMES[form]}, {CLASS_NAMES[true_class]}-class voxel"
                for logit in grid:
                    value, gradient = evaluate(objective, true_class, logit)
                    rows.append((technique, loss_label(technique, hp), asymmetric, form,
                                 CLASS_NAMES[true_class], setting, float(logit), value,
                                 gradient))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write(folder: str | Path) -> list[Path]:
    """Write ``loss_curves.csv`` (:func:`loss_curves`) and ``loss_curves.png``/``.svg``
    (:func:`analysis.figures.loss_curve_figure`) into ``folder``; return the paths."""
    from analysis.figures import loss_curve_figure, save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = loss_curves()
    csv = folder / "loss_curves.csv"
    table.to_csv(csv, index=False)
    return [csv, *save(loss_curve_figure(table), folder / "loss_curves")]
