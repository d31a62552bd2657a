"""Find a dataset's cases in its layout and read one case's files with SimpleITK, checked.

Every problem names the file and what was expected; nothing is guessed. :func:`read_case`
collects *all* problems of a case (unreadable, truncated or damaged file, missing modality,
shape / spacing / origin / direction mismatch, NaN or inf intensities, label values outside the
declared set) instead of stopping at the first. Each file's bytes are verified against its
header (:func:`study.data.stored.check_stored`) before SimpleITK reads it. Raw label values
become class indices through :func:`class_lut` (the dataset's ``classes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from study.data.case import DataError
from study.data.layouts import LAYOUTS, CaseFiles, Scan
from study.data.registry import DatasetInfo
from study.data.stored import check_stored


def array_spacing(image: sitk.Image) -> tuple[float, float, float]:
    """The voxel spacing (mm) of a 3-D image in array order [D, H, W] (SimpleITK: x, y, z)."""
    x, y, z = image.GetSpacing()
    return float(z), float(y), float(x)


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
        return array_spacing(self.label_image)

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
        try:
            _SCANS[key] = LAYOUTS[info.layout].scan(info, root)
        except OSError as error:  # a folder that cannot be listed
            return Scan(problems=[f"{error.filename or root}: cannot be listed "
                                  f"({error.strerror or error})"])
    return _SCANS[key]


def list_cases(info: DatasetInfo, root: str | Path) -> list[str]:
    """Case ids found under ``root`` in the dataset's layout, sorted; layout problems raise
    one :class:`DataError` listing all of them."""
    found = scan(info, root)
    if found.problems:
        raise DataError("; ".join(found.problems))
    return sorted(found.cases)


def case_files(info: DatasetInfo, root: str | Path, case_id: str) -> CaseFiles:
    """The files of case ``case_id`` under ``root``; :class:`DataError` if the layout has no
    such case (with the layout's problems, which may say why)."""
    found = scan(info, root)
    if case_id not in found.cases:
        problems = "; ".join(found.problems)
        raise DataError(f"{Path(root) / case_id}: case not found in the {info.layout} layout"
                        + (f" ({problems})" if problems else ""))
    return found.cases[case_id]


# ----------------------------------------------------------------------------- reading

def _read(path: Path, root: Path, problems: list[str]) -> tuple[sitk.Image | None, int]:
    """The image at ``path`` and the NaN/inf values it stores, read only once
    :func:`check_stored` found every byte; ``(None, 0)`` with the problem listed otherwise."""
    if not path.exists():
        problems.append(f"{path}: file not found")
        return None, 0
    stored = check_stored(path, root)
    if stored.problem:
        problems.append(stored.problem)
        return None, 0
    try:
        return sitk.ReadImage(str(path)), stored.nonfinite
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].strip()
        problems.append(f"{path}: not a readable image ({reason})")
        return None, 0


def _geometry_problems(path: Path | str, image: sitk.Image, reference: sitk.Image, name: str
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


def _channel_images(files: CaseFiles, problems: list[str]
                    ) -> list[tuple[sitk.Image | None, int]]:
    """One 3-D image per channel, with the NaN/inf values its file stores (counted once, at
    component 0 of a 4-D file); 4-D files are read once and split into components."""
    read: dict[Path, sitk.Image | None] = {}
    nonfinite: dict[Path, int] = {}
    n_components = {p: sum(1 for _, q, k in files.channels if q == p and k is not None)
                    for _, p, _ in files.channels}
    out = []
    for _name, path, component in files.channels:
        if path not in read:
            image, nonfinite[path] = _read(path, files.root, problems)
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
        out.append((image, nonfinite[path] if component in (None, 0) else 0))
    return out


def read_case(info: DatasetInfo, files: CaseFiles) -> tuple[RawCase | None, list[str]]:
    """Read and check one case; return (the case or ``None``, every problem found)."""
    problems: list[str] = []
    label_image: sitk.Image | None = None
    label: np.ndarray | None = None
    for path in files.labels:
        image, nonfinite = _read(path, files.root, problems)
        if image is None:
            continue
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            problems.append(f"{path}: expected a 3-D single-component label image, got "
                            f"{image.GetDimension()}-D with "
                            f"{image.GetNumberOfComponentsPerPixel()} components")
            continue
        values = sitk.GetArrayFromImage(image)
        if values.dtype.kind == "f":
            if not np.isfinite(values).all() or nonfinite:
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
        if label_image is None or label is None:  # the first label file
            label_image, label = image, values
        else:  # ATLAS R1.x: several lesion masks of one case
            geometry = _geometry_problems(path, image, label_image, files.labels[0].name)
            problems.extend(geometry)
            if not geometry:
                label = np.maximum(label, values)
    images = _channel_images(files, problems)
    reference = label_image  # else the first channel read
    reference_name = files.labels[0].name if label_image is not None else "the first channel"
    checked = []
    for (_name, path, component), (image, stored_bad) in zip(files.channels, images,
                                                              strict=True):
        if image is None:
            continue
        if reference is None:
            reference = image
        where = path if component is None else f"{path} [channel {component}]"
        geometry = _geometry_problems(where, image, reference, reference_name) \
            if image is not reference else []
        problems.extend(geometry)
        array = sitk.GetArrayViewFromImage(image)
        if array.dtype.kind == "f":
            bad = max(int((~np.isfinite(array)).sum()), stored_bad)  # NIfTI: read as 0
            if bad:
                problems.append(f"{where}: {bad} NaN or inf intensities")
        checked.append(image)
    if problems or label_image is None or label is None:
        return None, problems
    return RawCase(files.case_id, files, checked, label_image, label), problems


def class_lut(info: DatasetInfo) -> np.ndarray:
    """Raw label value -> class index (uint8), indexed by raw value: ``class_lut(info)[raw]``
    maps a raw label volume to the classes of ``info.classes`` (index order)."""
    lut = np.zeros(max(info.raw_labels) + 1, np.uint8)
    for index, raw_values in enumerate(info.classes.values()):
        lut[list(raw_values)] = index
    return lut
