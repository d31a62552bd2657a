"""A study's own dataset, declared inline in its study file: an nnU-Net v2 raw folder or a
Medical Segmentation Decathlon task folder, described by its ``dataset.json``::

    dataset: {layout: nnunet, root: /data/Dataset501_Lesions, rare: [lesion], test_cases: 20}

``layout`` is ``nnunet`` or ``msd`` (:mod:`study.data.layouts`); channels and labels come from
``dataset.json``. Options, named as the :class:`~study.data.registry.DatasetInfo` fields of
the declared datasets:

``name``            what the study and ``--dataset-root NAME=PATH`` call it (default: the
                    folder's name, ``Dataset501_Lesions``, as nnU-Net and the Decathlon name a
                    dataset); may not be a declared dataset's name.
``classes``         class name -> the raw label values (ints) or ``dataset.json`` label names
                    that form it, background (raw 0) first; every label of ``dataset.json`` in
                    exactly one class (merges: ``{background: [background, oedema], core:
                    [necrosis, enhancing]}``). Default: one class per label.
``rare``            the under-represented classes (r_k = 1, 001 §IV); required.
``lcc``             classes post-processed by keeping their largest connected component
                    (001 §V-B), or ``{class: components kept}``; default: the rare classes.
``target_spacing``  [D, H, W] mm, ``median`` (default, the per-axis median of the dataset's
                    spacings, as nnU-Net) or ``null`` (each case's own).
``roi``             ``nonzero`` or ``body`` (default ``body`` when channel 0 is ``CT``,
                    nnU-Net's CT channel name, else ``nonzero``); ``body_threshold`` (HU).
``clip``            [low, high] intensity window, or ``null`` (default).

Region labels: nnU-Net lets a label be a list of raw values (``"whole tumour": [1, 2, 3]``), a
*region*; regions overlap and nnU-Net trains one sigmoid output per region. This tool trains
mutually exclusive classes (one softmax), so a ``dataset.json`` with regions is refused unless
the study's ``classes`` maps the raw values to exclusive classes itself; mapping a region to
its highest label, or to the union, would silently train a different task.

Trial identity (:func:`study.expand.trial_config`): the layout, the sha256 of ``dataset.json``
and the options above resolved (defaults filled in), never the folder: the same data in
another place is the same experiment; a changed ``dataset.json`` is a different dataset, and
:func:`dataset_info` refuses to run a trial whose hash no longer matches. The test set: the
labelled ``imagesTs/`` + ``labelsTs/`` of an nnU-Net folder where it has them
(``test_cases`` is then not given), else ``test_cases`` held out of the training cases
(:mod:`study.data.splits`).

Standard library only (study files are validated without the imaging stack).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from study.data.layouts import DatasetJson, MsdLayout, NnunetLayout
from study.data.registry import DATASETS, ROI_RULES, DatasetInfo
from study.identity import DatasetConfig

# the folder layouts that describe a dataset in a dataset.json
_READERS: dict[str, NnunetLayout | MsdLayout] = {
    layout.name: layout for layout in (NnunetLayout(), MsdLayout())}
LAYOUTS = tuple(_READERS)
OPTIONS = ("classes", "rare", "lcc", "target_spacing", "roi", "body_threshold", "clip")
_BODY_THRESHOLD = next(f.default for f in fields(DatasetInfo) if f.name == "body_threshold")


class DatasetJsonError(ValueError):
    """A task folder's ``dataset.json`` cannot describe a dataset; ``problems`` lists every
    reason, each naming the file."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def read(layout: str, root: str | Path) -> DatasetJson:
    """``root/dataset.json`` read by ``layout``; :class:`DatasetJsonError` listing every
    problem (missing folder or file, broken JSON, missing or malformed keys)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetJsonError([f"{root}: dataset folder not found"])
    meta, problems = _READERS[layout].meta(root)
    if problems or meta is None:
        raise DatasetJsonError(problems)
    return meta


def has_own_test_set(layout: str, root: str | Path) -> bool:
    """Whether the folder holds a labelled test set (nnU-Net ``labelsTs/``)."""
    return layout == "nnunet" and (Path(root) / "labelsTs").is_dir()


def _near(value: Any, known: list[str]) -> str:
    near = difflib.get_close_matches(str(value), known, n=1)
    return f"did you mean {near[0]!r}? " if near else ""


def _classes(meta: DatasetJson, given: Any, key: str) -> dict[str, list[int]]:
    """Class name -> raw label values (background first) from ``classes`` or, if not given,
    one class per label of ``dataset.json``."""
    if given is None:
        if meta.regions:
            raise ValueError(
                f"{key}: required here: {meta.path} declares region labels "
                f"{list(meta.regions)} (overlapping targets, one sigmoid output each in "
                "nnU-Net); this tool trains mutually exclusive classes, so map the raw label "
                f"values {sorted(meta.raw_labels)} to classes, e.g. {{background: [0], ...}}")
        classes = {name: list(values) for name, values in meta.labels.items()}
        if len(classes) < 2 or 0 not in classes[next(iter(classes))]:
            raise ValueError(f"{key}: {meta.path} must declare the background (0) and a "
                             f"foreground label, got {meta.labels}")
        return classes
    labels = list(meta.labels)
    classes = {}
    owner: dict[int, str] = {}
    for name, items in given.items():
        where = f"{key}.{name}"
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where}: expected a non-empty list of raw label values or "
                             f"dataset.json label names, got {items!r}")
        values: list[int] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                if item not in meta.labels:
                    raise ValueError(f"{where}[{i}]: unknown label {item!r} ({_near(item, labels)}"
                                     f"labels of {meta.path}: {', '.join(labels)})")
                values.extend(meta.labels[item])
            elif isinstance(item, int) and not isinstance(item, bool) \
                    and item in meta.raw_labels:
                values.append(item)
            else:
                raise ValueError(f"{where}[{i}]: expected a label name or one of the raw "
                                 f"values {sorted(meta.raw_labels)} of {meta.path}, got {item!r}")
        for value in values:
            if owner.get(value, name) != name:
                raise ValueError(f"{where}: raw label {value} is also in class {owner[value]!r};"
                                 " classes must not overlap")
            owner[value] = name
        classes[str(name)] = sorted(set(values))
    if 0 not in classes[next(iter(classes))]:
        raise ValueError(f"{key}: the first class is the background and must hold raw label 0")
    missing = sorted(meta.raw_labels - set(owner))
    if missing:
        raise ValueError(f"{key}: raw label(s) {missing} of {meta.path} are in no class; add "
                         "them to one (the background, to ignore them)")
    return classes


def _class_names(value: Any, foreground: list[str], key: str, least: int = 1) -> list[str]:
    if not isinstance(value, list) or len(value) < least:
        raise ValueError(f"{key}: expected a list of at least {least} foreground class "
                         f"name(s), got {value!r}")
    for i, name in enumerate(value):
        if name not in foreground:
            raise ValueError(f"{key}[{i}]: unknown class {name!r} ({_near(name, foreground)}"
                             f"foreground classes: {', '.join(foreground)})")
    return list(dict.fromkeys(value))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def resolve(meta: DatasetJson, options: Mapping[str, Any], key: str = "dataset"
            ) -> dict[str, Any]:
    """The options of an own dataset with defaults filled in (what the trial identity holds;
    see the module docstring). Raises ``ValueError`` naming the dotted key, e.g.
    ``"dataset.rare[0]: unknown class 'lesoin' (did you mean 'lesion'? ...)"``."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"{key}.{unknown[0]}: unknown option ({_near(unknown[0], list(OPTIONS))}"
                         f"known: {', '.join(OPTIONS)})")
    classes = _classes(meta, options.get("classes"), f"{key}.classes")
    foreground = list(classes)[1:]
    if "rare" not in options:
        raise ValueError(f"{key}.rare: required: the under-represented classes, from "
                         f"{', '.join(foreground)}")
    rare = _class_names(options["rare"], foreground, f"{key}.rare")
    lcc: Any = options.get("lcc", rare)
    if isinstance(lcc, Mapping):
        for name, count in lcc.items():
            _class_names([name], foreground, f"{key}.lcc")
            if not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
                raise ValueError(f"{key}.lcc.{name}: expected the number of components kept "
                                 f"(an integer >= 1), got {count!r}")
        lcc = dict(lcc)
    else:
        lcc = _class_names(lcc, foreground, f"{key}.lcc", least=0)
    spacing = options.get("target_spacing", "median")
    if not (spacing is None or spacing == "median" or (
            isinstance(spacing, list) and len(spacing) == 3
            and all(_number(s) and s > 0 for s in spacing))):
        raise ValueError(f"{key}.target_spacing: expected [D, H, W] positive mm, 'median' or "
                         f"null, got {spacing!r}")
    ct = meta.channels[0].lower() == "ct"
    roi = options.get("roi", "body" if ct else "nonzero")
    if roi not in ROI_RULES:
        raise ValueError(f"{key}.roi: expected one of {', '.join(ROI_RULES)}, got {roi!r}")
    threshold = options.get("body_threshold", _BODY_THRESHOLD)
    if not _number(threshold):
        raise ValueError(f"{key}.body_threshold: expected a number (HU), got {threshold!r}")
    clip = options.get("clip")
    if not (clip is None or (isinstance(clip, list) and len(clip) == 2
                             and all(map(_number, clip)) and clip[0] < clip[1])):
        raise ValueError(f"{key}.clip: expected [low, high] with low < high, or null, got "
                         f"{clip!r}")
    return {"classes": classes, "rare": rare, "lcc": lcc,
            "target_spacing": None if spacing is None else
            spacing if spacing == "median" else [float(s) for s in spacing],
            "roi": roi, "body_threshold": float(threshold),
            "clip": None if clip is None else [float(c) for c in clip]}


