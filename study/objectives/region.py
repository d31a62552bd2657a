"""Region (overlap) losses: soft DSC (001 eq. 3; 004 §3), Jaccard (004 §3), F-beta (001 §V-B).

All are computed per class from soft confusion sums over the valid voxels — of the whole
batch (``batch_dice=True``, nnU-Net's "batch dice", the default) or per sample — and averaged
over the foreground classes ``1..C-1`` (background excluded, as the reference U-Net).
``smooth`` (default 1e-5, as nnU-Net) keeps empty classes finite; every loss is
``1 - (A + smooth) / (B + smooth)``, so a perfect prediction, including an empty class
predicted empty, gives 0.
"""

from __future__ import annotations

import torch

from . import _functional as F
from ._validate import check_ignore_index, check_real
from .base import Objective
from .targets import prepare

SMOOTH = 1e-5


def dice_eq3(tp: torch.Tensor, psum: torch.Tensor, ysum: torch.Tensor, fn: torch.Tensor,
             smooth: float) -> torch.Tensor:
    """001 eq. 3 (``fn`` = FN) and eq. 12 (``fn`` = focal FN): ``(FP + FN) / (2TP + FP + FN)``.

    With ``FP = psum - tp`` and ``2TP + FP + FN = psum + ysum``; ``smooth`` in the denominator.
    """
    return (psum - tp + fn) / (psum + ysum + smooth)


class _RegionLoss(Objective):
    def __init__(self, *, batch_dice: bool, smooth: float, ignore_index: int | None):
        super().__init__()
        if not isinstance(batch_dice, bool):
            raise TypeError(f"batch_dice must be a bool, got {batch_dice!r}")
        self.batch_dice = batch_dice
        self.smooth = check_real("smooth", smooth, low=0.0)
        self.ignore_index = check_ignore_index(ignore_index)

    def _stats(self, logits: torch.Tensor, target: torch.Tensor, squared: bool):
        z, tgt = prepare(logits, target, self.ignore_index)
        return F.region_stats(z, tgt, squared=squared, batch=self.batch_dice)


class DiceLoss(_RegionLoss):
    """Soft DSC loss ``1 - DSC`` over the foreground classes.

    * ``squared=False`` (default): 001 eq. 3, ``(FP + FN) / (2TP + FP + FN)`` with
      ``TP = sum p y``, ``FP = sum p (1 - y)``, ``FN = sum (1 - p) y`` per class.
    * ``squared=True``: 004 §3, ``1 - 2 p.y / (|p|^2 + |y|^2)``.

    Args:
        squared: use the squared denominator of 004.
        batch_dice: sum over the batch as well as space (True) or average per-sample values.
        smooth: added to numerator and denominator of ``2TP / (2TP + FP + FN)``.
        ignore_index: label value excluded from every sum.

    Example::

        >>> import torch
        >>> target = torch.randint(0, 2, (2, 8, 8))
        >>> perfect = 1e4 * torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).float()
        >>> float(DiceLoss()(perfect, target)) < 1e-6
        True
    """

    def __init__(self, squared: bool = False, *, batch_dice: bool = True,
                 smooth: float = SMOOTH, ignore_index: int | None = None):
        super().__init__(batch_dice=batch_dice, smooth=smooth, ignore_index=ignore_index)
        self.squared = bool(squared)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, psum, ysum, fn = self._stats(logits, target, self.squared)
        if self.squared:
            per_class = (psum + ysum - 2.0 * tp) / (psum + ysum + self.smooth)
        else:
            per_class = dice_eq3(tp, psum, ysum, fn, self.smooth)
        return F.foreground_mean(per_class)

    def extra_repr(self) -> str:
        return f"squared={self.squared}, batch_dice={self.batch_dice}, smooth={self.smooth}"


class JaccardLoss(_RegionLoss):
    """Soft Jaccard (IoU) loss over the foreground classes.

    * ``squared=True`` (default): 004 §3, ``1 - p.y / (|p|^2 + |y|^2 - p.y)``.
    * ``squared=False``: ``1 - TP / (TP + FP + FN)`` with linear sums.

    Args: as :class:`DiceLoss`.

    Example::

        >>> import torch
        >>> logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
        >>> 0.0 <= float(JaccardLoss()(logits, target)) <= 1.0
        True
    """

    def __init__(self, squared: bool = True, *, batch_dice: bool = True,
                 smooth: float = SMOOTH, ignore_index: int | None = None):
        super().__init__(batch_dice=batch_dice, smooth=smooth, ignore_index=ignore_index)
        self.squared = bool(squared)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, psum, ysum, _ = self._stats(logits, target, self.squared)
        per_class = (psum + ysum - 2.0 * tp) / (psum + ysum - tp + self.smooth)
        return F.foreground_mean(per_class)

    def extra_repr(self) -> str:
        return f"squared={self.squared}, batch_dice={self.batch_dice}, smooth={self.smooth}"


class FBetaLoss(_RegionLoss):
    """Soft F-beta loss ``1 - F_beta`` over the foreground classes (001 §V-B, Table II).

    ``F_beta = (1 + b^2) SEN PRC / (b^2 SEN + PRC) = (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)``
    with soft sums; it weights sensitivity ``beta`` times more than precision (Hashemi et al.,
    001 ref. [14]). ``beta = 1`` is :class:`DiceLoss` (eq. 3). The paper's grid: 1, 2, 4, 8.

    Args:
        beta: positive float.
        batch_dice, smooth, ignore_index: as :class:`DiceLoss`.

    Example::

        >>> import torch
        >>> logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> bool(torch.isclose(FBetaLoss(1.0)(logits, target), DiceLoss()(logits, target)))
        True
    """

    def __init__(self, beta: float, *, batch_dice: bool = True, smooth: float = SMOOTH,
                 ignore_index: int | None = None):
        super().__init__(batch_dice=batch_dice, smooth=smooth, ignore_index=ignore_index)
        self.beta = check_real("beta", beta, low=0.0, low_open=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, psum, ysum, fn = self._stats(logits, target, False)
        b2 = self.beta**2
        per_class = (psum - tp + b2 * fn) / (psum + b2 * ysum + self.smooth)
        return F.foreground_mean(per_class)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, batch_dice={self.batch_dice}, smooth={self.smooth}"
