"""Preprocessing of one case and its on-disk cache.

Steps (parameters declared per dataset in :mod:`study.data.registry`):

1. resample every channel (linear) and the label (nearest neighbour) to the target spacing.
   An anisotropic target (KiTS 1.6 x 1.6 x 3.2 mm, PROMISE12 1 x 1 x 1.5 mm) gives its
   coarse value to the case's coarsest axis, whatever the file's axis order (KiTS19 stores
   the slice axis first, most CT and MR last);
2. region of interest: ``nonzero`` (skull-stripped MR: any channel != 0) or ``body`` (CT:
   the largest component above ``body_threshold`` HU with holes filled), plus every labelled
   voxel;
3. crop to the ROI's bounding box;
4. clip intensities to the dataset's window (CT);
5. z-score every channel with the mean and std of its voxels inside the ROI; ``nonzero``
   datasets are 0 outside the ROI, ``body`` datasets keep the normalised values there.

The cache (:func:`cached`) stores each preprocessed case as ``image.npy`` (float32, opened
memory-mapped copy-on-write, so trials on one node share the pages), ``label.npy``,
``roi.npy`` and ``meta.json`` in ``<cache>/<dataset>-<parameters key>-<root key>/<case>/``.
The key hashes the preprocessing parameters, the class mapping and :data:`VERSION`;
``meta.json`` records the source files' sizes and modification times, and a case whose sources
changed is recomputed.
A case is written into a hidden staging folder and renamed into place, under a per-case lock:
concurrent trials compute each case once, a reader never sees half a case, and staging
folders of a killed writer are deleted by the next writer of that case.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from study.data._atomic import file_lock, publish, remove_stale_staging, staging_dir
from study.data.case import Case, DataError
from study.data.layouts import CaseFiles
from study.data.reader import RawCase, array_spacing, class_lut, scan
from study.data.registry import DatasetInfo

VERSION = 2  # bump when the algorithm changes: old cache entries are then never read
# (2: sources are checked complete before preprocessing, see study.data.stored)


@dataclass(frozen=True)
class Preprocessing:
    """Resolved preprocessing parameters of a dataset (what the cache key hashes), with the
    raw label values of each class: a study's own dataset may merge classes differently under
    the same name, and the cached labels are class indices."""

    target_spacing: tuple[float, float, float] | None
    roi: str
    body_threshold: float
    clip: tuple[float, float] | None
    classes: tuple[tuple[int, ...], ...]

    def key(self) -> str:
        text = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_MEDIANS: dict[tuple, tuple[float, float, float]] = {}


def _median_spacing(info: DatasetInfo, root: str | Path) -> tuple[float, float, float]:
    """Per-axis median spacing over the dataset's label files (headers only), coarse axis
    last so that :func:`target_for` can place it."""
    root = Path(root)
    key = (info.name, str(root.resolve()), root.stat().st_mtime_ns)
    if key not in _MEDIANS:
        spacings = []
        for files in scan(info, root).cases.values():
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(files.labels[0]))
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                continue  # reported when the case is read
            spacings.append(sorted(reader.GetSpacing()[:3]))
        if not spacings:
            raise DataError(f"{root}: no readable label header to take the median spacing of")
        fine, middle, coarse = (float(statistics.median(c))
                                for c in zip(*spacings, strict=True))
        _MEDIANS[key] = fine, middle, coarse
    return _MEDIANS[key]


def parameters(info: DatasetInfo, root: str | Path) -> Preprocessing:
    spacing = info.target_spacing
    target: tuple[float, float, float] | None = None
    if spacing == "median":
        target = _median_spacing(info, root)
    elif isinstance(spacing, str):
        raise ValueError(f"{info.name}: target_spacing: expected [D, H, W] mm, 'median' or None, "
                         f"got {spacing!r}")
    elif spacing is not None:
        d, h, w = spacing
        target = float(d), float(h), float(w)
    clip = None if info.clip is None else (float(info.clip[0]), float(info.clip[1]))
    return Preprocessing(target, info.roi, float(info.body_threshold), clip,
                         tuple(tuple(int(v) for v in values) for values in info.classes.values()))


def target_for(spacing, target) -> tuple[float, float, float]:
    """The target spacing in the case's axis order: if the target is anisotropic and the case
    has one clearly coarsest axis (> 1.25 x the others), that axis gets the coarsest target
    value and the others the rest in order; otherwise the declared order is kept."""
    spacing, target = np.asarray(spacing, float), np.asarray(target, float)
    if np.ptp(target) == 0:
        return tuple(target.tolist())
    coarse = int(np.argmax(spacing))
    others = np.delete(spacing, coarse)
    if spacing[coarse] <= 1.25 * others.max():
        return tuple(target.tolist())
    order = np.argsort(target, kind="stable")
    out = np.empty(3)
    out[coarse] = target[order[-1]]
    out[[i for i in range(3) if i != coarse]] = target[np.sort(order[:-1])]
    return tuple(out.tolist())


def _resample(image: sitk.Image, spacing, nearest: bool) -> sitk.Image:
    """``image`` on a grid of ``spacing`` (array order) covering the same extent."""
    spacing_xyz = tuple(reversed(spacing))
    size = [max(1, int(round(n * s / t))) for n, s, t in
            zip(image.GetSize(), image.GetSpacing(), spacing_xyz, strict=True)]
    if nearest:
        interpolator, pixel = sitk.sitkNearestNeighbor, image.GetPixelID()
    else:
        image = sitk.Cast(image, sitk.sitkFloat32)
        interpolator, pixel = sitk.sitkLinear, sitk.sitkFloat32
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(),
                         spacing_xyz, image.GetDirection(), 0.0, pixel, True)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labelled, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def preprocess(info: DatasetInfo, raw: RawCase, params: Preprocessing) -> Case:
    """One checked raw case -> a training-ready :class:`Case` (see the module docstring)."""
    spacing = raw.spacing
    label_image = sitk.GetImageFromArray(raw.label.astype(np.int16))
    label_image.CopyInformation(raw.label_image)
    images = list(raw.images)
    if params.target_spacing is not None:
        target = target_for(spacing, params.target_spacing)
        if not np.allclose(spacing, target, rtol=1e-3):
            images = [_resample(image, target, nearest=False) for image in images]
            label_image = _resample(label_image, target, nearest=True)
            spacing = array_spacing(label_image)
    image = np.stack([sitk.GetArrayFromImage(im).astype(np.float32) for im in images])
    label = class_lut(info)[sitk.GetArrayFromImage(label_image)]
    if params.roi == "nonzero":
        roi = (image != 0).any(axis=0)
    else:
        roi = ndimage.binary_fill_holes(_largest_component(image[0] > params.body_threshold))
    roi |= label > 0
    if not roi.any():
        raise DataError(f"{raw.source}: empty region of interest ({params.roi}): every "
                        "channel is 0 (or below the body threshold) and nothing is labelled")
    lo = np.argwhere(roi).min(axis=0)
    hi = np.argwhere(roi).max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    image, label, roi = image[(slice(None),) + box], label[box], roi[box]
    if params.clip is not None:
        np.clip(image, *params.clip, out=image)
    out = np.zeros_like(image) if params.roi == "nonzero" else image.copy()
    for c, channel in enumerate(image):
        values = channel[roi].astype(np.float64)
        mean, std = values.mean(), max(float(values.std()), 1e-6)
        if params.roi == "nonzero":
            out[c][roi] = (values - mean) / std
        else:
            out[c] = (channel - mean) / std
    return Case(raw.case_id, np.ascontiguousarray(out, np.float32),
                np.ascontiguousarray(label, np.uint8), np.ascontiguousarray(roi), spacing,
                raw.source)


# ----------------------------------------------------------------------------- cache

def _fingerprint(files: CaseFiles) -> list[list]:
    """(path, size, mtime) of every source file, with the data files of ``.mhd`` headers."""
    paths = []
    for path in files.paths:
        paths.append(path)
        if path.suffix == ".mhd":
            paths.extend(p for p in (path.with_suffix(".raw"), path.with_suffix(".zraw"))
                         if p.exists())
    out = []
    for path in paths:
        try:
            stat = path.stat()
            out.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            out.append([str(path), None, None])
    return out


def cache_folder(info: DatasetInfo, root: str | Path, params: Preprocessing,
                 cache_dir: Path) -> Path:
    root_key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{info.name}-{params.key()}-{root_key}"


def _load(folder: Path, fingerprint: list) -> Case | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta["version"] != VERSION or meta["fingerprint"] != fingerprint:
            return None
        return Case(meta["case_id"], np.load(folder / "image.npy", mmap_mode="c"),
                    np.load(folder / "label.npy"), np.load(folder / "roi.npy"),
                    tuple(meta["spacing"]), meta["source"])
    except (OSError, ValueError, KeyError):
        return None


def cached(info: DatasetInfo, root: str | Path, files: CaseFiles, params: Preprocessing,
           cache_dir: Path, read: Callable[[], RawCase]) -> Case:
    """The preprocessed case from the cache, computing and publishing it first if needed."""
    final = cache_folder(info, root, params, cache_dir) / files.case_id
    fingerprint = _fingerprint(files)
    case = _load(final, fingerprint)
    if case is not None:
        return case
    with file_lock(final.parent / f".{files.case_id}.lock"):
        case = _load(final, fingerprint)  # another trial may have made it while we waited
        if case is not None:
            return case
        remove_stale_staging(final)
        clock = time.perf_counter()
        case = preprocess(info, read(), params)  # raises DataError before anything is written
        staging = staging_dir(final)
        try:
            np.save(staging / "image.npy", case.image)
            np.save(staging / "label.npy", case.label)
            np.save(staging / "roi.npy", case.roi)
            meta = {"version": VERSION, "case_id": case.case_id, "source": case.source,
                    "spacing": list(case.spacing), "shape": list(case.label.shape),
                    "fingerprint": fingerprint, "params": asdict(params),
                    "seconds": round(time.perf_counter() - clock, 3)}
            (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        publish(staging, final, replace=True)
    loaded = _load(final, fingerprint)
    return loaded if loaded is not None else case
