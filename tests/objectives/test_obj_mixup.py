"""Mixup (001 eq. 17-19): the hard-label rule table, mixed inputs, soft labels, ignored voxels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from study.objectives import (
    IGNORE_INDEX,
    AsymmetricMixup,
    CrossEntropyLoss,
    FocalLoss,
    Mixup,
    asymmetric_labels,
    partner_indices,
)
from study.objectives.mixup import beta_draws

IGN = IGNORE_INDEX


def _eq19(a, b, lam, m, r):
    """Eq. 19 transcribed with one-hot vectors and dot products; None = the 0 target."""
    c = len(r)
    ya, yb = np.eye(c)[a], np.eye(c)[b]
    ra, rb = ya @ np.asarray(r), yb @ np.asarray(r)
    same = a == b
    if (lam > m and ra * (1 - rb) == 1) or same:
        return a
    if (1 - lam > m and rb * (1 - ra) == 1) or same:
        return b
    return None


# (C, r): the binary task, KiTS tumour only (asy=2) and both foreground classes (asy=1)
CASES = [(2, (0, 1)), (3, (0, 0, 1)), (3, (0, 1, 1))]
LAMBDAS = (0.1, 0.2, 0.25, 0.5, 0.79, 0.9)


@pytest.mark.parametrize(("c", "r"), CASES)
def test_hard_label_rule_table(c, r):
    """Eq. 19 for every label pair (a with weight lambda, b with 1 - lambda), m = 0.2: equal
    labels stay; a rare/non-rare mix is the rare class iff its weight > m; two different rare
    or two different non-rare classes, and weak rare components, are ignored."""
    m = 0.2
    for lam in LAMBDAS:
        pairs = list(itertools.product(range(c), repeat=2))
        a = torch.tensor([p[0] for p in pairs])
        b = torch.tensor([p[1] for p in pairs])
        rare = torch.tensor(r) > 0
        out = asymmetric_labels(a, b, torch.tensor(lam, dtype=torch.float64), m, rare, IGN)
        for (pa, pb), got in zip(pairs, out.tolist(), strict=True):
            want = _eq19(pa, pb, lam, m, r)
            assert got == (IGN if want is None else want), (pa, pb, lam, r)


def test_hard_label_rule_examples():
    """Worked binary examples (r = (0, 1), m = 0.2): (1, 0) at lambda 0.1 -> ignored, at 0.25
    -> 1; (0, 1) -> 1 while 1 - lambda > 0.2, ignored at lambda 0.9; KiTS r = (0, 0, 1):
    background/kidney mixes and tumour/tumour stay or are ignored as the table says."""
    rare = torch.tensor([False, True])

    def rule(a, b, lam, rr=rare):
        return int(asymmetric_labels(torch.tensor([a]), torch.tensor([b]),
                                     torch.tensor(lam), 0.2, rr, IGN)[0])

    assert rule(1, 0, 0.1) == IGN and rule(1, 0, 0.25) == 1
    assert rule(0, 1, 0.1) == 1 and rule(0, 1, 0.79) == 1 and rule(0, 1, 0.9) == IGN
    assert rule(0, 0, 0.5) == 0 and rule(1, 1, 0.05) == 1
    kits = torch.tensor([False, False, True])
    assert rule(0, 1, 0.5, kits) == IGN and rule(2, 1, 0.5, kits) == 2
    assert rule(1, 1, 0.5, kits) == 1
    both = torch.tensor([False, True, True])
    assert rule(1, 2, 0.5, both) == IGN
    assert rule(IGN, 1, 0.5) == IGN and rule(1, IGN, 0.5) == IGN


@pytest.mark.parametrize("form", ["paper", "code"])
def test_asymmetric_mixup_batch(form):
    """AsymmetricMixup: x~ = lambda x_i + (1 - lambda) x_k with a partner k != i and lambda in
    [0, 1] ("paper") or [0, 1 - m] ("code"); labels are class indices or ignore_index and
    equal eq. 19 applied to (y_i, y_k) with that lambda."""
    n = 8
    x = torch.eye(n, dtype=torch.float64).view(n, n, 1, 1).expand(n, n, 3, 3).clone()
    y = torch.randint(0, 3, (n, 3, 3), generator=torch.Generator().manual_seed(0))
    mix = AsymmetricMixup(1.0, 0.2, (0, 0, 1), lam=form)
    x_mix, y_mix = mix(None, x, y, torch.Generator().manual_seed(3))
    assert y_mix.dtype == torch.int64
    for i in range(n):
        weights = x_mix[i, :, 0, 0]
        nz = torch.nonzero(weights).flatten().tolist()
        k = [j for j in nz if j != i]
        assert len(k) == 1 and torch.isclose(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
        lam = float(weights[i])
        assert 0.0 <= lam <= (0.8 if form == "code" else 1.0)
        torch.testing.assert_close(x_mix[i], lam * x[i] + (1 - lam) * x[k[0]])
        for a, b, got in zip(y[i].flatten().tolist(), y[k[0]].flatten().tolist(),
                             y_mix[i].flatten().tolist(), strict=True):
            want = _eq19(a, b, lam, 0.2, (0, 0, 1))
            assert got == (IGN if want is None else want)


def test_symmetric_mixup_soft_labels_sum_to_one_and_match_inputs():
    """Symmetric mixup (eq. 18): soft targets lambda y_i + (1 - lambda) y_k sum to 1 per voxel,
    with the same lambda and partner as the mixed inputs; voxels ignored in either sample get
    an all-zero row (excluded from the loss)."""
    n = 3
    x = torch.eye(n).view(n, n, 1, 1).expand(n, n, 2, 2).clone()
    y = torch.randint(0, 2, (n, 2, 2), generator=torch.Generator().manual_seed(0))
    y[0, 0, 0] = 9
    x_mix, soft = Mixup(0.2, 2, ignore_index=9)(None, x, y, torch.Generator().manual_seed(1))
    assert soft.shape == (n, 2, 2, 2)
    for i in range(n):
        k = [j for j in torch.nonzero(x_mix[i, :, 0, 0]).flatten().tolist() if j != i][0]
        lam = float(x_mix[i, i, 0, 0])
        onehot = torch.nn.functional.one_hot(y.clamp(max=1), 2).movedim(-1, 1).float()
        expected = lam * onehot[i] + (1 - lam) * onehot[k]
        valid = (y[i] != 9) & (y[k] != 9)
        torch.testing.assert_close(soft[i] * valid, expected * valid)
        torch.testing.assert_close(soft[i].sum(0), valid.float())


def test_ignored_voxels_get_no_gradient():
    """Voxels that eq. 19 maps to 0 are excluded: their logits receive zero gradient from the CE
    and focal-DSC losses built with the mixup's ignore_index."""
    x = torch.randn(2, 1, 4, 4)
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    y[0, :2] = 1
    x_mix, y_mix = AsymmetricMixup(1.0, 0.99, (0, 1))(None, x, y, torch.Generator().manual_seed(0))
    ignored = y_mix == IGN
    assert bool(ignored.any())
    for loss in (CrossEntropyLoss(ignore_index=IGN), FocalLoss(2.0, (0, 1), "dsc",
                                                               ignore_index=IGN)):
        logits = torch.randn(2, 2, 4, 4, requires_grad=True)
        loss(logits, y_mix).backward()
        assert float(logits.grad.abs().movedim(1, -1)[ignored].max()) == 0.0


