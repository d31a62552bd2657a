"""Read cases with SimpleITK, check them, preprocess them (cached), and check whole datasets.

Every problem names the file and what was expected; nothing is guessed. :func:`read_case`
collects *all* problems of a case (unreadable file, missing modality, shape / spacing /
origin / direction mismatch, NaN or inf intensities, label values outside the declared set)
instead of stopping at the first; :func:`load_case` raises them together as one
:class:`DataError`; :func:`check_dataset` (``study data check``) runs the same checks over every
case of a dataset and adds what only shows across cases.
"""

from __future__ import annotations

import gzip
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from study.data.layouts import LAYOUTS, CaseFiles, Scan
from study.data.registry import DatasetInfo


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


@dataclass
class RawCase:
    """A case as stored: SimpleITK images (one 3-D image per channel) and raw label values."""

    case_id: str
    files: CaseFiles
    images: list[sitk.Image]
    label_image: sitk.Image
    label: np.ndarray  # raw values, integer dtype, [D, H, W]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in reversed(self.label_image.GetSpacing()))

    @property
    def source(self) -> str:
        return str(self.files.labels[0])


# ----------------------------------------------------------------------------- layout

_SCANS: dict[tuple, Scan] = {}


def scan(info: DatasetInfo, root: str | Path, fresh: bool = False) -> Scan:
    """The layout's view of ``root`` (cases, problems, notes); a missing root is a problem.

    Remembered per (dataset, root, root's modification time) within a process, so that
    loading N cases does not list the folder N times.
    """
    root = Path(root)
    if info.layout not in LAYOUTS:
        raise DataError(f"{info.name}: layout {info.layout!r} is not supported "
                        f"(known: {', '.join(LAYOUTS)})")
    if not root.is_dir():
        return Scan(problems=[f"{root}: dataset folder not found"])
    key = (info.name, info.layout, info.channels, str(root.resolve()), root.stat().st_mtime_ns)
    if fresh or key not in _SCANS:
        if len(_SCANS) > 64:
            _SCANS.clear()
        _SCANS[key] = LAYOUTS[info.layout].scan(info, root)
    return _SCANS[key]


def list_cases(info: DatasetInfo, root: str | Path) -> list[str]:
    """Case ids found under ``root`` in the dataset's layout, sorted; layout problems raise
    one :class:`DataError` listing all of them."""
    found = scan(info, root)
    if found.problems:
        raise DataError("; ".join(found.problems))
    return sorted(found.cases)


def case_files(info: DatasetInfo, root: str | Path, case_id: str) -> CaseFiles:
    found = scan(info, root)
    if case_id not in found.cases:
        problems = "; ".join(found.problems)
        raise DataError(f"{Path(root) / case_id}: case not found in the {info.layout} layout"
                        + (f" ({problems})" if problems else ""))
    return found.cases[case_id]


# ----------------------------------------------------------------------------- reading

def _read(path: Path, problems: list[str]) -> sitk.Image | None:
    if not path.exists():
        problems.append(f"{path}: file not found")
        return None
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].strip()
        problems.append(f"{path}: not a readable image ({reason})")
        return None


def nifti_nonfinite(path: Path) -> int:
    """Number of NaN/inf voxels stored in a float NIfTI-1 file (0 for other files).

    SimpleITK's NIfTI reader silently turns NaN and inf into 0, so the stored values are
    scanned here to report them instead of training on made-up zeros.
    """
    if not path.name.endswith((".nii", ".nii.gz")):
        return 0
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        header = handle.read(348)
        if len(header) < 348:
            return 0
        order = next((o for o in "<>" if struct.unpack(o + "i", header[:4])[0] == 348), None)
        if order is None:  # NIfTI-2 or not NIfTI: not scanned
            return 0
        dtype = {16: "f4", 64: "f8"}.get(struct.unpack(order + "h", header[70:72])[0])
        if dtype is None:
            return 0
        offset = int(struct.unpack(order + "f", header[108:112])[0])
        handle.read(max(offset - 348, 0))
        data = handle.read()
    itemsize = np.dtype(dtype).itemsize
    values = np.frombuffer(data[: len(data) // itemsize * itemsize], order + dtype)
    return int((~np.isfinite(values)).sum())


def _geometry_problems(path: Path, image: sitk.Image, reference: sitk.Image, name: str
                       ) -> list[str]:
    problems = []
    size, ref_size = image.GetSize(), reference.GetSize()
    if size != ref_size:
        problems.append(f"{path}: shape {tuple(reversed(size))} differs from {name}'s "
                        f"{tuple(reversed(ref_size))}")
        return problems
    spacing, ref_spacing = image.GetSpacing(), reference.GetSpacing()
    if not np.allclose(spacing, ref_spacing, rtol=1e-3, atol=1e-5):
        problems.append(f"{path}: spacing {tuple(reversed(spacing))} differs from {name}'s "
                        f"{tuple(reversed(ref_spacing))} (mm)")
    tolerance = 1e-2 * max(ref_spacing)
    if not np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=tolerance):
        problems.append(f"{path}: origin {image.GetOrigin()} differs from {name}'s "
                        f"{reference.GetOrigin()}")
    if not np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-3):
        problems.append(f"{path}: direction {image.GetDirection()} differs from {name}'s "
                        f"{reference.GetDirection()}")
    return problems