def declare(layout: str, root: str | Path, options: Mapping[str, Any], key: str = "dataset"
            ) -> dict[str, Any]:
    """The identity entries of an own dataset at ``root``: ``layout``, ``sha256`` of its
    ``dataset.json`` and the :func:`resolve`-d ``options``. Raises ``ValueError``
    (:class:`DatasetJsonError` for the file) naming the key or file."""
    meta = read(layout, root)
    return {"layout": layout, "sha256": meta.sha256, "options": resolve(meta, options, key)}


def default_name(root: str | Path) -> str:
    """An own dataset's name when the study gives none: its folder's name."""
    return Path(root).resolve().name


def _build(name: str, layout: str, meta: DatasetJson, options: Mapping[str, Any],
           test_cases: int | None) -> DatasetInfo:
    spacing, clip, lcc = options["target_spacing"], options["clip"], options["lcc"]
    return DatasetInfo(
        name=name, layout=layout, channels=meta.channels,
        classes={n: tuple(v) for n, v in options["classes"].items()},
        rare=tuple(options["rare"]),
        lcc_classes=dict(lcc) if isinstance(lcc, Mapping) else tuple(lcc),
        target_spacing=spacing if spacing in (None, "median") else tuple(spacing),
        roi=options["roi"], body_threshold=options["body_threshold"],
        clip=None if clip is None else tuple(clip), test_cases=test_cases,
        description=f"own {layout} dataset, {meta.path} (sha256 {meta.sha256[:12]})")


