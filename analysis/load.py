"""Read a study's ``cases`` table (local path or pyarrow URI such as ``s3://...``)."""

from __future__ import annotations

import pandas as pd

from study.results import ResultStore


def load(path: str) -> pd.DataFrame:
    """The cases table of the study results under ``path`` (the folder holding ``cases/`` and
    ``trials/``): rows of trials whose ``trials`` row exists, i.e. complete trials only."""
    return ResultStore(str(path)).cases()
