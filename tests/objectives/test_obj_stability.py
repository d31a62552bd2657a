"""Numerical safety (half precision, degenerate batches) and argument errors of the losses."""

from __future__ import annotations

import pytest
import torch

from study.objectives import (
    CrossEntropyLoss,
    DiceLoss,
    FBetaLoss,
    FocalLoss,
    JaccardLoss,
    LargeMarginLoss,
    MarginCalibrationLoss,
    MarginFocalLoss,
    SumLoss,
)

IGN = 255
R = (0.0, 1.0, 1.0)


def _losses():
    return [
        CrossEntropyLoss(ignore_index=IGN), CrossEntropyLoss(weight=(1, 2, 3), ignore_index=IGN),
        DiceLoss(ignore_index=IGN), DiceLoss(squared=True, ignore_index=IGN),
        JaccardLoss(ignore_index=IGN), FBetaLoss(8.0, ignore_index=IGN),
        LargeMarginLoss(3.0, R, ignore_index=IGN), LargeMarginLoss(3.0, None, "dsc",
                                                                   ignore_index=IGN),
        FocalLoss(0.5, R, ignore_index=IGN), FocalLoss(0.5, ignore_index=IGN),
        FocalLoss(4.0, R, "dsc", ignore_index=IGN), FocalLoss(0.5, None, "dsc", ignore_index=IGN),
        MarginFocalLoss(1.0, 0.5, R, ignore_index=IGN),
        MarginFocalLoss(1.0, 0.5, R, "dsc", ignore_index=IGN),
        MarginCalibrationLoss(10.0, 1.0, [100_000, 1_000, 10], ignore_index=IGN),
    ]


def _finite_value_and_grad(loss, logits, target):
    logits = logits.detach().clone().requires_grad_(True)
    value = loss(logits, target)
    value.backward()
    assert value.ndim == 0
    assert torch.isfinite(value), (loss, value)
    assert torch.isfinite(logits.grad.float()).all(), loss
    return value


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_large_half_precision_logits_are_finite(dtype):
    """bf16/fp16 logits of magnitude 1e3 (saturated softmax, q exactly 0 or 1): every loss and
    its gradient are finite; the loss is computed in float32 and returned as float32."""
    g = torch.Generator().manual_seed(0)
    logits = (1e3 * torch.randn(2, 3, 4, 4, 4, generator=g)).sign() * 1e3
    target = torch.randint(0, 3, (2, 4, 4, 4), generator=g)
    target[0, 0, 0, 0] = IGN
    for loss in _losses():
        value = _finite_value_and_grad(loss, logits.to(dtype), target)
        assert value.dtype == torch.float32


def test_confident_correct_focal_gamma_below_one_has_finite_zero_gradient():
    """Focal with gamma < 1 where p_t rounds to 1: the gradient (-> 0 mathematically) is finite."""
    logits = torch.tensor([[[50.0], [-50.0]]])
    target = torch.zeros(1, 1, dtype=torch.long)
    for loss in (FocalLoss(0.5), FocalLoss(0.5, form="dsc"), MarginFocalLoss(0.2, 0.3)):
        _finite_value_and_grad(loss, logits, target)


def test_all_background_batch():
    """A batch without foreground: finite losses and gradients; a confident all-background
    prediction has (close to) zero DSC/Jaccard/F-beta loss."""
    target = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    logits = torch.randn(2, 3, 4, 4, 4)
    for loss in _losses():
        _finite_value_and_grad(loss, logits, target)
    confident = torch.zeros(2, 3, 4, 4, 4)
    confident[:, 0] = 40.0
    for loss in (DiceLoss(), JaccardLoss(), FBetaLoss(2.0), DiceLoss(squared=True)):
        assert float(loss(confident, target)) < 1e-6


def test_all_ignored_batch_gives_zero_loss_and_gradient():
    """Every voxel ignored: every loss is exactly 0 with an all-zero gradient (no NaN from 0/0)."""
    target = torch.full((2, 4, 4, 4), IGN, dtype=torch.long)
    for loss in _losses():
        logits = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
        value = loss(logits, target)
        value.backward()
        assert float(value.detach()) == 0.0, loss
        assert float(logits.grad.abs().max()) == 0.0, loss


def test_single_voxel_foreground():
    """One foreground voxel in the batch: finite values and gradients, and the foreground
    voxel receives a non-zero gradient from every loss."""
    target = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    target[1, 2, 2, 2] = 2
    logits = torch.randn(2, 3, 4, 4, 4)
    for loss in _losses():
        x = logits.clone().requires_grad_(True)
        loss(x, target).backward()
        assert torch.isfinite(x.grad).all()
        assert x.grad[1, :, 2, 2, 2].abs().sum() > 0, loss


