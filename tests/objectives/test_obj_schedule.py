"""The summed and sequential updates of a training step (001 §IV-F), both reference orders,
and the doctests."""

from __future__ import annotations

import copy
import doctest
import importlib
import pkgutil

import pytest
import torch
from torch import nn

import study.objectives as objectives
from study.objectives import (
    AdversarialPerturbation,
    AsymmetricMixup,
    CrossEntropyLoss,
    regularized_step,
)


class _FixedBatch:
    """A deterministic regularizer returning a fixed batch and recording the model's weights."""

    def __init__(self, x, y):
        self.x, self.y, self.seen = x, y, []

    def __call__(self, model, x, target, generator=None):
        self.seen.append(model.weight.detach().clone())
        return self.x, self.y


class _Recorded:
    """Wraps a regularizer and keeps the batches it generated."""

    def __init__(self, reg):
        self.reg, self.batches = reg, []

    def __call__(self, model, x, target, generator=None):
        batch = self.reg(model, x, target, generator)
        self.batches.append(batch)
        return batch


def _setup(seed=0):
    torch.manual_seed(seed)
    net = nn.Conv2d(1, 2, 1).double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 4, 4))
    return net, x, y


def _manual_steps(net, opt, batches, loss):
    """One zero_grad/backward/step per batch: the sequential update written out."""
    for xb, yb in batches:
        opt.zero_grad()
        loss(net(xb), yb).backward()
        opt.step()


def test_summed_update_is_one_step_on_the_summed_loss():
    """update="summed": one optimizer step whose gradient is that of L(x, y) + L(x_r, y_r)
    (eq. 14/17), with every extra batch generated from the weights before the step."""
    net, x, y = _setup()
    ref = _setup()[0]
    x2, y2 = torch.randn_like(x), torch.randint(0, 2, y.shape)
    reg = _FixedBatch(x2, y2)
    loss = CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    w0 = net.weight.detach().clone()
    out = regularized_step(net, loss, opt, x, y, regularizers=[reg])
    assert out.optimizer_steps == 1 and list(out.losses) == ["clean", "_FixedBatch"]
    torch.testing.assert_close(reg.seen[0], w0)
    total = loss(ref(x), y) + loss(ref(x2), y2)
    total.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.5 * p.grad
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(out.total, total.detach())


@pytest.mark.parametrize("before", [False, True])
def test_sequential_update_is_one_optimizer_step_per_batch(before):
    """update="sequential": 1 + k optimizer steps through one optimizer (its momentum carries
    over), clean batch first; the parameters equal the steps taken by hand, in either order.
    U-Net order: each batch is generated from the weights the previous step left; DeepMedic
    order (generate_before_clean): every batch from the starting weights."""
    net, x, y = _setup()
    ref = copy.deepcopy(net)
    batches = [(torch.randn_like(x), torch.randint(0, 2, y.shape)) for _ in range(2)]
    regs = [_FixedBatch(*b) for b in batches]
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    w0 = net.weight.detach().clone()
    out = regularized_step(net, CrossEntropyLoss(), opt, x, y, regularizers=regs,
                           update="sequential", generate_before_clean=before)
    assert out.optimizer_steps == 3
    assert list(out.losses) == ["clean", "_FixedBatch", "_FixedBatch2"]
    seen = [r.seen[0] for r in regs]
    if before:
        assert all(torch.equal(w, w0) for w in seen)
    else:
        assert not torch.equal(seen[0], w0) and not torch.equal(seen[1], seen[0])
    _manual_steps(ref, torch.optim.SGD(ref.parameters(), lr=0.5, momentum=0.9),
                  [(x, y), *batches], CrossEntropyLoss())
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_adversarial_direction_uses_the_weights_of_each_reference_order():
    """DeepMedic order: the adversarial batch is x + the perturbation computed before the clean
    step (pre-update weights, then one step stale); U-Net order: computed after the clean
    step, from the updated weights."""
    net, x, y = _setup()
    y[:, 1, 1] = 1
    adv = AdversarialPerturbation(1e-5, 10.0, (0, 1))
    before = adv.perturbation(net, x, y, torch.Generator().manual_seed(7))
    stepped = copy.deepcopy(net)
    _manual_steps(stepped, torch.optim.SGD(stepped.parameters(), lr=0.5), [(x, y)],
                  CrossEntropyLoss())
    after = adv.perturbation(stepped, x, y, torch.Generator().manual_seed(7))
    assert not torch.allclose(before, after)
    for generate_before_clean, expected in ((True, before), (False, after)):
        model = copy.deepcopy(net)
        recorded = _Recorded(adv)
        out = regularized_step(model, CrossEntropyLoss(), torch.optim.SGD(model.parameters(),
                                                                          lr=0.5),
                               x, y, regularizers=[recorded], update="sequential",
                               generate_before_clean=generate_before_clean,
                               generator=torch.Generator().manual_seed(7))
        assert out.optimizer_steps == 2
        (x_adv, y_adv), = recorded.batches
        assert torch.equal(x_adv, x + expected) and y_adv is y


