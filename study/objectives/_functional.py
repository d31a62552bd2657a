"""Tensor kernels shared by the loss modules (pure functions, no validation).

All functions take float logits ``z`` ``[N, C, *spatial]`` and a prepared
:class:`~study.objectives.targets.Target`; per-class vectors are float tensors ``[C]`` on the
logits' device. Exact log-softmax forms are used throughout (never ``log(p + eps)``).
"""

from __future__ import annotations

import torch

from .targets import Target


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small tensor made on the host to ``device`` without waiting for the device's
    queued kernels (a host-to-device copy from pageable memory is staged before it returns,
    so ``t`` may be dropped at once)."""
    return t.to(device, non_blocking=True)


def class_tensor(values: tuple[float, ...], dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """A per-class vector (``rare``, ``weight``, margins) as a ``[C]`` tensor on ``device``."""
    return to_device(torch.tensor(values, dtype=dtype), device)


def class_view(vec: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-class vector ``[C]`` to broadcast against ``[N, C, *spatial]``."""
    return vec.view(1, -1, *([1] * (ndim - 2)))


def per_voxel(vec: torch.Tensor, tgt: Target) -> torch.Tensor:
    """Look up a per-class vector at each voxel's label: ``vec[y]`` as ``[N, 1, *spatial]``."""
    return vec[tgt.labels]


def margin_logits(z: torch.Tensor, tgt: Target, shift: torch.Tensor | None) -> torch.Tensor:
    """001 eq. 5/7: ``z_j - y_j r_j m`` (``shift = m * r``, shape ``[C]``); soft ``y`` allowed."""
    if shift is None:
        return z
    if tgt.hard:
        return z.scatter_add(1, tgt.labels, -per_voxel(shift, tgt).expand_as(tgt.labels))
    return z - class_view(shift, z.ndim) * tgt.probs


def focal_factor(logq: torch.Tensor, gamma: float, rare: torch.Tensor | None) -> torch.Tensor:
    """001 eq. 11: ``r + (1 - r) (1 - q)^gamma`` from log-probabilities (``rare`` broadcast).

    ``1 - q`` is computed as ``-expm1(log q)`` and clamped to the smallest normal number so that
    the gradient of ``(1 - q)^gamma`` for ``gamma < 1`` stays finite where ``q`` rounds to 1.
    """
    one_minus_q = (-torch.expm1(logq)).clamp_min(torch.finfo(logq.dtype).tiny)
    att = one_minus_q.pow(gamma)
    if rare is None:
        return att
    return rare + (1.0 - rare) * att


