"""Base class of every loss and the sum used to compose them (e.g. CE + DSC)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._validate import check_real


class Objective(nn.Module):
    """A segmentation loss: ``forward(logits [N, C, *spatial], target) -> scalar``.

    ``target`` is an integer tensor ``[N, *spatial]`` with values in ``0..C-1`` (or the
    loss's ``ignore_index``), or a soft target ``[N, C, *spatial]`` (see
    ``study.objectives.targets``).
    ``forward`` is pure: it never changes the module. Objectives add up::

        >>> from study.objectives import CrossEntropyLoss, DiceLoss
        >>> loss = CrossEntropyLoss() + DiceLoss()      # the U-Net baseline, CE + DSC
    """

    def __add__(self, other: Objective) -> SumLoss:
        if not isinstance(other, Objective):
            return NotImplemented
        return SumLoss([self, other])


class SumLoss(Objective):
    """Weighted sum of objectives on the same ``(logits, target)``: ``sum_i w_i L_i``.

    Used for the U-Net losses of 001 (§V): CE + DSC for the baseline, focal CE + focal DSC
    (eq. 11 + eq. 13) for asymmetric focal, margin CE + margin DSC (eq. 6 + eq. 9).

    Args:
        terms: the objectives to add (at least one). Nested ``SumLoss`` terms are flattened.
        weights: one non-negative float per term (default: all 1).

    Example::

        >>> import torch
        >>> from study.objectives import SumLoss, FocalLoss
        >>> loss = SumLoss([FocalLoss(2.0, rare=[0, 1], form="ce"),
        ...                 FocalLoss(2.0, rare=[0, 1], form="dsc")])
        >>> logits, target = torch.randn(2, 2, 4, 4, 4), torch.randint(0, 2, (2, 4, 4, 4))
        >>> value = loss(logits, target)
    """

    def __init__(self, terms: Sequence[Objective], weights: Sequence[float] | None = None):
        super().__init__()
        terms = list(terms)
        if not terms:
            raise ValueError("terms must contain at least one objective, got []")
        if weights is None:
            weights = [1.0] * len(terms)
        weights = [check_real(f"weights[{i}]", w, low=0.0) for i, w in enumerate(weights)]
        if len(weights) != len(terms):
            raise ValueError(f"weights has {len(weights)} entries for {len(terms)} terms")
        flat_terms: list[nn.Module] = []
        flat_weights: list[float] = []
        for term, w in zip(terms, weights, strict=True):
            if not isinstance(term, nn.Module):
                raise TypeError(f"terms must be nn.Module objectives, got {type(term).__name__}")
            if isinstance(term, SumLoss):
                flat_terms.extend(term.terms)
                flat_weights.extend(w * v for v in term.weights)
            else:
                flat_terms.append(term)
                flat_weights.append(w)
        self.terms: nn.ModuleList = nn.ModuleList(flat_terms)
        self.weights: tuple[float, ...] = tuple(flat_weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values: list[torch.Tensor] = []
        for term, w in zip(self.terms, self.weights, strict=True):
            value = term(logits, target)
            values.append(value if w == 1.0 else w * value)
        return sum(values[1:], values[0])  # ``terms`` is never empty (``__init__``)

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
