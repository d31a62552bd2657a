"""Margin calibration (003 eq. 4, 23, 27-29, Corollary 1.1) and the training-set class counts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from _obj_reference import calibration_margins as ref_margins
from _obj_reference import margin_calibration as ref_loss

from study.objectives import (
    MarginCalibrationLoss,
    calibration_margins,
    class_counts,
    class_margins,
)
from study.objectives.calibration import calibrated_log_loss
from study.objectives.targets import prepare

COUNTS = [9_000_000, 600_000, 40_000, 2_500]


def test_margins_match_corollary_as_printed():
    """rho_0k, mu_k and rho_k0 equal a direct transcription of Corollary 1.1 (float64), and
    rho_k0 / rho_0k is the corollary's mu_k."""
    for tau, nu in [(1, 10), (1, 1), (10, 1), (10, 0.1), (10, 0.01)]:
        pos, neg = calibration_margins(COUNTS, tau, nu)
        rpos, rneg = ref_margins(COUNTS, tau, nu)
        assert pos.dtype == np.float64 and neg.dtype == np.float64
        np.testing.assert_allclose(neg, rneg, rtol=1e-13)
        np.testing.assert_allclose(pos, rpos, rtol=1e-10)
        n = sum(COUNTS)
        for k, nk in enumerate(COUNTS):
            pk = nk / n
            mu = pk * math.sqrt(nk) / (nu * (n - nk) - pk * math.sqrt(n - nk))
            assert math.isclose(pos[k] / neg[k], mu, rel_tol=1e-10)


def test_margins_follow_eq23_proportions_and_tau_scaling():
    """Eq. 23: rho_0i / rho_0j = n_j sqrt(n - n_i) / (n_i sqrt(n - n_j)); tau scales every
    offset linearly and mu = rho_k0 / rho_0k does not depend on tau; rarer classes get larger
    rho_0k."""
    n = sum(COUNTS)
    pos1, neg1 = calibration_margins(COUNTS, 1.0, 1.0)
    pos10, neg10 = calibration_margins(COUNTS, 10.0, 1.0)
    for i, ni in enumerate(COUNTS):
        for j, nj in enumerate(COUNTS):
            expected = nj * math.sqrt(n - ni) / (ni * math.sqrt(n - nj))
            assert math.isclose(neg1[i] / neg1[j], expected, rel_tol=1e-12)
    np.testing.assert_allclose(neg10, 10 * neg1, rtol=1e-14)
    np.testing.assert_allclose(pos10, 10 * pos1, rtol=1e-14)
    np.testing.assert_allclose(pos10 / neg10, pos1 / neg1, rtol=1e-14)
    assert np.all(np.diff(neg1) > 0)          # counts decrease -> rho_0k increases


def test_margin_magnitudes_example():
    """n = 1e8, n_1 = 1e6, tau = 10, nu = 1: rho_01 ~ 0.0995, rho_00 ~ 1.01e-4, and the
    positive offsets are ~1e-6 and ~1e-8 (they barely matter; the method acts through rho_0k)."""
    pos, neg = calibration_margins([99_000_000, 1_000_000], 10.0, 1.0)
    assert math.isclose(neg[1], 10 * math.sqrt(99e6) / 1e6, rel_tol=1e-12)
    assert math.isclose(neg[0], 10 * math.sqrt(1e6) / 99e6, rel_tol=1e-12)
    assert 5e-7 < pos[0] < 2e-6 and 5e-9 < pos[1] < 2e-8


def test_absent_class_gets_zero_margins_with_warning():
    """A class absent from the training data (n_k = 0) would get rho_0k = inf (infinite loss
    everywhere): both its offsets are 0, a UserWarning names it, the others are unchanged, and
    the loss and its gradient are finite."""
    with pytest.warns(UserWarning, match=r"classes \[2\] are absent"):
        pos, neg = calibration_margins([1000, 50, 0], 10.0, 1.0)
    assert pos[2] == 0.0 and neg[2] == 0.0
    rpos, rneg = ref_margins([1000, 50], 10.0, 1.0)   # same n: the absent class adds no pixel
    np.testing.assert_allclose(neg[:2], rneg, rtol=1e-13)
    np.testing.assert_allclose(pos[:2], rpos, rtol=1e-12)
    with pytest.warns(UserWarning):
        loss = MarginCalibrationLoss(10.0, 1.0, [1000, 50, 0])
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    value = loss(z, torch.randint(0, 3, (2, 4, 4)))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()


