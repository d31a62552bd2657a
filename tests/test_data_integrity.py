"""Data that lies is never trained on: truncated or damaged image files and paths that leave
the dataset folder are listed by ``study data check`` (exit 1) and refused by the loader.

SimpleITK reads a cut ``.nii.gz`` or ``.nii`` without complaint and fills the missing voxels
with 0; the expected sizes below come from the NIfTI header layout and from zlib, not from the
code under test."""

from __future__ import annotations

import builtins
import gzip
import io
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import head, write_image

from study.data import check, loader
from study.data.registry import DATASETS
from study.data.stored import Stored, check_stored

SHAPE = (10, 24, 24)  # array order [D, H, W]; NIfTI/MetaImage headers say 24x24x10
VOXELS = 10 * 24 * 24


def _check(root: Path, dataset: str) -> tuple[int, list[str]]:
    """``study data check`` on ``root``: exit status and the problems it printed."""
    lines: list[str] = []
    status = check.run(root, dataset, printer=lines.append, progress_to=io.StringIO())
    return status, [line.removeprefix("  - ") for line in lines if line.startswith("  - ")]


def _kits(root: Path, cases=("case_00000", "case_00001"), suffix=".nii.gz",
          dtype=np.int16) -> Path:
    """KiTS19 folders with a CT-like image and a label holding kidney and tumour."""
    for i, case in enumerate(cases):
        image, _ = head(SHAPE, seed=i)
        label = np.zeros(SHAPE, np.uint8)
        label[3:6, 8:14, 8:14] = 1
        label[4, 10:12, 10:12] = 2
        write_image(root / case / f"imaging{suffix}", image.astype(dtype))
        write_image(root / case / f"segmentation{suffix}", label)
    return root


def _inflated(data: bytes) -> int:
    """Bytes zlib recovers from a (possibly cut) gzip stream: the independent reference."""
    return len(zlib.decompressobj(31).decompress(data))


def _cut(path: Path, keep: int) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return data


# ----------------------------------------------------------------------------- NIfTI

GZ_CUTS = {  # name -> bytes kept of the file's bytes
    "inside the gzip header": lambda data: 5,
    "inside the NIfTI header": lambda data: next(k for k in range(10, len(data))
                                                 if 4 <= _inflated(data[:k]) < 348),
    "inside the data": lambda data: len(data) // 2,
    "just before the CRC": lambda data: len(data) - 8,
    "inside the length field": lambda data: len(data) - 1,
}


@pytest.mark.parametrize("where", list(GZ_CUTS))
def test_cut_nii_gz_is_listed_and_never_loaded(tmp_path, where):
    """A .nii.gz cut anywhere (an interrupted download) is listed with what the header
    promises and what the stream holds; load_case raises and the cache stays empty."""
    root = _kits(tmp_path / "kits")
    path = root / "case_00001" / "imaging.nii.gz"
    data = _cut(path, GZ_CUTS[where](path.read_bytes()))
    n = _inflated(path.read_bytes())
    if where == "inside the data":  # the hazard: SimpleITK reads it, zero-filled
        stored = gzip.decompress(data)[352:]
        read = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert read.shape == SHAPE and read.tobytes() != stored and (read == 0).sum() > 100
    if where == "inside the gzip header":
        assert n == 0
        expected = (f"{path}: truncated: the gzip stream ends after 0 bytes, before the end of "
                    "its NIfTI header")
    elif where == "inside the NIfTI header":
        expected = (f"{path}: truncated: the gzip stream ends after {n:,} bytes, inside its "
                    "348-byte NIfTI header")
    else:
        expected = (f"{path}: truncated: header says 24x24x10 int16 ({2 * VOXELS:,} bytes) + "
                    f"352-byte header, the gzip stream ends after {n:,} bytes without its end "
                    "marker")
    if where in ("just before the CRC", "inside the length field"):
        assert n == 352 + 2 * VOXELS  # every voxel is there, the stream is still cut
    status, problems = _check(root, "kits19")
    assert (status, problems) == (1, [expected])
    with pytest.raises(loader.DataError) as raised:
        loader.load_case(DATASETS["kits19"], root, "case_00001", cache_dir=tmp_path / "cache")
    assert str(raised.value) == expected
    assert not list((tmp_path / "cache").glob("*/case_00001"))


