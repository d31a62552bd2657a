"""Technique id + hyperparameters -> objective, batch regularizers and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import study.objectives as obj
from study.catalog import TECHNIQUES
from study.spec import load_search_spaces
from study.techniques import (
    IGNORE,
    AlignedAdversarialPerturbation,
    AugmentationGate,
    Context,
    build_objective,
    build_training,
)

RARE = (0.0, 1.0)
COUNTS = np.array([990_000, 10_000])


def _context(dsc_term: bool = True, **options) -> Context:
    return Context(RARE, dsc_term, class_counts=lambda: COUNTS, **options)


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


@pytest.mark.parametrize("hp", [
    {"m": 1.0, "gamma": 2.0, "bg_aug_prob": 0.5},
    {"m": 1.0, "gamma": 2.0, "eps": 1e-5, "l": 10.0, "bg_aug_prob": 0.5},
    {"m": 1.0, "gamma": 2.0, "eps": 1e-5, "l": 10.0, "mixup_m": 0.2, "mixup_alpha": 1.0},
    {"gamma": 4.0, "mixup_m": 0.2, "mixup_alpha": 1.0},
    {"bg_aug_prob": 0.25},
])
def test_combination_of_any_subset(batch, hp):
    """asym_combination / combination take any subset of their techniques (000 Tables II-III:
    the ATLAS and KiTS settings leave some out): the loss has margin and/or focal as given,
    the batches and the augmentation gate are exactly those given, asymmetric with r or
    symmetric without."""
    for technique, asymmetric in (("asym_combination", True), ("combination", False)):
        given = {k: v for k, v in hp.items() if asymmetric or k != "mixup_m"}
        built = build_training(technique, given, _context())
        rare = RARE if asymmetric else None
        m, gamma = given.get("m", 0.0), given.get("gamma", 0.0)
        expected = (obj.MarginFocalLoss(m, gamma, rare, "ce")(*batch)
                    + obj.MarginFocalLoss(m, gamma, rare, "dsc")(*batch))
        torch.testing.assert_close(built.loss(*batch), expected)
        kinds = ["AlignedAdversarialPerturbation"] if "eps" in given else []
        if "mixup_alpha" in given:
            kinds.append("AsymmetricMixup" if asymmetric else "Mixup")
        if "bg_aug_prob" in given:
            kinds.append("augmentation")
        assert _kinds(built) == kinds, (technique, given)
        if "bg_aug_prob" in given:
            gate = RARE if asymmetric else (0.0, 0.0)
            assert built.augmentation == AugmentationGate(given["bg_aug_prob"], gate)


def test_sample_wise_dsc_reaches_every_dsc_form(batch):
    """Context.batch_dice=False (001 §V-A.4, the U-Net's "sample-wise DSC loss") builds every
    DSC-form loss sample-wise: the baseline's DSC term, its margin/focal forms and the region
    techniques; the CE terms are unchanged."""
    logits, target = batch
    sample_wise = _context(batch_dice=False)
    for technique, hp in (("vanilla", {}), ("asym_large_margin", {"m": 1.0}),
                          ("focal", {"gamma": 2.0}),
                          ("asym_combination", {"m": 1.0, "gamma": 2.0}), ("dsc", {}),
                          ("jaccard", {}), ("f_beta", {"beta": 2.0})):
        loss = build_training(technique, hp, sample_wise).loss
        terms = list(loss.terms) if isinstance(loss, obj.SumLoss) else [loss]
        dsc_terms = [t for t in terms if getattr(t, "form", "dsc") == "dsc"
                     and not isinstance(t, obj.CrossEntropyLoss)]
        assert len(dsc_terms) == 1 and dsc_terms[0].batch_dice is False, technique
        per_sample = torch.stack([loss(logits[i:i + 1], target[i:i + 1]) for i in range(2)])
        torch.testing.assert_close(loss(logits, target), per_sample.mean())


def test_mixup_lambda_form_reaches_asymmetric_mixup():
    """Context.mixup_lambda chooses eq. 18's lambda ("paper") or the reference code's
    (1 - m)-scaled one ("code"); an unknown form is named."""
    hp = {"mixup_m": 0.2, "mixup_alpha": 1.0}
    for form in ("paper", "code"):
        for technique in ("asym_mixup", "asym_combination"):
            (mixup,) = build_training(technique, hp, _context(mixup_lambda=form)).regularizers
            assert mixup.lam == form
    with pytest.raises(ValueError, match="mixup_lambda must be one of paper, code, got 'x'"):
        _context(mixup_lambda="x")


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
    hps = {"vanilla": {}, "asym_focal": {"gamma": 2.0}, "asym_large_margin": {"m": 1.0},
           "asym_combination": {"m": 1.0, "gamma": 2.0}}
    for technique, hp in hps.items():
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
    with pytest.raises(ValueError, match="eps and l go together, got only l"):
        build_training("asym_combination", {"l": 10.0}, _context())
    with pytest.raises(ValueError, match=r"unknown \['mixup_m'\]"):
        build_training("combination", {"mixup_m": 0.2, "mixup_alpha": 1.0}, _context())
    for technique in ("combination", "asym_combination"):
        with pytest.raises(ValueError, match=f"technique {technique}: combines nothing"):
            build_training(technique, {}, _context())
