"""Distribution-aware margin calibration (003 eq. 4, 27-29; margins of Corollary 1.1)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ._functional import class_tensor
from ._validate import check_ignore_index, check_real
from .base import Objective
from .targets import Target, prepare

_LN2 = math.log(2.0)


def class_counts(label_arrays: Iterable[np.ndarray | torch.Tensor], num_classes: int,
                 ignore_index: int | None = None) -> np.ndarray:
    """Count the voxels of each class over the whole training set, in one pass.

    This is the ``n_k`` of 003 (``n = sum_k n_k``): call it once, before training, over every
    training label map (e.g. each case's segmentation), and pass the result to
    :class:`MarginCalibrationLoss`; the counts stay fixed for the run. Voxels equal to
    ``ignore_index`` are not counted.

    Args:
        label_arrays: iterable of integer label arrays (NumPy or torch, any shape).
        num_classes: ``C``.
        ignore_index: label value to skip (None: every voxel must be in ``0..C-1``).

    Returns:
        int64 array ``[C]`` of voxel counts (absent classes have count 0).

    Raises:
        ValueError: a label outside ``0..C-1`` (naming it and the array's position), a
        non-integer array, or no labelled voxel at all.

    Example::

        >>> import numpy as np
        >>> class_counts([np.array([0, 0, 1]), np.array([[0, 2], [0, 0]])], 3).tolist()
        [5, 1, 1]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    ignore_index = check_ignore_index(ignore_index)
    counts = np.zeros(num_classes, dtype=np.int64)
    for i, arr in enumerate(label_arrays):
        a = arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else np.asarray(arr)
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"label array {i} must be integer, got dtype {a.dtype}")
        a = a.ravel().astype(np.int64, copy=False)
        if ignore_index is not None:
            a = a[a != ignore_index]
        bad = (a < 0) | (a >= num_classes)
        if bad.any():
            raise ValueError(
                f"label array {i} contains labels {np.unique(a[bad])[:5].tolist()} outside "
                f"0..{num_classes - 1} (ignore_index={ignore_index})"
            )
        counts += np.bincount(a, minlength=num_classes)
    if counts.sum() == 0:
        raise ValueError("class_counts found no labelled voxel")
    return counts


def calibration_margins(counts: Sequence[int] | np.ndarray, tau: float,
                        nu: float) -> tuple[np.ndarray, np.ndarray]:
    """Margin offsets of 003 Corollary 1.1, in float64.

    ``rho_0k = tau sqrt(n - n_k) / n_k`` (negative side, eq. 23's proportions scaled by tau),
    ``mu_k = p_k sqrt(n_k) / (nu (n - n_k) - p_k sqrt(n - n_k))`` and ``rho_k0 = mu_k rho_0k``
    (positive side), computed in the equivalent form
    ``rho_k0 = tau sqrt(n_k) / (n (nu sqrt(n - n_k) - p_k))``.

    Edge cases (each warns with ``UserWarning`` naming the classes):

    * a class absent from the training data (``n_k = 0``): the formula gives
      ``rho_0k = inf`` (an infinite loss on every voxel); both its margins are set to 0, so the
      class is trained with the plain calibrated log-loss (its scores are pushed down on every
      voxel, as any class that never occurs).
    * ``nu sqrt(n - n_k) <= p_k`` (tiny ``nu`` or a class covering nearly everything, e.g. a
      single class present): ``mu_k`` is infinite or negative; ``rho_k0`` is set to 0.

    Returns:
        ``(rho_pos, rho_neg)``: float64 arrays ``[C]`` of ``rho_k0`` and ``rho_0k``.
    """
    tau = check_real("tau", tau, low=0.0)
    nu = check_real("nu", nu, low=0.0, low_open=True)
    n_k = np.asarray(counts, dtype=np.float64)
    if n_k.ndim != 1 or n_k.size < 2:
        raise ValueError(f"class_counts must be one count per class (>= 2), got {counts!r}")
    if not np.all(np.isfinite(n_k)) or np.any(n_k < 0) or n_k.sum() <= 0:
        raise ValueError(f"class_counts must be non-negative with a positive sum, got {counts!r}")
    n = n_k.sum()
    p_k = n_k / n
    absent = n_k == 0
    present = ~absent
    rho_neg = np.zeros_like(n_k)
    rho_pos = np.zeros_like(n_k)
    rho_neg[present] = tau * np.sqrt(n - n_k[present]) / n_k[present]
    denom = nu * np.sqrt(n - n_k) - p_k
    ok = present & (denom > 0)
    rho_pos[ok] = tau * np.sqrt(n_k[ok]) / (n * denom[ok])
    if absent.any():
        warnings.warn(
            f"margin calibration: classes {np.flatnonzero(absent).tolist()} are absent from the "
            "training counts; their margin offsets are set to 0", UserWarning, stacklevel=2)
    degenerate = present & ~(denom > 0)
    if degenerate.any():
        warnings.warn(
            f"margin calibration: nu * sqrt(n - n_k) <= p_k for classes "
            f"{np.flatnonzero(degenerate).tolist()} (nu={nu}); their positive margins rho_k0 "
            "are set to 0", UserWarning, stacklevel=2)
    assert np.all(np.isfinite(rho_pos)) and np.all(np.isfinite(rho_neg))
    return rho_pos, rho_neg


def _others_max(cols: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``max_{j != k} z_j`` for every k, from prefix and suffix maxima (``3C - 4`` ops)."""
    c = len(cols)
    prefix = [cols[0]]
    for k in range(1, c - 1):
        prefix.append(torch.maximum(prefix[-1], cols[k]))
    suffix = [cols[-1]]
    for k in range(c - 2, 0, -1):
        suffix.insert(0, torch.maximum(cols[k], suffix[0]))
    # prefix[k] = max(z_0..z_k) for k <= C-2; suffix[k-1] = max(z_k..z_{C-1}) for k >= 1
    others = [suffix[0]]
    for k in range(1, c - 1):
        others.append(torch.maximum(prefix[k - 1], suffix[k]))
    others.append(prefix[c - 2])
    return others


class _ClassMargins(torch.autograd.Function):
    """``lambda_k = z_k - max_{j != k} z_j`` with a routing backward: ``dz_k += g_k`` and
    ``-g_k`` goes to the first class ``j != k`` attaining the maximum (a sub-gradient at
    ties). Avoids autograd through ``maximum``, whose backward dominates the run time."""

    @staticmethod
    def forward(ctx, z):
        cols = z.unbind(1)
        others = _others_max(cols)
        ctx.save_for_backward(z, torch.stack(others, 1))
        return z - torch.stack(others, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        z, others = ctx.saved_tensors
        c = z.shape[1]
        cols, oth, gs = z.unbind(1), others.unbind(1), g.unbind(1)
        grad = g.clone()
        out = grad.unbind(1)
        for k in range(c):
            candidates = [j for j in range(c) if j != k]
            remaining = None
            for j in candidates[:-1]:
                hit = cols[j] == oth[k]
                if remaining is not None:
                    hit &= remaining
                out[j].sub_(gs[k] * hit)      # (a bool product: torch.where is slow on CPU)
                remaining = ~hit if remaining is None else remaining & ~hit
            last = candidates[-1]
            out[last].sub_(gs[k] if remaining is None else gs[k] * remaining)
        return grad


def class_margins(z: torch.Tensor) -> torch.Tensor:
    """003 eq. 4: ``lambda_ik = s_ik - max_{j != k} s_ij`` for every class (dim 1).

    The maximum over the other classes comes from prefix and suffix maxima over the class axis
    (element-wise ops only: fast for the few classes of segmentation). Ties give 0; the
    gradient routes each ``-dL/dlambda_k`` to the first other class attaining the maximum.
    """
    return _ClassMargins.apply(z)


def _softplus(t: torch.Tensor) -> torch.Tensor:
    """``ln(1 + e^t)`` without ``F.softplus``'s linear cut-off above ``t = 20`` (exact)."""
    return torch.logaddexp(t, torch.zeros((), dtype=t.dtype, device=t.device))


class _BinaryCalibratedLogLoss(torch.autograd.Function):
    """Eq. 27-29 for C = 2 with its analytic gradient (the common binary case, ~2x CE on CPU).

    With ``d = s_1 - s_0``: ``lambda_1 = d = -lambda_0``. A voxel labelled 1 costs
    ``phi(rho_10 - d) + phi(rho_00 - d)``, one labelled 0 ``phi(rho_00 + d) + phi(rho_01 + d)``,
    ``phi(t) = log2(1 + 2^t)``; so both terms are functions of ``u = -+d``.
    """

    @staticmethod
    def forward(ctx, z, labels, valid, rho_pos, rho_neg, n_valid):
        d = z[:, 1:2] - z[:, 0:1]
        y1 = (labels == 1).to(z.dtype)
        sign = 1.0 - 2.0 * y1                      # -1 for label 1, +1 for label 0
        u = d * sign

        def pick(when_1: float, when_0: float) -> torch.Tensor:
            return y1 * (when_1 - when_0) + when_0

        t1 = (u + pick(rho_pos[1], rho_pos[0])).mul_(_LN2)
        t2 = (u + pick(rho_neg[0], rho_neg[1])).mul_(_LN2)
        per = _softplus(t1) + _softplus(t2)
        if valid is not None:
            per = per * valid
        ctx.save_for_backward(t1, t2, sign, valid, n_valid)
        return per.sum() / (_LN2 * n_valid)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        t1, t2, sign, valid, n_valid = ctx.saved_tensors
        du = torch.sigmoid(t1) + torch.sigmoid(t2)
        dd = du * sign * (grad_out / n_valid)
        if valid is not None:
            dd = dd * valid
        return torch.cat([-dd, dd], 1), None, None, None, None, None


def calibrated_log_loss(z: torch.Tensor, tgt: Target, rho_pos: tuple[float, ...],
                        rho_neg: tuple[float, ...]) -> torch.Tensor:
    """003 eq. 27 with the log-losses of eq. 28-29 (:class:`MarginCalibrationLoss`'s value)
    for float logits ``z [N, C, *spatial]`` and a hard target ``tgt`` (:func:`prepare`),
    margin offsets ``rho_pos`` (``rho_k0``) and ``rho_neg`` (``rho_0k``) per class: the log-losses
    summed over classes, averaged over the valid voxels. Any ``C >= 2``, differentiated by
    autograd (the loss's own ``C = 2`` path is a fused kernel with the same value and
    gradient)."""
    c = z.shape[1]
    view = (1, c) + (1,) * (z.ndim - 2)
    rp = class_tensor(rho_pos, z.dtype, z.device).view(view)
    rn = class_tensor(rho_neg, z.dtype, z.device).view(view)
    is_true = (torch.arange(c, device=z.device).view(view) == tgt.labels).to(z.dtype)
    # t_k = rho_k0 - lambda_k (labelled class, eq. 28) or lambda_k + rho_0k (eq. 29), in
    # units of ln 2 so that log2(1 + 2^t) = softplus(t ln 2) / ln 2.
    sign = (1.0 - 2.0 * is_true) * _LN2
    offset = torch.addcmul(rn, is_true, rp - rn) * _LN2
    t = torch.addcmul(offset, class_margins(z), sign)
    per = _softplus(t).sum(1, keepdim=True)
    if not tgt.all_valid:
        per = per * tgt.valid
    return per.sum() / (_LN2 * tgt.n_valid.clamp_min(1.0))


class MarginCalibrationLoss(Objective):
    """Distribution-aware margin calibration loss, 003 eq. 27 with the log-losses of eq. 28-29.

    ``L = (1/n) sum_i [ log2(1 + 2^(-lambda_{i,y_i} + rho_{y_i 0}))
                        + sum_{k != y_i} log2(1 + 2^(lambda_ik + rho_0k)) ]``

    over the ``n`` valid voxels of the batch, with ``lambda`` of eq. 4 and the margin offsets of
    Corollary 1.1 (:func:`calibration_margins`) from the **training-set** class counts
    (:func:`class_counts`, computed once). The positive term belongs to each voxel's labelled
    class (targets come from the labels, never from the sign of a margin). Normalisation is the
    paper's ``1/n``; the authors' code instead weights the positive term by ``C`` and divides
    by ``n C`` (BCE with ``pos_weight=C``) and uses natural logs — not reproduced here.

    Args:
        tau: scale of the margin offsets, >= 0 (003's grid: 1 10).
        nu: the hyper-parameter ``v > 0`` of Corollary 1.1 (grid: 10 1 0.1 0.01).
        class_counts: ``n_k`` per class over the whole training set.
        ignore_index: label value excluded from the loss.

    Example::

        >>> import torch
        >>> loss = MarginCalibrationLoss(10.0, 1.0, class_counts=[990_000, 10_000])
        >>> logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
        >>> value = loss(logits, target)
    """

    def __init__(self, tau: float, nu: float, class_counts: Sequence[int] | np.ndarray,
                 ignore_index: int | None = None):
        super().__init__()
        self.tau = check_real("tau", tau, low=0.0)
        self.nu = check_real("nu", nu, low=0.0, low_open=True)
        rho_pos, rho_neg = calibration_margins(class_counts, self.tau, self.nu)
        self.class_counts = tuple(int(v) for v in np.asarray(class_counts))
        self.rho_pos = tuple(rho_pos.tolist())
        self.rho_neg = tuple(rho_neg.tolist())
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z, tgt = prepare(logits, target, self.ignore_index)
        if not tgt.hard:
            raise ValueError("MarginCalibrationLoss needs an integer target [N, *spatial], "
                             f"got a floating target of dtype {target.dtype}")
        c = z.shape[1]
        if len(self.rho_pos) != c:
            raise ValueError(f"class_counts has {len(self.rho_pos)} entries but the logits have "
                             f"{c} classes: class_counts={list(self.class_counts)}")
        if c == 2:
            valid = None if tgt.all_valid else tgt.valid
            return _BinaryCalibratedLogLoss.apply(z, tgt.labels, valid, self.rho_pos,
                                                  self.rho_neg, tgt.n_valid.clamp_min(1.0))
        return calibrated_log_loss(z, tgt, self.rho_pos, self.rho_neg)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, nu={self.nu}, class_counts={self.class_counts}"