def test_damaged_gzip_stream_is_listed(tmp_path):
    """A flipped byte in the CRC is caught by the checksum, not only by the length."""
    root = _kits(tmp_path / "kits")
    path = root / "case_00000" / "segmentation.nii.gz"
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF
    path.write_bytes(bytes(data))
    status, problems = _check(root, "kits19")
    assert status == 1 and problems == [
        f"{path}: damaged: header says 24x24x10 uint8 ({VOXELS:,} bytes) + 352-byte header, "
        "the gzip stream is corrupt (Error -3 while decompressing data: incorrect data check)"]


@pytest.mark.parametrize("keep, found", [
    (0, "empty file (0 bytes)"),
    (200, "truncated: the file ends after 200 bytes, inside its 348-byte NIfTI header"),
    (352 + 1000, f"truncated: header says 24x24x10 float32 ({4 * VOXELS:,} bytes) + 352-byte "
                 "header, the file ends after 1,352 bytes"),
    (352 + 4 * VOXELS - 1, f"truncated: header says 24x24x10 float32 ({4 * VOXELS:,} bytes) + "
                           f"352-byte header, the file ends after {352 + 4 * VOXELS - 1:,} "
                           "bytes"),
])
def test_cut_uncompressed_nii_is_listed_not_a_traceback(tmp_path, keep, found):
    root = _kits(tmp_path / "kits", suffix=".nii", dtype=np.float32)
    path = root / "case_00000" / "imaging.nii"
    _cut(path, keep)
    status, problems = _check(root, "kits19")
    assert (status, problems) == (1, [f"{path}: {found}"])
    with pytest.raises(loader.DataError, match=f"^{path}: "):
        loader.load_case(DATASETS["kits19"], root, "case_00000")


