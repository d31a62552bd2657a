"""The papers' augmentation regimes ``A`` (001 eq. 20), applied to one sampled patch.

:class:`~study.data.sampling.PatchSampler` cuts a patch, decides with eq. 21 whether it is
augmented and, if so, hands it to one of these regimes (:data:`REGIMES`, :func:`regime`):

* ``"none"`` — no augmentation (001 §V-A.1, BRATS: "we do not use dropout, weight decay and
  data augmentation").
* ``"deepmedic"`` — DeepMedic's "default setting" used for ATLAS (001 §V-A.2: "small intensity
  shifts and flipping in the sagittal plane with probability 0.5"), with DeepMedic's defaults:
  per channel ``I' = (I + shift) * mult``, ``shift ~ N(0, 0.05)``, ``mult ~ N(1, 0.01)`` (in
  z-score units), and a flip of the left-right axis with probability 0.5. Left-right is the
  first axis of DeepMedic's [x, y, z] arrays and the last axis (W) of ours ([z, y, x], as
  SimpleITK gives them). Every channel and the label are flipped alike (the reference code
  flips channel 0 only, a bug for multi-channel input).
* ``"nnunet"`` — nnU-Net's default 3-D augmentation for the KiTS U-Net (001 §V-A.4:
  "scaling, rotations, brightness, contrast, gamma and Gaussian noise augmentations"). The
  spatial part, gamma and mirroring are those of ``default_3D_augmentation_params`` of nnU-Net
  v1 (the 2019 code the paper's U-Net is a fork of, identical in v1.7, where the later
  ``nnUNetTrainerV2`` drops elastic deformation and widens rotation and scaling); noise, blur,
  brightness, contrast and inverted gamma are those of nnU-Net v1's
  ``get_moreDA_augmentation`` (the intensity transforms the paper names, which that fork's
  default pipeline lacks). In nnU-Net's order, each with its probability per patch:
  elastic deformation (0.2; alpha U[0, 900], sigma U[9, 13]), rotation (0.2; U[-15, 15]
  degrees about each of the three axes), scaling (0.2; U[0.85, 1] or U[1, 1.25] with
  probability 1/2 each), Gaussian noise (0.1; std U[0, 0.1] — batchgenerators calls it the
  variance but passes it as the standard deviation), Gaussian blur (0.2; each channel with
  probability 0.5, sigma U[0.5, 1]), multiplicative brightness (0.15; per channel
  U[0.75, 1.25]), contrast (0.15; per channel factor about the channel mean, clipped to the
  channel's range), inverted gamma (0.1) and gamma (0.3; per channel gamma in [0.7, 1] or
  [1, 1.5], mean and std retained as batchgenerators does it), mirroring (each axis 0.5).
  Semantics follow batchgenerators' transforms. Deliberate differences: no simulated low
  resolution (neither in the paper's list nor in the fork); elastic deformation, rotation and
  scaling are one resampling straight from the case (image cubic, label linear per class and
  thresholded at 0.5, as nnU-Net's ``order_data=3``, ``order_seg=1``), so zeros appear only
  outside the case, where nnU-Net pads a pre-cut larger patch; and the transform maps the
  output voxel ``q`` to ``centre + M (q - P // 2 + e(q))``, so that the identity transform
  is the plain crop (nnU-Net's grid is half a voxel off for even sizes).

Patch geometry (:class:`Site`): the image patch ``P`` and the label patch ``L`` (``<= P``,
even difference) share the centre voxel, ``start = centre - size // 2``; voxels outside the
case are 0 (image 0 = the ROI mean after z-scoring, label 0). Flips of the image and of the
label patch about their own centres therefore keep them aligned.

Batches: :meth:`NnUNetAugmentation.defer` packs a batch's draws (:class:`Deferred`) for
:class:`study.data.device_augmentation.BatchAugmenter`, which applies them to the whole batch
as torch ops on the training device (trilinear instead of cubic image interpolation, the
elastic field from a coarse grid, :func:`coarse_displacement`).

Randomness: :meth:`Regime.draw` makes the same generator calls for every patch, whatever is
then applied, so runs that differ only in which patches are augmented (eq. 21's
``bg_aug_prob``) get the same draws for the same patch. Randomness of voxel fields (the
elastic displacement, the noise) comes from a child generator seeded with one drawn integer,
so it is generated only when used.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from study.catalog import AUGMENTATION_REGIMES

_GAMMA_EPS = 1e-7  # batchgenerators' epsilon of the gamma transform
_STD_EPS = 1e-8  # batchgenerators' epsilon when gamma restores the standard deviation


@dataclass(frozen=True)
class Site:
    """Where one patch is cut: a case's ``image`` [C, D, H, W] and ``label`` [D, H, W], the
    ``centre`` voxel, the image ``patch`` and ``label_patch`` sizes (int arrays of 3)."""

    image: np.ndarray
    label: np.ndarray
    centre: np.ndarray
    patch: np.ndarray
    label_patch: np.ndarray

    def crop(self) -> tuple[np.ndarray, np.ndarray]:
        """The plain patch: image float32 [C, *patch], label [*label_patch]."""
        image = crop(self.image, self.centre - self.patch // 2, self.patch)
        label = crop(self.label[None], self.centre - self.label_patch // 2, self.label_patch)[0]
        return image, label

    def resample(self, matrix: np.ndarray, displacement: np.ndarray | None = None,
                 image_order: int = 3, label_order: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The patch resampled from the case: image voxel ``q`` takes the case at
        ``centre + matrix @ (q - patch // 2 + displacement[:, q])`` (spline of
        ``image_order``, 0 outside the case); the label patch is the centred part of the same
        grid, each class interpolated as an indicator with ``label_order`` and kept where it
        reaches 0.5 (higher classes win ties, as in batchgenerators).

        Only the region the grid reaches (plus a margin for the spline) is read, and each class
        is interpolated only over the output voxels its voxels can reach, so the cost does not
        depend on the case's size. ``displacement`` [3, *patch] is in output voxels.
        """
        half = self.patch // 2
        reach = float(np.abs(displacement).max()) if displacement is not None else 0.0
        corners = _corners(-half - reach, self.patch - 1 - half + reach) @ matrix.T
        margin = 8 if image_order > 1 else 1  # the cubic spline's prefilter reaches further
        start = self.centre + np.floor(corners.min(axis=0)).astype(np.int64) - margin
        size = self.centre + np.ceil(corners.max(axis=0)).astype(np.int64) + margin + 1 - start
        origin = self.centre - start  # the centre in region coordinates
        if displacement is None:
            def sample(volume, order, lo, hi):  # output voxels lo <= q < hi
                return ndimage.affine_transform(
                    volume, matrix, offset=origin + matrix @ (lo - half), order=order,
                    output_shape=tuple(hi - lo), mode="constant", cval=0.0, output=np.float32)
        else:
            grid = np.indices(tuple(self.patch), dtype=np.float32)
            grid -= half.astype(np.float32)[:, None, None, None]
            grid += displacement
            coords = np.tensordot(matrix.astype(np.float32), grid, axes=1)
            coords += origin.astype(np.float32)[:, None, None, None]

            def sample(volume, order, lo, hi):
                box = (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
                return ndimage.map_coordinates(volume, coords[box], order=order,
                                               mode="constant", cval=0.0, output=np.float32)

        region = crop(self.image, start, size)
        image = np.stack([sample(channel, image_order, np.zeros(3, np.int64), self.patch)
                          for channel in region])
        region_label = crop(self.label[None], start, size)[0]
        first = (self.patch - self.label_patch) // 2
        label = np.zeros(tuple(self.label_patch), self.label.dtype)
        inverse = np.linalg.inv(matrix)
        for value in np.unique(region_label):
            if not value:  # background is what no class claims
                continue
            indicator = region_label == value
            lo_s, hi_s = _bounds(indicator)
            # output voxels whose source lies within one voxel (the linear support) of the class
            reached = (_corners(lo_s - 1, hi_s + 1) - origin) @ inverse.T + half
            lo = np.maximum(np.floor(reached.min(axis=0) - reach).astype(np.int64) - 1, first)
            hi = np.minimum(np.ceil(reached.max(axis=0) + reach).astype(np.int64) + 2,
                            first + self.label_patch)
            if (hi <= lo).any():
                continue
            out = sample(indicator.astype(np.float32), label_order, lo, hi)
            box = tuple(slice(a, b) for a, b in zip(lo - first, hi - first, strict=True))
            label[box][out >= 0.5] = value
        return image, label


def _corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 8 corners [8, 3] of the box ``lo .. hi``."""
    return np.array(list(itertools.product(*zip(lo, hi, strict=True))), dtype=float)


def _bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index per axis where ``mask`` (3-D, not empty) is true."""
    lo, hi = [], []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(hits[0])
        hi.append(hits[-1])
    return np.array(lo), np.array(hi)


class Regime(ABC):
    """An augmentation regime: :meth:`draw` every random value one patch may need, then
    :meth:`apply` them to that patch."""

    name: ClassVar[str]

    @abstractmethod
    def draw(self, rng: np.random.Generator, n_channels: int) -> Any:
        """The random values for one patch, with the same generator calls for every patch."""

    @abstractmethod
    def apply(self, draws: Any, site: Site, image: np.ndarray, label: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """The augmented patch; ``image``, ``label`` are the plain crop of ``site`` (which a
        spatial transform cuts again). Pure: the same draws give the same patch."""


@dataclass(frozen=True)
class NoAugmentation(Regime):
    """``"none"``: the patch as cut (001 §V-A.1); draws nothing."""

    name: ClassVar[str] = "none"

    def draw(self, rng: np.random.Generator, n_channels: int) -> None:
        return None

    def apply(self, draws, site, image, label):
        return image, label


@dataclass(frozen=True)
class _DeepMedicDraws:
    flip_axes: tuple[int, ...]
    shift: np.ndarray
    mult: np.ndarray

    def shift_scale(self, image: np.ndarray) -> None:
        """The intensity part of :class:`DeepMedicAugmentation`, in place on ``image``
        [C, ...]: per channel ``I' = (I + shift) * mult``."""
        image += self.shift[:, None, None, None]
        image *= self.mult[:, None, None, None]


@dataclass(frozen=True)
class DeepMedicAugmentation(Regime):
    """``"deepmedic"`` (001 §V-A.2): per channel ``I' = (I + N(0, shift_std)) *
    N(1, scale_std)`` and a flip of each array axis (D, H, W) with ``flip_prob[axis]`` —
    by default the left-right axis W only, with probability 0.5.

    >>> DeepMedicAugmentation().flip_prob
    (0.0, 0.0, 0.5)
    """

    name: ClassVar[str] = "deepmedic"
    flip_prob: tuple[float, float, float] = (0.0, 0.0, 0.5)
    shift_std: float = 0.05
    scale_std: float = 0.01

    def __post_init__(self):
        if len(self.flip_prob) != 3 or not all(0 <= p <= 1 for p in self.flip_prob):
            raise ValueError(f"flip_prob: expected 3 probabilities (axes D, H, W), got "
                             f"{self.flip_prob}")
        if self.shift_std < 0 or self.scale_std < 0:
            raise ValueError(f"shift_std and scale_std: expected values >= 0, got "
                             f"{self.shift_std}, {self.scale_std}")

    def draw(self, rng: np.random.Generator, n_channels: int) -> _DeepMedicDraws:
        flips = rng.random(3)
        shift = rng.normal(0.0, self.shift_std, n_channels)
        mult = rng.normal(1.0, self.scale_std, n_channels)
        axes = tuple(a for a in range(3) if flips[a] < self.flip_prob[a])
        return _DeepMedicDraws(axes, shift.astype(np.float32), mult.astype(np.float32))

    def apply(self, draws: _DeepMedicDraws, site, image, label):
        image = image.astype(np.result_type(image, draws.shift))  # a copy
        draws.shift_scale(image)
        return _flip(image, label, draws.flip_axes)


@dataclass(frozen=True)
class _NnUNetDraws:
    elastic: tuple[float, float] | None  # (alpha, sigma)
    angles: np.ndarray | None  # radians about axes 0, 1, 2
    scale: float | None
    noise_std: float | None
    blur: np.ndarray | None  # sigma per channel, 0 = channel left sharp
    brightness: np.ndarray | None  # multiplier per channel
    contrast: np.ndarray | None  # factor per channel
    inverted_gamma: np.ndarray | None  # gamma per channel
    gamma: np.ndarray | None
    mirror_axes: tuple[int, ...]
    seed: int  # of the voxel fields (elastic displacement, noise)

    @property
    def spatial(self) -> bool:
        return self.elastic is not None or self.angles is not None or self.scale is not None


@dataclass(frozen=True)
class NnUNetAugmentation(Regime):
    """``"nnunet"`` (001 §V-A.4): nnU-Net v1's default 3-D augmentation (module docstring);
    every ``p_*`` is a probability per patch, ranges are those of the uniform draws.

    >>> a = NnUNetAugmentation()
    >>> (a.p_elastic, a.alpha, a.sigma, a.p_rotation, a.max_degrees, a.p_scale, a.scale)
    (0.2, (0.0, 900.0), (9.0, 13.0), 0.2, 15.0, 0.2, (0.85, 1.25))
    >>> (a.p_noise, a.noise_std, a.p_blur, a.blur_sigma, a.p_blur_channel)
    (0.1, (0.0, 0.1), 0.2, (0.5, 1.0), 0.5)
    >>> (a.p_brightness, a.p_contrast, a.p_inverted_gamma, a.p_gamma, a.gamma, a.p_mirror)
    (0.15, 0.15, 0.1, 0.3, (0.7, 1.5), 0.5)
    """

    name: ClassVar[str] = "nnunet"
    p_elastic: float = 0.2
    alpha: tuple[float, float] = (0.0, 900.0)
    sigma: tuple[float, float] = (9.0, 13.0)
    p_rotation: float = 0.2
    max_degrees: float = 15.0
    p_scale: float = 0.2
    scale: tuple[float, float] = (0.85, 1.25)
    p_noise: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_blur_channel: float = 0.5
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_inverted_gamma: float = 0.1
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_mirror: float = 0.5
    image_order: int = 3
    label_order: int = 1

    def __post_init__(self):
        for name, value in vars(self).items():
            if name.startswith("p_") and not 0 <= value <= 1:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {value}")
            if isinstance(value, tuple) and not 0 <= value[0] <= value[1]:
                raise ValueError(f"{name}: expected a range (low, high) with 0 <= low <= high, "
                                 f"got {value}")
        if not 0 <= self.max_degrees <= 180 or self.image_order not in range(6) or \
                self.label_order not in (0, 1):
            raise ValueError(f"max_degrees in [0, 180], image_order in 0..5 and label_order 0 "
                             f"or 1 expected, got {self.max_degrees}, {self.image_order}, "
                             f"{self.label_order}")

    def draw(self, rng: np.random.Generator, n_channels: int) -> _NnUNetDraws:
        c = n_channels
        elastic = rng.random() < self.p_elastic
        alpha, sigma = rng.uniform(*self.alpha), rng.uniform(*self.sigma)
        rotate = rng.random() < self.p_rotation
        angles = np.deg2rad(rng.uniform(-self.max_degrees, self.max_degrees, 3))
        scale = rng.random() < self.p_scale
        factor = _below_or_above_one(rng.random(), rng.random(), self.scale)
        noise = rng.random() < self.p_noise
        noise_std = rng.uniform(*self.noise_std)
        blur = rng.random() < self.p_blur
        blur_sigma = np.where(rng.random(c) < self.p_blur_channel,
                              rng.uniform(*self.blur_sigma, c), 0.0)
        brightness = rng.random() < self.p_brightness
        multiplier = rng.uniform(*self.brightness, c)
        per_channel = {}
        for key, p, span in (("contrast", self.p_contrast, self.contrast),
                             ("inverted_gamma", self.p_inverted_gamma, self.gamma),
                             ("gamma", self.p_gamma, self.gamma)):
            on = rng.random() < p
            values = _below_or_above_one(rng.random(c), rng.random(c), span)
            per_channel[key] = values if on else None
        mirror = rng.random(3) < self.p_mirror
        seed = int(rng.integers(2**63))
        return _NnUNetDraws(
            elastic=(alpha, sigma) if elastic else None, angles=angles if rotate else None,
            scale=factor if scale else None, noise_std=noise_std if noise else None,
            blur=blur_sigma if blur else None, brightness=multiplier if brightness else None,
            mirror_axes=tuple(int(a) for a in np.flatnonzero(mirror)), seed=seed,
            **per_channel)

    def apply(self, draws: _NnUNetDraws, site, image, label):
        if draws.spatial:
            image, label = self._spatial(draws, site)
        else:
            image = image.copy()
        if draws.noise_std is not None:
            noise = np.random.default_rng([draws.seed, 1]).standard_normal(image.shape,
                                                                          np.float32)
            image += noise * np.float32(draws.noise_std)
        for c, blur in enumerate(draws.blur if draws.blur is not None else ()):
            if blur > 0:
                image[c] = ndimage.gaussian_filter(image[c], blur)
        if draws.brightness is not None:
            image *= draws.brightness.astype(np.float32)[:, None, None, None]
        for c, factor in enumerate(draws.contrast if draws.contrast is not None else ()):
            image[c] = _contrast(image[c], factor)
        for gammas, inverted in ((draws.inverted_gamma, True), (draws.gamma, False)):
            for c, gamma in enumerate(gammas if gammas is not None else ()):
                image[c] = _gamma(image[c], gamma, inverted)
        return _flip(image, label, draws.mirror_axes)

    def defer(self, draws: Sequence[_NnUNetDraws | None], patch: Sequence[int] | np.ndarray,
              label_patch: Sequence[int] | np.ndarray) -> Deferred:
        """The batch's draws (``None``: a sample eq. 21 leaves alone) with what applying them
        to the whole batch later needs (:class:`Deferred`): each sample's coarse elastic
        displacement and the region to cut around each centre so that the spatial transform
        finds every voxel it reads."""
        size, label_size = np.asarray(patch, np.int64), np.asarray(label_patch, np.int64)
        fields: list[np.ndarray | None] = []
        region = size.copy()
        for d in draws:
            field = None
            if d is not None and d.elastic is not None:
                field = coarse_displacement(*d.elastic, d.seed, size)
            fields.append(field)
            if d is not None and d.spatial:
                reach = float(np.abs(field).max()) if field is not None else 0.0
                corners = _corners(-(size // 2) - reach, size - 1 - size // 2 + reach)
                extent = np.abs(corners @ self.matrix(d).T).max(axis=0)
                region = np.maximum(region, 2 * np.ceil(extent).astype(np.int64) + 3)
        return Deferred(tuple(draws), tuple(fields), size, label_size, region)

    @staticmethod
    def matrix(draws: _NnUNetDraws) -> np.ndarray:
        """The spatial transform's matrix ``M``: rotation, then scaling (module docstring)."""
        matrix = rotation(draws.angles if draws.angles is not None else np.zeros(3))
        return matrix * (draws.scale if draws.scale is not None else 1.0)

    def _spatial(self, draws: _NnUNetDraws, site: Site) -> tuple[np.ndarray, np.ndarray]:
        """batchgenerators' order: elastic displacement of the output grid, then rotation,
        then scaling (> 1 samples a wider region: the content shrinks)."""
        displacement = None
        if draws.elastic is not None:
            alpha, sigma = draws.elastic
            rng = np.random.default_rng([draws.seed, 0])
            displacement = np.stack([
                ndimage.gaussian_filter(rng.random(tuple(site.patch), np.float32) * 2 - 1,
                                        sigma, mode="constant", cval=0.0) * np.float32(alpha)
                for _ in range(3)])
        return site.resample(self.matrix(draws), displacement, self.image_order,
                             self.label_order)


@dataclass(frozen=True)
class Deferred:
    """The nnunet regime's draws for a batch, to be applied to the whole batch at once by
    :class:`study.data.device_augmentation.BatchAugmenter` (on the training device): per
    sample its draws (``None``: not augmented, eq. 21) and its coarse elastic displacement
    (:func:`coarse_displacement`, or ``None``); the image ``patch`` and ``label_patch`` the
    augmenter returns, and the ``region`` (>= ``patch``, every axis) that the sampler cuts
    around each centre (``start = centre - region // 2``) so that rotation, scaling and
    displacement read no voxel outside it that lies inside the case."""

    draws: tuple[_NnUNetDraws | None, ...]
    displacement: tuple[np.ndarray | None, ...]
    patch: np.ndarray
    label_patch: np.ndarray
    region: np.ndarray


def coarse_displacement(alpha: float, sigma: float, seed: int, patch: np.ndarray
                        ) -> np.ndarray:
    """nnU-Net's elastic displacement (per axis ``alpha * G_sigma * U[-1, 1]`` noise, zero
    outside the patch) on a grid about ``sigma / 3`` voxels coarse, [3, *grid], in output
    voxels; trilinear upsampling (``align_corners``) to ``patch`` gives the field.

    Conversion: white noise of variance ``v`` per voxel smoothed by a Gaussian of width
    ``sigma`` has the standard deviation ``sqrt(v) (4 pi)^(-3/4) sigma^(-3/2)``; on a grid of
    spacing ``h`` (voxels per cell, per axis) the same field is white noise of variance
    ``v / (h_0 h_1 h_2)`` smoothed by ``sigma / h``, so the coarse field has nnU-Net's
    amplitude and correlation length at ``1 / h^3`` of the cost. Its extreme values bound the
    upsampled field's (interpolation is a convex combination).
    """
    step = max(1, int(sigma // 3))
    grid = np.maximum(-(-(patch - 1) // step) + 1, 2)
    spacing = np.maximum(patch - 1, 1) / (grid - 1)
    rng = np.random.default_rng([seed, 0])
    scale = np.float32(alpha / math.sqrt(float(np.prod(spacing))))
    return np.stack([
        ndimage.gaussian_filter(rng.random(tuple(grid), np.float32) * 2 - 1,
                                tuple(sigma / spacing), mode="constant", cval=0.0) * scale
        for _ in range(3)])


def _below_or_above_one(side, value, span: tuple[float, float]):
    """batchgenerators' two-sided range draw (scaling, contrast, gamma): with probability 1/2
    uniform in [low, 1] (if low < 1), otherwise uniform in [max(low, 1), high]."""
    low, high = span
    above = np.maximum(low, 1.0)
    below = (np.asarray(side) < 0.5) & (low < 1)
    return np.where(below, low + value * (1.0 - low), above + value * (high - above))[()]


def _contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """batchgenerators' ``augment_contrast`` of one channel (range preserved)."""
    mean = x.mean()
    return np.clip((x - mean) * np.float32(factor) + mean, x.min(), x.max())


def _gamma(x: np.ndarray, gamma: float, inverted: bool) -> np.ndarray:
    """batchgenerators' ``augment_gamma`` of one channel with ``retain_stats``: the channel's
    range mapped to [0, 1], raised to ``gamma``, mapped back, then shifted to its old mean and
    divided by its new std times the old one (inverted: the same on ``-x``)."""
    x = -x if inverted else x
    mean, std = x.mean(), x.std()
    low = x.min()
    span = np.float32(x.max() - low + _GAMMA_EPS)
    x = np.power((x - low) / span, np.float32(gamma)) * span + low
    x = x - x.mean() + mean
    x = x / (x.std() + np.float32(_STD_EPS)) * std
    return -x if inverted else x


def _flip(image: np.ndarray, label: np.ndarray, axes: tuple[int, ...]
          ) -> tuple[np.ndarray, np.ndarray]:
    """Flip every channel of the image and the label about the same spatial axes."""
    if not axes:
        return image, label
    return (np.ascontiguousarray(np.flip(image, tuple(a + 1 for a in axes))),
            np.ascontiguousarray(np.flip(label, axes)))


def rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix: rotations about array axes 0, 1, 2 by ``angles`` (radians), composed."""
    out = np.eye(3)
    for axis, angle in enumerate(angles):
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        r[i, i] = r[j, j] = np.cos(angle)
        r[i, j], r[j, i] = -np.sin(angle), np.sin(angle)
        out = out @ r
    return out


def crop(volume: np.ndarray, start: np.ndarray, size: np.ndarray,
         out: np.ndarray | None = None) -> np.ndarray:
    """``volume[:, start:start+size]`` with zero padding where it leaves the volume; written
    into ``out`` (zeros, [C, *size]) if given."""
    out = np.zeros((volume.shape[0], *size), volume.dtype) if out is None else out
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


_BY_NAME: dict[str, Callable[[], Regime]] = {
    "none": NoAugmentation, "deepmedic": DeepMedicAugmentation, "nnunet": NnUNetAugmentation}
REGIMES = AUGMENTATION_REGIMES


def regime(augmentation: str | Regime) -> Regime:
    """The regime named ``augmentation`` (one of :data:`REGIMES`) with the papers' settings,
    or ``augmentation`` itself if it already is a :class:`Regime`.

    >>> regime("deepmedic") == DeepMedicAugmentation()
    True

    Raises:
        ValueError: an unknown name or a value that is neither a name nor a regime.
    """
    if isinstance(augmentation, Regime):
        return augmentation
    if isinstance(augmentation, str) and augmentation in _BY_NAME:
        return _BY_NAME[augmentation]()
    raise ValueError(f"augmentation: expected one of {', '.join(REGIMES)} or a Regime, got "
                     f"{augmentation!r}")
