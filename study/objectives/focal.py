"""Focal loss, symmetric and asymmetric, CE and focal-DSC forms (001 eq. 10-13)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._marginfocal import MarginFocalBase
from .region import SMOOTH


class FocalLoss(MarginFocalBase):
    """Focal loss with attenuation ``f_j = r_j + (1 - r_j)(1 - p_j)^gamma`` of the true class.

    * ``form="ce"``: ``-(1/N) sum_v sum_j f_j y_j log p_j`` — eq. 10 (symmetric, ``rare=None``:
      every class attenuated) and eq. 11 (asymmetric: rare classes keep plain CE).
    * ``form="dsc"``: the focal DSC, ``(FP + sum f (1 - p) y) / (2TP + FP + FN)`` per
      foreground class — eq. 12 (symmetric) and eq. 13 (asymmetric). We read eq. 13 as the
      single fraction whose numerator is ``FP + r FN + (1 - r) FN_gamma`` (the printed
      two-fraction form counts FP twice and would not reduce to eq. 3 at ``gamma = 0``).

    ``f`` is not detached (gradients flow through it). Gradient of the CE form (000 eq. 6):
    ``dL/dz = w (p - y)`` with ``w = (1 - p_t)^g - g p_t log(p_t) (1 - p_t)^(g-1)``.

    Args:
        gamma: focusing parameter, >= 0 (001's grid: 0.5 1 1.5 2 3 4). 0 gives CE / DSC.
        rare: None (symmetric) or ``r``: one float in [0, 1] per class (asymmetric).
        form: ``"ce"`` or ``"dsc"``.
        batch_dice, smooth: DSC form only (see :class:`~study.objectives.DiceLoss`).
        ignore_index: label value excluded from the loss.

    Example::

        >>> import torch
        >>> from study.objectives import CrossEntropyLoss
        >>> logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> bool(torch.isclose(FocalLoss(0.0)(logits, target), CrossEntropyLoss()(logits, target)))
        True
    """

    def __init__(self, gamma: float, rare: Sequence[float] | torch.Tensor | None = None,
                 form: str = "ce", *, batch_dice: bool = True, smooth: float = SMOOTH,
                 ignore_index: int | None = None):
        super().__init__(0.0, gamma, rare, form, batch_dice=batch_dice, smooth=smooth,
                         ignore_index=ignore_index)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, rare={self.rare}, form={self.form!r}"
