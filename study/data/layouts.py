"""Where the files of each case are, for every supported on-disk layout.

A layout only finds files: :meth:`Layout.scan` lists the cases under a root with the paths of
their channel and label files (a path may not exist: reading it then reports "file not found"
naming it, so a missing modality is reported, not skipped) and the layout-level problems it
met (empty folder, duplicate case ids, a broken ``dataset.json``). Reading and checking are
:mod:`study.data.reader`'s job, preprocessing :mod:`study.data.preprocess`'s.

Layouts (``root`` is the folder a user points at):

``brats``      ``<case>/<case>_<channel>.nii[.gz]`` and ``<case>/<case>_seg.nii[.gz]``; case
               folders directly under ``root`` or one level down (BraTS 2017 ``HGG/``, ``LGG/``).
``atlas``      ATLAS 2.0 BIDS ``**/<sub>_..._T1w.nii.gz`` + ``..._label-L_desc-T1lesion_mask``
               or ATLAS R1.x ``**/<id>_t1w_deface_stx.nii.gz`` (or ``_t1w_stx``) +
               ``<id>_LesionSmooth*_stx.nii.gz`` (several lesion masks are merged).
``kits19``     ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``; case folders without a
               segmentation (the KiTS19 test cases 210-299) are skipped with a note.
``msd``        Medical Segmentation Decathlon: ``dataset.json`` (its ``modality``, ``labels``
               and ``training`` list), ``imagesTr/`` (4-D when multi-modal), ``labelsTr/``.
``nnunet``     nnU-Net v2 raw data: ``dataset.json`` (``channel_names``, ``labels``,
               ``numTraining``, ``file_ending``), ``imagesTr/<case>_<XXXX><file_ending>`` (one
               file per channel), ``labelsTr/<case><file_ending>``; labelled ``imagesTs/`` +
               ``labelsTs/`` are the dataset's own test set (:attr:`Scan.given_test`).
``btcv``       ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz`` (under ``root``,
               ``root/Training`` or ``root/RawData/Training``).
``promise12``  ``**/CaseXX.mhd`` + ``CaseXX_segmentation.mhd`` (with their ``.raw`` files).

``msd`` and ``nnunet`` describe themselves: :meth:`MsdLayout.meta` / :meth:`NnunetLayout.meta`
read ``dataset.json`` into a :class:`DatasetJson` (channels, labels, its sha256), from which
:mod:`study.data.inline` builds a study's own dataset.

Every path stays inside ``root`` (:func:`outside`): a name read from a file (a
``dataset.json`` entry, a MetaImage ``ElementDataFile``) with ``..`` or an absolute path
elsewhere, and a symlink whose target lies outside ``root``, are listed as problems and never
opened. Symlinks are followed while they stay inside ``root`` (``root`` itself may be one):
a downloaded archive can carry a symlink as easily as a ``../`` entry, so a symlink out of the
folder is treated like one. Keep data read through links under one folder and point ``root``
at it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:
    from study.data.registry import DatasetInfo


def outside(path: Path, root: Path) -> str | None:
    """Why ``path`` may not be opened as part of the dataset at ``root``, or ``None``.

    ``path`` must resolve inside the resolved ``root``. The reason reads after the name:
    ``"leaves the dataset folder /data/Task09"`` (``..`` or an absolute path elsewhere) or
    ``"resolves through a symlink to /x, outside the dataset folder /data/Task09"``.
    """
    try:
        base, target = root.resolve(), path.resolve()
    except (OSError, RuntimeError, ValueError) as error:  # symlink loop, NUL byte
        return f"cannot be resolved ({error})"
    if target.is_relative_to(base):
        return None
    if Path(os.path.normpath(path.absolute())).is_relative_to(os.path.normpath(root.absolute())):
        return f"resolves through a symlink to {target}, outside the dataset folder {base}"
    return f"leaves the dataset folder {base}"


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case under the dataset folder ``root``: one ``(channel name, path,
    component)`` per channel (component = index into a 4-D multi-channel file, ``None`` for a
    3-D file) and the label file(s); several label files are merged by voxel-wise maximum."""

    case_id: str
    channels: tuple[tuple[str, Path, int | None], ...]
    labels: tuple[Path, ...]
    root: Path

    @property
    def paths(self) -> list[Path]:
        return list(dict.fromkeys([p for _, p, _ in self.channels] + list(self.labels)))


