"""Shared engine of the large-margin, focal and combined losses (001 eq. 4-13, 22)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _functional as F
from ._validate import as_class_vector, check_form, check_ignore_index, check_length, check_real
from .base import Objective
from .region import dice_eq3
from .targets import prepare


class MarginFocalBase(Objective):
    """Margin ``m`` on the rare classes' true logit, focal ``gamma`` on the non-rare ones.

    ``rare=None`` is the symmetric technique: margin on every class (r = 1) and focal
    attenuation of every class (r = 0 in eq. 11). Subclasses fix which of the two is used.
    """

    def __init__(self, m: float, gamma: float, rare: Sequence[float] | torch.Tensor | None,
                 form: str, *, batch_dice: bool, smooth: float, ignore_index: int | None):
        super().__init__()
        self.m = check_real("m", m, low=0.0)
        self.gamma = check_real("gamma", gamma, low=0.0)
        self.rare = as_class_vector("rare", rare, low=0.0, high=1.0)
        self.form = check_form(form)
        if not isinstance(batch_dice, bool):
            raise TypeError(f"batch_dice must be a bool, got {batch_dice!r}")
        self.batch_dice = batch_dice
        self.smooth = check_real("smooth", smooth, low=0.0)
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z, tgt = prepare(logits, target, self.ignore_index)
        c = z.shape[1]
        rare = None
        if self.rare is not None:
            check_length("rare", self.rare, c)
            rare = F.class_tensor(self.rare, z.dtype, z.device)
        shift = None
        if self.m != 0.0:
            shift = (torch.full((c,), self.m, dtype=z.dtype, device=z.device) if rare is None
                     else self.m * rare)
        if self.form == "ce":
            return F.cross_entropy(z, tgt, shift=shift, gamma=self.gamma, focal_rare=rare)
        tp, psum, ysum, fn = F.region_stats(z, tgt, shift=shift, gamma=self.gamma,
                                            focal_rare=rare, batch=self.batch_dice)
        return F.foreground_mean(dice_eq3(tp, psum, ysum, fn, self.smooth))

    def extra_repr(self) -> str:
        return (f"m={self.m}, gamma={self.gamma}, rare={self.rare}, form={self.form!r}, "
                f"ignore_index={self.ignore_index}")


