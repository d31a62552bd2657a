"""Training-ready cases: list a dataset's cases and load one, read, checked, preprocessed and
cached; refuse a training pool with a case that has no foreground.

The public face of case loading for the trial runner::

    ids = loader.list_cases(info, root)                          # raises DataError
    test = loader.given_test_cases(info, root)   # the dataset's own test set, or []
    case = loader.load_case(info, root, case_id, cache_dir=...)  # a preprocessed Case
    loader.require_foreground(train_cases, info)

Reading and its checks are :mod:`study.data.reader` (file bytes: :mod:`study.data.stored`),
preprocessing and its cache :mod:`study.data.preprocess`, the whole-dataset check
:mod:`study.data.check`. A case already in the preprocessed cache was checked when it was
written and is not read again.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from study.data import preprocess
from study.data.case import Case, DataError
from study.data.layouts import CaseFiles
from study.data.reader import RawCase, case_files, list_cases, read_case, scan
from study.data.registry import DatasetInfo

__all__ = ["Case", "DataError", "given_test_cases", "list_cases", "load_case",
           "require_foreground"]


def given_test_cases(info: DatasetInfo, root: str | Path) -> list[str]:
    """The ids among :func:`list_cases` that form the dataset's own labelled test set (nnU-Net
    ``imagesTs/`` + ``labelsTs/``), to pass as :func:`study.data.splits.split`'s
    ``given_test``; ``[]`` when the test set is held out of the training cases."""
    return sorted(scan(info, root).given_test)


def load_case(info: DatasetInfo, root: str | Path, case_id: str,
              cache_dir: str | Path | None = None) -> Case:
    """Read, check and preprocess one case (:mod:`study.data.preprocess`).

    With ``cache_dir`` the preprocessed arrays are cached there (memory-mapped ``.npy``,
    keyed by the preprocessing parameters and the source files), so that many trials on one
    node preprocess each case once. Raises :class:`DataError` listing every problem of the
    case.
    """
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


def require_foreground(cases: Iterable[Case], info: DatasetInfo) -> None:
    """Raise one :class:`DataError` naming every training case without a foreground voxel
    (such a case in the training pool teaches nothing about the rare class)."""
    empty = [case for case in cases if not (np.asarray(case.label) > 0).any()]
    if empty:
        names = "; ".join(f"{c.source or c.case_id}: no foreground voxel" for c in empty)
        raise DataError(f"{names} ({len(empty)} training case(s) of {info.name} without "
                        f"{' or '.join(info.class_names[1:])}; remove them from the dataset)")
