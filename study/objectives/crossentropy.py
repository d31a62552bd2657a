"""Cross-entropy (001 eq. 1) with optional class weights (re-weighted CE, 000 eq. 5) and the
inverse-frequency class weights of the re-weighted CE baseline (004 Table 2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import _functional as F
from ._validate import as_class_vector, check_ignore_index, check_length
from .base import Objective
from .targets import prepare


def inverse_frequency_weights(counts: Sequence[int] | np.ndarray) -> list[float]:
    """Class weights ``w_k = n / (K n_k)`` from the training set's class voxel counts ``n_k``
    (``n = sum_k n_k``, ``K`` the classes present; an absent class gets 0, it has no voxel
    to weigh).

    The re-weighted CE of 004 Table 2 ("reweight-ce") and 001 §II-1 (weights "based on
    sample frequency"): over the training set every present class contributes the same total
    weight ``n / K``, so the expected loss is the mean over classes of each class's mean CE;
    the voxel-weighted mean of ``w`` over the training set is 1, and a set with equally
    frequent classes gets ``w = 1`` (plain CE). 004 names the baseline without its weights;
    inverse frequency is the common choice its 001 §II-1 description fits.

    Raises ``ValueError`` for negative or non-integer counts, or when no class has a voxel.
    """
    values = np.asarray(counts, dtype=float)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) \
            or np.any(values < 0) or np.any(values != np.round(values)):
        raise ValueError(f"counts: expected one non-negative voxel count per class, got "
                         f"{np.asarray(counts).tolist()!r}")
    present = values > 0
    if not present.any():
        raise ValueError("counts: no class has a voxel; the training labels are empty")
    total = values.sum()
    weights = np.zeros_like(values)
    weights[present] = total / (present.sum() * values[present])
    return weights.tolist()


class CrossEntropyLoss(Objective):
    """Cross-entropy, 001 eq. 1: ``L = -(1/N) sum_v w_{y_v} log p_{v, y_v}``.

    The mean runs over the ``N`` non-ignored voxels. With class weights ``w`` this is the
    re-weighted CE baseline, whose gradient w.r.t. the logits is ``w_i (p_i - y_i) / N``
    (000 eq. 5). Note the normalisation: by the voxel count, *not* by the sum of weights as
    ``torch.nn.functional.cross_entropy(weight=...)`` does, so a weight really scales a voxel's
    contribution (and ``w = 1`` gives plain CE).

    Args:
        weight: one non-negative float per class, or None (all 1).
        ignore_index: label value excluded from the loss and from ``N`` (None: no ignore).

    Example::

        >>> import torch
        >>> logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
        >>> loss = CrossEntropyLoss()(logits, target)
        >>> bool(torch.isclose(loss, torch.nn.functional.cross_entropy(logits, target)))
        True
    """

    def __init__(self, weight: Sequence[float] | torch.Tensor | None = None,
                 ignore_index: int | None = None):
        super().__init__()
        self.weight = as_class_vector("weight", weight, low=0.0)
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z, tgt = prepare(logits, target, self.ignore_index)
        weight = None
        if self.weight is not None:
            check_length("weight", self.weight, z.shape[1])
            weight = F.class_tensor(self.weight, z.dtype, z.device)
        return F.cross_entropy(z, tgt, weight=weight)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, ignore_index={self.ignore_index}"