def dataset_info(dataset: DatasetConfig, root: str | Path | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of a trial's dataset (``config.dataset``): a declared or
    synthetic dataset by its name (``root`` unused), an own dataset from ``dataset.json`` at
    ``root`` and the options of its identity. Raises ``ValueError`` for an unknown name, an
    own dataset without a folder, and a ``dataset.json`` whose sha256 is not the identity's
    (the dataset changed since the study was expanded: a different experiment)."""
    name, layout, options = dataset.name, dataset.layout, dataset.options
    if layout is None or options is None:  # an own dataset has both (and its sha256)
        if name not in DATASETS:
            raise ValueError(f"dataset {name!r}: unknown (known: {', '.join(DATASETS)})")
        return DATASETS[name]
    if root is None:
        raise ValueError(f"dataset {name}: no folder given (set `root` in the study or pass "
                         f"--dataset-root {name}=PATH)")
    meta = read(layout, root)
    if meta.sha256 != dataset.sha256:
        raise ValueError(f"{meta.path}: changed since the trial was made (sha256 "
                         f"{meta.sha256[:16]}, the trial's identity holds "
                         f"{str(dataset.sha256)[:16]}); a changed dataset.json is a different "
                         "dataset: restore the file, or plan the study again for new trials")
    return _build(name, layout, meta, options, dataset.test_cases)


def folder_info(layout: str, root: str | Path) -> tuple[DatasetInfo, list[str]]:
    """The dataset at ``root`` as ``dataset.json`` declares it, for ``study data check``: one
    class per label (per raw value where labels are regions, with a note saying so), every
    foreground class rare, none post-processed. Raises :class:`DatasetJsonError`, or
    ``ValueError`` for a ``dataset.json`` without a foreground label."""
    meta = read(layout, root)
    notes = []
    classes: Any = {name: list(values) for name, values in meta.labels.items()}
    if meta.regions:
        named = {v[0]: n for n, v in meta.labels.items() if len(v) == 1}
        classes = {named.get(v, f"label {v}"): [v] for v in sorted(meta.raw_labels)}
        notes.append(f"{meta.path}: region labels {list(meta.regions)} overlap; checked as "
                     "one class per raw value; a study needs `classes` mapping them to "
                     "exclusive classes")
    options = resolve(meta, {"classes": classes, "rare": list(classes)[1:], "lcc": []})
    return _build(default_name(root), layout, meta, options, None), notes