def test_degenerate_counts_are_finite_with_warning():
    """A single class present, or nu so small that nu sqrt(n - n_k) <= p_k: the positive offset
    rho_k0 is set to 0 with a UserWarning; all offsets stay finite and non-negative."""
    with pytest.warns(UserWarning):
        pos, neg = calibration_margins([100, 0], 1.0, 1.0)
    assert np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))
    assert neg[0] == 0.0 and pos[0] == 0.0
    with pytest.warns(UserWarning, match=r"nu \* sqrt\(n - n_k\) <= p_k for classes \[0\]"):
        pos, neg = calibration_margins([100, 1], 1.0, 1e-3)
    assert pos[0] == 0.0 and pos[1] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibration_margins(COUNTS, 10.0, 0.01)      # the paper's smallest nu: no warning


def test_margin_arguments_errors():
    """tau < 0, nu <= 0 and malformed counts raise ValueError naming the argument and value."""
    with pytest.raises(ValueError, match="tau must be >= 0.0, got -1.0"):
        MarginCalibrationLoss(-1.0, 1.0, [10, 1])
    with pytest.raises(ValueError, match="nu must be > 0.0, got 0.0"):
        MarginCalibrationLoss(1.0, 0.0, [10, 1])
    with pytest.raises(ValueError, match="class_counts must be non-negative"):
        MarginCalibrationLoss(1.0, 1.0, [10, -1])
    with pytest.raises(ValueError, match="class_counts must be one count per class"):
        MarginCalibrationLoss(1.0, 1.0, [10])
    loss = MarginCalibrationLoss(1.0, 1.0, [10, 1])
    with pytest.raises(ValueError, match="class_counts has 2 entries but the logits have 3"):
        loss(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="needs an integer target"):
        loss(torch.randn(1, 2, 2, 2), torch.rand(1, 2, 2, 2))


def test_class_counts_one_pass_over_training_labels():
    """class_counts sums voxel counts per class over every training label map (NumPy or torch),
    skipping ignore_index; absent classes count 0; bad labels raise naming them."""
    arrays = [np.array([[0, 0, 1], [0, 2, 2]]), torch.tensor([0, 0, 255, 1]),
              np.zeros((2, 2, 2), dtype=np.uint8)]
    counts = class_counts(arrays, 4, ignore_index=255)
    assert counts.tolist() == [13, 2, 2, 0] and counts.dtype == np.int64
    with pytest.raises(ValueError, match=r"label array 1 contains labels \[255\] outside 0..3"):
        class_counts(arrays, 4)
    with pytest.raises(ValueError, match="must be integer"):
        class_counts([np.zeros(3)], 2)
    gen = (np.full(5, k % 2) for k in range(4))          # a one-pass iterator works
    assert class_counts(gen, 2).tolist() == [10, 10]


