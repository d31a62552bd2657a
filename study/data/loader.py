"""Read cases from disk with SimpleITK, check them, map raw labels to classes, normalise.

Every failure names the file and what was expected; nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from study.data.registry import DatasetInfo


class DataError(ValueError):
    """A case on disk is malformed; the message names the file."""


@dataclass(frozen=True)
class Case:
    """One preprocessed case: ``image`` float32 [C, D, H, W] (z-scored inside ``roi``),
    ``label`` uint8 class indices [D, H, W], ``roi`` bool [D, H, W], ``spacing`` in mm in array
    axis order."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    roi: np.ndarray
    spacing: tuple[float, float, float]


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1]
        raise DataError(f"{path}: not a readable image ({reason})") from error
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: expected a 3-D single-component image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))


def list_cases(info: DatasetInfo, root: str | Path) -> list[str]:
    """Case ids found under ``root`` in the dataset's layout, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if info.layout != "brats":
        raise DataError(f"{info.name}: layout {info.layout!r} is not supported")
    cases = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not cases:
        raise DataError(f"{root}: no case folders found (expected <case>/<case>_seg.nii.gz)")
    return cases


def load_case(info: DatasetInfo, root: str | Path, case_id: str) -> Case:
    """Load one BraTS-layout case: ``<case>/<case>_<channel>.nii.gz`` and ``<case>_seg.nii.gz``."""
    folder = Path(root) / case_id
    label_path = folder / f"{case_id}_seg.nii.gz"
    raw_label, spacing = _read(label_path)
    channels = []
    for channel in info.channels:
        path = folder / f"{case_id}_{channel}.nii.gz"
        array, channel_spacing = _read(path)
        if array.shape != raw_label.shape:
            raise DataError(f"{path}: shape {array.shape} differs from {label_path.name}'s "
                            f"{raw_label.shape}")
        if not np.allclose(channel_spacing, spacing, rtol=1e-3):
            raise DataError(f"{path}: spacing {channel_spacing} differs from "
                            f"{label_path.name}'s {spacing}")
        if not np.isfinite(array).all():
            raise DataError(f"{path}: contains NaN or inf values")
        channels.append(array.astype(np.float32))
    values = np.unique(raw_label)
    unexpected = sorted(set(values.tolist()) - info.raw_labels)
    if unexpected:
        raise DataError(f"{label_path}: label values {unexpected} are not among the "
                        f"{info.name} labels {sorted(info.raw_labels)}")
    label = np.zeros(raw_label.shape, np.uint8)
    for index, raw_values in enumerate(info.classes.values()):
        label[np.isin(raw_label, raw_values)] = index
    image = np.stack(channels)
    roi = (image != 0).any(axis=0) | (label > 0)
    return Case(case_id, _zscore(image, roi), label, roi, spacing)


def _zscore(image: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """Per-channel z-score normalisation with statistics from inside ``roi``; 0 outside."""
    out = np.zeros_like(image)
    if not roi.any():
        return out
    for c, channel in enumerate(image):
        values = channel[roi]
        out[c][roi] = (values - values.mean()) / max(float(values.std()), 1e-6)
    return out
