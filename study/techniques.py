"""Technique id + hyperparameters -> the training objective a trial optimises.

The U-Net's baseline objective is CE + soft DSC (paper 001 §V, KiTS); each loss technique
replaces both terms by its CE and DSC forms (001 eq. 4-13). ``rare`` is the dataset's r vector
for asymmetric techniques; symmetric ones pass ``rare=None`` (001 §IV).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

import study.objectives as obj


def _vanilla(hp: dict, rare: Sequence[float]) -> nn.Module:
    return obj.CrossEntropyLoss() + obj.DiceLoss()


def _ce_and_dsc_forms(
    loss: type[nn.Module], hp_name: str, asymmetric: bool
) -> Callable[[dict, Sequence[float]], nn.Module]:
    """``loss(form="ce") + loss(form="dsc")`` with the hyperparameter ``hp[hp_name]``."""

    def build(hp: dict, rare: Sequence[float]) -> nn.Module:
        r = list(rare) if asymmetric else None
        return loss(hp[hp_name], rare=r, form="ce") + loss(hp[hp_name], rare=r, form="dsc")

    return build


TECHNIQUES: dict[str, Callable[[dict, Sequence[float]], nn.Module]] = {
    "vanilla": _vanilla,
    "focal": _ce_and_dsc_forms(obj.FocalLoss, "gamma", asymmetric=False),
    "asym_focal": _ce_and_dsc_forms(obj.FocalLoss, "gamma", asymmetric=True),
    "large_margin": _ce_and_dsc_forms(obj.LargeMarginLoss, "m", asymmetric=False),
    "asym_large_margin": _ce_and_dsc_forms(obj.LargeMarginLoss, "m", asymmetric=True),
}


def build_objective(technique: str, hp: dict, rare: Sequence[float]) -> nn.Module:
    """The loss module for ``technique`` with hyperparameters ``hp`` and rare-class vector r."""
    if technique not in TECHNIQUES:
        raise ValueError(f"technique: unknown {technique!r} (known: {', '.join(TECHNIQUES)})")
    return TECHNIQUES[technique](hp, rare)