def test_lambda_properties():
    """Eq. 4: the arg-max class has lambda >= 0, all others <= 0; C = 2 gives lambda_0 = -lambda_1;
    adding a constant to a pixel's scores leaves lambda unchanged; ties give 0."""
    z = torch.randn(3, 5, 7, dtype=torch.float64)
    lam = class_margins(z)
    top = z.argmax(1, keepdim=True)
    assert bool((lam.gather(1, top) >= 0).all())
    assert bool((lam.scatter(1, top, -1.0) <= 0).all())
    torch.testing.assert_close(class_margins(z + torch.randn(3, 1, 7, dtype=torch.float64)), lam)
    z2 = torch.randn(4, 2, 6, dtype=torch.float64)
    torch.testing.assert_close(class_margins(z2)[:, 0], -class_margins(z2)[:, 1])
    tie = torch.tensor([[[2.0], [2.0], [-1.0]]])
    assert class_margins(tie)[0, :2, 0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("c", [2, 3, 5])
def test_loss_matches_numpy_reference(c):
    """The loss equals a per-pixel float64 loop over eq. 27-29 (with ignored pixels), and its
    gradient equals the loop's analytic gradient."""
    g = torch.Generator().manual_seed(c)
    counts = [int(v) for v in 10 ** torch.linspace(6, 3, c)]
    loss = MarginCalibrationLoss(10.0, 0.1, counts, ignore_index=99)
    z = 3 * torch.randn(2, c, 3, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (2, 3, 4), generator=g)
    y[0, 0] = 99
    zz = z.clone().requires_grad_(True)
    value = loss(zz, y)
    value.backward()
    ref, ref_grad = ref_loss(z.numpy(), y.numpy(), loss.rho_pos, loss.rho_neg, ignore=99, grad=True)
    assert math.isclose(float(value.detach()), ref, rel_tol=1e-12)
    np.testing.assert_allclose(zz.grad.numpy(), ref_grad, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (z.clone().requires_grad_(True),))


def test_extreme_logits_finite_and_gradient_correct():
    """Logits of magnitude 1e4 (float64) and 1e3 (bf16): the loss is finite and the float64
    gradient equals the analytic gradient of eq. 28-29."""
    counts = [100_000, 300]
    loss = MarginCalibrationLoss(10.0, 1.0, counts)
    z = 1e4 * torch.tensor([[[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]]], dtype=torch.float64)
    y = torch.tensor([[0, 0, 1]])
    zz = z.clone().requires_grad_(True)
    value = loss(zz, y)
    value.backward()
    ref, ref_grad = ref_loss(z.numpy(), y.numpy(), loss.rho_pos, loss.rho_neg, grad=True)
    v = float(value.detach())
    assert math.isfinite(v) and math.isclose(v, ref, rel_tol=1e-12)
    np.testing.assert_allclose(zz.grad.numpy(), ref_grad, rtol=1e-12, atol=1e-300)
    zb = (1e3 * torch.randn(2, 2, 8, 8)).to(torch.bfloat16).requires_grad_(True)
    vb = loss(zb, torch.randint(0, 2, (2, 8, 8)))
    vb.backward()
    assert torch.isfinite(vb) and torch.isfinite(zb.grad.float()).all()


def test_zero_margins_binary_relation_to_ce_and_label_targets():
    """tau = 0 (all offsets 0), C = 2: the paper's loss is (2 / ln 2) CE(ln 2 * s) — both terms
    are log2(1 + 2^-(s_y - s_other)); positive targets come from the labels, so the true class's
    score is still pushed up (the reference code derives targets from margin > 0 and would
    push it down here)."""
    z = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 5, 5))
    loss = MarginCalibrationLoss(0.0, 1.0, [1000, 10])
    torch.testing.assert_close(loss(z, y), 2 / math.log(2) * tF.cross_entropy(math.log(2) * z, y))
    zz = z.clone().requires_grad_(True)
    loss(zz, y).backward()
    assert bool((zz.grad.gather(1, y.unsqueeze(1)) < 0).all())


def test_larger_offsets_never_decrease_the_loss():
    """The loss is non-decreasing in the offsets: tau = 10 >= tau = 1 >= tau = 0 on any input."""
    z, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    values = [float(MarginCalibrationLoss(t, 0.1, COUNTS[:3])(z, y)) for t in (0.0, 1.0, 10.0)]
    assert values[0] <= values[1] <= values[2]


def test_binary_fast_path_equals_general_path():
    """C = 2 uses a fused kernel with an analytic gradient; it equals the general (autograd)
    implementation of eq. 27-29 in value and gradient, ignored voxels included."""
    loss = MarginCalibrationLoss(10.0, 1.0, [5000, 20], ignore_index=9)
    z = 4 * torch.randn(3, 2, 5, 6, dtype=torch.float64)
    y = torch.randint(0, 2, (3, 5, 6))
    y[1, :2] = 9
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    fast = loss(a, y)
    za, tgt = prepare(b, y, 9)
    general = calibrated_log_loss(za, tgt, loss.rho_pos, loss.rho_neg)
    fast.backward()
    general.backward()
    torch.testing.assert_close(fast, general, rtol=1e-13, atol=0)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-15)
