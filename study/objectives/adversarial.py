"""Adversarial training, symmetric and asymmetric (001 eq. 14-16)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._batch import check_batch, randn_like, sample_dims
from ._functional import class_tensor
from ._validate import (
    as_class_vector,
    check_ignore_index,
    check_labels,
    check_length,
    check_real,
)


def l2_normalize(d: torch.Tensor) -> torch.Tensor:
    """Per-sample unit L2 direction ``d_b / ||d_b||_2`` over all channels and voxels.

    Scaled by the per-sample *absolute* maximum first (so tiny or huge gradients neither
    underflow nor overflow; the reference U-Net code divides by the signed maximum, which flips
    an all-negative direction — not reproduced). A zero sample stays zero.
    """
    dims = sample_dims(d)
    tiny = torch.finfo(d.dtype).tiny
    d = d / d.abs().amax(dim=dims, keepdim=True).clamp_min(tiny)
    norm = d.square().sum(dim=dims, keepdim=True).sqrt()
    return d / norm.clamp_min(tiny)


class AdversarialPerturbation:
    """Adversarial samples of 001 eq. 14-16: ``x + l d_adv / ||d_adv||_2`` per sample.

    The direction ``d_adv = argmax_{||d|| < eps} L(x + d, y ⊙ r)|_{y.r > 0}`` (eq. 16; eq. 15
    for the symmetric ``rare=None``) is found with one gradient step from a random start:
    ``d0 = eps u / ||u||`` with ``u`` standard normal (``eps`` is the *range* of the search),
    ``g = dL/dd`` at ``d0`` with ``L`` the cross-entropy restricted to rare voxels and weighted by
    ``r`` (``-(1/N) sum_v r_{y_v} log p_{v, y_v}``), and the returned perturbation is
    ``l g / ||g||_2`` per sample (``l`` is its L2 *magnitude* over the whole patch, all
    channels). Asymmetric vs symmetric changes only how the direction is found; the
    perturbation covers the whole patch and the adversarial sample is trained on all voxels with
    the unmodified labels. A sample without rare voxels (zero gradient) is returned unperturbed.

    The direction step runs the model in its current mode but leaves its parameters, their
    ``.grad`` and its buffers (BatchNorm running statistics) unchanged.

    Cost: one extra forward and backward pass (w.r.t. the input only) per batch, on top of the
    forward/backward of the adversarial batch itself (see :mod:`~study.objectives.schedule`).

    Args:
        eps: range of the search (random-start norm), >= 0 (001: 1e-6 1e-5 1e-4).
        l: L2 norm of each sample's perturbation, >= 0 (001: 2.5 5 10 15 20; KiTS 50 100).
        rare: None (symmetric, direction from every voxel) or one float in [0, 1] per class.
        ignore_index: label value excluded from the direction loss (the voxel is still
            perturbed).

    Example::

        >>> import torch
        >>> net = torch.nn.Conv3d(1, 2, 1)
        >>> x, y = torch.randn(2, 1, 4, 4, 4), torch.randint(0, 2, (2, 4, 4, 4))
        >>> adv = AdversarialPerturbation(eps=1e-5, l=10.0, rare=[0, 1])
        >>> x_adv, y_adv = adv(net, x, y)
        >>> [round(float(n), 3) for n in (x_adv - x).flatten(1).norm(dim=1)]  # doctest: +SKIP
        [10.0, 10.0]
    """

    def __init__(self, eps: float, l: float,  # noqa: E741 (the paper's name)
                 rare: Sequence[float] | torch.Tensor | None = None, *,
                 ignore_index: int | None = None):
        self.eps = check_real("eps", eps, low=0.0)
        self.l = check_real("l", l, low=0.0)
        self.rare = as_class_vector("rare", rare, low=0.0, high=1.0)
        self.ignore_index = check_ignore_index(ignore_index)

    def direction_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``L(x + d, y ⊙ r)|_{y.r > 0}``: r-weighted CE summed over voxels, over valid voxels."""
        c = logits.shape[1]
        labels = target
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid = target != self.ignore_index
            labels = target.masked_fill(~valid, 0)
        logp = torch.log_softmax(logits.float(), dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
        if self.rare is not None:
            check_length("rare", self.rare, c)
            r = class_tensor(self.rare, logp.dtype, logp.device)
            w = r[labels] * valid
        else:
            w = valid.to(logp.dtype)
        return -(w * logp).sum() / valid.sum().clamp_min(1)

    def perturbation(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """The perturbation ``l d_adv / ||d_adv||`` (same shape as ``x``, no gradient)."""
        check_batch(x, target)
        if self.l == 0.0:
            return torch.zeros_like(x)
        buffers = [b.detach().clone() for b in model.buffers()]
        try:
            d = (self.eps * l2_normalize(randn_like(x, generator))).requires_grad_(True)
            logits = model(x.detach() + d)
            check_labels(target, logits.shape[1], self.ignore_index)
            loss = self.direction_loss(logits, target)
            (g,) = torch.autograd.grad(loss, d)
        finally:
            with torch.no_grad():
                for b, saved in zip(model.buffers(), buffers, strict=True):
                    b.copy_(saved)
        return (self.l * l2_normalize(g.detach())).to(x.dtype)

    def __call__(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the adversarial batch ``(x + perturbation, target)`` of eq. 14."""
        return x.detach() + self.perturbation(model, x, target, generator), target

    def __repr__(self) -> str:
        return f"AdversarialPerturbation(eps={self.eps}, l={self.l}, rare={self.rare})"
