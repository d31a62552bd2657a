"""Read cases with SimpleITK, check them, preprocess them (cached), and check whole datasets.

Every problem names the file and what was expected; nothing is guessed. :func:`read_case`
collects *all* problems of a case (unreadable, truncated or damaged file, missing modality,
shape / spacing / origin / direction mismatch, NaN or inf intensities, label values outside the
declared set) instead of stopping at the first; :func:`load_case` raises them together as one
:class:`DataError`; :func:`check_dataset` (``study data check``) runs the same checks over every
case of a dataset and adds what only shows across cases.

SimpleITK reads a cut ``.nii.gz`` or ``.nii`` without complaint and fills the missing voxels
with 0, so :func:`check_stored` first compares every file's bytes with what its header
promises (streamed; never the whole file in memory) and a file that falls short is never
handed to SimpleITK. This happens wherever a case is read: in ``study data check`` and when
:func:`load_case` preprocesses a case; a case already in the preprocessed cache was checked
when it was written and is not read again.
"""

from __future__ import annotations

import statistics
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import SimpleITK as sitk

from study.data.layouts import LAYOUTS, CaseFiles, Scan, outside
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
    found = scan(info, root)
    if case_id not in found.cases:
        problems = "; ".join(found.problems)
        raise DataError(f"{Path(root) / case_id}: case not found in the {info.layout} layout"
                        + (f" ({problems})" if problems else ""))
    return found.cases[case_id]


# ----------------------------------------------------------------------------- stored bytes

_CHUNK = 1 << 22  # bytes per read while streaming a file
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER = 348  # NIfTI-1 sizeof_hdr (SimpleITK reads no NIfTI-2)
_NIFTI_FIELDS = {"dim": (40, "8h"), "datatype": (70, "h"), "vox_offset": (108, "f")}
_NIFTI_TYPES = {  # NIfTI datatype code -> (name, bits per voxel); NaN/inf counted in float32/64
    1: ("binary", 1), 2: ("uint8", 8), 4: ("int16", 16), 8: ("int32", 32), 16: ("float32", 32),
    32: ("complex64", 64), 64: ("float64", 64), 128: ("rgb24", 24), 256: ("int8", 8),
    512: ("uint16", 16), 768: ("uint32", 32), 1024: ("int64", 64), 1280: ("uint64", 64),
    1536: ("float128", 128), 1792: ("complex128", 128), 2048: ("complex256", 256),
    2304: ("rgba32", 32)}
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
              "MET_UINT": 4, "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8,
              "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
_MHD_LINES = 64  # a MetaImage header is a few dozen "Key = Value" lines


@dataclass(frozen=True)
class Stored:
    """What :func:`check_stored` found: ``problem`` (``None`` = the bytes are all there) and
    ``nonfinite``, the NaN/inf values a float NIfTI stores (SimpleITK reads them as 0)."""

    problem: str | None = None
    nonfinite: int = 0


@dataclass(frozen=True)
class _Extent:
    """Where an image's voxel data lie, as its header says."""

    file: Path  # the file holding the data
    says: str  # "header says 40x30x20 int16 (48,000 bytes) + 352-byte header"
    end: int  # data end in the (decompressed) content of ``file``, after ``skip`` raw bytes
    start: int = 0  # data start, same frame
    skip: int = 0  # raw bytes before the content: a MetaImage header with LOCAL data
    compressed: bool = False
    count_nonfinite: np.dtype | None = None


class _Bad(Exception):
    """An image file that must not be read; the message is the problem."""


class _Cut(Exception):
    """A compressed stream that ends before its end marker (message empty) or is damaged."""


