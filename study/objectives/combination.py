"""Combined large-margin + focal loss (001 §IV-F, eq. 22)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._marginfocal import MarginFocalBase
from .region import SMOOTH


class MarginFocalLoss(MarginFocalBase):
    """001 eq. 22: focal attenuation applied to the margin-shifted probabilities ``q^``.

    ``L = -(1/N) sum_v sum_j (r_j + (1 - r_j)(1 - q^_j)^gamma) y_j log q^_j`` with
    ``q^ = softmax(z - y r m)``; ``form="dsc"`` is "a combined DSC loss formulated in a similar
    way": the focal DSC (eq. 13) on ``q^``. ``rare=None``: symmetric (margin on every class and
    focal on every class). Reduces to :class:`LargeMarginLoss` at ``gamma = 0`` and to
    :class:`FocalLoss` at ``m = 0``.

    Args: ``m`` and ``gamma`` as the two single losses; the rest as :class:`FocalLoss`.

    Example::

        >>> import torch
        >>> logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> value = MarginFocalLoss(0.2, 2.0, rare=[0, 1])(logits, target)
    """

    def __init__(self, m: float, gamma: float, rare: Sequence[float] | torch.Tensor | None = None,
                 form: str = "ce", *, batch_dice: bool = True, smooth: float = SMOOTH,
                 ignore_index: int | None = None):
        super().__init__(m, gamma, rare, form, batch_dice=batch_dice, smooth=smooth,
                         ignore_index=ignore_index)
