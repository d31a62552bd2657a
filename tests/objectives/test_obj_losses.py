"""Properties of the losses (001 eq. 1-13, 22; 000 §A; 004 §3), each test names its property."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from _obj_reference import ce as ref_ce
from _obj_reference import dsc as ref_dsc

from study.objectives import (
    CrossEntropyLoss,
    DiceLoss,
    FBetaLoss,
    FocalLoss,
    JaccardLoss,
    LargeMarginLoss,
    MarginFocalLoss,
    SumLoss,
)

IGN = 7


def _data(c=3, shape=(2, 3, 4, 2), scale=2.0, seed=0, ignore_frac=0.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(shape[0], c, *shape[1:], generator=g, dtype=dtype)
    y = torch.randint(0, c, shape, generator=g)
    if ignore_frac:
        y = torch.where(torch.rand(shape, generator=g) < ignore_frac, torch.tensor(IGN), y)
    return z, y


def _onehot(y, c):
    return tF.one_hot(y, c).movedim(-1, 1).to(torch.float64)


# ---------------------------------------------------------------- reductions to known losses

@pytest.mark.parametrize("c", [2, 3])
def test_cross_entropy_equals_torch(c):
    """CrossEntropyLoss (001 eq. 1) is torch's cross_entropy: mean over non-ignored voxels."""
    z, y = _data(c, ignore_frac=0.3)
    ours = CrossEntropyLoss(ignore_index=IGN)(z, y)
    torch.testing.assert_close(ours, tF.cross_entropy(z, y, ignore_index=IGN))


@pytest.mark.parametrize("rare", [None, (0.0, 1.0, 1.0), (0.0, 0.0, 1.0), (0.3, 0.5, 1.0)])
def test_margin_zero_is_ce_and_dsc(rare):
    """m = 0: LargeMarginLoss is plain CE (form ce) and plain DSC (form dsc), for any r."""
    z, y = _data()
    torch.testing.assert_close(LargeMarginLoss(0.0, rare)(z, y), CrossEntropyLoss()(z, y))
    torch.testing.assert_close(LargeMarginLoss(0.0, rare, "dsc")(z, y), DiceLoss()(z, y))


@pytest.mark.parametrize("rare", [None, (0.0, 1.0, 1.0), (0.3, 0.5, 1.0)])
def test_gamma_zero_is_ce_and_dsc(rare):
    """gamma = 0: FocalLoss is CE (eq. 10-11 -> eq. 1) and the focal DSC is DSC (eq. 12-13 -> 3)."""
    z, y = _data()
    torch.testing.assert_close(FocalLoss(0.0, rare)(z, y), CrossEntropyLoss()(z, y))
    torch.testing.assert_close(FocalLoss(0.0, rare, "dsc")(z, y), DiceLoss()(z, y))


@pytest.mark.parametrize("form", ["ce", "dsc"])
def test_rare_all_zero_is_base_loss(form):
    """r = 0: asymmetric margin has no margin (= CE/DSC); asymmetric focal attenuates every
    class (= symmetric focal); eq. 22 combination equals symmetric focal."""
    z, y = _data()
    zero = (0.0, 0.0, 0.0)
    base = CrossEntropyLoss() if form == "ce" else DiceLoss()
    torch.testing.assert_close(LargeMarginLoss(1.5, zero, form)(z, y), base(z, y))
    torch.testing.assert_close(FocalLoss(2.0, zero, form)(z, y), FocalLoss(2.0, None, form)(z, y))
    torch.testing.assert_close(MarginFocalLoss(1.5, 2.0, zero, form)(z, y),
                               FocalLoss(2.0, None, form)(z, y))


def test_rare_all_one():
    """r = 1: asymmetric margin = symmetric margin (eq. 6 -> 4); asymmetric focal = CE
    (eq. 11: nothing attenuated) and asymmetric focal DSC = DSC (eq. 13 -> 3)."""
    z, y = _data()
    one = (1.0, 1.0, 1.0)
    torch.testing.assert_close(LargeMarginLoss(0.7, one)(z, y), LargeMarginLoss(0.7)(z, y))
    torch.testing.assert_close(FocalLoss(3.0, one)(z, y), CrossEntropyLoss()(z, y))
    torch.testing.assert_close(FocalLoss(3.0, one, "dsc")(z, y), DiceLoss()(z, y))


