"""Adversarial training (001 eq. 14-16): perturbation norm, rare-only direction, no side effects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from study.objectives import AdversarialPerturbation, CrossEntropyLoss, l2_normalize


def _net(cin=2, c=3, bn=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Conv3d(cin, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm3d(4))
    layers += [nn.Tanh(), nn.Conv3d(4, c, 1)]
    return nn.Sequential(*layers).double()


def _batch(n=3, cin=2, c=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, 4, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n, 4, 4, 4), generator=g)
    return x, y


def _gen(seed=7):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("l", [2.5, 10.0, 100.0])
def test_perturbation_has_norm_l_and_zero_without_rare_voxels(l):  # noqa: E741
    """Each sample's perturbation has L2 norm l over all channels and voxels; a sample with no
    rare voxel gets exactly zero perturbation in the asymmetric variant."""
    x, y = _batch()
    y[1] = torch.where(y[1] == 2, 1, y[1])            # sample 1: no voxel of rare class 2
    adv = AdversarialPerturbation(1e-5, l, rare=(0, 0, 1))
    delta = adv.perturbation(_net(), x, y, _gen())
    norms = delta.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms[[0, 2]], torch.full((2,), l, dtype=torch.float64))
    assert float(norms[1]) == 0.0
    x_adv, y_adv = adv(_net(), x, y, _gen())
    torch.testing.assert_close(x_adv, x + delta)
    assert y_adv is y


def test_rare_all_zero_gives_no_perturbation():
    """r = 0: no voxel defines a direction, the perturbation is 0 (eq. 16 with y.r = 0)."""
    x, y = _batch()
    delta = AdversarialPerturbation(1e-5, 10.0, rare=(0, 0, 0)).perturbation(_net(), x, y)
    assert float(delta.abs().max()) == 0.0


def test_direction_uses_only_rare_targets():
    """Asymmetric: relabelling voxels among non-rare classes leaves the perturbation unchanged
    (same random start); relabelling a voxel to the rare class changes it."""
    x, y = _batch()
    adv = AdversarialPerturbation(1e-5, 10.0, rare=(0, 0, 1))
    net = _net()
    base = adv.perturbation(net, x, y, _gen())
    swapped = torch.where(y == 0, 1, torch.where(y == 1, 0, y))
    torch.testing.assert_close(adv.perturbation(net, x, swapped, _gen()), base)
    more_rare = y.clone()
    more_rare[0, 0, 0, 0] = 2 if y[0, 0, 0, 0] != 2 else 0
    assert not torch.allclose(adv.perturbation(net, x, more_rare, _gen()), base)


def test_symmetric_direction_is_normalised_ce_gradient_of_linear_model():
    """Symmetric (rare=None) on a 1x1x1 convolution with eps = 0: the direction is the
    per-sample normalised analytic gradient of the full CE, W^T (p - y) / N per voxel."""
    torch.manual_seed(0)
    net = nn.Conv3d(2, 3, 1).double()
    x, y = _batch()
    delta = AdversarialPerturbation(0.0, 1.0).perturbation(net, x, y)
    with torch.no_grad():
        p = torch.softmax(net(x), 1)
        onehot = nn.functional.one_hot(y, 3).movedim(-1, 1).double()
        w = net.weight[:, :, 0, 0, 0]                      # [C, Cin]
        grad = torch.einsum("kc,nk...->nc...", w, p - onehot) / y.numel()
    torch.testing.assert_close(delta, l2_normalize(grad))


def test_perturbation_ascends_the_direction_loss():
    """First-order ascent: L_r(x + r_adv) > L_r(x) for a small magnitude on a smooth net."""
    x, y = _batch()
    net = _net()
    adv = AdversarialPerturbation(1e-5, 1e-2, rare=(0, 1, 1))
    delta = adv.perturbation(net, x, y, _gen())
    with torch.no_grad():
        assert adv.direction_loss(net(x + delta), y) > adv.direction_loss(net(x), y)


def test_all_negative_gradient_keeps_its_sign():
    """Regression for the reference code's signed-max normalisation: when every input-gradient
    entry is negative the perturbation is negative everywhere and increases the loss."""
    net = nn.Conv3d(1, 2, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1, 1))
    x = torch.rand(2, 1, 3, 3, 3, dtype=torch.float64)
    y = torch.ones(2, 3, 3, 3, dtype=torch.long)          # CE = softplus(-x): decreasing in x
    delta = AdversarialPerturbation(0.0, 1.0, rare=(0, 1)).perturbation(net, x, y)
    assert bool((delta < 0).all())
    ce = CrossEntropyLoss()
    assert ce(net(x + delta), y) > ce(net(x), y)


def test_direction_step_leaves_model_state_untouched():
    """The direction step changes no parameter, no parameter .grad and no BatchNorm running
    statistic (model in training mode)."""
    net = _net(bn=True).train()
    x, y = _batch()
    net(x).sum().backward()                                   # some existing gradients
    state = {k: v.clone() for k, v in net.state_dict().items()}
    grads = [p.grad.clone() for p in net.parameters()]
    AdversarialPerturbation(1e-5, 10.0, rare=(0, 1, 1)).perturbation(net, x, y, _gen())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)
    for p, g in zip(net.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


def test_ignored_voxels_do_not_steer_the_direction():
    """Voxels with ignore_index do not enter the direction loss: the perturbation equals the one
    obtained with those voxels labelled background (zero weight in y ⊙ r)."""
    x, y = _batch()
    net = _net()
    y_ign = y.clone()
    y_ign[:, :2] = 99
    a = AdversarialPerturbation(1e-5, 10.0, rare=(0, 0, 1), ignore_index=99)
    b = AdversarialPerturbation(1e-5, 10.0, rare=(0, 0, 1))
    y_bg = y.clone()
    y_bg[:, :2] = 0                                            # background: no rare weight
    torch.testing.assert_close(a.perturbation(net, x, y_ign, _gen()),
                               b.perturbation(net, x, y_bg, _gen()))


def test_adversarial_argument_errors(label_checks):
    """Negative eps or l, r of the wrong length, bad batches raise ValueError naming them."""
    with pytest.raises(ValueError, match="eps must be >= 0.0, got -1.0"):
        AdversarialPerturbation(-1.0, 1.0)
    with pytest.raises(ValueError, match="l must be >= 0.0, got -2.0"):
        AdversarialPerturbation(1e-5, -2.0)
    x, y = _batch()
    with pytest.raises(ValueError, match="rare has 2 entries but the logits have 3"):
        AdversarialPerturbation(1e-5, 1.0, rare=(0, 1)).perturbation(_net(), x, y)
    with pytest.raises(ValueError, match=r"target of shape \(3, 4, 4\) does not match x"):
        AdversarialPerturbation(1e-5, 1.0).perturbation(_net(), x, y[:, 0])
    with pytest.raises(ValueError, match=r"labels \[3\] outside 0..2"):
        AdversarialPerturbation(1e-5, 1.0).perturbation(_net(), x, y + 1)