def test_partner_is_a_derangement_and_lambda_is_beta():
    """Partners never pair a sample with itself (n >= 2), n = 2 is the reversal; lambda follows
    Beta(alpha, alpha): mean 1/2 and variance 1 / (4 (2 alpha + 1)) over 2e4 draws."""
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 5, 8):
        for _ in range(20):
            p = partner_indices(n, g)
            assert sorted(p.tolist()) == list(range(n)) and bool((p != torch.arange(n)).all())
    assert partner_indices(2, g).tolist() == [1, 0]
    for alpha in (0.2, 1.0):
        lam = beta_draws(alpha, 20_000, g).numpy()
        assert abs(lam.mean() - 0.5) < 0.01
        assert abs(lam.var() - 1 / (4 * (2 * alpha + 1))) < 0.01
        assert lam.min() >= 0 and lam.max() <= 1


@pytest.mark.parametrize("m", [0.2, 0.4])
def test_lambda_forms(m):
    """lam="code": lambda = Beta(alpha, alpha) (1 - m), in [0, 1 - m] with mean (1 - m) / 2
    for alpha = 1 (uniform, variance (1 - m)^2 / 12) over 1e4 draws; lam="paper" (default):
    the Beta draws themselves, from the same generator state."""
    n = 10_000
    code = AsymmetricMixup(1.0, m, (0, 1), lam="code").draw_lambda(
        n, torch.Generator().manual_seed(4)).numpy()
    paper = AsymmetricMixup(1.0, m, (0, 1)).draw_lambda(n, torch.Generator().manual_seed(4))
    assert code.min() >= 0.0 and code.max() <= 1 - m and code.max() > 0.99 * (1 - m)
    sd = (1 - m) / 12**0.5
    assert abs(code.mean() - (1 - m) / 2) < 4 * sd / n**0.5
    np.testing.assert_allclose(code, paper.numpy() * (1 - m))
    torch.testing.assert_close(paper, beta_draws(1.0, n, torch.Generator().manual_seed(4)))


