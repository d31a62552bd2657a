"""Mixup, symmetric (001 eq. 17-18) and asymmetric with the hard-label rule (eq. 19)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from study.catalog import MIXUP_LAMBDAS

from ._batch import binary_rare, check_batch, per_sample_view
from ._functional import class_tensor, to_device
from ._validate import check_choice, check_ignore_index, check_labels, check_real

IGNORE_INDEX = -1
"""Label that :class:`AsymmetricMixup` writes for voxels eq. 19 maps to 0 (not trained on)."""

LAMBDA_FORMS = MIXUP_LAMBDAS
"""How :class:`AsymmetricMixup` draws lambda: ``"paper"`` ``Beta(alpha, alpha)`` (eq. 18 as
written), ``"code"`` ``Beta(alpha, alpha) (1 - m)`` (the authors' reference implementation)."""


def partner_indices(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random derangement of ``0..n-1`` (no sample is paired with itself when ``n >= 2``).

    Built as a random cyclic order: sample ``perm[i]`` is paired with ``perm[i + 1]``. For
    ``n = 2`` this is the reversal the reference U-Net uses; for ``n = 1`` the sample is paired
    with itself (mixup then returns the sample unchanged).
    """
    perm = torch.randperm(n, generator=generator)
    partner = torch.empty_like(perm)
    partner[perm] = perm.roll(-1)
    return partner


def beta_draws(alpha: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` float64 draws of ``lambda ~ Beta(alpha, alpha)``, reproducible from ``generator``
    (or torch's global RNG)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=n))


def mix_inputs(x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Eq. 18: ``x~_i = lambda_i x_i + (1 - lambda_i) x_k`` with ``k = partner[i]``."""
    lam = per_sample_view(to_device(lam.to(x.dtype), x.device), x)
    return lam * x + (1 - lam) * x[to_device(partner, x.device)]


def asymmetric_labels(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor, m: float,
                      rare: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Eq. 19's hard-label rule, voxel-wise, for labels ``a`` (weight ``lam``) and ``b``.

    * ``a == b``: that label;
    * ``a`` rare, ``b`` not, and ``lam > m``: ``a``;
    * ``b`` rare, ``a`` not, and ``1 - lam > m``: ``b``;
    * otherwise (rare component too weak, two different rare classes, two different non-rare
      classes, or either label ignored): ``ignore_index``.

    ``rare`` is a 0/1 bool tensor ``[C]``; ``lam`` broadcasts against ``a``.
    """
    a_ign, b_ign = a == ignore_index, b == ignore_index
    a_safe, b_safe = a.masked_fill(a_ign, 0), b.masked_fill(b_ign, 0)
    ra, rb = rare[a_safe], rare[b_safe]
    take_a = (a == b) | (ra & ~rb & (lam > m))
    take_b = rb & ~ra & ((1 - lam) > m)
    out = torch.where(take_a, a, torch.where(take_b, b, torch.full_like(a, ignore_index)))
    return out.masked_fill(a_ign | b_ign, ignore_index)


class Mixup:
    """Symmetric (original) mixup, 001 eq. 17-18: soft labels, nothing ignored.

    For each sample ``i`` a partner ``k`` (:func:`partner_indices`) and
    ``lambda_i ~ Beta(alpha, alpha)`` are drawn; returns ``x~ = lambda x_i + (1 - lambda) x_k``
    and the soft target ``y~ = lambda y_i + (1 - lambda) y_k`` as ``[N, C, *spatial]`` floats,
    which every loss of this package accepts (a voxel ignored in either sample gets an all-zero
    row and is excluded from the loss). Eq. 17 adds ``L(x~, y~)`` to the clean loss; see
    :mod:`~study.objectives.schedule`.

    Args:
        alpha: Beta parameter, > 0 (001 tables, "mixup lambda (symmetric)": 0.2). Disable mixup
            by not using it (``alpha = 0`` is not a distribution).
        num_classes: ``C`` of the soft target.
        ignore_index: label value in the input targets to exclude.

    Example::

        >>> import torch
        >>> x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 2, (4, 8, 8))
        >>> x_mix, y_soft = Mixup(0.2, num_classes=2)(None, x, y)
        >>> bool(torch.allclose(y_soft.sum(1), torch.ones(4, 8, 8, dtype=y_soft.dtype)))
        True
    """

    def __init__(self, alpha: float, num_classes: int, *, ignore_index: int | None = None):
        self.alpha = check_real("alpha", alpha, low=0.0, low_open=True)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = check_ignore_index(ignore_index)

    def __call__(self, model: nn.Module | None, x: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x~, y~)``; ``model`` is unused (uniform regularizer signature)."""
        check_batch(x, target)
        check_labels(target, self.num_classes, self.ignore_index)
        partner = partner_indices(x.shape[0], generator)
        lam = beta_draws(self.alpha, x.shape[0], generator)
        x_mix = mix_inputs(x.detach(), partner, lam)
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        valid = torch.ones_like(target, dtype=torch.bool)
        labels = target
        if self.ignore_index is not None:
            valid = target != self.ignore_index
            labels = target.masked_fill(~valid, 0)
        onehot = torch.nn.functional.one_hot(labels.long(), self.num_classes).movedim(-1, 1)
        onehot = onehot.to(dtype) * valid.unsqueeze(1)
        p = to_device(partner, x.device)
        lam_v = per_sample_view(to_device(lam.to(dtype), x.device), onehot)
        soft = lam_v * onehot + (1 - lam_v) * onehot[p]
        both = (valid & valid[p]).unsqueeze(1)
        return x_mix, soft * both

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha}, num_classes={self.num_classes})"