def focal_terms(lq: torch.Tensor, gamma: float,
                rare: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The focal factor of eq. 11 and the re-weighting factor of 000 eq. 6 (with ``r``).

    For ``L = -f(p) log p`` with ``f(p) = r + (1 - r)(1 - p)^gamma`` and ``p = q_t`` the
    true-class probability, ``dL/dz = w (q - y)`` with
    ``w = f(p) - (1 - r) gamma p (1 - p)^gamma log(p) / (1 - p)``. Returns ``(f, w)``.
    ``1 - p = -expm1(log p)`` is clamped to the smallest normal number; where ``p`` rounds
    to 1 the factor ``(1 - p)^gamma`` is 0, so ``w`` stays finite for ``gamma < 1``.
    """
    one_minus = (-torch.expm1(lq)).clamp_min(torch.finfo(lq.dtype).tiny)
    att = one_minus.pow(gamma)
    w = att - gamma * lq.exp() * att * (lq / one_minus)
    if rare is None:
        return att, w
    return rare + (1.0 - rare) * att, rare + (1.0 - rare) * w


class _HardCrossEntropy(torch.autograd.Function):
    """Fused margin/focal/weighted CE for integer targets with the analytic gradient
    ``dL/dz = w (q - y) / N`` (000 eq. 5, 6, 8): one log-softmax forward and three dense
    element-wise passes backward."""

    @staticmethod
    def forward(ctx, z, labels, valid, n_valid, shift, gamma, focal_rare, weight):
        zz = z if shift is None else z.scatter_add(1, labels, -shift[labels])
        logq = torch.log_softmax(zz, dim=1)
        lq = logq.gather(1, labels)
        coef = None
        grad_w = None
        if gamma != 0.0:
            rr = None if focal_rare is None else focal_rare[labels]
            coef, grad_w = focal_terms(lq, gamma, rr)
        if weight is not None:
            w = weight[labels]
            coef = w if coef is None else coef * w
            grad_w = w if grad_w is None else grad_w * w
        per = lq if coef is None else coef * lq
        if valid is not None:
            per = per * valid
            grad_w = valid if grad_w is None else grad_w * valid
        ctx.save_for_backward(logq, labels, grad_w, n_valid)
        return -per.sum() / n_valid

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        logq, labels, grad_w, n_valid = ctx.saved_tensors
        grad = logq.exp()
        grad.scatter_add_(1, labels, torch.full(labels.shape, -1.0, dtype=grad.dtype,
                                                device=grad.device))
        scale = grad_out / n_valid
        grad.mul_(scale if grad_w is None else grad_w * scale)
        return grad, None, None, None, None, None, None, None


def cross_entropy(z: torch.Tensor, tgt: Target, *, shift: torch.Tensor | None = None,
                  gamma: float = 0.0, focal_rare: torch.Tensor | None = None,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over valid voxels of ``-sum_j w_j f_j y_j log q_j`` (001 eq. 1, 4-7, 10-11, 22).

    ``shift`` = ``m * r`` (margin per class), ``gamma``/``focal_rare`` the focal attenuation
    (``focal_rare=None``: every class attenuated), ``weight`` class weights (000 eq. 5).
    Integer targets use a fused kernel with the analytic gradient; soft targets autograd.
    """
    n_valid = tgt.n_valid.clamp_min(1.0)
    if tgt.hard:
        valid = None if tgt.all_valid else tgt.valid
        return _HardCrossEntropy.apply(z, tgt.labels, valid, n_valid, shift, gamma,
                                       focal_rare, weight)
    logq = torch.log_softmax(margin_logits(z, tgt, shift), dim=1)
    y = tgt.probs
    if gamma != 0.0:
        rr = None if focal_rare is None else class_view(focal_rare, z.ndim)
        y = y * focal_factor(logq, gamma, rr)
    if weight is not None:
        y = y * class_view(weight, z.ndim)
    return -(y * logq).sum() / n_valid


class _ClassSum(torch.autograd.Function):
    """Per-sample, per-class sums ``[N, C]`` of ``v [N, 1, *spatial]`` over the voxels of each
    label: a scatter-add forward and a gather backward (``dout/dv = g[label]``)."""

    @staticmethod
    def forward(ctx, v, labels, num_classes):
        n = v.shape[0]
        idx = labels.reshape(n, -1)
        ctx.save_for_backward(idx)
        ctx.shape = v.shape
        out = torch.zeros((n, num_classes), dtype=v.dtype, device=v.device)
        return out.scatter_add_(1, idx, v.reshape(n, -1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return g.gather(1, idx).reshape(ctx.shape), None, None


def class_sum(v: torch.Tensor, tgt: Target, num_classes: int) -> torch.Tensor:
    """``sum_{v: y_v = k} v`` per sample and class ``[N, C]`` (``v`` already zero where ignored)."""
    return _ClassSum.apply(v, tgt.labels, num_classes)


def _focal_fn(q: torch.Tensor, gamma: float, rare: torch.Tensor | None) -> torch.Tensor:
    """``f (1 - q)`` with ``f = r + (1 - r)(1 - q)^gamma`` (the focal FN terms of eq. 12-13)."""
    one_minus = (1.0 - q).clamp_min(torch.finfo(q.dtype).tiny)
    factor = one_minus.pow(gamma)
    if rare is not None:
        factor = rare + (1.0 - rare) * factor
    return factor * one_minus


def region_stats(z: torch.Tensor, tgt: Target, *, shift: torch.Tensor | None = None,
                 gamma: float = 0.0, focal_rare: torch.Tensor | None = None,
                 squared: bool = False, batch: bool = True,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft confusion sums per class from ``q = softmax(z - shift y)`` over valid voxels.

    Returns ``(tp, psum, ysum, fn)`` each ``[C]`` (``batch=True``: summed over the batch too)
    or ``[N, C]``: ``tp = sum q y``, ``psum = sum q`` (``sum q^2`` if ``squared``),
    ``ysum = sum y`` (``sum y^2`` if ``squared``), and the false negatives
    ``fn = sum f (1 - q) y`` with the focal factor ``f`` of 001 eq. 12-13 (``f = 1`` when
    ``gamma == 0``).
    """
    num_classes = z.shape[1]
    spatial = tuple(range(2, z.ndim))

    def total(t: torch.Tensor) -> torch.Tensor:
        return t.sum(spatial) if spatial else t

    q = torch.softmax(margin_logits(z, tgt, shift), dim=1)
    qv = q if tgt.all_valid else q * tgt.valid
    psum = total(qv * q if squared else qv)
    if tgt.hard:
        # tp_k = sum_v q_vk y_vk = sum over the voxels labelled k of q_{v, y_v}: per-class
        # sums of a per-voxel quantity (scatter-add / gather), no dense one-hot.
        qy = q.gather(1, tgt.labels)
        if not tgt.all_valid:
            qy = qy * tgt.valid
        tp = class_sum(qy, tgt, num_classes)
        ysum = class_sum(tgt.valid, tgt, num_classes)
        if gamma == 0.0:
            fn = ysum - tp
        else:
            rr = None if focal_rare is None else per_voxel(focal_rare, tgt)
            v = _focal_fn(qy, gamma, rr)
            fn = class_sum(v if tgt.all_valid else v * tgt.valid, tgt, num_classes)
    else:
        y = tgt.probs
        tp = total(q * y)
        ysum = total(y * y if squared else y)
        if gamma == 0.0:
            fn = total((1.0 - q) * y)
        else:
            rr = None if focal_rare is None else class_view(focal_rare, z.ndim)
            fn = total(_focal_fn(q, gamma, rr) * y)
    if batch:
        return tp.sum(0), psum.sum(0), ysum.sum(0), fn.sum(0)
    return tp, psum, ysum, fn


def foreground_mean(per_class: torch.Tensor) -> torch.Tensor:
    """Mean over foreground classes ``1..C-1`` (background, class 0, excluded)."""
    return per_class[..., 1:].mean()
