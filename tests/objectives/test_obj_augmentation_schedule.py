"""Asymmetric augmentation (001 eq. 21), the paper/sequential schedules, and the doctests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch
from torch import nn

import study.objectives as objectives
from study.objectives import (
    AdversarialPerturbation,
    AsymmetricAugmentation,
    AsymmetricMixup,
    CrossEntropyLoss,
    RandomFlip,
    regularized_step,
)


def _mark(x_b, y_b, generator=None):
    """A transform that marks the sample: adds 1000 to every input value."""
    return x_b + 1000.0, y_b


def _batch(n=4):
    x = torch.zeros(n, 2, 4, 4)
    y = torch.zeros(n, 4, 4, dtype=torch.long)
    y[: n // 2, 1, 1] = 1                        # first half: rare-class samples
    return x, y


def _augmented(x_out):
    return (x_out.flatten(1) > 500).all(1)


def test_probability_one_and_zero():
    """p = 1 augments every sample; p = 0 never augments background samples and always
    augments rare-class samples."""
    x, y = _batch()
    out, _ = AsymmetricAugmentation(_mark, 1.0, (0, 1))(None, x, y)
    assert _augmented(out).tolist() == [True] * 4
    for seed in range(5):
        out, _ = AsymmetricAugmentation(_mark, 0.0, (0, 1))(None, x, y,
                                                            torch.Generator().manual_seed(seed))
        assert _augmented(out).tolist() == [True, True, False, False]


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_background_augmentation_rate(p):
    """Over 4000 background samples the augmented fraction is p (within 4 binomial sd)."""
    n = 4000
    x = torch.zeros(n, 1, 2, 2)
    y = torch.zeros(n, 2, 2, dtype=torch.long)
    out, _ = AsymmetricAugmentation(_mark, p, (0, 1))(None, x, y, torch.Generator().manual_seed(1))
    rate = float(_augmented(out).double().mean())
    assert abs(rate - p) < 4 * (p * (1 - p) / n) ** 0.5


def test_centre_criterion():
    """by="centre": a patch is a rare-class sample only if its centre voxel is rare."""
    x, y = _batch(2)
    y[1, 2, 2] = 1                                           # centre of a 4x4 patch is (2, 2)
    out, _ = AsymmetricAugmentation(_mark, 0.0, (0, 1), by="centre")(None, x, y)
    assert _augmented(out).tolist() == [False, True]


def test_flip_is_channel_consistent():
    """RandomFlip flips every input channel and the label identically (the reference DeepMedic
    code flipped channel 0 only)."""
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    y = torch.arange(3 * 4 * 5).view(3, 4, 5)
    fx, fy = RandomFlip(axes=(0, 2), p=1.0)(x, y)
    torch.testing.assert_close(fx, x.flip([1, 3]))
    assert torch.equal(fy, y.flip([0, 2]))
    same = RandomFlip(axes=(0,), p=0.0)(x, y)
    assert same[0] is x and same[1] is y


def test_augmentation_argument_errors():
    """p outside [0, 1], continuous r and an unknown criterion raise ValueError naming them."""
    with pytest.raises(ValueError, match="p_background must be <= 1.0, got 1.5"):
        AsymmetricAugmentation(_mark, 1.5, (0, 1))
    with pytest.raises(ValueError, match=r"rare\[1\] must be 0 or 1"):
        AsymmetricAugmentation(_mark, 0.5, (0, 0.3))
    with pytest.raises(ValueError, match='by must be "any" or "centre"'):
        AsymmetricAugmentation(_mark, 0.5, (0, 1), by="middle")


# ---------------------------------------------------------------- schedule

class _FixedBatch:
    """A deterministic regularizer returning a fixed batch and recording the model's weights."""

    def __init__(self, x, y):
        self.x, self.y, self.seen = x, y, []

    def __call__(self, model, x, target, generator=None):
        self.seen.append(model.weight.detach().clone())
        return self.x, self.y


def _setup(seed=0):
    torch.manual_seed(seed)
    net = nn.Conv2d(1, 2, 1).double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 4, 4))
    return net, x, y


def test_paper_mode_is_one_step_on_the_summed_loss():
    """mode="paper": one optimizer step whose gradient is that of L(x, y) + L(x_r, y_r)
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


def test_sequential_mode_steps_after_each_batch():
    """mode="sequential": 1 + k optimizer steps, each extra batch generated with the weights
    updated by the previous step (the reference code's schedule)."""
    net, x, y = _setup()
    regs = [_FixedBatch(x, y), _FixedBatch(x, y)]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    w0 = net.weight.detach().clone()
    out = regularized_step(net, CrossEntropyLoss(), opt, x, y, regularizers=regs,
                           mode="sequential")
    assert out.optimizer_steps == 3
    assert list(out.losses) == ["clean", "_FixedBatch", "_FixedBatch2"]
    assert not torch.equal(regs[0].seen[0], w0)
    assert not torch.equal(regs[1].seen[0], regs[0].seen[0])
    with pytest.raises(ValueError, match='mode must be "paper" or "sequential"'):
        regularized_step(net, CrossEntropyLoss(), opt, x, y, mode="summed")


def test_full_combination_runs_in_both_modes():
    """The asymmetric combination (eq. 22 with eq. 16, 19 and 21 batches) trains a tiny 3D net
    in both modes with finite losses."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))
    x = torch.randn(2, 1, 6, 6, 6)
    y = torch.zeros(2, 6, 6, 6, dtype=torch.long)
    y[0, 2:4, 2:4, 2:4] = 1
    r = (0, 1)
    mix = AsymmetricMixup(1.0, 0.2, r)
    loss = (objectives.MarginFocalLoss(0.5, 2.0, r, ignore_index=mix.ignore_index)
            + objectives.MarginFocalLoss(0.5, 2.0, r, "dsc", ignore_index=mix.ignore_index))
    for mode in ("paper", "sequential"):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        out = regularized_step(
            net, loss, opt, x, y, mode=mode, generator=torch.Generator().manual_seed(0),
            regularizers=[AdversarialPerturbation(1e-5, 10.0, r), mix],
            augmentation=AsymmetricAugmentation(RandomFlip(), 0.5, r))
        assert all(torch.isfinite(v) for v in out.losses.values())


def test_docstring_examples():
    """Every usage example in the package's docstrings runs and prints what it claims."""
    failures = 0
    for info in pkgutil.iter_modules(objectives.__path__):
        module = importlib.import_module(f"study.objectives.{info.name}")
        failures += doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed
    assert failures == 0
