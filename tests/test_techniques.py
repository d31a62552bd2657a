"""Technique id + hyperparameters -> objective (what a trial optimises)."""

from __future__ import annotations

import pytest
import torch

import study.objectives as obj
from study.spec import load_search_spaces
from study.techniques import TECHNIQUES, build_objective

RARE = [0.0, 1.0]


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 6, 6, 6, generator=generator)
    target = (torch.rand(2, 6, 6, 6, generator=generator) < 0.1).long()
    return logits, target


def test_every_buildable_technique_has_a_search_space_and_builds(batch):
    """Each technique builds from its first grid point and gives a finite scalar."""
    spaces = load_search_spaces()
    for technique in TECHNIQUES:
        loss = build_objective(technique, spaces[technique].settings()[0], RARE)
        value = loss(*batch)
        assert value.ndim == 0 and torch.isfinite(value), technique


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


def test_unknown_technique_is_named():
    """An unknown technique id is a ValueError naming it."""
    with pytest.raises(ValueError, match="unknown 'mixupp'"):
        build_objective("mixupp", {}, RARE)
