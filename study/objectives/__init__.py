"""Losses and regularizers of the class-imbalance papers, exact and numerically safe.

Every loss is a ``torch.nn.Module`` whose ``forward(logits [N, C, *spatial], target
[N, *spatial] int64)`` returns a scalar; CE forms are the mean over non-ignored voxels. Keyword
names follow the papers: ``m``, ``gamma``, ``tau``, ``nu``, ``beta``, ``rare``, ``form``.
``rare=None`` is the symmetric (original) technique; ``rare`` = one float in [0, 1] per class
the asymmetric variant of 001. Losses add: ``CrossEntropyLoss() + DiceLoss()``.

Batch regularizers (adversarial eq. 14-16, mixup eq. 17-19, asymmetric augmentation eq. 21)
are separate callables ``reg(model, x, target, generator) -> (x', target')``;
:func:`regularized_step` applies them as one summed loss (the papers, default) or as extra
sequential optimizer steps (the reference code).

Papers: 001 Li, Kamnitsas, Glocker (TMI), 000 its supplement, 003 Li, Yu, Zhang (margin
calibration), 004 Liu et al. (DSC / Jaccard losses).
"""

from .adversarial import AdversarialPerturbation, l2_normalize
from .augmentation import AsymmetricAugmentation, RandomFlip
from .base import Objective, SumLoss
from .calibration import (
    MarginCalibrationLoss,
    calibration_margins,
    class_counts,
    class_margins,
)
from .combination import MarginFocalLoss
from .crossentropy import CrossEntropyLoss
from .focal import FocalLoss
from .margin import LargeMarginLoss
from .mixup import IGNORE_INDEX, AsymmetricMixup, Mixup, asymmetric_labels, partner_indices
from .rare import rare_vector
from .region import DiceLoss, FBetaLoss, JaccardLoss
from .schedule import Regularizer, StepResult, regularized_step

__all__ = [
    "IGNORE_INDEX",
    "AdversarialPerturbation",
    "AsymmetricAugmentation",
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
    "RandomFlip",
    "Regularizer",
    "StepResult",
    "SumLoss",
    "asymmetric_labels",
    "calibration_margins",
    "class_counts",
    "class_margins",
    "l2_normalize",
    "partner_indices",
    "rare_vector",
    "regularized_step",
]
