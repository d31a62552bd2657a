"""Patch sampling with foreground oversampling and asymmetric augmentation (001 §V-A, eq. 20-21).

Centres, ``oversampling="balanced"`` (DeepMedic's scheme, 001 §V-A.1-3): a share
``fg_fraction`` of patches is centred on a foreground voxel (any class > 0) of a uniformly
chosen case that has foreground; the rest are centred on a uniformly chosen background voxel
(label 0) inside the region of interest of a uniformly chosen case. 0.5 is the papers'
default, 0.8 their "80% tumour" baseline.

Centres, ``oversampling="nnunet"`` (nnU-Net v1's ``DataLoader3D``, the KiTS U-Net of
001 §V-A.4): every sample comes from a uniformly chosen case; in a batch of ``B`` the sample
``i`` is forced to foreground iff ``not i < round(B * (1 - fg_fraction))`` (nnU-Net's
``get_do_oversample``; with B = 2 and its 0.33 the second sample). A forced sample is centred
on a foreground voxel of its case; the image patch is then moved up, as nnU-Net's
``max(lb, voxel - patch // 2)`` does, where it would start before the case (below 0, or below
``-((patch - shape) // 2)`` when the case is smaller than the patch). Any other sample is a
uniformly random crop: the image patch starts uniformly in ``0 .. shape - patch`` (it lies in
the case), or, where the case is smaller than the patch, the case sits in the middle. A forced
sample of a case without foreground is a random crop.

Centres, ``oversampling="per_class"`` (DeepMedic's per-class sampling, the multi-organ
abdomen of 000 §F: "patches separately sampled from different classes with the same
probability", 001 §II-1): each patch first draws a class uniformly among background and the
foreground classes present in the training cases, then is centred on a background voxel as
above (class 0) or on a uniformly chosen voxel of that class in a uniformly chosen case that
has it; ``fg_fraction`` is not used.

Foreground voxels (``balanced`` and ``nnunet``): uniform among the case's foreground voxels
(``fg_mode="voxel"``, DeepMedic's default) or first a uniformly chosen foreground class present
in the case, then a voxel of it (``fg_mode="class"``, nnU-Net's and the default for
``oversampling="nnunet"``).

Patches: the image patch ``patch`` and the label patch ``label_patch`` share the centre voxel
(``start = centre - size // 2``), so a network whose output is smaller than its input gets the
labels of its output region (DeepMedic: input 37^3, output 21^3). The default label patch is
the image patch. Voxels outside the volume are zero (image 0 = the ROI mean after z-scoring,
label 0).

Pathways (DeepMedic, 001 §V-A.1/2): with ``pathways`` — ``(stride, sides)`` per pathway, the
model's :meth:`~study.models.deepmedic.DeepMedic.pathways` — the image patch is the packing of
one grid per pathway: ``sides`` voxels ``stride`` apart, symmetric about the patch centre
(:func:`study.models.presets.grid_offset`; stride 3 and 5: every 3rd / 5th image voxel, as
DeepMedic samples its subsampled pathways), each zero-padded symmetrically to ``patch`` and
stacked along the channels (pathway-major: ``[P C, *patch]``). A 21^3 DeepMedic output thus
costs 37^3 + 23^3 + 21^3 voxels per channel instead of the 105^3 its pathways span. The regime
(voxelwise only: ``"none"`` or ``"deepmedic"``) applies the same draws to every pathway's grid,
so each channel's copies get the same intensity shift and scale and the same flips, and the
packing of the augmented grids equals the grids of the augmented image.

Augmentation: one of the papers' regimes (:mod:`study.data.augmentation`: ``"none"``,
``"deepmedic"``, ``"nnunet"``) applied to a patch under eq. 21: a *rare sample* — its label
patch holds a voxel of a rare class (``rare_by="any"``) or its centre voxel is rare
(``rare_by="centre"``), judged on the patch as cut — is always augmented; any other sample
with probability ``bg_aug_prob`` (1 = ordinary symmetric augmentation, every patch). Not
reproduced from the reference DeepMedic code: its inverted gate (background always
augmented).

Randomness: centres come from one generator, augmentation from a second one that draws the
same values for every patch, augmented or not; so runs that differ only in ``bg_aug_prob``
see the very same patches and augment a patch they both augment alike, and :meth:`state` /
:meth:`set_state` (JSON-serialisable) make a resumed trial bit-exact.

Deferred augmentation (the nnunet regime): :meth:`PatchSampler.sample_deferred` makes the
same draws and gates as :meth:`PatchSampler.sample` but only cuts, around each centre, the
region the sample's spatial transform reads (as nnU-Net cuts an enlarged patch before its
spatial transform); :class:`study.data.device_augmentation.BatchAugmenter` then augments the
batch on the training device. The cubic resampling of the CPU path costs seconds per paper
U-Net batch; cutting costs milliseconds.

Wiring for the trial runner (``hp["bg_aug_prob"]`` is the ``asym_augmentation`` sweep axis)::

    sampler = PatchSampler(train_cases, training["patch"], training["fg_fraction"],
                           seed=config["seed"], augmentation="deepmedic",
                           bg_aug_prob=hp.get("bg_aug_prob", 1.0), rare=info.rare_vector())
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from study.catalog import SAMPLING_SCHEMES
from study.data.augmentation import (
    DeepMedicAugmentation,
    Deferred,
    NnUNetAugmentation,
    NoAugmentation,
    Regime,
    Site,
    regime,
)
from study.data.case import Case, DataError
from study.models.presets import grid_offset

Empty = Callable[[tuple[int, ...], np.dtype], np.ndarray]  # np.empty's (shape, dtype)
_CANDIDATES = 32  # background centre candidates drawn at once (rejection sampling)
OVERSAMPLING = SAMPLING_SCHEMES
FG_MODES = ("voxel", "class")


def _box(first: Sequence[int], last: Sequence[int]) -> tuple[slice, ...]:
    """The index of ``[:, first:last]`` in a [C, D, H, W] array."""
    return (slice(None),) + tuple(map(slice, first, last))


def _zero_around(out: np.ndarray, first: Sequence[int], last: Sequence[int]) -> None:
    """Zero ``out`` [..., *size] outside the box ``first:last`` of its last three axes (the
    box is left as it is): the slabs before and after it along each axis, within the box's
    span along the axes before (so no voxel is written twice) and whole along the axes
    after; empty slabs are skipped."""
    size = out.shape[-3:]
    for axis in range(3):
        inside = tuple(map(slice, first[:axis], last[:axis]))
        whole = (slice(None),) * (2 - axis)
        for lo, hi in ((0, first[axis]), (last[axis], size[axis])):
            if hi > lo:
                out[(Ellipsis,) + inside + (slice(lo, hi),) + whole] = 0


def cut_into(volume: np.ndarray, start: Sequence[int] | np.ndarray, out: np.ndarray,
              stride: int = 1, sides: Sequence[int] | np.ndarray | None = None) -> None:
    """Write the grid of ``volume`` [C, D, H, W] that has ``sides`` voxels (default: ``out``'s
    size) ``stride`` apart per axis from voxel ``start`` on into the middle of ``out``
    ([C, *size], ``(size - sides) // 2`` voxels before the grid per axis) and 0 everywhere
    else in ``out``: around the grid and where the grid leaves the volume. ``out`` may hold
    anything before (recycled memory) and may be a flipped view. Stride 1 and the default
    sides: ``volume[:, start:start + size]`` zero-padded."""
    size = out.shape[1:]
    src, first, last = [slice(None)], [], []
    for s, n, m, extent in zip(map(int, start), size if sides is None else map(int, sides),
                               size, volume.shape[1:], strict=True):
        lo = max(0, -(s // stride))  # the first grid index inside the volume
        hi = min(n, (extent - 1 - s) // stride + 1)  # past the last one
        if hi <= lo:
            out[...] = 0
            return
        src.append(slice(s + lo * stride, s + (hi - 1) * stride + 1, stride))
        first.append((m - n) // 2 + lo)
        last.append((m - n) // 2 + hi)
    if 2 * math.prod(b - a for a, b in zip(first, last, strict=True)) < math.prod(size):
        out[...] = 0  # mostly zeros: one sequential write beats the pieces of rows around
    else:
        _zero_around(out, first, last)
    out[_box(first, last)] = volume[tuple(src)]


def _flipped(out: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The view of ``out`` [..., D, H, W] flipped about the spatial ``axes`` (0 = D): what
    is written into it lands in ``out`` mirrored."""
    return np.flip(out, tuple(a - 3 for a in axes)) if axes else out


class PatchSampler:
    """Draws training batches of patches from preprocessed cases (see the module docstring).

    Args:
        cases: preprocessed cases; foreground-centred patches come from those with
            foreground (the trial runner rejects training cases without any:
            :func:`study.data.loader.require_foreground`).
        patch: image patch size [D, H, W].
        fg_fraction: ``"balanced"``: share of foreground-centred patches; ``"nnunet"``:
            nnU-Net's ``oversample_foreground_percent``. In [0, 1].
        seed: seeds both generators.
        label_patch: label patch size (<= ``patch``, same parity); default ``patch``.
        augmentation: a regime name of :data:`study.data.augmentation.REGIMES` or a
            :class:`~study.data.augmentation.Regime`.
        bg_aug_prob: probability that a non-rare sample is augmented (001 eq. 21).
        rare: r, one value per class (> 0.5 = rare); default: every foreground class.
        rare_by: ``"any"`` or ``"centre"``: what makes a sample a rare sample.
        oversampling: ``"balanced"`` (DeepMedic) or ``"nnunet"``: how centres are chosen.
        fg_mode: ``"voxel"`` or ``"class"`` (how foreground voxels are chosen); default
            ``"voxel"`` for ``"balanced"``, ``"class"`` for ``"nnunet"``.
        workers: threads cutting the patches of a batch (SciPy and NumPy release the GIL;
            the batches are identical for any number). 1 = in the calling thread.
        pathways: ``(stride, sides)`` of each pathway whose grids are packed into the image
            patch (module docstring); ``sides`` <= ``patch`` with an even difference. Default:
            the plain patch. Centres and draws do not depend on it.

    Raises:
        DataError: a case has no background voxel in its ROI (naming its file).
        ValueError: inconsistent sizes or settings.
    """

    def __init__(self, cases: Sequence[Case], patch: Sequence[int], fg_fraction: float,
                 seed: int, *, label_patch: Sequence[int] | None = None,
                 augmentation: str | Regime = "none", bg_aug_prob: float = 1.0,
                 rare: Sequence[float] | None = None, rare_by: str = "any",
                 oversampling: str = "balanced", fg_mode: str | None = None,
                 workers: int = 1, pathways: Sequence[tuple[int, Sequence[int]]] | None = None):
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
        if oversampling not in OVERSAMPLING:
            raise ValueError(f"oversampling: expected one of {OVERSAMPLING}, got "
                             f"{oversampling!r}")
        fg_mode = fg_mode or ("class" if oversampling == "nnunet" else "voxel")
        if rare_by not in ("any", "centre") or fg_mode not in FG_MODES:
            raise ValueError(f"rare_by must be 'any' or 'centre' and fg_mode one of {FG_MODES},"
                             f" got {rare_by!r}, {fg_mode!r}")
        if workers < 1:
            raise ValueError(f"workers: expected an integer >= 1, got {workers}")
        self.fg_fraction = float(fg_fraction)
        self.augmentation = regime(augmentation)
        self.pathways = None if pathways is None else self._check_pathways(pathways)
        self.bg_aug_prob = float(bg_aug_prob)
        self.rare_by, self.oversampling, self.fg_mode = rare_by, oversampling, fg_mode
        n_classes = max(int(case.label.max()) for case in self.cases) + 1
        if rare is None:
            self._rare = np.arange(max(n_classes, 2)) > 0
        else:
            self._rare = np.asarray(rare, dtype=float) > 0.5
            if n_classes > len(self._rare):
                raise ValueError(f"rare has {len(self._rare)} entries but the cases have "
                                 f"class {n_classes - 1}")
        self._fg: list[list[np.ndarray]] = []  # per case, per present foreground class
        # per foreground class present: (case, its voxels) of every case that has it
        self._class_sites: dict[int, list[tuple[int, np.ndarray]]] = {}
        for index, case in enumerate(self.cases):
            flat = case.label.reshape(-1)
            by_class = [np.flatnonzero(flat == k) for k in range(1, n_classes)]
            self._fg.append([ix for ix in by_class if len(ix)])
            for k, ix in enumerate(by_class, 1):
                if len(ix):
                    self._class_sites.setdefault(k, []).append((index, ix))
        self._fg_all = [np.sort(np.concatenate(c)) if c else np.empty(0, np.int64)
                        for c in self._fg]
        self._with_fg = [i for i, c in enumerate(self._fg) if c]
        self.rng = np.random.default_rng(seed)
        self.aug_rng = np.random.default_rng([seed, 1])
        self.last: dict[str, np.ndarray] = {}
        self.workers = int(workers)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _check_pathways(self, pathways: Sequence[tuple[int, Sequence[int]]]
                        ) -> tuple[tuple[int, np.ndarray], ...]:
        checked = tuple((int(stride), np.asarray(sides, np.int64)) for stride, sides in pathways)
        if not checked or any(stride < 1 or sides.shape != (3,) or (sides < 1).any()
                              or (sides > self.patch).any() or ((self.patch - sides) % 2).any()
                              for stride, sides in checked):
            raise ValueError(f"pathways: expected (stride >= 1, 3 sides <= patch "
                             f"{self.patch.tolist()} with an even difference) per pathway, got "
                             f"{[(stride, sides.tolist()) for stride, sides in checked]}")
        if not isinstance(self.augmentation, NoAugmentation | DeepMedicAugmentation):
            raise ValueError(f"pathways: pathway grids take the voxelwise regimes ('none', "
                             f"'deepmedic'), not {self.augmentation.name!r} (the nnunet regime "
                             "resamples the patch)")
        return checked

    # -- centres ------------------------------------------------------------------------

    def _fg_voxel(self, index: int) -> np.ndarray:
        """A foreground voxel of case ``index`` (which has foreground), by ``fg_mode``."""
        if self.fg_mode == "class":
            voxels = self._fg[index][int(self.rng.integers(len(self._fg[index])))]
        else:
            voxels = self._fg_all[index]
        flat = voxels[int(self.rng.integers(len(voxels)))]
        return np.array(np.unravel_index(flat, self.cases[index].label.shape))

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

    def _balanced(self) -> tuple[int, np.ndarray, bool]:
        if self._with_fg and self.rng.random() < self.fg_fraction:
            index = self._with_fg[int(self.rng.integers(len(self._with_fg)))]
            return index, self._fg_voxel(index), True
        return *self._bg_centre(), False

    def _per_class(self) -> tuple[int, np.ndarray, bool]:
        """DeepMedic's per-class placement (module docstring): a class, then a centre."""
        classes = [0, *sorted(self._class_sites)]
        k = classes[int(self.rng.integers(len(classes)))]
        if k == 0:
            return *self._bg_centre(), False
        sites = self._class_sites[k]
        index, voxels = sites[int(self.rng.integers(len(sites)))]
        flat = voxels[int(self.rng.integers(len(voxels)))]
        return index, np.array(np.unravel_index(flat, self.cases[index].label.shape)), True

    def _nnunet(self, i: int, batch_size: int) -> tuple[int, np.ndarray, bool]:
        """nnU-Net v1's ``DataLoader3D`` placement (module docstring), as a patch centre."""
        index = int(self.rng.integers(len(self.cases)))
        shape = np.asarray(self.cases[index].label.shape)
        lowest = np.where(shape >= self.patch, 0, -((self.patch - shape) // 2))
        forced = not i < round(batch_size * (1 - self.fg_fraction)) and bool(self._fg[index])
        if forced:
            start = np.maximum(lowest, self._fg_voxel(index) - self.patch // 2)
        else:
            start = self.rng.integers(lowest, np.maximum(lowest, shape - self.patch) + 1)
        return index, start + self.patch // 2, forced

    # -- one patch ----------------------------------------------------------------------

    def _is_rare(self, label: np.ndarray, centre: np.ndarray) -> bool:
        """Whether the label patch around ``centre`` makes a rare sample (``rare_by``), judged
        on a view of the case's ``label`` [D, H, W] (voxels outside it are class 0) without
        cutting the patch: "any" looks at the view's extreme classes first (one of them is
        rare whenever ``rare`` is a threshold, as the default "every foreground class" is)
        and scans only for the rare classes between them."""
        if self.rare_by == "centre":
            inside = bool(((centre >= 0) & (centre < label.shape)).all())
            return bool(self._rare[label[tuple(centre)] if inside else 0])
        sizes = self.label_patch.tolist()
        starts = [int(c) - n // 2 for c, n in zip(centre, sizes, strict=True)]
        box = tuple(slice(max(start, 0), min(start + n, extent))
                    for start, n, extent in zip(starts, sizes, label.shape, strict=True))
        if any(axis.stop <= axis.start for axis in box):
            return bool(self._rare[0])
        view = label[box]
        low, high = int(view.min()), int(view.max())
        if view.shape != tuple(self.label_patch):
            low = 0  # the patch reaches outside the case: zero padding
        if self._rare[low] or self._rare[high]:
            return True
        return any(bool((view == k).any()) for k in np.flatnonzero(self._rare)
                   if low < k < high)

    def _plan(self, i: int, batch_size: int) -> tuple[int, np.ndarray, bool, float, Any]:
        """Every random choice of one patch (drawn in order, so batches are reproducible
        however many threads then cut them): case, centre, fg flag, gate, regime draws."""
        if self.oversampling == "nnunet":
            index, centre, fg = self._nnunet(i, batch_size)
        elif self.oversampling == "per_class":
            index, centre, fg = self._per_class()
        else:
            index, centre, fg = self._balanced()
        gate = float(self.aug_rng.random())
        draws = self.augmentation.draw(self.aug_rng, self.cases[index].image.shape[0])
        return index, centre, fg, gate, draws

    def _gate(self, plan) -> tuple[bool, bool]:
        """Eq. 21 on the planned sample's plain label patch: (rare, augmented)."""
        index, centre, _fg, gate, _draws = plan
        rare = self._is_rare(self.cases[index].label, centre)
        return rare, self.augmentation.name != "none" and (rare or gate < self.bg_aug_prob)

    def _make(self, plan, image: np.ndarray, label: np.ndarray) -> tuple[bool, bool]:
        """Cut (and augment, eq. 21) one planned patch into ``image`` [C, *patch] and
        ``label`` [*label_patch] (any contents before): (rare, augmented)."""
        index, centre, _, _, draws = plan
        case = self.cases[index]
        rare, augmented = self._gate(plan)
        if augmented:
            site = Site(case.image, case.label, centre, self.patch, self.label_patch)
            image[...], label[...] = self.augmentation.apply(draws, site, *site.crop())
        else:
            cut_into(case.image, centre - self.patch // 2, image)
            cut_into(case.label[None], centre - self.label_patch // 2, label[None])
        return rare, augmented

    def _make_packed(self, plan, image: np.ndarray, label: np.ndarray) -> tuple[bool, bool]:
        """:meth:`_make` for packed pathway grids (module docstring): each grid cut into the
        middle of its pathway's channels of ``image`` [P C, *patch], zeros around it, and the
        label patch into ``label`` (any contents before). If eq. 21 augments the sample, the
        deepmedic regime's :meth:`~study.data.augmentation.DeepMedicAugmentation.apply` is
        done as the grids are written: each grid shifted and scaled, grids and label written
        into flipped views (every grid is centred, so the flip of its block is the flip of
        its channels). Returns (rare, augmented)."""
        index, centre, _, _, draws = plan
        case = self.cases[index]
        rare, augmented = self._gate(plan)
        flips = draws.flip_axes if augmented else ()
        cut_into(case.label[None], centre - self.label_patch // 2, _flipped(label[None], flips))
        channels = case.image.shape[0]
        for p, (stride, sides) in enumerate(self.pathways or ()):
            out = image[p * channels:(p + 1) * channels]
            start = [int(c) + grid_offset(int(n), stride)
                     for c, n in zip(centre, sides, strict=True)]
            if not augmented:
                cut_into(case.image, start, out, stride, sides)
            elif (sides == self.patch).all():  # the grid fills its channels: in place
                cut_into(case.image, start, _flipped(out, flips), stride)
                draws.shift_scale(out)
            else:  # a strided block: shift and scale a contiguous grid, then place it
                grid = np.empty((channels, *sides), np.float32)
                cut_into(case.image, start, grid, stride)
                draws.shift_scale(grid)
                cut_into(grid, (0, 0, 0), _flipped(out, flips), sides=sides)
        return rare, augmented

    def _map(self, work, items: list) -> list:
        """``work`` over ``items``, in the worker threads if there are several."""
        if self.workers > 1 and len(items) > 1:
            with self._pool_lock:  # batches may be cut in several threads (study.batches)
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="patches")
            return list(self._pool.map(work, items))
        return [work(item) for item in items]

    def _record(self, plans: list, rare: list[bool], augmented: list[bool]) -> None:
        self.last = {"case": np.array([p[0] for p in plans], np.int64),
                     "centre": np.array([p[1] for p in plans], np.int64).reshape(-1, 3),
                     "fg_centred": np.array([p[2] for p in plans], bool),
                     "rare": np.array(rare, bool), "augmented": np.array(augmented, bool)}

    def plan(self, batch_size: int) -> list:
        """Every random choice of a batch of ``batch_size`` patches, drawn in order: the
        generators advance as :meth:`sample` (or :meth:`sample_deferred`) of that batch
        advances them, and :meth:`cut` (or :meth:`cut_deferred`) of the plan makes that batch,
        in any thread, while later batches are planned (``study.batches``)."""
        return [self._plan(i, batch_size) for i in range(batch_size)]

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch: images float32 [B, C, *patch] ([B, P C, *patch] packed ``pathways``),
        labels int64 [B, *label_patch].

        ``self.last`` then holds per-sample ``case`` (index), ``centre`` [B, 3],
        ``fg_centred`` (a foreground voxel chose the centre), ``rare`` and ``augmented``
        (of the batch cut last, when several threads cut planned batches).
        """
        return self.cut(self.plan(batch_size))

    def cut(self, plans: list, empty: Empty = np.empty) -> tuple[np.ndarray, np.ndarray]:
        """The batch :meth:`sample` makes of the :meth:`plan` ``plans``, written into arrays
        from ``empty(shape, dtype)`` (images first, then labels; any contents: every element
        is written, so they may be recycled memory)."""
        batch_size = len(plans)
        channels = self.cases[0].image.shape[0]
        pathways = self.pathways
        images = empty((batch_size, len(pathways or [None]) * channels, *self.patch),
                       np.dtype(np.float32))
        labels = empty((batch_size, *self.label_patch), np.dtype(np.int64))
        make = self._make if pathways is None else self._make_packed
        made = self._map(lambda b: make(plans[b], images[b], labels[b]), list(range(batch_size)))
        self._record(plans, [m[0] for m in made], [m[1] for m in made])
        return images, labels

    def sample_deferred(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, Deferred]:
        """A batch whose nnunet augmentation is left to
        :class:`study.data.device_augmentation.BatchAugmenter` (on the training device):
        images float32 [B, C, *region], labels (the cases' dtype) [B, *region], cut around
        the same centres as :meth:`sample` (``start = centre - region // 2``, slicing only),
        and the :class:`~study.data.augmentation.Deferred` draws, gated by eq. 21 on the
        plain label patch. Same generator calls as :meth:`sample`: the same centres, gates
        and draws, and :meth:`state` resumes either. ``self.last`` as for :meth:`sample`.

        Raises:
            ValueError: the regime is not the nnunet one (before anything is drawn).
        """
        self._deferring()
        return self.cut_deferred(self.plan(batch_size))

    def _deferring(self) -> NnUNetAugmentation:
        """The regime, which must be the nnunet one to be deferred."""
        if not isinstance(self.augmentation, NnUNetAugmentation):
            raise ValueError(f"sample_deferred: expected the nnunet regime, got "
                             f"{self.augmentation.name!r} (use sample)")
        return self.augmentation

    def cut_deferred(self, plans: list, empty: Empty = np.empty
                     ) -> tuple[np.ndarray, np.ndarray, Deferred]:
        """The batch :meth:`sample_deferred` makes of the :meth:`plan` ``plans``, written into
        arrays from ``empty`` as in :meth:`cut`.

        Raises:
            ValueError: the regime is not the nnunet one.
        """
        regime = self._deferring()
        batch_size = len(plans)
        gated = [self._gate(plan) for plan in plans]
        self._record(plans, [g[0] for g in gated], [g[1] for g in gated])
        deferred = regime.defer(
            [plan[4] if augmented else None for plan, (_, augmented) in zip(plans, gated,
                                                                             strict=True)],
            self.patch, self.label_patch)
        region = deferred.region
        images = empty((batch_size, self.cases[0].image.shape[0], *region), np.dtype(np.float32))
        labels = empty((batch_size, *region), self.cases[0].label.dtype)

        def cut(b: int) -> None:  # straight into the batch
            case, start = self.cases[plans[b][0]], plans[b][1] - region // 2
            cut_into(case.image, start, images[b])
            cut_into(case.label[None], start, labels[b, None])

        self._map(cut, list(range(batch_size)))
        return images, labels, deferred

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