class AsymmetricMixup:
    """Asymmetric mixup, 001 eq. 17-19: mixed inputs, hard labels biased to the rare class.

    Inputs are mixed as eq. 18 with one ``lambda`` per pair (:meth:`draw_lambda`); labels
    follow eq. 19 (:func:`asymmetric_labels`): a voxel mixing a rare class with a non-rare one
    becomes the rare class when the rare component's weight exceeds ``m``, and voxels eq. 19
    maps to 0 are set to ``ignore_index`` ("we do not update the model using training samples
    with y^ = 0"): the loss must be built with the same ``ignore_index``.

    ``lam`` chooses the distribution of ``lambda``:

    * ``"paper"``: ``lambda ~ Beta(alpha, alpha)``, eq. 18-19 as written;
    * ``"code"``: ``lambda ~ Beta(alpha, alpha) (1 - m)``, the authors' reference
      implementation: ``lambda`` lies in ``[0, 1 - m]``, so the partner ``k`` always weighs at
      least ``m`` and its rare label always wins, while the sample's own rare label wins only
      when ``lambda > m``.

    Args:
        alpha: Beta parameter, > 0 (001 tables, "mixup lambda (asymmetric)": 1).
        m: margin of eq. 19 in [0, 1) (001 grid: 0.1 0.15 0.2 0.25 0.3 0.4 0.8).
        rare: one 0 or 1 per class (eq. 19 tests ``y . r == 1``; continuous r is rejected).
        lam: ``"paper"`` or ``"code"`` (above).
        ignore_index: label written for excluded voxels and read as "ignored" in the input.

    Example::

        >>> import torch
        >>> from study.objectives import CrossEntropyLoss
        >>> mix = AsymmetricMixup(alpha=1.0, m=0.2, rare=[0, 1])
        >>> x, y = torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> x_mix, y_mix = mix(None, x, y)
        >>> loss = CrossEntropyLoss(ignore_index=mix.ignore_index)
    """

    def __init__(self, alpha: float, m: float, rare: Sequence[float] | torch.Tensor, *,
                 lam: str = "paper", ignore_index: int = IGNORE_INDEX):
        self.alpha = check_real("alpha", alpha, low=0.0, low_open=True)
        self.m = check_real("m", m, low=0.0)
        if self.m >= 1.0:
            raise ValueError(f"m must be < 1 (no component could ever win), got {self.m!r}")
        self.rare = binary_rare(rare)
        self.lam = check_choice("lam", lam, LAMBDA_FORMS)
        if check_ignore_index(ignore_index) is None:
            raise ValueError("ignore_index must be an int for AsymmetricMixup, got None")
        if 0 <= ignore_index < len(self.rare):
            raise ValueError(f"ignore_index={ignore_index} is a class label "
                             f"(0..{len(self.rare) - 1}); use a value outside the classes")
        self.ignore_index = ignore_index

    def draw_lambda(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` float64 draws of ``lambda`` in the form ``lam``."""
        lam = beta_draws(self.alpha, n, generator)
        return lam * (1.0 - self.m) if self.lam == "code" else lam

    def __call__(self, model: nn.Module | None, x: torch.Tensor, target: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x~, y^)``: mixed inputs and int64 eq.-19 labels; ``model`` is unused."""
        check_batch(x, target)
        check_labels(target, len(self.rare), self.ignore_index)
        partner = partner_indices(x.shape[0], generator)
        lam = self.draw_lambda(x.shape[0], generator)
        x_mix = mix_inputs(x.detach(), partner, lam)
        rare = class_tensor(self.rare, torch.float32, x.device) > 0.5
        a = target.long()
        b = a[to_device(partner, x.device)]
        lam_v = per_sample_view(to_device(lam, x.device), a)
        return x_mix, asymmetric_labels(a, b, lam_v, self.m, rare, self.ignore_index)

    def __repr__(self) -> str:
        return (f"AsymmetricMixup(alpha={self.alpha}, m={self.m}, rare={self.rare}, "
                f"lam={self.lam!r})")

