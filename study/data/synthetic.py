"""Seeded synthetic 3D brain-tumour-like cases, written to disk in the BraTS layout.

Each case: an ellipsoidal "brain" with smooth tissue texture and a bias field, 1-3 lesions,
each a union of small random ellipsoids (necrotic core 1 / enhancing rim 4, i.e. the tumour
core) wrapped in oedema (label 2). Lesion contrast differs per channel and per case (strong in
t1ce and flair, weak in t1), so that few training cases over-fit the rare class. The files are
read back by the same SimpleITK loader as real BraTS data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

# ``contrast``: range of the per-case lesion contrast factor (1 = the means below).
DEFAULTS: dict[str, Any] = {"cases": 40, "shape": [48, 48, 48], "seed": 0, "lesion_scale": 1.0,
                            "contrast": [0.25, 0.9]}
CHANNELS = ("t1", "t1ce", "t2", "flair")
# Per-channel mean intensities (arbitrary units) of tissue, oedema and tumour core.
_TISSUE = np.array([100.0, 100.0, 100.0, 100.0])
_OEDEMA = np.array([95.0, 105.0, 140.0, 150.0])
_CORE = np.array([85.0, 165.0, 135.0, 125.0])


def check_params(params: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the parameter if generator parameters are invalid."""
    cases, shape = params["cases"], params["shape"]
    if not isinstance(cases, int) or isinstance(cases, bool) or cases < 2:
        raise ValueError(f"cases: expected an integer >= 2, got {cases!r}")
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 16 for s in shape)
    ):
        raise ValueError(f"shape: expected 3 integers >= 16, got {shape!r}")
    if not isinstance(params["seed"], int) or params["seed"] < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {params['seed']!r}")
    scale = params["lesion_scale"]
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0.25 <= scale <= 4:
        raise ValueError(f"lesion_scale: expected a number in [0.25, 4], got {scale!r}")
    contrast = params["contrast"]
    if (
        not isinstance(contrast, list)
        or len(contrast) != 2
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in contrast)
        or not 0 < contrast[0] <= contrast[1] <= 3
    ):
        raise ValueError(f"contrast: expected [low, high] with 0 < low <= high <= 3, "
                         f"got {contrast!r}")


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-12)


def _ellipsoid(grid, centre, radii) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


def generate_case(params: Mapping[str, Any], index: int) -> tuple[np.ndarray, np.ndarray]:
    """One case: (channels float32 [4, D, H, W], BraTS labels uint8 [D, H, W])."""
    shape = tuple(params["shape"])
    rng = np.random.default_rng([params["seed"], index])
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    size = np.array(shape, dtype=np.float64)
    centre = size / 2 + rng.uniform(-0.04, 0.04, 3) * size
    radii = size * rng.uniform(0.36, 0.44, 3)
    wobble = 1 + 0.06 * _smooth_noise(rng, shape, sigma=max(shape) / 6)
    brain = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= wobble
    labels = np.zeros(shape, np.uint8)
    scale = float(params["lesion_scale"]) * min(shape) / 48
    inside = np.argwhere(ndimage.binary_erosion(brain, iterations=int(6 * scale) + 2))
    for _ in range(rng.integers(1, 4)):
        core = np.zeros(shape, bool)
        anchor = inside[rng.integers(len(inside))]
        for _ in range(rng.integers(2, 5)):
            offset = rng.normal(0, 1.5 * scale, 3)
            core |= _ellipsoid(grid, anchor + offset, rng.uniform(1.0, 3.0, 3) * scale)
        core &= brain
        oedema = ndimage.binary_dilation(core, iterations=max(1, int(rng.integers(2, 5) * scale)))
        labels[oedema & brain & (labels == 0)] = 2
        enhancing = core & ~ndimage.binary_erosion(core)
        labels[core] = 1
        labels[enhancing & (rng.random(shape) < 0.7)] = 4
    texture = _smooth_noise(rng, shape, sigma=1.5)
    bias = 1 + 0.1 * _smooth_noise(rng, shape, sigma=max(shape) / 3)
    contrast = rng.uniform(*params["contrast"])  # lesion visibility differs between cases
    channels = np.empty((len(CHANNELS),) + shape, np.float32)
    for c in range(len(CHANNELS)):
        image = _TISSUE[c] + 6.0 * texture + 4.0 * _smooth_noise(rng, shape, sigma=0.7)
        image += contrast * (_OEDEMA[c] - _TISSUE[c]) * (labels == 2)
        image += contrast * (_CORE[c] - _TISSUE[c]) * np.isin(labels, (1, 4))
        image = image * bias + rng.normal(0, 3.0, shape)
        channels[c] = np.where(brain, np.maximum(image, 1.0), 0.0)
    return channels, labels


def case_ids(params: Mapping[str, Any]) -> list[str]:
    return [f"Synth_{index:04d}" for index in range(params["cases"])]


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path), useCompression=True)


def ensure_generated(params: Mapping[str, Any], root: str | Path) -> Path:
    """Write the dataset to ``root`` unless it is complete there; safe under concurrency.

    Generation goes to a temporary sibling folder that is renamed into place, so a reader
    never sees a partial dataset and concurrent generators (several trials on one node)
    leave exactly one complete copy.
    """
    root = Path(root)
    marker = root / "COMPLETE"
    if marker.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        for index, case in enumerate(case_ids(params)):
            channels, labels = generate_case(params, index)
            folder = staging / case
            folder.mkdir()
            for name, channel in zip(CHANNELS, channels, strict=True):
                _write(channel, folder / f"{case}_{name}.nii.gz")
            _write(labels, folder / f"{case}_seg.nii.gz")
        (staging / "COMPLETE").write_text("ok\n")
        try:
            os.rename(staging, root)
        except OSError:
            if not marker.exists():  # lost the race only if the winner finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def imbalance_ratio(labels: list[np.ndarray], foreground: tuple[int, ...]) -> tuple[float, float]:
    """Class-imbalance ratio as paper 001 Table I defines it: the mean (and std) over images of
    (background voxels / foreground voxels); images without foreground are left out."""
    ratios = []
    for lab in labels:
        fg = int(np.isin(lab, foreground).sum())
        if fg:
            ratios.append((lab.size - fg) / fg)
    if not ratios:
        raise ValueError("no image has foreground: the imbalance ratio is undefined")
    return float(np.mean(ratios)), float(np.std(ratios))
