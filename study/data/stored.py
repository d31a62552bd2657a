"""Whether an image file holds every byte its header promises, before anyone trusts it.

SimpleITK reads a cut ``.nii.gz`` or ``.nii`` without complaint and fills the missing voxels
with 0, so :func:`check_stored` compares every file's bytes with what its header promises
(streamed; never the whole file in memory) and a file that falls short is never handed to
SimpleITK. :mod:`study.data.reader` calls it for every file it reads; float NIfTI files also
report their NaN/inf values here, which SimpleITK reads as 0.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from study.data.layouts import outside

_CHUNK = 1 << 22  # bytes per read while streaming a file
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER = 348  # NIfTI-1 sizeof_hdr (SimpleITK reads no NIfTI-2)
_BYTE_ORDERS: tuple[Literal["<", ">"], ...] = ("<", ">")  # struct/numpy: little, big endian
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


def _measure(extent: _Extent, chunk_size: int) -> Stored:
    """Stream the data of ``extent`` once, ``chunk_size`` bytes at a time: compare its length
    with the header, count NaN/inf."""
    dtype = extent.count_nonfinite
    length, nonfinite, ended, damage = 0, 0, False, ""
    with open(extent.file, "rb") as handle:
        if not extent.compressed and dtype is None:
            length = extent.file.stat().st_size - extent.skip
        else:
            handle.seek(extent.skip)
            carry = b""
            try:
                for chunk in _content(handle, extent.compressed, chunk_size):
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
    order = next((o for o in _BYTE_ORDERS if len(head) >= 4
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


def check_stored(path: Path, root: Path, chunk_size: int = _CHUNK) -> Stored:
    """Whether ``path`` holds every byte its header promises, before anyone trusts it.

    NIfTI (``.nii``, ``.nii.gz``): ``vox_offset + prod(dim) * bits / 8`` bytes of (inflated)
    content, the gzip stream complete and its CRC right. MetaImage (``.mhd``): its
    ``ElementDataFile`` inside ``root`` and present, holding ``prod(DimSize) x channels x
    element size`` bytes (inflated if ``CompressedData``). Content is streamed in chunks of
    ``chunk_size`` bytes, never held whole. Other formats and headers SimpleITK itself rejects
    get no verdict. Returns the problem, naming the file, expected and found sizes, e.g.
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
        return Stored() if extent is None else _measure(extent, chunk_size)
    except _Bad as bad:
        return Stored(str(bad))
    except OSError as error:
        return Stored(f"{error.filename or path}: cannot be read ({error.strerror or error})")