@dataclass
class Scan:
    """What a layout found under a root: cases by id, problems (each naming a path) and notes
    (things skipped on purpose)."""

    cases: dict[str, CaseFiles] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    given_test: list[str] = field(default_factory=list)  # the dataset's own labelled test set

    def add(self, files: CaseFiles, where: Path) -> None:
        """Admit a case. Its id names cache folders, so it must be a plain name; every file
        must stay inside the dataset folder (:func:`outside`). A case that breaks either rule
        is listed as a problem and left out, so that nothing outside is ever read."""
        if files.case_id in ("", ".", ".."):
            self.problems.append(f"{where}: case id {files.case_id!r} is not a name")
            return
        escapes = [f"{path}: {reason}" for path in files.paths
                   if (reason := outside(path, files.root))]
        if escapes:
            self.problems.extend(escapes)
            return
        if files.case_id in self.cases:
            self.problems.append(f"{where}: case id {files.case_id!r} appears twice (also "
                                 f"{self.cases[files.case_id].labels[0].parent})")
            return
        self.cases[files.case_id] = files


def _nifti(base: Path) -> Path:
    """``base.nii.gz`` or ``base.nii``, whichever exists (``.nii.gz`` if neither)."""
    for suffix in (".nii.gz", ".nii"):
        candidate = base.with_name(base.name + suffix)
        if candidate.exists():
            return candidate
    return base.with_name(base.name + ".nii.gz")


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _strip(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class Layout:
    """Base class: ``scan`` finds cases, ``write_paths`` says where a writer puts a case."""

    name = ""
    expected = ""  # how a case looks, for error messages

    def scan(self, info: DatasetInfo, root: Path) -> Scan:
        raise NotImplementedError

    def write_paths(self, root: Path, case_id: str, channels: Sequence[str]
                    ) -> tuple[list[Path], Path]:
        raise NotImplementedError(f"layout {self.name!r} is read-only here")

    def _empty(self, root: Path, scan: Scan) -> Scan:
        if not scan.cases and not scan.problems:
            scan.problems.append(f"{root}: no cases found (expected {self.expected})")
        return scan


class BratsLayout(Layout):
    name = "brats"
    expected = "<case>/<case>_<channel>.nii.gz and <case>/<case>_seg.nii.gz"

    def _files(self, root: Path, folder: Path, channels: Sequence[str]) -> CaseFiles:
        case = folder.name
        return CaseFiles(case, tuple((c, _nifti(folder / f"{case}_{c}"), None) for c in channels),
                         (_nifti(folder / f"{case}_seg"),), root)

    @staticmethod
    def _is_case(folder: Path) -> bool:
        return any(p.name.startswith(folder.name + "_") for p in folder.iterdir())

    def scan(self, info: DatasetInfo, root: Path) -> Scan:
        scan = Scan()
        for folder in _visible_dirs(root):
            if self._is_case(folder):
                scan.add(self._files(root, folder, info.channels), folder)
                continue
            nested = [sub for sub in _visible_dirs(folder) if self._is_case(sub)]
            if nested:  # BraTS 2017: HGG/ and LGG/
                for sub in nested:
                    scan.add(self._files(root, sub, info.channels), sub)
            else:
                scan.problems.append(f"{folder}: not a case folder (no {folder.name}_<channel>"
                                     ".nii.gz files)")
        return self._empty(root, scan)

    def write_paths(self, root, case_id, channels):
        folder = Path(root) / case_id
        return ([folder / f"{case_id}_{c}.nii.gz" for c in channels],
                folder / f"{case_id}_seg.nii.gz")


class AtlasLayout(Layout):
    name = "atlas"
    expected = ("ATLAS 2.0 <sub>_..._T1w.nii.gz + <sub>_..._label-L_desc-T1lesion_mask.nii.gz "
                "or ATLAS R1.x <id>_t1w_deface_stx.nii.gz + <id>_LesionSmooth_stx.nii.gz")
    _BIDS = re.compile(r"^(?P<prefix>(?P<subject>sub-[^_]+).*)_T1w\.nii(\.gz)?$")
    _R1 = re.compile(r"^(?P<prefix>.+?)_t1w(_deface)?_stx\.nii(\.gz)?$")

    def scan(self, info: DatasetInfo, root: Path) -> Scan:
        scan = Scan()
        for path in sorted(root.rglob("*.nii*")):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            if match := self._BIDS.match(path.name):
                label = _nifti(path.with_name(f"{match['prefix']}_label-L_desc-T1lesion_mask"))
                case = match["subject"]
                scan.add(CaseFiles(case, ((info.channels[0], path, None),), (label,), root),
                         path)
            elif match := self._R1.match(path.name):
                prefix = match["prefix"]
                labels = tuple(sorted(path.parent.glob(f"{prefix}_LesionSmooth*stx.nii*")))
                labels = labels or (_nifti(path.with_name(f"{prefix}_LesionSmooth_stx")),)
                timepoint = path.parent.name
                case = prefix
                if re.fullmatch(r"t\d+", timepoint) and timepoint != "t01" \
                        and not prefix.endswith(timepoint):
                    case = f"{prefix}_{timepoint}"
                scan.add(CaseFiles(case, ((info.channels[0], path, None),), labels, root), path)
        return self._empty(root, scan)

    def write_paths(self, root, case_id, channels):
        folder = Path(root) / case_id / "ses-1" / "anat"
        prefix = f"{case_id}_ses-1_space-MNI152NLin2009aSym"
        return ([folder / f"{prefix}_T1w.nii.gz"],
                folder / f"{prefix}_label-L_desc-T1lesion_mask.nii.gz")


class Kits19Layout(Layout):
    name = "kits19"
    expected = "case_XXXXX/imaging.nii.gz and case_XXXXX/segmentation.nii.gz"

    def scan(self, info: DatasetInfo, root: Path) -> Scan:
        scan = Scan()
        unlabelled = []
        for folder in _visible_dirs(root):
            image, label = _nifti(folder / "imaging"), _nifti(folder / "segmentation")
            if not image.exists() and not label.exists():
                scan.problems.append(f"{folder}: not a case folder (no imaging.nii.gz, no "
                                     "segmentation.nii.gz)")
            elif not label.exists():
                unlabelled.append(folder.name)
            else:
                scan.add(CaseFiles(folder.name, ((info.channels[0], image, None),), (label,),
                                   root), folder)
        if unlabelled:
            scan.notes.append(f"{root}: {len(unlabelled)} case folder(s) without "
                              f"segmentation.nii.gz skipped (unlabelled, e.g. the KiTS19 test "
                              f"set): {', '.join(unlabelled[:3])}{' ...' * (len(unlabelled) > 3)}")
        return self._empty(root, scan)

    def write_paths(self, root, case_id, channels):
        folder = Path(root) / case_id
        return [folder / "imaging.nii.gz"], folder / "segmentation.nii.gz"


@dataclass(frozen=True)
class DatasetJson:
    """A task folder's ``dataset.json`` as read by a layout that describes itself (``msd``,
    ``nnunet``): the JSON object ``data``, the sha256 of the file's bytes, the channel names in
    channel order, the labels (name -> raw label values, in raw-value order; an nnU-Net
    *region* label, listed in ``regions``, has several) and the image ``file_ending``. A key
    that is missing or malformed leaves its field empty and is listed by the layout's ``meta``."""

    path: Path
    data: dict
    sha256: str
    channels: tuple[str, ...] = ()
    labels: dict[str, tuple[int, ...]] = field(default_factory=dict)
    regions: tuple[str, ...] = ()
    file_ending: str = ".nii.gz"

    @property
    def raw_labels(self) -> frozenset[int]:
        return frozenset(v for values in self.labels.values() for v in values)


def _read_dataset_json(root: Path, hint: str) -> tuple[DatasetJson | None, list[str]]:
    """``root/dataset.json`` read (no field parsed yet), or ``None`` with the problem; ``hint``
    says what the folder should hold."""
    path = root / "dataset.json"
    if reason := outside(path, root):
        return None, [f"{path}: {reason}"]
    try:
        raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        return None, [f"{path}: file not found ({hint})"]
    except (OSError, ValueError, RecursionError) as error:  # incl. not UTF-8, too deep
        return None, [f"{path}: not readable JSON ({error})"]
    if not isinstance(data, dict):
        return None, [f"{path}: expected a JSON object"]
    return DatasetJson(path, data, hashlib.sha256(raw).hexdigest()), []


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _indexed_names(meta: DatasetJson, key: str, problems: list[str]) -> tuple[str, ...]:
    """The names of ``{"0": name, "1": ...}`` (MSD ``modality``, nnU-Net ``channel_names``)
    in index order; ``()`` with the problem listed if missing or not indexed 0..n-1."""
    names = meta.data.get(key)
    if not isinstance(names, dict) or not names:
        problems.append(f"{meta.path}: '{key}' missing or empty (expected {{\"0\": name, ...}})")
        return ()
    if sorted(names) != sorted(str(i) for i in range(len(names))):
        problems.append(f"{meta.path}: '{key}' keys must be \"0\" .. \"{len(names) - 1}\", "
                        f"got {sorted(names)}")
        return ()
    return tuple(str(names[str(i)]) for i in range(len(names)))


def _compare(meta: DatasetJson, info: DatasetInfo, what: str, scan: Scan) -> None:
    """List where ``dataset.json`` disagrees with the dataset ``info`` it is read as."""
    if meta.channels and [n.lower() for n in meta.channels] != [c.lower() for c in info.channels]:
        scan.problems.append(f"{meta.path}: {what} {list(meta.channels)} differ from the "
                             f"{info.name} channels {list(info.channels)}")
    values = sorted(meta.raw_labels)
    if values and set(values) - info.raw_labels:
        scan.problems.append(f"{meta.path}: labels {values} are not the {info.name} labels "
                             f"{sorted(info.raw_labels)}")


class MsdLayout(Layout):
    name = "msd"
    expected = "dataset.json with a 'training' list, imagesTr/, labelsTr/"

    def meta(self, root: Path) -> tuple[DatasetJson | None, list[str]]:
        """``dataset.json`` with its ``modality`` (the channels) and ``labels`` (``{"0":
        "background", "1": name, ...}``) parsed, and every problem found in them."""
        meta, problems = _read_dataset_json(
            root, "a Decathlon task folder has dataset.json, imagesTr/, labelsTr/")
        if meta is None:
            return None, problems
        channels = _indexed_names(meta, "modality", problems)
        labels = meta.data.get("labels")
        parsed: dict[str, tuple[int, ...]] = {}
        if not isinstance(labels, dict):
            problems.append(f"{meta.path}: 'labels' missing")
        elif not all(re.fullmatch(r"\d+", str(k)) for k in labels):
            problems.append(f"{meta.path}: 'labels' keys must be integers, got {sorted(labels)}")
        else:
            for value in sorted(labels, key=int):
                parsed.setdefault(str(labels[value]), ())
                parsed[str(labels[value])] += (int(value),)
        return DatasetJson(meta.path, meta.data, meta.sha256, channels, parsed), problems

    def scan(self, info: DatasetInfo, root: Path) -> Scan:
        scan = Scan()
        meta, problems = self.meta(root)
        scan.problems.extend(problems)
        if meta is None:
            return scan
        _compare(meta, info, "modalities", scan)
        meta_path = meta.path
        test = meta.data.get("test", [])
        if not isinstance(test, list):
            scan.problems.append(f"{meta_path}: 'test' is not a list")
            test = []
        for i, entry in enumerate(test):  # never read here, but a file named outside is a lie
            if not isinstance(entry, str):
                scan.problems.append(f"{meta_path} test[{i}]: expected a path, got {entry!r}")
            else:
                self._entry(root, meta_path, f"test[{i}]", entry, scan)
        training = meta.data.get("training")
        if not isinstance(training, list):
            scan.problems.append(f"{meta_path}: 'training' missing or not a list")
            return scan
        multi = len(info.channels) > 1
        for i, entry in enumerate(training):
            if not (isinstance(entry, dict) and isinstance(entry.get("image"), str)
                    and isinstance(entry.get("label"), str)):
                scan.problems.append(f"{meta_path}: training[{i}]: expected "
                                     "{'image': path, 'label': path}")
                continue
            image, label = (self._entry(root, meta_path, f"training[{i}].{key}", entry[key], scan)
                            for key in ("image", "label"))
            if image is None or label is None:
                continue
            channels = tuple((c, image, k if multi else None) for k, c in enumerate(info.channels))
            scan.add(CaseFiles(_strip(image.name), channels, (label,), root), image)
        return self._empty(root, scan)

    @staticmethod
    def _entry(root: Path, meta_path: Path, key: str, value: str, scan: Scan) -> Path | None:
        """``root / value``, or ``None`` with the problem listed under the JSON ``key`` if that
        path leaves ``root``."""
        path = root / value
        if reason := outside(path, root):
            scan.problems.append(f"{meta_path} {key}: {value} {reason}")
            return None
        return path


class NnunetLayout(Layout):
    """nnU-Net v2 raw data: ``dataset.json`` (``channel_names``, ``labels``, ``numTraining``,
    ``file_ending``), ``imagesTr/<case>_<XXXX><file_ending>`` (one 3-D file per channel XXXX =
    0000, 0001, ...), ``labelsTr/<case><file_ending>``; the labelled test cases of
    ``imagesTs/`` + ``labelsTs/`` are listed in :attr:`Scan.given_test`, an ``imagesTs/``
    without ``labelsTs/`` is skipped with a note."""

    name = "nnunet"
    expected = "dataset.json, imagesTr/<case>_0000<file_ending>, labelsTr/<case><file_ending>"
    _CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

    def meta(self, root: Path) -> tuple[DatasetJson | None, list[str]]:
        """``dataset.json`` with ``channel_names``, ``labels`` (``{"background": 0, name:
        value or [values] (a region)}``), ``file_ending`` and ``numTraining`` checked, and every
        problem found in them."""
        meta, problems = _read_dataset_json(
            root, "an nnU-Net raw dataset folder has dataset.json, imagesTr/, labelsTr/")
        if meta is None:
            return None, problems
        channels = _indexed_names(meta, "channel_names", problems)
        labels, regions = self._labels(meta, problems)
        ending = meta.data.get("file_ending")
        if not (isinstance(ending, str) and re.fullmatch(r"(\.[A-Za-z0-9]+)+", ending)):
            problems.append(f"{meta.path}: 'file_ending' missing or not a file ending (e.g. "
                            f"\".nii.gz\", \".mha\", \".nrrd\"), got {ending!r}")
            ending = ""
        count = meta.data.get("numTraining")
        if not (_is_int(count) and count >= 0):
            problems.append(f"{meta.path}: 'numTraining' missing or not an integer >= 0, got "
                            f"{count!r}")
        return DatasetJson(meta.path, meta.data, meta.sha256, channels, labels, regions,
                           ending), problems

    @staticmethod
    def _labels(meta: DatasetJson, problems: list[str]
                ) -> tuple[dict[str, tuple[int, ...]], tuple[str, ...]]:
        labels = meta.data.get("labels")
        if not isinstance(labels, dict) or not labels:
            problems.append(f"{meta.path}: 'labels' missing or empty (expected {{\"background\""
                            ": 0, name: value, ...}})")
            return {}, ()
        parsed: dict[str, tuple[int, ...]] = {}
        regions: list[str] = []
        owner: dict[int, str] = {}  # label value -> the class it names
        for name, value in labels.items():
            values = value if isinstance(value, list) else [value]
            if not values or not all(_is_int(v) and v >= 0 for v in values):
                problems.append(f"{meta.path}: labels.{name}: expected an integer >= 0 or a "
                                f"non-empty list of them (a region), got {value!r}")
                continue
            parsed[name] = tuple(sorted(set(values)))
            if isinstance(value, list):
                regions.append(name)
                continue
            if value in owner:
                problems.append(f"{meta.path}: labels.{name}: value {value} is also "
                                f"{owner[value]!r}")
            owner[value] = name
        if labels.get("background") != 0:
            problems.append(f"{meta.path}: labels.background: expected 0, got "
                            f"{labels.get('background')!r}")
        order = sorted(parsed, key=lambda n: (n in regions, parsed[n]))
        return {name: parsed[name] for name in order}, tuple(regions)

    def scan(self, info: DatasetInfo, root: Path) -> Scan:
        scan = Scan()
        meta, problems = self.meta(root)
        scan.problems.extend(problems)
        if meta is None or not meta.channels or not meta.file_ending:
            return scan  # the files cannot be named
        _compare(meta, info, "channel_names", scan)
        if not (root / "imagesTr").is_dir():
            scan.problems.append(f"{root / 'imagesTr'}: folder not found ({self.expected})")
            return scan
        self._collect(root, "imagesTr", "labelsTr", meta, info, scan)
        count = meta.data.get("numTraining")
        if _is_int(count) and count != len(scan.cases):
            scan.problems.append(f"{meta.path}: numTraining is {count} but imagesTr/ holds "
                                 f"{len(scan.cases)} case(s)")
        if (root / "labelsTs").is_dir():
            scan.given_test = self._collect(root, "imagesTs", "labelsTs", meta, info, scan)
        elif (root / "imagesTs").is_dir():
            scan.notes.append(f"{root / 'imagesTs'}: unlabelled test cases skipped (no "
                              "labelsTs/ beside it)")
        return self._empty(root, scan)

    def _collect(self, root: Path, images: str, labels: str, meta: DatasetJson,
                 info: DatasetInfo, scan: Scan) -> list[str]:
        """Add the cases of ``root/images`` (labels in ``root/labels``); return their ids."""
        ending, n = meta.file_ending, len(meta.channels)
        cases: dict[str, Path] = {}
        folder = root / images
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.name.startswith(".") or not path.name.endswith(ending):
                continue
            match = self._CHANNEL.match(path.name[: -len(ending)])
            if match is None:
                scan.problems.append(f"{path}: not named <case>_XXXX{ending} (XXXX = the "
                                     "channel, 0000 ...)")
            elif int(match["channel"]) >= n:
                scan.problems.append(f"{path}: channel {match['channel']}, but dataset.json "
                                     f"declares {n} channel(s) (0000 .. {n - 1:04d})")
            else:
                cases.setdefault(match["case"], path)
        label_folder, before = root / labels, set(scan.cases)
        for path in sorted(label_folder.iterdir()) if label_folder.is_dir() else []:
            case = path.name[: -len(ending)]
            if path.name.endswith(ending) and not path.name.startswith(".") \
                    and case not in cases:
                scan.problems.append(f"{path}: label without images (expected "
                                     f"{folder / f'{case}_0000{ending}'})")
        for case, first in cases.items():
            channels = tuple((c, folder / f"{case}_{k:04d}{ending}", None)
                             for k, c in enumerate(info.channels))
            scan.add(CaseFiles(case, channels, (label_folder / f"{case}{ending}",), root), first)
        return sorted(c for c in cases if c in scan.cases and c not in before)


class BtcvLayout(Layout):
    name = "btcv"
    expected = "img/imgXXXX.nii.gz and label/labelXXXX.nii.gz"

    def scan(self, info: DatasetInfo, root: Path) -> Scan:
        scan = Scan()
        base = next((b for b in (root, root / "Training", root / "RawData" / "Training")
                     if (b / "img").is_dir()), None)
        if base is None:
            scan.problems.append(f"{root}: no img/ folder (expected {self.expected})")
            return scan
        images = {_strip(p.name)[3:]: p for p in (base / "img").glob("img*.nii*")}
        labels = {_strip(p.name)[5:]: p for p in (base / "label").glob("label*.nii*")}
        for number in sorted(set(labels) - set(images)):
            scan.problems.append(f"{labels[number]}: label without image "
                                 f"{base / 'img' / f'img{number}.nii.gz'}")
        for number, image in sorted(images.items()):
            label = labels.get(number, base / "label" / f"label{number}.nii.gz")
            scan.add(CaseFiles(f"img{number}", ((info.channels[0], image, None),), (label,),
                               root), image)
        return self._empty(root, scan)

    def write_paths(self, root, case_id, channels):
        number = case_id.removeprefix("img")
        return ([Path(root) / "img" / f"img{number}.nii.gz"],
                Path(root) / "label" / f"label{number}.nii.gz")


class Promise12Layout(Layout):
    name = "promise12"
    expected = "CaseXX.mhd (+ .raw) and CaseXX_segmentation.mhd (+ .raw)"

    def scan(self, info: DatasetInfo, root: Path) -> Scan:
        scan = Scan()
        for path in sorted(root.rglob("*.mhd")):
            if path.stem.endswith("_segmentation") or path.name.startswith("."):
                continue
            label = path.with_name(f"{path.stem}_segmentation.mhd")
            scan.add(CaseFiles(path.stem, ((info.channels[0], path, None),), (label,), root),
                     path)
        return self._empty(root, scan)

    def write_paths(self, root, case_id, channels):
        return [Path(root) / f"{case_id}.mhd"], Path(root) / f"{case_id}_segmentation.mhd"


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    BratsLayout(), AtlasLayout(), Kits19Layout(), MsdLayout(), NnunetLayout(), BtcvLayout(),
    Promise12Layout())}