def test_ignored_voxels_do_not_affect_value_or_gradient():
    """Changing the logits of ignored voxels changes neither the loss nor any gradient."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    target[:, :2] = IGN
    other = logits.clone()
    other[:, :, :2] = 100 * torch.randn(2, 3, 2, 4, generator=g, dtype=torch.float64)
    for loss in _losses():
        a = logits.clone().requires_grad_(True)
        b = other.clone().requires_grad_(True)
        la, lb = loss(a, target), loss(b, target)
        la.backward()
        lb.backward()
        torch.testing.assert_close(la, lb)
        torch.testing.assert_close(a.grad, b.grad)
        assert float(a.grad[:, :, :2].abs().max()) == 0.0


def test_masked_path_without_ignored_voxels_is_exact(monkeypatch):
    """On a GPU the losses cannot ask whether a voxel is ignored without waiting for it, so
    they take the masked path; with nothing ignored it gives the same values and gradients as
    the unmasked shortcut (hard and soft targets)."""
    import study.objectives.targets as targets

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    hard = torch.randint(0, 3, (2, 4, 4), generator=g)
    soft = torch.softmax(torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), 1)

    def value_and_grad(loss, target):
        x = logits.clone().requires_grad_(True)
        value = loss(x, target)
        value.backward()
        return value.detach(), x.grad

    cases = [(loss, hard) for loss in _losses()]
    cases += [(loss, soft) for loss in _losses()[:-1]]  # calibration takes hard targets only
    shortcut = [value_and_grad(loss, target) for loss, target in cases]
    monkeypatch.setattr(targets, "may_be_set", lambda mask: True)
    for (loss, target), expected in zip(cases, shortcut, strict=True):
        torch.testing.assert_close(value_and_grad(loss, target), expected, rtol=1e-12,
                                   atol=1e-15)


def test_label_checks_switch():
    """set_label_checks turns the value checks on and off and returns the previous setting."""
    from study.objectives import label_checks, set_label_checks

    previous = set_label_checks(True)
    try:
        assert label_checks() and set_label_checks(False) is True and not label_checks()
        with pytest.raises(TypeError, match="enabled must be a bool"):
            set_label_checks(1)
    finally:
        set_label_checks(previous)


# ---------------------------------------------------------------- errors

def _ok():
    return torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FocalLoss(-1.0), r"gamma must be >= 0.0, got -1.0"),
        (lambda: FocalLoss(float("nan")), r"gamma must be finite"),
        (lambda: LargeMarginLoss(-0.5), r"m must be >= 0.0, got -0.5"),
        (lambda: LargeMarginLoss(1.0, rare=(0.0, 1.5)), r"rare\[1\] must be <= 1.0, got 1.5"),
        (lambda: FocalLoss(1.0, rare=(0.0, -0.1)), r"rare\[1\] must be >= 0.0, got -0.1"),
        (lambda: FocalLoss(1.0, form="dice"), r"form must be one of 'ce', 'dsc', got 'dice'"),
        (lambda: FBetaLoss(0.0), r"beta must be > 0.0, got 0.0"),
        (lambda: CrossEntropyLoss(weight=(1.0, -2.0)), r"weight\[1\] must be >= 0.0, got -2.0"),
        (lambda: SumLoss([]), r"terms must contain at least one objective"),
        (lambda: DiceLoss(smooth=-1.0), r"smooth must be >= 0.0, got -1.0"),
    ],
)
def test_constructor_errors_name_argument_and_value(make, match):
    """Bad constructor arguments raise ValueError naming the argument and the value."""
    with pytest.raises(ValueError, match=match):
        make()


def test_gamma_of_wrong_type():
    """A non-number gamma is a TypeError naming gamma."""
    with pytest.raises(TypeError, match="gamma must be a real number"):
        FocalLoss("2")


@pytest.mark.parametrize("loss", _losses(), ids=repr)
def test_forward_errors_name_the_problem(loss, label_checks):
    """Wrong shapes, dtypes and (with label checks on) label values raise ValueError naming
    shapes/dtypes/labels."""
    logits, target = _ok()
    with pytest.raises(ValueError, match=r"target of shape \(2, 4, 5\) does not match logits"):
        loss(logits, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels \[3\] outside 0..2"):
        loss(logits, torch.full((2, 4, 4), 3))
    with pytest.raises(ValueError, match=r"labels \[-1\] outside 0..2"):
        loss(logits, torch.full((2, 4, 4), -1))
    with pytest.raises(ValueError, match="soft target must be finite and non-negative"):
        loss(logits, -torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="logits must be a floating tensor, got dtype torch.int64"):
        loss(target.unsqueeze(1).expand(2, 3, 4, 4).clone(), target)
    with pytest.raises(ValueError, match="integer tensor .* got dtype torch.bool"):
        loss(logits, target.bool())
    with pytest.raises(ValueError, match="at least 2 classes"):
        loss(logits[:, :1], target.clamp(max=0))
    with pytest.raises(ValueError, match=r"soft target of shape \(2, 2, 4, 4\)"):
        loss(logits, torch.rand(2, 2, 4, 4))


def test_rare_of_wrong_length():
    """A rare vector whose length differs from the number of classes raises at forward, naming
    rare, its length and the number of classes."""
    logits, target = _ok()
    for loss in (LargeMarginLoss(1.0, (0, 1)), FocalLoss(2.0, (0, 1, 1, 1), "dsc"),
                 CrossEntropyLoss(weight=(1.0, 2.0))):
        with pytest.raises(ValueError, match=r"(rare|weight) has \d entries but the logits have 3"):
            loss(logits, target)
