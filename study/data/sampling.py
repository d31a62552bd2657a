"""Class-balanced patch sampling (DeepMedic's scheme, 001 §V-A).

A share ``fg_fraction`` of patches is centred on a foreground voxel (any class > 0), chosen
uniformly among the foreground voxels of a uniformly chosen case that has foreground; the rest
are centred uniformly inside the region of interest. Patches reaching outside the volume are
zero-padded (image 0 = the ROI mean after z-scoring, label 0). The sampler's only state is its
NumPy generator, which it exposes for checkpointing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from study.data.loader import Case


class PatchSampler:
    def __init__(self, cases: Sequence[Case], patch: Sequence[int], fg_fraction: float,
                 seed: int):
        if not cases:
            raise ValueError("PatchSampler needs at least one training case")
        self.cases = list(cases)
        self.patch = np.asarray(patch)
        self.fg_fraction = fg_fraction
        self.rng = np.random.default_rng(seed)
        self._fg = [np.argwhere(case.label > 0) for case in self.cases]
        self._roi = [np.argwhere(case.roi) for case in self.cases]
        self._with_fg = [i for i, coords in enumerate(self._fg) if len(coords)]

    def _centre(self) -> tuple[int, np.ndarray]:
        if self._with_fg and self.rng.random() < self.fg_fraction:
            index = self._with_fg[self.rng.integers(len(self._with_fg))]
            coords = self._fg[index]
        else:
            index = int(self.rng.integers(len(self.cases)))
            coords = self._roi[index]
            if not len(coords):
                coords = np.argwhere(np.ones(self.cases[index].label.shape, bool))
        return index, coords[self.rng.integers(len(coords))]

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch: images float32 [B, C, *patch], labels int64 [B, *patch]."""
        images, labels = [], []
        for _ in range(batch_size):
            index, centre = self._centre()
            case = self.cases[index]
            start = centre - self.patch // 2
            images.append(_crop(case.image, start, self.patch))
            labels.append(_crop(case.label[None], start, self.patch)[0])
        return np.stack(images), np.stack(labels).astype(np.int64)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def _crop(volume: np.ndarray, start: np.ndarray, size: np.ndarray) -> np.ndarray:
    """``volume[:, start:start+size]`` with zero padding where it leaves the volume."""
    out = np.zeros((volume.shape[0], *size), volume.dtype)
    shape = np.asarray(volume.shape[1:])
    lo, hi = np.maximum(start, 0), np.minimum(start + size, shape)
    if (hi <= lo).any():
        return out
    src = (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    dst = (slice(None),) + tuple(
        slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True)
    )
    out[dst] = volume[src]
    return out