def test_every_problem_of_every_case_is_listed(tmp_path):
    """Two broken files in one case and one in another: three problems, the good case none."""
    root = _kits(tmp_path / "kits", cases=("case_00000", "case_00001", "case_00002"))
    image, label = (root / "case_00000" / f for f in ("imaging.nii.gz", "segmentation.nii.gz"))
    _cut(image, 40)
    _cut(label, label.stat().st_size // 2)
    (root / "case_00002" / "imaging.nii.gz").write_bytes(b"")
    status, problems = _check(root, "kits19")
    assert status == 1 and len(problems) == 3
    assert [p.split(":")[0] for p in problems] == [
        str(label), str(image), str(root / "case_00002" / "imaging.nii.gz")]
    assert not any("case_00001" in p for p in problems)


def test_nonfinite_count_and_multi_member_gzip_across_chunk_edges(tmp_path):
    """The stream is read in chunks (here 999 bytes, not a multiple of 4): NaN/inf are counted
    exactly as numpy counts them, and a gzip file of several members (valid gzip; SimpleITK
    reads it) is whole; cutting its last member is still found."""
    image = np.arange(VOXELS, dtype=np.float32).reshape(SHAPE)
    image.flat[[0, 1, 997, 2500, VOXELS - 1]] = [np.nan, np.inf, -np.inf, np.nan, np.nan]
    path = write_image(tmp_path / "x.nii.gz", image)
    assert check_stored(path, tmp_path, chunk_size=999) == Stored(nonfinite=5)
    content = gzip.decompress(path.read_bytes())
    multi = gzip.compress(content[:1000]) + gzip.compress(content[1000:])
    path.write_bytes(multi)
    read = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # NaN/inf read as 0
    np.testing.assert_array_equal(read, np.where(np.isfinite(image), image, 0))
    assert check_stored(path, tmp_path, chunk_size=999) == Stored(nonfinite=5)
    path.write_bytes(multi[:-8])
    assert "without its end marker" in check_stored(path, tmp_path, chunk_size=999).problem


def test_a_cached_case_is_not_read_again(tmp_path):
    """Files are checked when a case is preprocessed; the cache then serves it unread: with
    its sources overwritten by garbage of the same size and modification time (the cache's
    fingerprint), the cached case still loads while reading the files fails."""
    root = _kits(tmp_path / "kits")
    info = DATASETS["kits19"]
    first = loader.load_case(info, root, "case_00000", cache_dir=tmp_path / "cache")
    for path in (root / "case_00000").iterdir():
        stat = path.stat()
        path.write_bytes(b"\0" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = loader.load_case(info, root, "case_00000", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.image, first.image)
    with pytest.raises(loader.DataError, match="imaging.nii.gz: "):
        loader.load_case(info, root, "case_00000")


# ----------------------------------------------------------------------------- MetaImage

def _promise(root: Path, compressed: bool = False) -> Path:
    image, _ = head(SHAPE)
    label = np.zeros(SHAPE, np.uint8)
    label[3:7, 8:16, 8:16] = 1
    for case in ("Case00", "Case01"):
        for name, array in ((case, image), (f"{case}_segmentation", label)):
            path = root / f"{name}.mhd"
            path.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(array), str(path), compressed)
    return root


def test_mhd_without_or_with_a_short_raw_file_is_listed(tmp_path):
    root = _promise(tmp_path / "promise")
    (root / "Case00.raw").unlink()
    _cut(root / "Case01_segmentation.raw", VOXELS // 2)
    status, problems = _check(root, "promise12")
    assert status == 1 and problems == [
        f"{root / 'Case00.raw'}: file not found (the data file of Case00.mhd)",
        f"{root / 'Case01_segmentation.raw'}: truncated: Case01_segmentation.mhd says "
        f"24x24x10 MET_UCHAR ({VOXELS:,} bytes), the file ends after {VOXELS // 2:,} bytes"]
    with pytest.raises(loader.DataError, match="Case00.raw: file not found"):
        loader.load_case(DATASETS["promise12"], root, "Case00")


def test_compressed_mhd_with_a_cut_zraw_is_listed(tmp_path):
    root = _promise(tmp_path / "promise", compressed=True)
    zraw = root / "Case01.zraw"
    _cut(zraw, zraw.stat().st_size - 3)
    n = len(zlib.decompressobj().decompress(zraw.read_bytes()))
    status, problems = _check(root, "promise12")
    assert status == 1 and problems == [
        f"{zraw}: truncated: Case01.mhd says 24x24x10 MET_FLOAT ({4 * VOXELS:,} bytes), the "
        f"zlib stream ends after {n:,} bytes without its end marker"]
    assert loader.load_case(DATASETS["promise12"], root, "Case00").label.any()


def test_mhd_data_file_outside_the_dataset_is_not_read(tmp_path):
    root = _promise(tmp_path / "promise")
    os.replace(root / "Case00.raw", tmp_path / "elsewhere.raw")
    header = root / "Case00.mhd"
    header.write_text(header.read_text().replace("ElementDataFile = Case00.raw",
                                                 "ElementDataFile = ../elsewhere.raw"))
    assert sitk.ReadImage(str(header)).GetSize() == (24, 24, 10)  # SimpleITK would follow it
    status, problems = _check(root, "promise12")
    assert status == 1 and problems == [
        f"{header}: ElementDataFile ../elsewhere.raw leaves the dataset folder {root.resolve()}"]


# ----------------------------------------------------------------------------- MSD paths

def _spleen(root: Path, outside: Path) -> dict:
    """A Decathlon spleen task with two good cases (one kept elsewhere inside the root and
    linked), and a readable case outside the root that entries try to reach."""
    for i, folder in ((1, root), (2, root / "store"), (9, outside)):
        image, _ = head(SHAPE, seed=i)
        label = np.zeros(SHAPE, np.uint8)
        label[3:7, 8:16, 8:16] = 1
        write_image(folder / "imagesTr" / f"spleen_{i}.nii.gz", (image - 500).astype(np.int16))
        write_image(folder / "labelsTr" / f"spleen_{i}.nii.gz", label)
    for kind in ("imagesTr", "labelsTr"):
        (root / kind / "spleen_2.nii.gz").symlink_to(root / "store" / kind / "spleen_2.nii.gz")
    (root / "imagesTr" / "linked.nii.gz").symlink_to(outside / "imagesTr" / "spleen_9.nii.gz")
    secret = outside / "imagesTr" / "spleen_9.nii.gz"
    return {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
            "training": [
                {"image": "./imagesTr/spleen_1.nii.gz", "label": "./labelsTr/spleen_1.nii.gz"},
                {"image": "../outside/imagesTr/spleen_9.nii.gz",
                 "label": "./labelsTr/spleen_1.nii.gz"},
                {"image": str(secret), "label": str(outside / "labelsTr" / "spleen_9.nii.gz")},
                {"image": "./imagesTr/linked.nii.gz", "label": "./labelsTr/spleen_1.nii.gz"},
                {"image": str(root / "imagesTr" / "spleen_2.nii.gz"),
                 "label": "labelsTr/spleen_2.nii.gz"}],
            "test": ["../../etc/passwd", "./imagesTs/spleen_3.nii.gz"]}


def test_dataset_json_paths_leaving_the_folder_are_listed_and_never_opened(tmp_path,
                                                                          monkeypatch):
    """``..``, absolute paths elsewhere and symlinks out of the folder are listed under their
    JSON key; the readable NIfTI outside is never opened. An absolute path inside the folder
    and a symlink that stays inside are fine."""
    root, outside = tmp_path / "Task09_Spleen", tmp_path / "outside"
    meta = _spleen(root, outside)
    (root / "dataset.json").write_text(json.dumps(meta))
    opened: list[Path] = []

    def recorder(original):
        def record(file, *args, **kwargs):
            if isinstance(file, str | os.PathLike):
                opened.append(Path(file).resolve())
            return original(file, *args, **kwargs)
        return record

    for module, name in ((builtins, "open"), (io, "open"), (sitk, "ReadImage")):
        monkeypatch.setattr(module, name, recorder(getattr(module, name)))
    status, problems = _check(root, "msd-spleen")
    monkeypatch.undo()
    base, json_path = root.resolve(), root / "dataset.json"
    assert status == 1 and problems == [
        f"{json_path} test[0]: ../../etc/passwd leaves the dataset folder {base}",
        f"{json_path} training[1].image: ../outside/imagesTr/spleen_9.nii.gz leaves the dataset "
        f"folder {base}",
        f"{json_path} training[2].image: {outside}/imagesTr/spleen_9.nii.gz leaves the dataset "
        f"folder {base}",
        f"{json_path} training[2].label: {outside}/labelsTr/spleen_9.nii.gz leaves the dataset "
        f"folder {base}",
        f"{json_path} training[3].image: ./imagesTr/linked.nii.gz resolves through a symlink to "
        f"{outside.resolve()}/imagesTr/spleen_9.nii.gz, outside the dataset folder {base}"]
    assert opened and all(p.is_relative_to(base) for p in opened), opened
    assert check.check_dataset(DATASETS["msd-spleen"], root).cases == ["spleen_1", "spleen_2"]
    with pytest.raises(loader.DataError, match="training.1..image: ../outside/.* leaves"):
        loader.load_case(DATASETS["msd-spleen"], root, "spleen_9")

    meta["training"] = [meta["training"][0], meta["training"][4]]
    meta["test"] = ["./imagesTs/spleen_3.nii.gz"]
    (root / "dataset.json").write_text(json.dumps(meta))
    assert _check(root, "msd-spleen") == (0, [])


def test_symlinked_case_folder_outside_the_root_is_refused(tmp_path):
    root = _kits(tmp_path / "kits", cases=("case_00000",))
    _kits(tmp_path / "other", cases=("case_00005",))
    (root / "case_00005").symlink_to(tmp_path / "other" / "case_00005")
    status, problems = _check(root, "kits19")
    target = (tmp_path / "other" / "case_00005").resolve()
    assert status == 1 and problems == [
        f"{root / 'case_00005' / name}: resolves through a symlink to {target / name}, outside "
        f"the dataset folder {root.resolve()}" for name in ("imaging.nii.gz",
                                                             "segmentation.nii.gz")]


@pytest.mark.parametrize("content, fragment", [
    (b"\xff\xfe{\"training\": []}", "dataset.json: not readable JSON ('utf-8' codec can't"),
    (b"[1, 2]", "dataset.json: expected a JSON object"),
    (b"[" * 100_000, "dataset.json: not readable JSON (maximum recursion depth"),
    (json.dumps({"modality": {"0": "CT"}, "labels": {"0": "b", "1": "s"},
                 "training": "imagesTr"}).encode(), "dataset.json: 'training' missing or not"),
    (json.dumps({"modality": {"0": "CT"}, "labels": {"0": "b", "1": "s"}, "training": [3],
                 "test": {"a": 1}}).encode(), "dataset.json: 'test' is not a list"),
    (None, "dataset.json: not readable JSON ([Errno 21] Is a directory"),
])
def test_broken_dataset_json_is_a_listed_problem(tmp_path, content, fragment):
    root = tmp_path / "msd"
    if content is None:
        (root / "dataset.json").mkdir(parents=True)
    else:
        root.mkdir()
        (root / "dataset.json").write_bytes(content)
    status, problems = _check(root, "msd-spleen")
    assert status == 1 and any(fragment in p for p in problems), problems
