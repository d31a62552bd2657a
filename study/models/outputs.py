"""Matching a model's output to its targets: centre crop for valid-convolution models
(DeepMedic's output is the centre of its input) and deep supervision (U-Net).

Targets travel through a training step at the model's *input* size, aligned voxel by voxel
with the input, so that every batch regularizer (flips, mixup, adversarial perturbation) can
treat input and target alike; voxels outside the output carry an ignore label. The loss is
then computed on the central output-sized part of the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def centre_crop(target: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """The central ``spatial`` part of the last ``len(spatial)`` axes of ``target`` (a hard
    target ``[N, *S]`` or a soft one ``[N, C, *S]``); ``target`` itself if it already fits."""
    spatial = tuple(int(s) for s in spatial)
    have = tuple(target.shape[-len(spatial):])
    if have == spatial:
        return target
    if any(h < s or (h - s) % 2 for h, s in zip(have, spatial, strict=True)):
        raise ValueError(f"centre_crop: cannot take a centred {spatial} out of {have} "
                         "(each side must be at least as large, with an even difference)")
    index = tuple(slice((h - s) // 2, (h - s) // 2 + s)
                  for h, s in zip(have, spatial, strict=True))
    return target[(Ellipsis,) + index]


def deep_supervision_weights(scales: int) -> list[float]:
    """nnU-Net's weights for ``scales`` outputs (full resolution first): ``1/2**i``, the
    coarsest set to 0 when there are several, normalised to sum 1."""
    weights = [0.5**i for i in range(scales)]
    if scales > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def _downsample(target: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Nearest (strided) downsampling of the last axes of ``target`` to ``spatial``."""
    have = tuple(target.shape[-len(spatial):])
    steps = []
    for h, s in zip(have, spatial, strict=True):
        if h % s:
            raise ValueError(f"deep supervision: output {tuple(spatial)} does not divide the "
                             f"target {have}")
        steps.append(h // s)
    return target[(Ellipsis,) + tuple(slice(None, None, k) for k in steps)]


class OutputLoss(nn.Module):
    """``loss`` applied to a model's output: the target is centre-cropped to the logits; a list
    of logits (deep supervision, full resolution first) gives the weighted sum over scales
    (:func:`deep_supervision_weights`) against downsampled targets.

    Example::

        >>> import torch
        >>> from study.objectives import CrossEntropyLoss
        >>> loss = OutputLoss(CrossEntropyLoss())
        >>> logits, target = torch.randn(2, 2, 4, 4, 4), torch.randint(0, 2, (2, 8, 8, 8))
        >>> bool(loss(logits, target) == CrossEntropyLoss()(logits, target[:, 2:6, 2:6, 2:6]))
        True
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor],
                target: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):
            return self.loss(logits, centre_crop(target, logits.shape[2:]))
        target = centre_crop(target, logits[0].shape[2:])
        # the full-resolution weight is never 0 (deep_supervision_weights)
        terms = [weight * self.loss(scale, _downsample(target, scale.shape[2:]))
                 for weight, scale in zip(deep_supervision_weights(len(logits)), logits,
                                          strict=True)
                 if weight != 0.0]
        return sum(terms[1:], terms[0])


class _MainOutput(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if isinstance(out, torch.Tensor) else out[0]


def main_output(model: nn.Module) -> nn.Module:
    """``model`` seen through its full-resolution logits only (same parameters and buffers);
    for code that expects one logits tensor, e.g. an adversarial direction search."""
    return model if getattr(model, "deep_supervision", False) is False else _MainOutput(model)
