"""Technique id + hyperparameters -> objective, batch regularizers and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import study.objectives as obj
from study.spec import load_search_spaces
from study.techniques import (
    IGNORE,
    TECHNIQUES,
    AlignedAdversarialPerturbation,
    AugmentationGate,
    Context,
    build_objective,
    build_training,
)

RARE = (0.0, 1.0)
COUNTS = np.array([990_000, 10_000])


def _context(dsc_term: bool = True) -> Context:
    return Context(RARE, dsc_term, class_counts=lambda: COUNTS)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 6, 6, 6, generator=generator)
    target = (torch.rand(2, 6, 6, 6, generator=generator) < 0.1).long()
    return logits, target


def _kinds(built) -> list[str]:
    kinds = [type(r).__name__ for r in built.regularizers]
    if built.augmentation is not None:
        kinds.append("augmentation")
    return kinds


EXPECTED_BATCHES = {
    "adversarial": ["AlignedAdversarialPerturbation"],
    "asym_adversarial": ["AlignedAdversarialPerturbation"],
    "mixup": ["Mixup"],
    "asym_mixup": ["AsymmetricMixup"],
    "asym_augmentation": ["augmentation"],
    "combination": ["AlignedAdversarialPerturbation", "Mixup"],
    "asym_combination": ["AlignedAdversarialPerturbation", "AsymmetricMixup"],
}


def test_every_technique_of_the_search_spaces_builds_its_loss_and_batches(batch):
    """Each search space's technique builds from its first grid point, for both models'
    baselines; the loss is a finite scalar and the regularizers are those of the technique."""
    spaces = load_search_spaces()
    assert set(spaces) == set(TECHNIQUES)
    for technique, space in spaces.items():
        for dsc_term in (True, False):
            built = build_training(technique, space.settings()[0], _context(dsc_term))
            value = built.loss(*batch)
            assert value.ndim == 0 and torch.isfinite(value), technique
            assert _kinds(built) == EXPECTED_BATCHES.get(technique, []), technique


def test_unet_objectives_are_the_papers_ce_plus_dsc_forms(batch):
    """vanilla = CE + DSC; asym_focal = focal CE + focal DSC with r; focal passes r = None."""
    torch.testing.assert_close(build_objective("vanilla", {}, RARE)(*batch),
                               obj.CrossEntropyLoss()(*batch) + obj.DiceLoss()(*batch))
    expected = (obj.FocalLoss(2.0, rare=RARE, form="ce")(*batch)
                + obj.FocalLoss(2.0, rare=RARE, form="dsc")(*batch))
    torch.testing.assert_close(build_objective("asym_focal", {"gamma": 2.0}, RARE)(*batch),
                               expected)
    symmetric = (obj.FocalLoss(2.0, form="ce")(*batch) + obj.FocalLoss(2.0, form="dsc")(*batch))
    torch.testing.assert_close(build_objective("focal", {"gamma": 2.0}, RARE)(*batch), symmetric)
    assert not torch.allclose(symmetric, expected)


def test_deepmedic_objectives_are_ce_forms_only(batch):
    """DeepMedic (001 BraTS/ATLAS) trains with CE: vanilla = CE, asym_large_margin = eq. 6."""
    torch.testing.assert_close(build_objective("vanilla", {}, RARE, dsc_term=False)(*batch),
                               obj.CrossEntropyLoss()(*batch))
    torch.testing.assert_close(
        build_objective("asym_large_margin", {"m": 1.0}, RARE, dsc_term=False)(*batch),
        obj.LargeMarginLoss(1.0, rare=RARE)(*batch))


def test_combination_is_eq_22_plus_the_batch_techniques(batch):
    """asym_combination: margin and focal in one loss (eq. 22), asymmetric adversarial and
    mixup batches, asymmetric augmentation; absent hyperparameters switch a technique off."""
    hp = {"m": 1.0, "gamma": 1.5, "eps": 1e-5, "l": 10.0, "mixup_m": 0.2, "mixup_alpha": 1.0,
          "bg_aug_prob": 0.5}
    built = build_training("asym_combination", hp, _context())
    expected = (obj.MarginFocalLoss(1.0, 1.5, rare=RARE, form="ce")(*batch)
                + obj.MarginFocalLoss(1.0, 1.5, rare=RARE, form="dsc")(*batch))
    torch.testing.assert_close(built.loss(*batch), expected)
    adversarial, mixup = built.regularizers
    assert (adversarial.eps, adversarial.l, adversarial.rare) == (1e-5, 10.0, RARE)
    assert (mixup.m, mixup.alpha, mixup.rare, mixup.ignore_index) == (0.2, 1.0, RARE, IGNORE)
    assert built.augmentation == AugmentationGate(0.5, RARE)
    only_focal = build_training("asym_combination", {"gamma": 2.0}, _context())
    assert only_focal.regularizers == () and only_focal.augmentation is None
    symmetric = build_training("combination", {"eps": 1e-5, "l": 5.0, "mixup_alpha": 0.2},
                               _context())
    assert symmetric.regularizers[0].rare is None and isinstance(symmetric.regularizers[1],
                                                                 obj.Mixup)
    augmented = build_training("combination", {"bg_aug_prob": 0.25}, _context())
    assert augmented.augmentation == AugmentationGate(0.25, (0.0, 0.0))  # no class favoured


def test_region_and_calibration_losses_stand_alone(batch):
    """f_beta with beta = 1 is the DSC loss (001 Table II "F1 (DSC)"); margin calibration uses
    the training set's class counts (003 Cor. 1.1)."""
    dsc = build_training("dsc", {}, _context()).loss
    f1 = build_training("f_beta", {"beta": 1.0}, _context()).loss
    torch.testing.assert_close(f1(*batch), dsc(*batch))
    torch.testing.assert_close(dsc(*batch), obj.DiceLoss()(*batch))
    calibration = build_training("margin_calibration", {"tau": 10.0, "nu": 1.0}, _context()).loss
    torch.testing.assert_close(calibration(*batch),
                               obj.MarginCalibrationLoss(10.0, 1.0, COUNTS)(*batch))
    with pytest.raises(ValueError, match="class voxel counts"):
        build_training("margin_calibration", {"tau": 1.0, "nu": 1.0}, Context(RARE))


