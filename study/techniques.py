"""Technique id + hyperparameters -> what a trial trains with: the objective, the batch
regularizers and the augmentation (001 §IV, 003, 004).

Three builders, one per family of :data:`study.catalog.TECHNIQUES` (which declares each
technique's symmetry and hyperparameters):

* :func:`_regularized` — the baseline loss with the 001 modifications: large margin ``m``
  (eq. 4-9), focal ``gamma`` (eq. 10-13), both (eq. 22), plus adversarial batches ``eps, l``
  (eq. 14-16), mixup batches ``mixup_alpha`` / ``mixup_m, mixup_alpha`` (eq. 17-19) and
  the (asymmetric) augmentation gate ``bg_aug_prob`` (eq. 20-21, applied by the sampler).
  Every single technique is this builder with a fixed set of hyperparameters;
  ``combination`` / ``asym_combination`` accept any subset (an absent technique is off).
  The loss has the model's baseline forms: CE for DeepMedic (001 §V, BraTS/ATLAS), CE + soft
  DSC for the U-Net (001 §V, KiTS; "sample-wise DSC loss", 001 §V-A.4, with
  ``Context.batch_dice=False``), each replaced by its margin/focal form.
* :func:`_region` — a region loss alone: ``dsc`` (001 eq. 3, Table II "F1 (DSC)"),
  ``dsc_squared`` and ``jaccard`` (004 §3, squared denominators), ``f_beta`` (001 Table II
  F2/F4/F8, ``beta``); batch or sample-wise sums as ``Context.batch_dice``.
* :func:`_calibration` — ``margin_calibration`` (003 eq. 27-29; ``tau``, ``nu``) alone, with the
  class voxel counts of the whole training set (one pass over the training labels).
* :func:`_reweighted` — ``reweighted_ce``: CE with the inverse class frequencies of the whole
  training set as class weights (004 Table 2 "reweight-ce"; 000 eq. 5).

Asymmetric techniques pass the dataset's rare-class vector ``r``; symmetric ones
``rare=None`` (001 §IV). Every loss and regularizer is built with ``ignore_index =``
:data:`IGNORE` — asymmetric mixup writes it (eq. 19's "0" targets) and the trial runner
marks the labels outside a model's output with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
from torch import nn

import study.objectives as obj
from study import catalog
from study.catalog import Technique
from study.models.outputs import centre_crop, main_output

IGNORE = obj.IGNORE_INDEX


@dataclass(frozen=True)
class Context:
    """What a technique needs to know about the trial.

    * ``rare``: the dataset's r vector (001 §IV).
    * ``dsc_term``: the model's baseline has a soft DSC term (U-Net) or not (DeepMedic).
    * ``class_counts``: called once, only by techniques that need the training set's class
      voxel counts (``margin_calibration``, ``reweighted_ce``).
    * ``batch_dice``: every DSC-form loss (the U-Net's DSC term and its margin/focal forms, and
      ``dsc``, ``jaccard``, ``f_beta``) sums over the whole batch (True) or averages
      per-sample values (False: 001 §V-A.4's "sample-wise DSC loss").
    * ``mixup_lambda``: how asymmetric mixup draws lambda, one of
      :data:`study.objectives.LAMBDA_FORMS` (``"paper"``: eq. 18 as written; ``"code"``:
      scaled by ``1 - mixup_m`` as the reference implementation).
    """

    rare: tuple[float, ...]
    dsc_term: bool = True
    class_counts: Callable[[], np.ndarray] | None = None
    batch_dice: bool = True
    mixup_lambda: str = "paper"

    def __post_init__(self) -> None:
        if not isinstance(self.batch_dice, bool):
            raise TypeError(f"batch_dice must be a bool, got {self.batch_dice!r}")
        if self.mixup_lambda not in obj.LAMBDA_FORMS:
            raise ValueError(f"mixup_lambda must be one of {', '.join(obj.LAMBDA_FORMS)}, "
                             f"got {self.mixup_lambda!r}")

    @property
    def num_classes(self) -> int:
        return len(self.rare)


@dataclass(frozen=True)
class AugmentationGate:
    """Eq. 21: a sample holding a voxel of a class with ``rare > 0.5`` is always augmented,
    any other with probability ``bg_aug_prob``; all-zero ``rare`` is symmetric augmentation
    with probability ``bg_aug_prob``. The trial runner hands it to the patch sampler, which
    applies the augmentation ``A`` (eq. 20) on the CPU while batches are prepared."""

    bg_aug_prob: float
    rare: tuple[float, ...]


@dataclass(frozen=True)
class TrainingObjective:
    """The loss and the extra-batch regularizers (eq. 14, 17) of one trial, as
    :func:`study.objectives.regularized_step` takes them, and the augmentation gate (eq. 21)."""

    loss: nn.Module
    regularizers: tuple[obj.Regularizer, ...] = ()
    augmentation: AugmentationGate | None = None


class AlignedAdversarialPerturbation(obj.AdversarialPerturbation):
    """:class:`~study.objectives.AdversarialPerturbation` (001 eq. 14-16) for any of our
    models: the direction loss reads the model's full-resolution logits (deep supervision) and
    the central part of the target that the logits cover (DeepMedic's output is the centre of
    its input). The perturbation covers the whole input."""

    def direction_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().direction_loss(logits, centre_crop(target, logits.shape[2:]))

    def perturbation(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        return super().perturbation(main_output(model), x, target, generator)


def _forms(make: Callable[[str], obj.Objective], context: Context) -> obj.Objective:
    """``make("ce")`` (DeepMedic) or ``make("ce") + make("dsc")`` (U-Net); ``make`` builds the
    DSC form with ``context.batch_dice``."""
    return make("ce") + make("dsc") if context.dsc_term else make("ce")


class _Common(TypedDict):
    """The keywords every loss and regularizer of :func:`_regularized` takes."""

    rare: list[float] | None
    ignore_index: int


class _Forms(_Common):
    """:class:`_Common` and the keyword of the margin/focal losses' DSC form."""

    batch_dice: bool


def _regularized(technique: Technique, hp: Mapping[str, float], context: Context
                 ) -> TrainingObjective:
    rare = list(context.rare) if technique.asymmetric else None
    common: _Common = {"rare": rare, "ignore_index": IGNORE}
    forms: _Forms = {**common, "batch_dice": context.batch_dice}  # batch_dice: DSC form only
    if "m" in hp and "gamma" in hp:
        loss = _forms(lambda form: obj.MarginFocalLoss(hp["m"], hp["gamma"], form=form, **forms),
                      context)
    elif "m" in hp:
        loss = _forms(lambda form: obj.LargeMarginLoss(hp["m"], form=form, **forms), context)
    elif "gamma" in hp:
        loss = _forms(lambda form: obj.FocalLoss(hp["gamma"], form=form, **forms), context)
    else:
        loss = _forms(lambda form: obj.CrossEntropyLoss(ignore_index=IGNORE) if form == "ce"
                      else obj.DiceLoss(batch_dice=context.batch_dice, ignore_index=IGNORE),
                      context)
    regularizers: list[obj.Regularizer] = []
    if "eps" in hp:
        regularizers.append(AlignedAdversarialPerturbation(hp["eps"], hp["l"], **common))
    if technique.asymmetric and "mixup_m" in hp:
        regularizers.append(obj.AsymmetricMixup(hp["mixup_alpha"], hp["mixup_m"], context.rare,
                                                lam=context.mixup_lambda, ignore_index=IGNORE))
    elif not technique.asymmetric and "mixup_alpha" in hp:
        regularizers.append(obj.Mixup(hp["mixup_alpha"], context.num_classes,
                                      ignore_index=IGNORE))
    augmentation = None
    if "bg_aug_prob" in hp:
        # symmetric: no sample counts as rare, every sample is augmented with probability p
        gate = context.rare if technique.asymmetric else (0.0,) * context.num_classes
        augmentation = AugmentationGate(hp["bg_aug_prob"], tuple(gate))
    return TrainingObjective(loss, tuple(regularizers), augmentation)


_REGION_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "dsc": obj.DiceLoss, "dsc_squared": functools.partial(obj.DiceLoss, squared=True),
    "jaccard": obj.JaccardLoss, "f_beta": obj.FBetaLoss}


