"""Losses and regularizers of the class-imbalance papers, exact and numerically safe.

Every loss is a ``torch.nn.Module`` whose ``forward(logits [N, C, *spatial], target
[N, *spatial] int64)`` returns a scalar; CE forms are the mean over non-ignored voxels. Keyword
names follow the papers: ``m``, ``gamma``, ``tau``, ``nu``, ``beta``, ``rare``, ``form``.
``rare=None`` is the symmetric (original) technique; ``rare`` = one float in [0, 1] per class
the asymmetric variant of 001. Losses add: ``CrossEntropyLoss() + DiceLoss()``.

Papers: 001 Li, Kamnitsas, Glocker (TMI), 000 its supplement, 003 Li, Yu, Zhang (margin
calibration), 004 Liu et al. (DSC / Jaccard losses).
"""

from .base import Objective, SumLoss
from .combination import MarginFocalLoss
from .crossentropy import CrossEntropyLoss
from .focal import FocalLoss
from .margin import LargeMarginLoss
from .rare import rare_vector
from .region import DiceLoss, FBetaLoss, JaccardLoss

__all__ = [
    "CrossEntropyLoss",
    "DiceLoss",
    "FBetaLoss",
    "FocalLoss",
    "JaccardLoss",
    "LargeMarginLoss",
    "MarginFocalLoss",
    "Objective",
    "SumLoss",
    "rare_vector",
]
