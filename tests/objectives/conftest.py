"""Fixtures of the objectives tests."""

from __future__ import annotations

import pytest

from study.objectives import set_label_checks


@pytest.fixture
def label_checks():
    """Label-value checks on for one test (they are off by default: they wait for the GPU)."""
    previous = set_label_checks(True)
    yield
    set_label_checks(previous)