def _region(technique: Technique, hp: Mapping[str, float], context: Context) -> TrainingObjective:
    loss = _REGION_LOSSES[technique.id]
    return TrainingObjective(loss(*(hp[k] for k in technique.required),
                                  batch_dice=context.batch_dice, ignore_index=IGNORE))


def _class_counts(technique: Technique, context: Context) -> np.ndarray:
    if context.class_counts is None:
        raise ValueError(f"{technique.id} needs the training set's class voxel counts")
    return context.class_counts()


def _calibration(technique: Technique, hp: Mapping[str, float], context: Context
                 ) -> TrainingObjective:
    counts = _class_counts(technique, context)
    return TrainingObjective(obj.MarginCalibrationLoss(hp["tau"], hp["nu"], counts,
                                                       ignore_index=IGNORE))


def _reweighted(technique: Technique, hp: Mapping[str, float], context: Context
                ) -> TrainingObjective:
    weights = obj.inverse_frequency_weights(_class_counts(technique, context))
    return TrainingObjective(obj.CrossEntropyLoss(weights, ignore_index=IGNORE))


Builder = Callable[[Technique, dict[str, float], Context], TrainingObjective]
BUILDERS: dict[str, Builder] = {"regularized": _regularized, "region": _region,
                                "calibration": _calibration, "reweighted": _reweighted}
"""A technique family (:attr:`study.catalog.Technique.family`) -> its builder."""


def build_training(technique: str, hp: Mapping[str, float], context: Context
                   ) -> TrainingObjective:
    """The loss, regularizers and augmentation for ``technique`` with hyperparameters ``hp``.

    Raises ``ValueError`` naming an unknown technique, an unknown or missing hyperparameter,
    a half-given pair (``eps`` without ``l``) or a combination of nothing.
    """
    info = catalog.technique(technique)
    hp = {k: float(v) for k, v in hp.items()}
    info.check(hp)
    return BUILDERS[info.family](info, hp, context)


def build_objective(technique: str, hp: dict[str, float], rare: Sequence[float],
                    dsc_term: bool = True) -> nn.Module:
    """The loss alone of :func:`build_training` (for techniques without class counts)."""
    return build_training(technique, hp, Context(tuple(rare), dsc_term)).loss
