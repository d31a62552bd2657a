"""What the data package hands to training, and its one error.

A :class:`Case` is made by :mod:`study.data.preprocess` and consumed by
:mod:`study.data.sampling` and the trial runner; :class:`DataError` is raised wherever a
dataset on disk is malformed. NumPy only, so that sampling and augmentation do not load the
readers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DataError(ValueError):
    """A dataset or case on disk is malformed; the message names the file(s)."""


@dataclass(frozen=True)
class Case:
    """One preprocessed case: ``image`` float32 [C, D, H, W] (z-scored inside ``roi``),
    ``label`` uint8 class indices [D, H, W], ``roi`` bool [D, H, W], ``spacing`` in mm in array
    axis order; ``source`` is the label file it came from (for error messages)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    roi: np.ndarray
    spacing: tuple[float, float, float]
    source: str = ""
