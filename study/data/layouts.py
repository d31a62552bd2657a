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
``btcv``       ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz`` (under ``root``,
               ``root/Training`` or ``root/RawData/Training``).
``promise12``  ``**/CaseXX.mhd`` + ``CaseXX_segmentation.mhd`` (with their ``.raw`` files).

Every path stays inside ``root`` (:func:`outside`): a name read from a file (a
``dataset.json`` entry, a MetaImage ``ElementDataFile``) with ``..`` or an absolute path
elsewhere, and a symlink whose target lies outside ``root``, are listed as problems and never
opened. Symlinks are followed while they stay inside ``root`` (``root`` itself may be one):
a downloaded archive can carry a symlink as easily as a ``../`` entry, so a symlink out of the
folder is treated like one. Keep data read through links under one folder and point ``root``
at it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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


class MsdLayout(Layout):
    name = "msd"
    expected = "dataset.json with a 'training' list, imagesTr/, labelsTr/"

    def scan(self, info: DatasetInfo, root: Path) -> Scan:
        scan = Scan()
        meta_path = root / "dataset.json"
        if reason := outside(meta_path, root):
            scan.problems.append(f"{meta_path}: {reason}")
            return scan
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            scan.problems.append(f"{meta_path}: file not found (a Decathlon task folder has "
                                 "dataset.json, imagesTr/, labelsTr/)")
            return scan
        except (OSError, ValueError, RecursionError) as error:  # incl. not UTF-8, too deep
            scan.problems.append(f"{meta_path}: not readable JSON ({error})")
            return scan
        if not isinstance(meta, dict):
            scan.problems.append(f"{meta_path}: expected a JSON object")
            return scan
        modality = meta.get("modality")
        if not isinstance(modality, dict) or not modality:
            scan.problems.append(f"{meta_path}: 'modality' missing or empty")
        else:
            names = [str(modality.get(str(i), "?")) for i in range(len(modality))]
            if [n.lower() for n in names] != [c.lower() for c in info.channels]:
                scan.problems.append(f"{meta_path}: modalities {names} differ from the "
                                     f"{info.name} channels {list(info.channels)}")
        labels = meta.get("labels")
        if isinstance(labels, dict):
            try:
                values = sorted(int(k) for k in labels)
            except ValueError:
                values = None
                scan.problems.append(f"{meta_path}: 'labels' keys must be integers, got "
                                     f"{sorted(labels)}")
            if values is not None and set(values) - info.raw_labels:
                scan.problems.append(f"{meta_path}: labels {values} are not the {info.name} "
                                     f"labels {sorted(info.raw_labels)}")
        else:
            scan.problems.append(f"{meta_path}: 'labels' missing")
        test = meta.get("test", [])
        if not isinstance(test, list):
            scan.problems.append(f"{meta_path}: 'test' is not a list")
            test = []
        for i, entry in enumerate(test):  # never read here, but a file named outside is a lie
            if not isinstance(entry, str):
                scan.problems.append(f"{meta_path} test[{i}]: expected a path, got {entry!r}")
            else:
                self._entry(root, meta_path, f"test[{i}]", entry, scan)
        training = meta.get("training")
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
    BratsLayout(), AtlasLayout(), Kits19Layout(), MsdLayout(), BtcvLayout(), Promise12Layout())}
