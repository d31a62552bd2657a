"""Losses and regularizers of the class-imbalance papers, exact and numerically safe.

Every loss is a ``torch.nn.Module`` whose ``forward(logits [N, C, *spatial], target
[N, *spatial] int64)`` returns a scalar; CE forms are the mean over non-ignored voxels. Keyword
names follow the papers: ``m``, ``gamma``, ``tau``, ``nu``, ``beta``, ``rare``, ``form``.
``rare=None`` is the symmetric (original) technique; ``rare`` = one float in [0, 1] per class
the asymmetric variant of 001. Losses add: ``CrossEntropyLoss() + DiceLoss()``.

Batch regularizers (adversarial eq. 14-16, mixup eq. 17-19) are separate callables
``reg(model, x, target, generator) -> (x', target')``; :func:`regularized_step` applies them as
one summed loss (the papers, default) or as extra sequential optimizer steps (the reference
code, in either model's order). The (asymmetric) augmentation of eq. 20-21 is not here: the
patch sampler (:mod:`study.data.sampling`) applies it while it cuts the clean batch.

Label values are checked only when :func:`set_label_checks` (or ``STUDY_CHECK_LABELS=1``)
turns the checks on, so that a training step never waits for the GPU.

Papers: 001 Li, Kamnitsas, Glocker (TMI), 000 its supplement, 003 Li, Yu, Zhang (margin
calibration), 004 Liu et al. (DSC / Jaccard losses).
"""

from ._validate import label_checks, set_label_checks
from .adversarial import AdversarialPerturbation, l2_normalize
from .base import Objective, SumLoss
from .calibration import (
    MarginCalibrationLoss,
    calibration_margins,
    class_counts,
    class_margins,
)
from .combination import MarginFocalLoss
from .crossentropy import CrossEntropyLoss, inverse_frequency_weights
from .focal import FocalLoss
from .margin import LargeMarginLoss
from .mixup import (
    IGNORE_INDEX,
    LAMBDA_FORMS,
    AsymmetricMixup,
    Mixup,
    asymmetric_labels,
    partner_indices,
)
from .region import DiceLoss, FBetaLoss, JaccardLoss
from .schedule import UPDATES, Regularizer, StepResult, regularized_step

__all__ = [
    "IGNORE_INDEX",
    "LAMBDA_FORMS",
    "UPDATES",
    "AdversarialPerturbation",
    "AsymmetricMixup",
    "CrossEntropyLoss",
    "DiceLoss",
    "FBetaLoss",
    "FocalLoss",
    "JaccardLoss",
    "LargeMarginLoss",
    "MarginCalibrationLoss",
    "MarginFocalLoss",
    "Mixup",
    "Objective",
    "Regularizer",
    "StepResult",
    "SumLoss",
    "asymmetric_labels",
    "calibration_margins",
    "class_counts",
    "class_margins",
    "inverse_frequency_weights",
    "l2_normalize",
    "label_checks",
    "partner_indices",
    "regularized_step",
    "set_label_checks",
]