def _channel_images(files: CaseFiles, problems: list[str]) -> list[sitk.Image | None]:
    """One 3-D image per channel; 4-D files are read once and split into components."""
    read: dict[Path, sitk.Image | None] = {}
    n_components = {p: sum(1 for _, q, k in files.channels if q == p and k is not None)
                    for _, p, _ in files.channels}
    out = []
    for _name, path, component in files.channels:
        if path not in read:
            image = _read(path, problems)
            if image is not None:
                expected = 4 if component is not None else 3
                if image.GetNumberOfComponentsPerPixel() != 1:
                    problems.append(f"{path}: expected scalar voxels, got "
                                    f"{image.GetNumberOfComponentsPerPixel()} components")
                    image = None
                elif image.GetDimension() != expected or (
                        expected == 4 and image.GetSize()[3] != n_components[path]):
                    detail = (f"4-D with {n_components[path]} channels" if expected == 4
                              else "3-D")
                    problems.append(f"{path}: expected a {detail} image, got "
                                    f"{image.GetDimension()}-D of size {image.GetSize()}")
                    image = None
            read[path] = image
        image = read[path]
        if image is not None and component is not None:
            size = list(image.GetSize()[:3]) + [0]
            image = sitk.Extract(image, size, [0, 0, 0, component])
        out.append(image)
    return out


def read_case(info: DatasetInfo, files: CaseFiles) -> tuple[RawCase | None, list[str]]:
    """Read and check one case; return (the case or ``None``, every problem found)."""
    problems: list[str] = []
    label_image = None
    label = None
    for path in files.labels:
        image = _read(path, problems)
        if image is None:
            continue
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            problems.append(f"{path}: expected a 3-D single-component label image, got "
                            f"{image.GetDimension()}-D with "
                            f"{image.GetNumberOfComponentsPerPixel()} components")
            continue
        values = sitk.GetArrayFromImage(image)
        if values.dtype.kind == "f":
            if not np.isfinite(values).all() or nifti_nonfinite(path):
                problems.append(f"{path}: label contains NaN or inf values")
                continue
            if not np.array_equal(values, np.round(values)):
                problems.append(f"{path}: label values must be integers, got e.g. "
                                f"{values[values != np.round(values)][:3].tolist()}")
                continue
        values = values.astype(np.int64)
        unexpected = sorted(set(np.unique(values).tolist()) - info.raw_labels)
        if unexpected:
            count = int(np.isin(values, unexpected).sum())
            problems.append(f"{path}: label values {unexpected} ({count} voxels) are not among "
                            f"the {info.name} labels {sorted(info.raw_labels)}")
            continue
        if label_image is None:
            label_image, label = image, values
        else:  # ATLAS R1.x: several lesion masks of one case
            geometry = _geometry_problems(path, image, label_image, files.labels[0].name)
            problems.extend(geometry)
            if not geometry:
                label = np.maximum(label, values)
    images = _channel_images(files, problems)
    reference = label_image if label_image is not None else next(
        (im for im in images if im is not None), None)
    reference_name = files.labels[0].name if label_image is not None else "the first channel"
    checked = []
    for (_name, path, component), image in zip(files.channels, images, strict=True):
        if image is None:
            continue
        where = path if component is None else f"{path} [channel {component}]"
        geometry = _geometry_problems(where, image, reference, reference_name) \
            if image is not reference else []
        problems.extend(geometry)
        array = sitk.GetArrayViewFromImage(image)
        if array.dtype.kind == "f":
            bad = int((~np.isfinite(array)).sum())
            if component in (None, 0):  # NIfTI: count what is stored (read as 0)
                bad = max(bad, nifti_nonfinite(path))
            if bad:
                problems.append(f"{where}: {bad} NaN or inf intensities")
        checked.append(image)
    if problems or label_image is None:
        return None, problems
    return RawCase(files.case_id, files, checked, label_image, label), problems


def load_case(info: DatasetInfo, root: str | Path, case_id: str,
              cache_dir: str | Path | None = None) -> Case:
    """Read, check and preprocess one case (:mod:`study.data.preprocess`).

    With ``cache_dir`` the preprocessed arrays are cached there (memory-mapped ``.npy``,
    keyed by the preprocessing parameters and the source files), so that many trials on one
    node preprocess each case once. Raises :class:`DataError` listing every problem of the
    case.
    """
    from study.data import preprocess

    files = case_files(info, root, case_id)
    params = preprocess.parameters(info, root)
    if cache_dir is None:
        return preprocess.preprocess(info, _read_or_raise(info, files), params)
    return preprocess.cached(info, root, files, params, Path(cache_dir),
                             lambda: _read_or_raise(info, files))


