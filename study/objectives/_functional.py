"""Tensor kernels shared by the loss modules (pure functions, no validation).

All functions take float logits ``z`` ``[N, C, *spatial]`` and a prepared
:class:`~study.objectives._targets.Target`; per-class vectors are float tensors ``[C]`` on the
logits' device. Exact log-softmax forms are used throughout (never ``log(p + eps)``).
"""

from __future__ import annotations

import torch

from ._targets import Target


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


def cross_entropy(z: torch.Tensor, tgt: Target, *, shift: torch.Tensor | None = None,
                  gamma: float = 0.0, focal_rare: torch.Tensor | None = None,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over valid voxels of ``-sum_j w_j f_j y_j log q_j`` (001 eq. 1, 4-7, 10-11, 22).

    ``shift`` = ``m * r`` (margin per class), ``gamma``/``focal_rare`` the focal attenuation
    (``focal_rare=None``: every class attenuated), ``weight`` class weights (000 eq. 5).
    """
    logq = torch.log_softmax(margin_logits(z, tgt, shift), dim=1)
    if tgt.hard:
        lq = logq.gather(1, tgt.labels)
        coef = None
        if gamma != 0.0:
            rr = None if focal_rare is None else per_voxel(focal_rare, tgt)
            coef = focal_factor(lq, gamma, rr)
        if weight is not None:
            w = per_voxel(weight, tgt)
            coef = w if coef is None else coef * w
        per = lq if coef is None else coef * lq
        if not tgt.all_valid:
            per = per * tgt.valid
        total = -per.sum()
    else:
        y = tgt.probs
        if gamma != 0.0:
            rr = None if focal_rare is None else class_view(focal_rare, z.ndim)
            y = y * focal_factor(logq, gamma, rr)
        if weight is not None:
            y = y * class_view(weight, z.ndim)
        total = -(y * logq).sum()
    return total / tgt.n_valid.clamp_min(1.0)


def _scatter_sum(tgt: Target, values: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample, per-class sums ``[N, C]`` of ``values [N, 1, *spatial]`` by voxel label."""
    n = values.shape[0]
    out = torch.zeros((n, num_classes), dtype=values.dtype, device=values.device)
    return out.scatter_add(1, tgt.labels.reshape(n, -1), values.reshape(n, -1))


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
    logq = torch.log_softmax(margin_logits(z, tgt, shift), dim=1)
    q = logq.exp()
    spatial = tuple(range(2, z.ndim))
    qv = q if tgt.all_valid else q * tgt.valid
    psum = (qv * q if squared else qv).sum(spatial) if spatial else (qv * q if squared else qv)
    if tgt.hard:
        lq = logq.gather(1, tgt.labels)
        qy = lq.exp()
        one_minus = -torch.expm1(lq)
        if gamma != 0.0:
            rr = None if focal_rare is None else per_voxel(focal_rare, tgt)
            one_minus = one_minus * focal_factor(lq, gamma, rr)
        if not tgt.all_valid:
            qy = qy * tgt.valid
            one_minus = one_minus * tgt.valid
        tp = _scatter_sum(tgt, qy, num_classes)
        fn = _scatter_sum(tgt, one_minus, num_classes)
        ysum = _scatter_sum(tgt, tgt.valid, num_classes)
    else:
        y = tgt.probs
        tp = (q * y).sum(spatial) if spatial else q * y
        one_minus = -torch.expm1(logq)
        if gamma != 0.0:
            rr = None if focal_rare is None else class_view(focal_rare, z.ndim)
            one_minus = one_minus * focal_factor(logq, gamma, rr)
        fn = (one_minus * y).sum(spatial) if spatial else one_minus * y
        ysum = (y * y if squared else y).sum(spatial) if spatial else (y * y if squared else y)
    if batch:
        return tp.sum(0), psum.sum(0), ysum.sum(0), fn.sum(0)
    return tp, psum, ysum, fn


def foreground_mean(per_class: torch.Tensor) -> torch.Tensor:
    """Mean over foreground classes ``1..C-1`` (background, class 0, excluded)."""
    return per_class[..., 1:].mean()
