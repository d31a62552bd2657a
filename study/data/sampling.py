"""Class-balanced patch sampling with (asymmetric) augmentation (001 §V-A, §IV-E eq. 20-21).

Centres (DeepMedic's scheme): a share ``fg_fraction`` of patches is centred on a foreground
voxel (any class > 0) of a uniformly chosen case that has foreground — uniformly among its
foreground voxels (``fg_mode="voxel"``, DeepMedic) or first a uniformly chosen foreground
class present in the case, then a voxel of it (``fg_mode="class"``, for many organs); the
rest are centred on a uniformly chosen background voxel (label 0) inside the region of
interest of a uniformly chosen case. 0.5 is the papers' default, 0.8 their "80% tumour"
baseline.

Patches: the image patch ``patch`` and the label patch ``label_patch`` are centred on the
same voxel (``start = centre - size // 2``), so a network whose output is smaller than its
input gets the labels of its output region (DeepMedic: input 37^3, output 21^3). The default
label patch is the image patch. Voxels outside the volume are zero (image 0 = the ROI mean
after z-scoring, label 0).

Augmentation (:class:`Augmentation`, optional; none by default as in 001's BRATS setting):
optional zoom/rotation about the patch centre (trilinear image, nearest label), random flips
of the listed axes applied to every channel and the label alike, and per-channel intensity
``I' = (I + shift) * mult``. Asymmetric augmentation (001 eq. 21): a *rare sample* — its label
patch holds a voxel of a rare class (``rare_by="any"``) or its centre voxel is rare
(``rare_by="centre"``) — is always augmented; any other sample with probability
``bg_aug_prob`` (1 = ordinary symmetric augmentation). Not reproduced from the reference
DeepMedic code: its inverted gate (background always augmented) and its flips of channel 0
only (techniques.md A5, A11).

Randomness: centres come from one generator, augmentation from a second one that draws the
same number of values for every patch, augmented or not; so runs that differ only in
``bg_aug_prob`` (or in the augmentation) see the very same patches, and :meth:`state` /
:meth:`set_state` (JSON-serialisable) make a resumed trial bit-exact.

Wiring for the trial runner (``hp["bg_aug_prob"]`` is the ``asym_augmentation`` sweep axis)::

    sampler = PatchSampler(train_cases, training["patch"], training["fg_fraction"],
                           seed=config["seed"], augmentation=Augmentation(flip_axes=(2,)),
                           bg_aug_prob=hp.get("bg_aug_prob", 1.0), rare=info.rare_vector())
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from study.data.loader import Case, DataError

_CANDIDATES = 32  # background centre candidates drawn at once (rejection sampling)


@dataclass(frozen=True)
class Augmentation:
    """What may be done to a patch; every probability is per patch.

    Args:
        flip_axes: spatial axes (0 = D, 1 = H, 2 = W) each flipped with ``flip_prob``
            (ATLAS setting of 001: the sagittal axis with probability 0.5).
        flip_prob: probability of flipping each listed axis.
        shift_std, scale_std: per-channel intensity ``I' = (I + N(0, shift_std)) *
            N(1, scale_std)`` in z-score units (DeepMedic's "small intensity shifts").
        zoom: ``(low, high)`` uniform zoom factor range (> 1 enlarges), or ``None``.
        zoom_prob: probability of zooming a patch.
        rotate_deg: maximal absolute rotation in degrees about each axis (0 = none).
        rotate_prob: probability of rotating a patch.
    """

    flip_axes: tuple[int, ...] = (0, 1, 2)
    flip_prob: float = 0.5
    shift_std: float = 0.05
    scale_std: float = 0.01
    zoom: tuple[float, float] | None = None
    zoom_prob: float = 0.2
    rotate_deg: float = 0.0
    rotate_prob: float = 0.2

    def __post_init__(self):
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise ValueError(f"flip_axes: expected axes among 0, 1, 2, got {self.flip_axes}")
        for name in ("flip_prob", "zoom_prob", "rotate_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: expected a probability, got {getattr(self, name)}")
        if self.shift_std < 0 or self.scale_std < 0 or not 0 <= self.rotate_deg <= 180:
            raise ValueError("shift_std, scale_std >= 0 and rotate_deg in [0, 180] expected")
        if self.zoom is not None and not 0 < self.zoom[0] <= self.zoom[1]:
            raise ValueError(f"zoom: expected (low, high) with 0 < low <= high, got {self.zoom}")

    @property
    def geometric(self) -> bool:
        return (self.zoom is not None and self.zoom_prob > 0) or (
            self.rotate_deg > 0 and self.rotate_prob > 0)


class PatchSampler:
    """Draws training batches of patches from preprocessed cases (see the module docstring).

    Args:
        cases: preprocessed cases; foreground-centred patches come from those with
            foreground (the trial runner rejects training cases without any:
            :func:`study.data.loader.require_foreground`).
        patch: image patch size [D, H, W].
        fg_fraction: share of foreground-centred patches, in [0, 1].
        seed: seeds both generators.
        label_patch: label patch size (<= ``patch``, same parity); default ``patch``.
        augmentation: :class:`Augmentation` or ``None`` (no augmentation).
        bg_aug_prob: probability that a non-rare sample is augmented (001 eq. 21).
        rare: r, one value per class (> 0.5 = rare); default: every foreground class.
        rare_by: ``"any"`` or ``"centre"``: what makes a sample a rare sample.
        fg_mode: ``"voxel"`` or ``"class"`` (how foreground centres are chosen).
        workers: threads cutting the patches of a batch (SciPy and NumPy release the GIL;
            the batches are identical for any number). 1 = in the calling thread.

    Raises:
        DataError: a case has no background voxel in its ROI (naming its file).
        ValueError: inconsistent sizes or settings.
    """

    def __init__(self, cases: Sequence[Case], patch: Sequence[int], fg_fraction: float,
                 seed: int, *, label_patch: Sequence[int] | None = None,
                 augmentation: Augmentation | None = None, bg_aug_prob: float = 1.0,
                 rare: Sequence[float] | None = None, rare_by: str = "any",
                 fg_mode: str = "voxel", workers: int = 1):
        if not cases:
            raise ValueError("PatchSampler needs at least one training case")
        self.cases = list(cases)
        self.patch = np.asarray(patch, dtype=np.int64)
        self.label_patch = self.patch if label_patch is None else np.asarray(label_patch,
                                                                             dtype=np.int64)
        if self.patch.shape != (3,) or self.label_patch.shape != (3,) or (self.patch < 1).any():
            raise ValueError(f"patch and label_patch: expected 3 positive sizes, got "
                             f"{list(patch)} and {list(self.label_patch)}")
        if (self.label_patch > self.patch).any() or (self.label_patch < 1).any() or (
                (self.patch - self.label_patch) % 2).any():
            raise ValueError(f"label_patch {self.label_patch.tolist()} must fit inside patch "
                             f"{self.patch.tolist()} with an even difference per axis (so that "
                             "it is centred)")
        if not 0 <= fg_fraction <= 1:
            raise ValueError(f"fg_fraction: expected a value in [0, 1], got {fg_fraction}")
        if not 0 <= bg_aug_prob <= 1:
            raise ValueError(f"bg_aug_prob: expected a probability in [0, 1], got {bg_aug_prob}")
        if rare_by not in ("any", "centre") or fg_mode not in ("voxel", "class"):
            raise ValueError(f"rare_by must be 'any' or 'centre' and fg_mode 'voxel' or "
                             f"'class', got {rare_by!r}, {fg_mode!r}")
        self.fg_fraction = float(fg_fraction)
        self.augmentation = augmentation
        self.bg_aug_prob = float(bg_aug_prob)
        self.rare_by, self.fg_mode = rare_by, fg_mode
        n_classes = max(int(case.label.max()) for case in self.cases) + 1
        if rare is None:
            self._rare = np.arange(max(n_classes, 2)) > 0
        else:
            self._rare = np.asarray(rare, dtype=float) > 0.5
            if n_classes > len(self._rare):
                raise ValueError(f"rare has {len(self._rare)} entries but the cases have "
                                 f"class {n_classes - 1}")
        self._fg: list[list[np.ndarray]] = []  # per case, per present foreground class
        for case in self.cases:
            flat = case.label.reshape(-1)
            by_class = [np.flatnonzero(flat == k) for k in range(1, n_classes)]
            self._fg.append([ix for ix in by_class if len(ix)])
        self._fg_all = [np.sort(np.concatenate(c)) if c else np.empty(0, np.int64)
                        for c in self._fg]
        self._with_fg = [i for i, c in enumerate(self._fg) if c]
        self.rng = np.random.default_rng(seed)
        self.aug_rng = np.random.default_rng([seed, 1])
        self.last: dict[str, np.ndarray] = {}
        if workers < 1:
            raise ValueError(f"workers: expected an integer >= 1, got {workers}")
        self.workers = int(workers)
        self._pool: ThreadPoolExecutor | None = None

    # -- centres ------------------------------------------------------------------------

    def _fg_centre(self) -> tuple[int, np.ndarray]:
        index = self._with_fg[int(self.rng.integers(len(self._with_fg)))]
        if self.fg_mode == "class":
            voxels = self._fg[index][int(self.rng.integers(len(self._fg[index])))]
        else:
            voxels = self._fg_all[index]
        flat = voxels[int(self.rng.integers(len(voxels)))]
        return index, np.array(np.unravel_index(flat, self.cases[index].label.shape))

    def _bg_centre(self) -> tuple[int, np.ndarray]:
        index = int(self.rng.integers(len(self.cases)))
        case = self.cases[index]
        shape = np.asarray(case.label.shape)
        for _ in range(64):
            candidates = self.rng.integers(0, shape, size=(_CANDIDATES, 3))
            c = tuple(candidates.T)
            ok = case.roi[c] & (case.label[c] == 0)
            if ok.any():
                return index, candidates[int(np.argmax(ok))]
        background = np.flatnonzero(case.roi.reshape(-1) & (case.label.reshape(-1) == 0))
        if not len(background):
            raise DataError(f"{case.source or case.case_id}: no background voxel inside the "
                            "region of interest")
        flat = background[int(self.rng.integers(len(background)))]
        return index, np.array(np.unravel_index(flat, shape))

    # -- one patch ----------------------------------------------------------------------

    def _augmentation_draws(self, n_channels: int) -> dict:
        """The same number of draws for every patch (keeps runs aligned across settings)."""
        rng, aug = self.aug_rng, self.augmentation
        draws = {"gate": rng.random(), "flips": rng.random(3),
                 "shift": rng.standard_normal(n_channels), "mult": rng.standard_normal(n_channels),
                 "geo": rng.random(2), "zoom": rng.random(), "angles": rng.uniform(-1, 1, 3)}
        if aug is None:
            return draws
        draws["flip_axes"] = [a for a in aug.flip_axes if draws["flips"][a] < aug.flip_prob]
        draws["shift"] = draws["shift"] * aug.shift_std
        draws["mult"] = 1 + draws["mult"] * aug.scale_std
        zoom = 1.0
        if aug.zoom is not None and draws["geo"][0] < aug.zoom_prob:
            zoom = aug.zoom[0] + draws["zoom"] * (aug.zoom[1] - aug.zoom[0])
        angles = np.zeros(3)
        if aug.rotate_deg > 0 and draws["geo"][1] < aug.rotate_prob:
            angles = np.deg2rad(draws["angles"] * aug.rotate_deg)
        draws["zoom"], draws["angles"] = zoom, angles
        return draws

    def _crop_patch(self, case: Case, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = _crop(case.image, centre - self.patch // 2, self.patch)
        label = _crop(case.label[None], centre - self.label_patch // 2, self.label_patch)[0]
        return image, label

    def _warp_patch(self, case: Case, centre: np.ndarray, zoom: float, angles: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Zoom/rotate about the centre: output voxel q samples ``centre + M (q - P // 2)``
        with ``M = R / zoom`` (trilinear image, nearest-neighbour label, 0 outside)."""
        matrix = _rotation(angles) / zoom
        offset = centre - matrix @ (self.patch // 2)
        image = np.stack([ndimage.affine_transform(channel, matrix, offset=offset,
                                                   output_shape=tuple(self.patch), order=1,
                                                   cval=0.0, output=np.float32)
                          for channel in case.image])
        lo = (self.patch - self.label_patch) // 2
        label = ndimage.affine_transform(case.label, matrix, offset=offset + matrix @ lo,
                                         output_shape=tuple(self.label_patch), order=0, cval=0)
        return image, label

    def _is_rare(self, label: np.ndarray) -> bool:
        rare = self._rare[np.minimum(label, len(self._rare) - 1)]
        if self.rare_by == "centre":
            return bool(rare[tuple(self.label_patch // 2)])
        return bool(rare.any())

    def _plan(self) -> tuple[int, np.ndarray, bool, dict]:
        """Every random choice of one patch (drawn in order, so batches are reproducible
        however many threads then cut them)."""
        fg = bool(self._with_fg) and self.rng.random() < self.fg_fraction
        index, centre = self._fg_centre() if fg else self._bg_centre()
        return index, centre, fg, self._augmentation_draws(self.cases[index].image.shape[0])

    def _make(self, plan) -> tuple[np.ndarray, np.ndarray, bool, bool]:
        """Cut (and augment) one planned patch: (image, label, rare, augmented)."""
        index, centre, _fg, draws = plan
        case, aug = self.cases[index], self.augmentation
        image, label = self._crop_patch(case, centre)
        rare = self._is_rare(label)
        augmented = aug is not None and (rare or draws["gate"] < self.bg_aug_prob)
        if augmented:
            if draws["zoom"] != 1.0 or np.any(draws["angles"]):
                image, label = self._warp_patch(case, centre, draws["zoom"], draws["angles"])
            if draws["flip_axes"]:
                image = np.flip(image, [a + 1 for a in draws["flip_axes"]])
                label = np.flip(label, draws["flip_axes"])
            image = (image + draws["shift"][:, None, None, None].astype(np.float32)) * \
                draws["mult"][:, None, None, None].astype(np.float32)
        return image, label, rare, augmented

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch: images float32 [B, C, *patch], labels int64 [B, *label_patch].

        ``self.last`` then holds per-sample ``case`` (index), ``fg_centred``, ``rare`` and
        ``augmented`` flags of this batch.
        """
        plans = [self._plan() for _ in range(batch_size)]
        if self.workers > 1 and batch_size > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="patches")
            made = list(self._pool.map(self._make, plans))
        else:
            made = [self._make(plan) for plan in plans]
        self.last = {"case": np.array([p[0] for p in plans], np.int64),
                     "fg_centred": np.array([p[2] for p in plans], bool),
                     "rare": np.array([m[2] for m in made], bool),
                     "augmented": np.array([m[3] for m in made], bool)}
        images = np.empty((batch_size, *made[0][0].shape), np.float32)
        labels = np.empty((batch_size, *self.label_patch), np.int64)
        for b, (image, label, _, _) in enumerate(made):
            images[b], labels[b] = image, label
        return images, labels

    def close(self) -> None:
        """Stop the worker threads (a later :meth:`sample` starts them again)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- checkpointing -------------------------------------------------------------------

    def state(self) -> dict:
        """JSON-serialisable state of both generators."""
        return {"centres": self.rng.bit_generator.state,
                "augmentation": self.aug_rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        if "bit_generator" in state:  # a checkpoint of the single-generator sampler
            self.rng.bit_generator.state = state
            return
        self.rng.bit_generator.state = state["centres"]
        self.aug_rng.bit_generator.state = state["augmentation"]


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix: rotations about axes 0, 1, 2 by ``angles`` (radians), composed."""
    out = np.eye(3)
    for axis, angle in enumerate(angles):
        if not angle:
            continue
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        r[i, i] = r[j, j] = np.cos(angle)
        r[i, j], r[j, i] = -np.sin(angle), np.sin(angle)
        out = out @ r
    return out


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
