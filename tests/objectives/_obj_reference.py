"""Slow, direct float64 NumPy transcriptions of the papers' equations (independent references).

Loops over voxels and classes, written from the equations, sharing no code with
``study.objectives``. Inputs: logits ``z`` ``[N, C, *S]`` and integer labels ``y`` ``[N, *S]``
(``ignore`` = the ignored label or None).
"""

from __future__ import annotations

import math

import numpy as np


def _voxels(z, y, ignore=None):
    """Yield (sample index, logit vector, label) for every non-ignored voxel."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y)
    n, c = z.shape[:2]
    zf = z.reshape(n, c, -1)
    yf = y.reshape(n, -1)
    for b in range(n):
        for v in range(zf.shape[2]):
            if ignore is not None and yf[b, v] == ignore:
                continue
            yield b, zf[b, :, v], int(yf[b, v])


def softmax(vec):
    e = np.exp(vec - vec.max())
    return e / e.sum()


def ce(z, y, weight=None, m=0.0, r=None, gamma=0.0, focal_r=None, ignore=None):
    """001 eq. 1, 4-7, 10-11, 22 (and the class weights of 000 eq. 5): mean over voxels."""
    total, count = 0.0, 0
    for _, zv, t in _voxels(z, y, ignore):
        c = len(zv)
        onehot = np.eye(c)[t]
        rr = np.ones(c) if r is None else np.asarray(r, dtype=np.float64)
        q = softmax(zv - onehot * rr * m)                 # eq. 5 / 7
        loss = 0.0
        for j in range(c):
            if onehot[j] == 0:
                continue
            f = (1.0 - q[j]) ** gamma                       # eq. 10
            if focal_r is not None:                         # eq. 11
                f = focal_r[j] + (1.0 - focal_r[j]) * f
            w = 1.0 if weight is None else weight[j]
            loss += -w * f * onehot[j] * math.log(q[j])
        total += loss
        count += 1
    return total / max(count, 1)


def dsc(z, y, m=0.0, r=None, gamma=0.0, focal_r=None, smooth=1e-5, batch=True, ignore=None,
        kind="eq3", beta=1.0):
    """Per foreground class, from soft sums of q (margin-shifted, eq. 8-9):

    kind="eq3": (FP + FN_f) / (2TP + FP + FN + s) with FN_f the focal FN of eq. 12-13;
    kind="sq_dice": 1 - (2 q.y + s) / (|q|^2 + |y|^2 + s)  (004);
    kind="jaccard": 1 - (q.y + s) / (|q|^2 + |y|^2 - q.y + s) (004);
    kind="jaccard_lin": 1 - (TP + s) / (TP + FP + FN + s);
    kind="fbeta": 1 - ((1+b^2) TP + s) / ((1+b^2) TP + b^2 FN + FP + s).
    """
    z = np.asarray(z, dtype=np.float64)
    n, c = z.shape[:2]
    keys = [0] if batch else list(range(n))
    sums = {k: np.zeros((6, c)) for k in keys}   # TP, FP, FN, FN_f, sum q^2, sum y^2
    for b, zv, t in _voxels(z, y, ignore):
        onehot = np.eye(c)[t]
        rr = np.ones(c) if r is None else np.asarray(r, dtype=np.float64)
        q = softmax(zv - onehot * rr * m)
        s = sums[0 if batch else b]
        for j in range(c):
            f = (1.0 - q[j]) ** gamma
            if focal_r is not None:
                f = focal_r[j] + (1.0 - focal_r[j]) * f
            s[0, j] += q[j] * onehot[j]
            s[1, j] += q[j] * (1 - onehot[j])
            s[2, j] += (1 - q[j]) * onehot[j]
            s[3, j] += f * (1 - q[j]) * onehot[j]
            s[4, j] += q[j] ** 2
            s[5, j] += onehot[j] ** 2
    values = []
    for k in keys:
        tp, fp, fn, fnf, q2, y2 = sums[k]
        for j in range(1, c):
            if kind == "eq3":
                v = (fp[j] + fnf[j]) / (2 * tp[j] + fp[j] + fn[j] + smooth)
            elif kind == "sq_dice":
                v = 1 - (2 * tp[j] + smooth) / (q2[j] + y2[j] + smooth)
            elif kind == "jaccard":
                v = 1 - (tp[j] + smooth) / (q2[j] + y2[j] - tp[j] + smooth)
            elif kind == "jaccard_lin":
                v = 1 - (tp[j] + smooth) / (tp[j] + fp[j] + fn[j] + smooth)
            elif kind == "fbeta":
                b2 = beta**2
                v = 1 - ((1 + b2) * tp[j] + smooth) / ((1 + b2) * tp[j] + b2 * fn[j] + fp[j]
                                                       + smooth)
            else:
                raise ValueError(kind)
            values.append(v)
    return float(np.mean(values))


def calibration_margins(counts, tau, nu):
    """003 Corollary 1.1 as printed: rho_0k = tau sqrt(n - n_k) / n_k,
    mu_k = p_k sqrt(n_k) / (nu (n - n_k) - p_k sqrt(n - n_k)), rho_k0 = mu_k rho_0k."""
    n = float(sum(counts))
    pos, neg = [], []
    for nk in counts:
        nk = float(nk)
        rho0k = tau * math.sqrt(n - nk) / nk
        pk = nk / n
        mu = pk * math.sqrt(nk) / (nu * (n - nk) - pk * math.sqrt(n - nk))
        pos.append(mu * rho0k)
        neg.append(rho0k)
    return np.array(pos), np.array(neg)


def margin_calibration(z, y, rho_pos, rho_neg, ignore=None, grad=False):
    """003 eq. 4, 27-29: (1/n) sum_i [log2(1 + 2^(-lam_iy + rho_y0))
    + sum_{k != y} log2(1 + 2^(lam_ik + rho_0k))]; optionally the analytic gradient."""
    z = np.asarray(z, dtype=np.float64)
    n, c = z.shape[:2]
    zf = z.reshape(n, c, -1)
    yf = np.asarray(y).reshape(n, -1)
    g = np.zeros_like(zf)
    total, count = 0.0, 0
    for b in range(n):
        for v in range(zf.shape[2]):
            t = int(yf[b, v])
            if ignore is not None and t == ignore:
                continue
            s = zf[b, :, v]
            count += 1
            for k in range(c):
                others = [j for j in range(c) if j != k]
                jmax = max(others, key=lambda j, s=s: s[j])
                lam = s[k] - s[jmax]                                   # eq. 4
                if k == t:
                    x, sign = -lam + rho_pos[k], -1.0                  # eq. 28
                else:
                    x, sign = lam + rho_neg[k], 1.0                    # eq. 29
                # log2(1 + 2^x), computed stably; d/dx = 2^x / (1 + 2^x)
                total += (max(x, 0.0) + math.log2(1.0 + 2.0 ** (-abs(x))))
                dx = 1.0 / (1.0 + 2.0 ** (-x)) if x >= 0 else 2.0**x / (1.0 + 2.0**x)
                g[b, k, v] += sign * dx
                g[b, jmax, v] -= sign * dx
    value = total / max(count, 1)
    if grad:
        return value, (g / max(count, 1)).reshape(z.shape)
    return value