def test_asymmetric_mixup_targets_are_accepted_by_every_loss(batch):
    """Eq. 19 writes IGNORE for voxels not trained on; every technique's loss skips them."""
    logits, target = batch
    ignored = target.clone()
    ignored[:, :3] = IGNORE
    for technique in ("vanilla", "asym_focal", "asym_large_margin", "asym_combination"):
        hp = {"gamma": 2.0} if technique == "asym_focal" else {"m": 1.0} \
            if technique == "asym_large_margin" else {}
        loss = build_training(technique, hp, _context()).loss
        torch.testing.assert_close(loss(logits, ignored), loss(logits[:, :, 3:],
                                                                target[:, 3:]))


def test_adversarial_direction_reads_the_central_output_of_a_valid_convolution_model():
    """The direction loss crops the input-sized target to the logits (DeepMedic); the
    perturbation covers the whole input and has norm l per sample (eq. 14)."""
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3)  # 8^3 -> 6^3, like a one-layer valid network
    x, target = torch.randn(2, 1, 8, 8, 8), torch.randint(0, 2, (2, 8, 8, 8))
    target[:, 3, 3, 3] = 1
    adversarial = AlignedAdversarialPerturbation(1e-5, 10.0, RARE, ignore_index=IGNORE)
    delta = adversarial.perturbation(net, x, target)
    assert delta.shape == x.shape
    torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((2,), 10.0))


def test_bad_hyperparameters_are_named():
    """Unknown technique, unknown/missing hyperparameter, half a pair: ValueErrors naming it."""
    with pytest.raises(ValueError, match="unknown 'mixupp'"):
        build_training("mixupp", {}, _context())
    with pytest.raises(ValueError, match=r"missing \['l'\]"):
        build_training("asym_adversarial", {"eps": 1e-5}, _context())
    with pytest.raises(ValueError, match="eps and l together"):
        build_training("asym_combination", {"l": 10.0}, _context())
    with pytest.raises(ValueError, match=r"unknown \['mixup_m'\]"):
        build_training("combination", {"mixup_m": 0.2, "mixup_alpha": 1.0}, _context())