def test_code_lambda_lets_the_partners_rare_label_always_win():
    """With lambda <= 1 - m the partner's rare label always outweighs m (eq. 19's second case),
    so a rare voxel of the partner over a background voxel is never ignored."""
    x = torch.randn(2, 1, 4, 4)
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    y[1] = 1
    for seed in range(20):
        _, y_mix = AsymmetricMixup(0.5, 0.3, (0, 1), lam="code")(
            None, x, y, torch.Generator().manual_seed(seed))
        assert bool((y_mix[0] == 1).all())      # sample 0 (background) mixed with partner 1


def test_mixup_is_reproducible_from_the_generator():
    """The same generator seed gives the same mixed batch."""
    x, y = torch.randn(4, 2, 3, 3), torch.randint(0, 2, (4, 3, 3))
    mix = AsymmetricMixup(1.0, 0.2, (0, 1))
    a = mix(None, x, y, torch.Generator().manual_seed(5))
    b = mix(None, x, y, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a[0], b[0])
    assert torch.equal(a[1], b[1])


def test_mixup_argument_errors(label_checks):
    """Non-binary r, m >= 1, alpha <= 0, an unknown lambda form, an ignore_index that is a class
    and (with label checks on) out-of-range labels raise ValueError naming the value."""
    with pytest.raises(ValueError, match="lam must be one of 'paper', 'code', got 'scaled'"):
        AsymmetricMixup(1.0, 0.2, (0, 1), lam="scaled")
    with pytest.raises(ValueError, match=r"rare\[1\] must be 0 or 1 for this technique, got 0.5"):
        AsymmetricMixup(1.0, 0.2, (0, 0.5))
    with pytest.raises(ValueError, match="m must be < 1"):
        AsymmetricMixup(1.0, 1.0, (0, 1))
    with pytest.raises(ValueError, match="alpha must be > 0.0, got 0.0"):
        Mixup(0.0, 2)
    with pytest.raises(ValueError, match="ignore_index=1 is a class label"):
        AsymmetricMixup(1.0, 0.2, (0, 1), ignore_index=1)
    with pytest.raises(ValueError, match=r"labels \[2\] outside 0..1"):
        AsymmetricMixup(1.0, 0.2, (0, 1))(None, torch.randn(2, 1, 2), torch.full((2, 2), 2))