def test_asymmetric_focal_leaves_rare_voxels_unattenuated():
    """Asymmetric focal, r = 1 on foreground: every foreground voxel contributes exactly its CE,
    every background voxel exactly its symmetric focal value (001 eq. 11)."""
    z, y = _data(c=3, scale=3.0)
    r = (0.0, 1.0, 1.0)  # background 0, every foreground class rare
    fg_only = torch.where(y == 0, torch.tensor(IGN), y)
    bg_only = torch.where(y != 0, torch.tensor(IGN), y)
    torch.testing.assert_close(FocalLoss(4.0, r, ignore_index=IGN)(z, fg_only),
                               CrossEntropyLoss(ignore_index=IGN)(z, fg_only))
    torch.testing.assert_close(FocalLoss(4.0, r, ignore_index=IGN)(z, bg_only),
                               FocalLoss(4.0, ignore_index=IGN)(z, bg_only))
    assert FocalLoss(4.0, ignore_index=IGN)(z, fg_only) < CrossEntropyLoss(ignore_index=IGN)(
        z, fg_only)


def test_asymmetric_margin_binary_closed_form():
    """Binary rare voxel with logit gap d = z1 - z0: eq. 6 is softplus(m - d) (= ln 2 at d = m);
    non-rare voxels keep their CE whatever m."""
    d = torch.tensor([-2.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    z = torch.stack([torch.zeros_like(d), d]).T.reshape(4, 2, 1)
    ones = torch.ones(4, 1, dtype=torch.long)
    for m in (0.2, 0.5, 2.0):
        per = [LargeMarginLoss(m, (0, 1))(z[i:i + 1], ones[i:i + 1]) for i in range(4)]
        torch.testing.assert_close(torch.stack(per), tF.softplus(m - d))
    at_m = LargeMarginLoss(0.5, (0, 1))(torch.tensor([[[0.0], [0.5]]], dtype=torch.float64),
                                        torch.ones(1, 1, dtype=torch.long))
    assert math.isclose(float(at_m), math.log(2.0), rel_tol=1e-12)
    zeros = torch.zeros(4, 1, dtype=torch.long)
    torch.testing.assert_close(LargeMarginLoss(2.0, (0, 1))(z, zeros), CrossEntropyLoss()(z, zeros))


def test_margin_increases_rare_loss_monotonically():
    """Rare voxels: the asymmetric margin loss is >= CE and strictly increasing in m."""
    z, _ = _data(c=2)
    y = torch.ones(z.shape[0], *z.shape[2:], dtype=torch.long)
    values = [float(LargeMarginLoss(m, (0, 1))(z, y)) for m in (0.0, 0.2, 0.5, 1.0, 2.0, 3.0)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


def test_symmetric_margin_is_ce_of_shifted_logits():
    """Symmetric margin (eq. 4-5) equals CE of z - m y; invariant to a per-voxel logit offset."""
    z, y = _data()
    m = 0.8
    torch.testing.assert_close(LargeMarginLoss(m)(z, y), CrossEntropyLoss()(z - m * _onehot(y, 3),
                                                                            y))
    offset = torch.randn(z.shape[0], 1, *z.shape[2:], dtype=torch.float64)
    torch.testing.assert_close(LargeMarginLoss(m, (0, 1, 1))(z + offset, y),
                               LargeMarginLoss(m, (0, 1, 1))(z, y))


def test_combination_reduces_to_single_losses():
    """Eq. 22: MarginFocalLoss is LargeMarginLoss at gamma = 0 and FocalLoss at m = 0."""
    z, y = _data()
    r = (0.0, 1.0, 1.0)
    for form in ("ce", "dsc"):
        torch.testing.assert_close(MarginFocalLoss(0.9, 0.0, r, form)(z, y),
                                   LargeMarginLoss(0.9, r, form)(z, y))
        torch.testing.assert_close(MarginFocalLoss(0.0, 2.0, r, form)(z, y),
                                   FocalLoss(2.0, r, form)(z, y))


def test_fbeta_one_is_dice_and_beta_weights_fn():
    """F_1 loss is the DSC loss (eq. 3); larger beta puts more weight on false negatives, so
    an under-segmenting prediction costs more at beta = 8 than at beta = 1."""
    z, y = _data(c=2)
    torch.testing.assert_close(FBetaLoss(1.0)(z, y), DiceLoss()(z, y))
    y = torch.ones_like(y)
    under = torch.zeros_like(z)
    under[:, 1] = -1.0                     # foreground predicted with p < 0.5 everywhere
    assert FBetaLoss(8.0)(under, y) > FBetaLoss(1.0)(under, y)


def test_soft_one_hot_target_equals_hard_target():
    """A one-hot soft target [N, C, *S] gives the same value as the integer target, for every
    loss (soft targets are how symmetric mixup, eq. 18, feeds the losses)."""
    z, y = _data()
    soft = _onehot(y, 3)
    for loss in _all_losses():
        torch.testing.assert_close(loss(z, soft), loss(z, y), msg=repr(loss))


def test_soft_target_margin_and_focal_follow_the_equations():
    """Soft targets (symmetric mixup): the margin shift is m r_j y_j, linear in the label
    weight (eq. 7), and the loss is -sum_j f_j y_j log q_j (eq. 11, 22), mean over voxels."""
    z, y = _data()
    g = torch.Generator().manual_seed(9)
    lam = torch.rand(y.shape, generator=g, dtype=torch.float64).unsqueeze(1)
    soft = lam * _onehot(y, 3) + (1 - lam) * _onehot(torch.roll(y, 1, 0), 3)
    r = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64).view(1, 3, 1, 1, 1)
    m, gamma = 0.7, 1.5
    q = torch.softmax(z - m * r * soft, 1)
    f = r + (1 - r) * (1 - q) ** gamma
    expected = -(f * soft * torch.log(q)).sum(1).mean()
    got = MarginFocalLoss(m, gamma, (0.0, 0.5, 1.0))(z, soft)
    torch.testing.assert_close(got, expected)


_DSC_FORMS = [
    lambda **kw: DiceLoss(**kw),
    lambda **kw: JaccardLoss(**kw),
    lambda **kw: FBetaLoss(4.0, **kw),
    lambda **kw: LargeMarginLoss(1.0, (0, 0, 1), "dsc", **kw),
    lambda **kw: FocalLoss(2.0, None, "dsc", **kw),
    lambda **kw: MarginFocalLoss(0.5, 2.0, (0, 1, 1), "dsc", **kw),
]


@pytest.mark.parametrize("make", _DSC_FORMS)
def test_sample_wise_dsc_is_the_mean_of_per_sample_losses(make):
    """batch_dice=False (001 §V-A.4 "sample-wise DSC loss"): the mean over samples of each
    sample's loss, ignored voxels included; batch_dice=True sums over the batch, which differs
    for N > 1 and is the same for N = 1."""
    z, y = _data(shape=(3, 4, 3, 2), ignore_frac=0.2, seed=6)
    sample_wise, batch = make(batch_dice=False, ignore_index=IGN), make(ignore_index=IGN)
    per_sample = torch.stack([batch(z[i:i + 1], y[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(sample_wise(z, y), per_sample.mean())
    assert not torch.isclose(batch(z, y), sample_wise(z, y))
    torch.testing.assert_close(sample_wise(z[:1], y[:1]), batch(z[:1], y[:1]))


def test_sum_loss_adds_terms():
    """SumLoss / '+' is the weighted sum of its terms (U-Net baseline CE + DSC)."""
    z, y = _data()
    ce, dice = CrossEntropyLoss(), DiceLoss()
    torch.testing.assert_close((ce + dice)(z, y), ce(z, y) + dice(z, y))
    torch.testing.assert_close(SumLoss([ce, dice], [0.5, 2.0])(z, y),
                               0.5 * ce(z, y) + 2 * dice(z, y))
    nested = SumLoss([ce + dice, FocalLoss(2.0)], [2.0, 1.0])
    assert len(nested.terms) == 3 and nested.weights == (2.0, 2.0, 1.0)


def _grad(loss, z, y):
    z = z.clone().requires_grad_(True)
    loss(z, y).backward()
    return z.grad


@pytest.mark.parametrize("c", [2, 4])
def test_reweighting_gradient_class_weights_eq5(c):
    """000 eq. 5: the gradient of w_i L_CE w.r.t. the logits is w_i (p_i - y_i) (over N)."""
    z, y = _data(c)
    w = torch.rand(c, dtype=torch.float64) + 0.1
    g = _grad(CrossEntropyLoss(weight=w), z, y)
    n = y.numel()
    expected = w[y].unsqueeze(1) * (torch.softmax(z, 1) - _onehot(y, c)) / n
    torch.testing.assert_close(g, expected)


@pytest.mark.parametrize("c", [2, 4])
@pytest.mark.parametrize("gamma", [0.5, 2.0, 4.0])
def test_reweighting_gradient_focal_eq6(c, gamma):
    """000 eq. 6: focal gradient = w (p - y), w = (1-p_t)^g - g p_t log p_t (1-p_t)^(g-1);
    asymmetric focal (eq. 11) has w = 1 on rare voxels."""
    z, y = _data(c)
    p = torch.softmax(z, 1)
    pt = p.gather(1, y.unsqueeze(1))
    w = (1 - pt) ** gamma - gamma * pt * torch.log(pt) * (1 - pt) ** (gamma - 1)
    n = y.numel()
    expected = w * (p - _onehot(y, c)) / n
    torch.testing.assert_close(_grad(FocalLoss(gamma), z, y), expected)
    r = (0.0,) + (1.0,) * (c - 1)
    w_asym = torch.where(y.unsqueeze(1) > 0, torch.ones_like(w), w)
    torch.testing.assert_close(_grad(FocalLoss(gamma, r), z, y), w_asym * (p - _onehot(y, c)) / n)


@pytest.mark.parametrize("c", [2, 4])
def test_reweighting_gradient_margin_eq8(c):
    """000 eq. 8: large-margin gradient = w_M (p - y) with the scalar
    w_M = sum_j e^z_j / sum_j e^(z_j - y_j r_j m) (symmetric and asymmetric)."""
    z, y = _data(c)
    m = 1.3
    n = y.numel()
    p = torch.softmax(z, 1)
    for r in (None, (0.0,) + (1.0,) * (c - 1)):
        rr = torch.tensor((1.0,) * c if r is None else r, dtype=torch.float64)
        shifted = z - m * rr.view(1, -1, 1, 1, 1) * _onehot(y, c)
        w = torch.exp(z).sum(1, keepdim=True) / torch.exp(shifted).sum(1, keepdim=True)
        assert bool((w >= 1).all())
        torch.testing.assert_close(_grad(LargeMarginLoss(m, r), z, y), w * (p - _onehot(y, c)) / n)


# ---------------------------------------------------------------- independent references

def _all_losses(ignore_index=None):
    r3 = (0.0, 0.4, 1.0)
    kw = {"ignore_index": ignore_index}
    return [
        CrossEntropyLoss(weight=(0.5, 1.0, 3.0), **kw),
        DiceLoss(**kw), DiceLoss(squared=True, **kw), DiceLoss(batch_dice=False, **kw),
        JaccardLoss(**kw), JaccardLoss(squared=False, **kw), FBetaLoss(2.0, **kw),
        LargeMarginLoss(0.7, **kw), LargeMarginLoss(0.7, r3, **kw),
        LargeMarginLoss(0.7, r3, "dsc", **kw),
        FocalLoss(2.0, **kw), FocalLoss(1.5, r3, **kw), FocalLoss(0.5, r3, "dsc", **kw),
        FocalLoss(2.0, None, "dsc", batch_dice=False, **kw),
        MarginFocalLoss(0.5, 2.0, r3, **kw), MarginFocalLoss(0.5, 2.0, r3, "dsc", **kw),
    ]


def _reference(loss, z, y, ignore):
    zz, yy = z.detach().numpy(), y.numpy()
    if isinstance(loss, CrossEntropyLoss):
        return ref_ce(zz, yy, weight=loss.weight, ignore=ignore)
    if isinstance(loss, DiceLoss):
        return ref_dsc(zz, yy, kind="sq_dice" if loss.squared else "eq3",
                       batch=loss.batch_dice, ignore=ignore)
    if isinstance(loss, JaccardLoss):
        return ref_dsc(zz, yy, kind="jaccard" if loss.squared else "jaccard_lin", ignore=ignore)
    if isinstance(loss, FBetaLoss):
        return ref_dsc(zz, yy, kind="fbeta", beta=loss.beta, ignore=ignore)
    margin_r = loss.rare if loss.rare is not None else None
    focal_r = loss.rare
    if loss.form == "ce":
        return ref_ce(zz, yy, m=loss.m, r=margin_r, gamma=loss.gamma, focal_r=focal_r,
                      ignore=ignore)
    return ref_dsc(zz, yy, m=loss.m, r=margin_r, gamma=loss.gamma, focal_r=focal_r,
                   batch=loss.batch_dice, ignore=ignore)


@pytest.mark.parametrize("ignore", [None, IGN])
def test_losses_match_numpy_reference(ignore):
    """Every loss equals a direct float64 NumPy transcription of its equation (random inputs,
    with and without ignored voxels)."""
    z, y = _data(ignore_frac=0.25 if ignore is not None else 0.0, seed=3)
    for loss in _all_losses(ignore):
        ours = float(loss(z, y))
        ref = _reference(loss, z, y, ignore)
        assert np.isclose(ours, ref, rtol=1e-10, atol=1e-12), (loss, ours, ref)


def test_losses_gradcheck_float64():
    """torch.autograd.gradcheck (float64) passes for every loss, ignored voxels included."""
    z, y = _data(shape=(2, 3, 2), ignore_frac=0.2, seed=5)
    for loss in _all_losses(IGN):
        zz = z.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda t, loss=loss: loss(t, y), (zz,)), loss