def _read_or_raise(info: DatasetInfo, files: CaseFiles) -> RawCase:
    raw, problems = read_case(info, files)
    if raw is None:
        raise DataError("; ".join(problems) or f"{files.case_id}: no label could be read")
    return raw


# ----------------------------------------------------------------------------- dataset check

@dataclass
class CheckReport:
    """What :func:`check_dataset` found. ``problems`` empty = the dataset is usable."""

    dataset: str
    root: str
    cases: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    channels: tuple[str, ...] = ()
    shapes: list[tuple[int, int, int]] = field(default_factory=list)
    spacings: list[tuple[float, float, float]] = field(default_factory=list)
    class_voxels: list[list[int]] = field(default_factory=list)  # per case, per class
    class_names: tuple[str, ...] = ()
    seconds: float = 0.0

    def imbalance(self) -> dict[str, tuple[float, float, int]]:
        """Per foreground class: 001 Table I's ratio (mean, std over images of background
        voxels / class voxels) and the number of images containing the class."""
        out = {}
        for k, name in enumerate(self.class_names[1:], start=1):
            ratios = [c[0] / c[k] for c in self.class_voxels if c[k]]
            if ratios:
                out[name] = (float(np.mean(ratios)), float(np.std(ratios)), len(ratios))
        return out

    def summary(self) -> list[str]:
        """Human-readable summary lines."""
        lines = [f"{self.dataset} at {self.root}: {len(self.cases)} cases, "
                 f"{len(self.channels)} channel(s) ({', '.join(self.channels)}), "
                 f"checked in {self.seconds:.1f} s"]
        if self.shapes:
            for title, values in (("shape (D, H, W)", self.shapes),
                                  ("spacing mm (D, H, W)", self.spacings)):
                columns = list(zip(*values, strict=True))
                low = tuple(min(c) for c in columns)
                mid = tuple(statistics.median(c) for c in columns)
                high = tuple(max(c) for c in columns)
                lines.append(f"  {title}: min {_fmt(low)}  median {_fmt(mid)}  max {_fmt(high)}")
        totals = np.sum(self.class_voxels, axis=0) if self.class_voxels else []
        for k, name in enumerate(self.class_names):
            if len(totals):
                share = totals[k] / max(int(np.sum(totals)), 1)
                present = sum(1 for c in self.class_voxels if c[k])
                lines.append(f"  class {k} {name}: {int(totals[k])} voxels ({share:.3%}), "
                             f"present in {present}/{len(self.class_voxels)} cases")
        for name, (mean, std, n) in self.imbalance().items():
            lines.append(f"  class-imbalance ratio (001 Table I) {name}: {mean:.1f} ± {std:.1f} "
                         f"over {n} images")
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def check_dataset(info: DatasetInfo, root: str | Path,
                  progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Check every case of a dataset; return all problems and, per case, the statistics of
    the summary. Never raises for bad data (only for an unknown layout)."""
    clock = time.perf_counter()
    report = CheckReport(info.name, str(root), channels=info.channels,
                         class_names=info.class_names)
    found = scan(info, root, fresh=True)
    report.problems.extend(found.problems)
    report.notes.extend(found.notes)
    report.cases = sorted(found.cases)
    lut = _class_lut(info)
    for i, case_id in enumerate(report.cases, start=1):
        raw, problems = read_case(info, found.cases[case_id])
        report.problems.extend(problems)
        if raw is not None:
            classes = lut[raw.label]
            counts = np.bincount(classes.ravel(), minlength=len(info.classes)).tolist()
            if not any(counts[1:]):
                report.problems.append(f"{raw.source}: no foreground voxel (classes "
                                       f"{', '.join(info.class_names[1:])}): a training case "
                                       "without foreground teaches nothing about the rare class")
            for image, (_n, path, _k) in zip(raw.images, raw.files.channels, strict=True):
                array = sitk.GetArrayViewFromImage(image)
                if array.size and float(array.min()) == float(array.max()):
                    report.problems.append(f"{path}: constant image (every voxel "
                                           f"{float(array.min()):g})")
            report.shapes.append(tuple(int(s) for s in raw.label.shape))
            report.spacings.append(raw.spacing)
            report.class_voxels.append(counts)
        if progress is not None:
            progress(i, len(report.cases))
    report.seconds = time.perf_counter() - clock
    return report


def _class_lut(info: DatasetInfo) -> np.ndarray:
    lut = np.zeros(max(info.raw_labels) + 1, np.uint8)
    for index, raw_values in enumerate(info.classes.values()):
        lut[list(raw_values)] = index
    return lut


def require_foreground(cases, info: DatasetInfo) -> None:
    """Raise one :class:`DataError` naming every training case without a foreground voxel
    (such a case in the training pool teaches nothing about the rare class)."""
    empty = [case for case in cases if not (np.asarray(case.label) > 0).any()]
    if empty:
        names = "; ".join(f"{c.source or c.case_id}: no foreground voxel" for c in empty)
        raise DataError(f"{names} ({len(empty)} training case(s) of {info.name} without "
                        f"{' or '.join(info.class_names[1:])}; remove them from the dataset)")
