"""Large margin loss, symmetric and asymmetric (001 eq. 4-9)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._marginfocal import MarginFocalBase
from .region import SMOOTH


class LargeMarginLoss(MarginFocalBase):
    """Large margin loss: the true class's logit is lowered by ``r_j m`` before the softmax.

    ``q_j = softmax(z - y r m)_j`` (001 eq. 7; eq. 5 with ``r = 1``) and

    * ``form="ce"``: ``-(1/N) sum_v sum_j y_j log q_j`` (eq. 4 symmetric, eq. 6 asymmetric);
    * ``form="dsc"``: the soft DSC of eq. 3 computed on ``q`` (eq. 8, eq. 9), foreground
      classes, batch sums, ``smooth`` as :class:`~study.objectives.DiceLoss`.

    The margin is training-only; predict with the raw logits. Gradient (000 eq. 8): for the
    CE form ``dL/dz = w (p - y)`` with ``w = sum e^z / sum e^(z - y r m) >= 1``.

    Args:
        m: margin, >= 0 (001's grid: 0.2 0.5 1 1.5 2 3). ``m = 0`` gives CE / DSC.
        rare: None for the symmetric loss (margin on every class), or ``r``: one float in
            [0, 1] per class (asymmetric; 001 §IV: 1 for rare classes, 0 else).
        form: ``"ce"`` or ``"dsc"``.
        batch_dice, smooth: DSC form only (see :class:`~study.objectives.DiceLoss`).
        ignore_index: label value excluded from the loss.

    Example::

        >>> import torch
        >>> logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> asym = LargeMarginLoss(1.0, rare=[0, 1])                  # eq. 6
        >>> bool(asym(logits, target) >= LargeMarginLoss(0.0)(logits, target))
        True
    """

    def __init__(self, m: float, rare: Sequence[float] | torch.Tensor | None = None,
                 form: str = "ce", *, batch_dice: bool = True, smooth: float = SMOOTH,
                 ignore_index: int | None = None):
        super().__init__(m, 0.0, rare, form, batch_dice=batch_dice, smooth=smooth,
                         ignore_index=ignore_index)

    def extra_repr(self) -> str:
        return f"m={self.m}, rare={self.rare}, form={self.form!r}"
