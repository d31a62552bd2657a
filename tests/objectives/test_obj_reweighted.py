"""Re-weighted cross-entropy (004 Table 2 "reweight-ce", 000 eq. 5) with inverse-frequency
class weights, against its equation ``L = -(1/N) sum_v w_{y_v} log p_{v, y_v}``,
``w_k = n / (K n_k)``, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import study.objectives as obj
from study.techniques import IGNORE, Context, build_training

COUNTS = np.array([900, 90, 10])  # background, a common and a rare class


def _reference(logits: torch.Tensor, target: torch.Tensor, weight) -> torch.Tensor:
    """The equation in float64, voxel by voxel."""
    logp = torch.log_softmax(logits.double(), dim=1).movedim(1, -1).reshape(-1, logits.shape[1])
    labels = target.reshape(-1)
    valid = labels != IGNORE
    w = torch.tensor(weight, dtype=torch.float64)[labels[valid]]
    picked = logp[valid].gather(1, labels[valid, None])[:, 0]
    return -(w * picked).sum() / max(int(valid.sum()), 1)


def test_inverse_frequency_weights_balance_the_classes():
    """w_k = n / (K n_k): every class weighs n / K in total, the voxel-weighted mean weight
    is 1, equally frequent classes get 1, an absent class 0."""
    w = np.array(obj.inverse_frequency_weights(COUNTS))
    np.testing.assert_allclose(w, [1000 / (3 * 900), 1000 / (3 * 90), 1000 / (3 * 10)])
    np.testing.assert_allclose(w * COUNTS, 1000 / 3)
    assert float((w * COUNTS).sum() / COUNTS.sum()) == pytest.approx(1.0)
    assert obj.inverse_frequency_weights([5, 5]) == [1.0, 1.0]
    assert obj.inverse_frequency_weights([30, 0, 10]) == [2 / 3, 0.0, 2.0]


@pytest.mark.parametrize("counts", [[0, 0], [-1, 3], [1.5, 2], [], [[1, 2]]])
def test_inverse_frequency_weights_refuse_bad_counts(counts):
    with pytest.raises(ValueError, match="counts: "):
        obj.inverse_frequency_weights(counts)


def _loss():
    context = Context((0.0, 0.0, 1.0), dsc_term=False, class_counts=lambda: COUNTS)
    return build_training("reweighted_ce", {}, context).loss


def test_reweighted_ce_technique_is_the_equation():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5, 6))
    target[0, 0] = IGNORE
    loss = _loss()
    weight = obj.inverse_frequency_weights(COUNTS)
    value = loss(logits, target)
    torch.testing.assert_close(value.double(), _reference(logits, target, weight))
    value.backward()
    # 000 eq. 5: dL/dz = w_y (p - y) / N per valid voxel, 0 on ignored voxels
    p = torch.softmax(logits.detach(), 1)
    valid = target != IGNORE
    onehot = torch.nn.functional.one_hot(target.clamp(0, 2), 3).movedim(-1, 1).float()
    w = torch.tensor(weight)[target.clamp(0, 2)][:, None]
    expected = w * (p - onehot) * valid[:, None] / valid.sum()
    torch.testing.assert_close(logits.grad, expected.float())


def test_missing_class_counts_are_refused():
    with pytest.raises(ValueError, match="reweighted_ce needs the training set's class voxel"):
        build_training("reweighted_ce", {}, Context((0.0, 1.0), dsc_term=False))


def test_empty_foreground_is_the_background_weight_times_ce():
    """A batch without foreground: the background weight times plain CE."""
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, 4)
    target = torch.zeros(2, 4, 4, 4, dtype=torch.int64)
    w0 = obj.inverse_frequency_weights(COUNTS)[0]
    torch.testing.assert_close(_loss()(logits, target),
                               w0 * torch.nn.functional.cross_entropy(logits, target))


def test_all_ignored_voxels_give_zero_loss_and_gradient():
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4, 4), IGNORE, dtype=torch.int64)
    value = _loss()(logits, target)
    value.backward()
    assert float(value.detach()) == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_extreme_bf16_logits_stay_finite_and_exact():
    """Logits of +-1e4 in bf16 (one wrong, confident voxel per class): finite loss and
    gradient, equal to the float64 equation."""
    logits = torch.zeros(1, 3, 2, 2, 2)
    logits[:, 0] = 1e4
    logits[:, 2] = -1e4
    logits = logits.bfloat16().requires_grad_()
    target = torch.tensor([[[[0, 1], [2, 0]], [[1, 2], [0, IGNORE]]]])
    value = _loss()(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad.float()).all()
    reference = _reference(logits.detach().float(), target, obj.inverse_frequency_weights(COUNTS))
    assert float(value.detach()) == pytest.approx(float(reference), rel=1e-2)
