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


def _focal(asymmetric: bool) -> Callable[[dict, Sequence[float]], nn.Module]:
    def build(hp: dict, rare: Sequence[float]) -> nn.Module:
        r = list(rare) if asymmetric else None
        return (obj.FocalLoss(hp["gamma"], rare=r, form="ce")
                + obj.FocalLoss(hp["gamma"], rare=r, form="dsc"))

    return build


def _large_margin(asymmetric: bool) -> Callable[[dict, Sequence[float]], nn.Module]:
    def build(hp: dict, rare: Sequence[float]) -> nn.Module:
        r = list(rare) if asymmetric else None
        return (obj.LargeMarginLoss(hp["m"], rare=r, form="ce")
                + obj.LargeMarginLoss(hp["m"], rare=r, form="dsc"))

    return build


TECHNIQUES: dict[str, Callable[[dict, Sequence[float]], nn.Module]] = {
    "vanilla": _vanilla,
    "focal": _focal(asymmetric=False),
    "asym_focal": _focal(asymmetric=True),
    "large_margin": _large_margin(asymmetric=False),
    "asym_large_margin": _large_margin(asymmetric=True),
}


def build_objective(technique: str, hp: dict, rare: Sequence[float]) -> nn.Module:
    """The loss module for ``technique`` with hyperparameters ``hp`` and rare-class vector r."""
    if technique not in TECHNIQUES:
        raise ValueError(f"technique: unknown {technique!r} (known: {', '.join(TECHNIQUES)})")
    return TECHNIQUES[technique](hp, rare)