def _bytes(n: int) -> str:
    return f"{n:,} bytes" + (f" = {n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else "")


def _content(handle: BinaryIO, compressed: bool, size: int) -> Iterator[bytes]:
    """The content of ``handle`` from its position, in chunks of at most ``size`` bytes;
    ``compressed``: inflated from gzip members or a zlib stream (header detected, checksum
    verified), raising :class:`_Cut` where it is cut or damaged."""
    if not compressed:
        yield from iter(lambda: handle.read(size), b"")
        return
    data = b""
    while True:
        inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
        while not inflater.eof:
            data = data or handle.read(size)
            try:
                if not data:
                    yield inflater.flush()
                    if not inflater.eof:
                        raise _Cut()
                    break
                yield inflater.decompress(data, size)
            except zlib.error as error:
                raise _Cut(str(error)) from None
            data = inflater.unconsumed_tail
        data = inflater.unused_data or handle.read(size)
        if not data.startswith(_GZIP_MAGIC):  # no further gzip member; trailing bytes ignored
            return


def _measure(extent: _Extent) -> Stored:
    """Stream the data of ``extent`` once: compare its length with the header, count NaN/inf."""
    dtype = extent.count_nonfinite
    length, nonfinite, ended, damage = 0, 0, False, ""
    with open(extent.file, "rb") as handle:
        if not extent.compressed and dtype is None:
            length = extent.file.stat().st_size - extent.skip
        else:
            handle.seek(extent.skip)
            carry = b""
            try:
                for chunk in _content(handle, extent.compressed, _CHUNK):
                    lo, hi = max(extent.start - length, 0), min(extent.end - length, len(chunk))
                    if dtype is not None and lo < hi:
                        data = carry + chunk[lo:hi]
                        whole = len(data) // dtype.itemsize
                        values = np.frombuffer(data, dtype, count=whole)
                        nonfinite += int(np.count_nonzero(~np.isfinite(values)))
                        carry = data[whole * dtype.itemsize:]
                    length += len(chunk)
            except _Cut as cut:
                ended, damage = True, str(cut)
    stream = ("the file" if not extent.compressed else
              "the gzip stream" if extent.file.name.endswith(".gz") else "the zlib stream")
    if damage:
        return Stored(f"{extent.file}: damaged: {extent.says}, {stream} is corrupt ({damage})")
    if ended or length < extent.end:
        return Stored(f"{extent.file}: truncated: {extent.says}, {stream} ends after "
                      f"{_bytes(length)}{' without its end marker' * ended}")
    return Stored(nonfinite=nonfinite)


def _nifti_extent(path: Path) -> _Extent | None:
    """The data extent a NIfTI-1 header declares (``None``: not a header read here, left to
    SimpleITK). A gzip file is inflated like ITK's reader does: a ``.gz`` name whose content
    does not start with the gzip magic is read as it is."""
    with open(path, "rb") as handle:
        compressed = path.name.endswith(".gz") and handle.read(2) == _GZIP_MAGIC
        handle.seek(0)
        what = "the gzip stream" if compressed else "the file"
        head = b""
        try:
            for chunk in _content(handle, compressed, size=1024):
                head += chunk
                if len(head) >= _NIFTI_HEADER:
                    break
        except _Cut as error:
            if str(error):
                raise _Bad(f"{path}: damaged: {what} is corrupt ({error})") from None
            if len(head) < 4:
                raise _Bad(f"{path}: truncated: {what} ends after {_bytes(len(head))}, before "
                           "the end of its NIfTI header") from None
    if not head:
        raise _Bad(f"{path}: empty file (0 bytes)")
    order = next((o for o in "<>" if len(head) >= 4
                  and struct.unpack(o + "i", head[:4])[0] == _NIFTI_HEADER), None)
    if order is None:
        return None
    if len(head) < _NIFTI_HEADER:
        raise _Bad(f"{path}: truncated: {what} ends after {_bytes(len(head))}, inside its "
                   f"{_NIFTI_HEADER}-byte NIfTI header")
    field = {name: struct.unpack_from(order + fmt, head, at)
             for name, (at, fmt) in _NIFTI_FIELDS.items()}
    dim, kind = field["dim"], _NIFTI_TYPES.get(field["datatype"][0])
    if kind is None or not 1 <= dim[0] <= 7 or min(dim[1:dim[0] + 1]) < 1:
        return None  # not a header SimpleITK can read either; it says why
    name, bits = kind
    shape = dim[1:dim[0] + 1]
    start = max(int(field["vox_offset"][0]), _NIFTI_HEADER)
    data = -(-int(np.prod(shape, dtype=object)) * bits // 8)
    return _Extent(path, f"header says {'x'.join(map(str, shape))} {name} ({_bytes(data)}) + "
                         f"{start}-byte header", start + data, start=start,
                   compressed=compressed,
                   count_nonfinite=np.dtype(name).newbyteorder(order)
                   if name in ("float32", "float64") else None)


def _mhd_extent(path: Path, root: Path) -> _Extent | None:
    """The data extent a MetaImage header declares; its data file must stay inside ``root``
    (``None``: ASCII data or a header not read here, left to SimpleITK)."""
    fields = {}
    with open(path, "rb") as handle:
        for _ in range(_MHD_LINES):
            key, _, value = handle.readline(4096).decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                header_end = handle.tell()
                break
        else:
            return None
    name = fields["ElementDataFile"]
    if name == "LOCAL":
        data_file, skip = path, header_end
    elif name.startswith("LIST") or "%" in name:
        raise _Bad(f"{path}: ElementDataFile = {name}: images split into slice files are not "
                   "read here (store the image as one .raw or .mha file)")
    else:
        data_file, skip = path.parent / name, 0
        if reason := outside(data_file, root):
            raise _Bad(f"{path}: ElementDataFile {name} {reason}")
        if not data_file.is_file():
            raise _Bad(f"{data_file}: file not found (the data file of {path.name})")
    try:
        shape = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        header_size = max(int(fields.get("HeaderSize", "0")), 0)
    except ValueError:
        return None
    element = fields.get("ElementType", "").removesuffix("_ARRAY")
    if (fields.get("BinaryData", "False").lower() != "true" or element not in _MET_BYTES
            or not shape or min(shape) < 1):
        return None
    data = int(np.prod(shape, dtype=object)) * channels * _MET_BYTES[element]
    return _Extent(data_file, f"{path.name} says {'x'.join(map(str, shape))}"
                              f"{f'x{channels}' if channels > 1 else ''} {element} "
                              f"({_bytes(data)})"
                              f"{f' after a {header_size}-byte header' if header_size else ''}",
                   header_size + data, start=header_size, skip=skip,
                   compressed=fields.get("CompressedData", "False").lower() == "true")


def check_stored(path: Path, root: Path) -> Stored:
    """Whether ``path`` holds every byte its header promises, before anyone trusts it.

    NIfTI (``.nii``, ``.nii.gz``): ``vox_offset + prod(dim) * bits / 8`` bytes of (inflated)
    content, the gzip stream complete and its CRC right. MetaImage (``.mhd``): its
    ``ElementDataFile`` inside ``root`` and present, holding ``prod(DimSize) x channels x
    element size`` bytes (inflated if ``CompressedData``). Compressed content is streamed in
    chunks, never held whole. Other formats and headers SimpleITK itself rejects get no
    verdict. Returns the problem, naming the file, expected and found sizes, e.g.
    ``"imaging.nii.gz: truncated: header says 512x512x611 int16 (320,339,968 bytes = 305.5 MiB)
    + 352-byte header, the gzip stream ends after 12,582,912 bytes = 12.0 MiB without its end
    marker"``.
    """
    try:
        if path.name.endswith((".nii", ".nii.gz")):
            extent = _nifti_extent(path)
        elif path.suffix == ".mhd":
            extent = _mhd_extent(path, root)
        else:
            extent = None
        return Stored() if extent is None else _measure(extent)
    except _Bad as bad:
        return Stored(str(bad))
    except OSError as error:
        return Stored(f"{error.filename or path}: cannot be read ({error.strerror or error})")


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
    label_image = None
    label = None
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
        if label_image is None:
            label_image, label = image, values
        else:  # ATLAS R1.x: several lesion masks of one case
            geometry = _geometry_problems(path, image, label_image, files.labels[0].name)
            problems.extend(geometry)
            if not geometry:
                label = np.maximum(label, values)
    images = _channel_images(files, problems)
    reference = label_image if label_image is not None else next(
        (im for im, _ in images if im is not None), None)
    reference_name = files.labels[0].name if label_image is not None else "the first channel"
    checked = []
    for (_name, path, component), (image, stored_bad) in zip(files.channels, images,
                                                              strict=True):
        if image is None:
            continue
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
        files = found.cases[case_id]
        try:
            raw, problems = read_case(info, files)
        except (OSError, RuntimeError, MemoryError) as error:  # one case must not hide the rest
            raw, problems = None, [f"{files.labels[0].parent}: case {case_id} could not be "
                                   f"read ({type(error).__name__}: {error})"]
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