def test_update_arguments_are_checked():
    net, x, y = _setup()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    with pytest.raises(ValueError, match="update must be one of 'summed', 'sequential', "
                                         "got 'paper'"):
        regularized_step(net, CrossEntropyLoss(), opt, x, y, update="paper")
    with pytest.raises(TypeError, match="generate_before_clean must be a bool"):
        regularized_step(net, CrossEntropyLoss(), opt, x, y, generate_before_clean="yes")


def _combination():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))
    x = torch.randn(2, 1, 6, 6, 6)
    y = torch.zeros(2, 6, 6, 6, dtype=torch.long)
    y[0, 2:4, 2:4, 2:4] = 1
    r = (0, 1)
    mix = AsymmetricMixup(1.0, 0.2, r)
    loss = (objectives.MarginFocalLoss(0.5, 2.0, r, ignore_index=mix.ignore_index)
            + objectives.MarginFocalLoss(0.5, 2.0, r, "dsc", ignore_index=mix.ignore_index))
    return net, x, y, loss, [AdversarialPerturbation(1e-5, 10.0, r), mix]


@pytest.mark.parametrize(("update", "before"), [("summed", False), ("sequential", False),
                                                ("sequential", True)])
def test_full_combination_trains(update, before):
    """The asymmetric combination (eq. 22 with eq. 16 and 19 batches) trains a tiny 3D net
    with finite losses, one term per batch, and 1 or 1 + k optimizer steps."""
    net, x, y, loss, regs = _combination()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    out = regularized_step(net, loss, opt, x, y, regularizers=regs, update=update,
                           generate_before_clean=before,
                           generator=torch.Generator().manual_seed(0))
    assert list(out.losses) == ["clean", "AdversarialPerturbation", "AsymmetricMixup"]
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert out.optimizer_steps == (1 if update == "summed" else 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_step_never_waits_for_the_gpu():
    """With label checks off, the combination's losses and batches queue every kernel without
    reading a value back (no host-device synchronisation)."""
    net, x, y, loss, regs = _combination()
    net, x, y = net.cuda(), x.cuda(), y.cuda()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    regularized_step(net, loss, opt, x, y, regularizers=regs)  # warm-up (lazy CUDA init)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for update, before in (("summed", False), ("sequential", False), ("sequential", True)):
            regularized_step(net, loss, opt, x, y, regularizers=regs, update=update,
                             generate_before_clean=before)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_docstring_examples():
    """Every usage example in the package's docstrings runs and prints what it claims."""
    failures = 0
    for info in pkgutil.iter_modules(objectives.__path__):
        module = importlib.import_module(f"study.objectives.{info.name}")
        failures += doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed
    assert failures == 0
