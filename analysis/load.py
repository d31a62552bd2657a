"""Read a study's Parquet results (the contract of ``study.results``) into pandas.

A results folder holds ``cases/`` and ``trials/`` (one Parquet file per trial in each) and,
after ``study compact``, ``compacted/``; it may be a local path or any pyarrow filesystem URI
(``s3://bucket/studies/NAME/results``). The files are read by the results store's own reader
(``study.results.ResultStore.read``), so a report and ``study launch``/``status`` agree on which
trials are stored: a file that is not Parquet, lacks a column, holds a column of another type,
holds rows of another trial, another row count than its trial recorded or metrics out of range,
or is not named ``<trial_id>.parquet``, is named with the reason and left out, with its trial.
Columns the schema does not know are ignored; integer or float columns of another width are
widened, and an all-null column is accepted. A ``cases`` file written before the ``split``
column existed is read as test rows.

>>> cases = load("study-results/demo/results")          # doctest: +SKIP
>>> results = load_results("s3://bucket/studies/demo/results", errors="skip")  # doctest: +SKIP
>>> results.problems                                     # doctest: +SKIP
{'cases/4f….parquet': "column 'dsc': type string, expected double"}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from study.results import FINISHED_STATUSES, ResultStore

__all__ = ["Results", "ResultsError", "load", "load_results", "load_trials", "check_cases"]


class ResultsError(ValueError):
    """Results that cannot be read as the results contract says; the message names the file
    (or table) and the column."""


@dataclass
class Results:
    """One study's results: ``cases`` rows of stored trials, the ``trials`` table, the trial
    ids whose ``cases`` file exists without a ``trials`` file (running, or killed between the
    two writes: left out), the files left out with the reason (``{file: reason}``) and the
    finished trials (None: those of ``trials`` stored ``ok``/``diverged``)."""

    cases: pd.DataFrame
    trials: pd.DataFrame
    source: str
    incomplete: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    finished: set[str] | None = None

    def finished_ids(self) -> set[str]:
        """Trials with a stored ok/diverged result (as
        ``study.results.ResultStore.finished_ids``)."""
        if self.finished is not None:
            return set(self.finished)
        return set(self.trials.loc[self.trials["status"].isin(FINISHED_STATUSES), "trial_id"])

    def restrict(self, trial_ids: set[str]) -> Results:
        """Only the rows of ``trial_ids`` (e.g. the trials of the current study file: results
        of an edited study's old trials stay on disk but belong to no table)."""
        return Results(
            cases=self.cases[self.cases["trial_id"].isin(trial_ids)].reset_index(drop=True),
            trials=self.trials[self.trials["trial_id"].isin(trial_ids)].reset_index(drop=True),
            source=self.source,
            incomplete=[t for t in self.incomplete if t in trial_ids],
            problems=dict(self.problems),
            finished=None if self.finished is None else self.finished & set(trial_ids),
        )


def _raise_if(problems: dict[str, str], source: str) -> None:
    if problems:
        lines = [f"{source}/{name}: {reason}" for name, reason in sorted(problems.items())]
        more = f"\n(and {len(lines) - 10} more)" if len(lines) > 10 else ""
        raise ResultsError("malformed results:\n" + "\n".join(lines[:10]) + more)


def load_results(path: str, errors: Literal["raise", "skip"] = "raise") -> Results:
    """The results under ``path``: a folder (or URI) holding ``cases/`` and ``trials/``.

    ``cases`` holds the rows of stored trials only (whatever was killed when); its string
    columns are pandas categoricals. With ``errors="raise"`` a file left out raises
    ``ResultsError`` naming every such file and why; with ``"skip"`` they are listed in
    ``Results.problems``. Raises ``FileNotFoundError`` when ``path`` does not exist; an
    existing folder without results gives empty tables (a study with no finished trial yet).
    """
    source = str(path).rstrip("/")
    store = ResultStore(source)
    if store.fs.get_file_info(store.root or "/").type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{source}: no such results folder (expected the folder "
                                "holding cases/ and trials/)")
    stored = store.read(as_categorical=True)
    # The Arrow buffers the conversion to pandas freed go back to the system (pandas allocates
    # elsewhere): a third of the reading's peak memory otherwise stays held.
    pa.default_memory_pool().release_unused()
    if errors == "raise":
        _raise_if(stored.problems, source)
    return Results(stored.cases, stored.trials, source, stored.incomplete, stored.problems,
                   stored.finished)


def load(path: str) -> pd.DataFrame:
    """The ``cases`` table of the study results under ``path`` (the folder or URI holding
    ``cases/`` and ``trials/``): rows of stored trials only. Raises ``ResultsError`` naming
    the file and column of malformed Parquet and ``FileNotFoundError`` when ``path`` does not
    exist."""
    return load_results(path).cases


def load_trials(path: str) -> pd.DataFrame:
    """The ``trials`` table (one row per stored trial, with ``logit_stats`` JSON)."""
    return load_results(path).trials


REQUIRED_CASES_COLUMNS = ("technique", "param_label", "dataset", "model", "fraction", "seed",
                          "case_id", "class_name", "postprocessed", "status", "dsc",
                          "sensitivity", "precision", "hd95")


def check_cases(cases: pd.DataFrame, required=REQUIRED_CASES_COLUMNS) -> None:
    """Raise ``ResultsError`` naming the columns a cases frame lacks or holds with a
    non-numeric type where numbers are expected."""
    if not isinstance(cases, pd.DataFrame):
        raise ResultsError(f"cases: expected a pandas DataFrame, got {type(cases).__name__}")
    missing = [c for c in required if c not in cases.columns]
    if missing:
        raise ResultsError(f"cases table: missing column(s) {', '.join(map(repr, missing))}")
    for column in ("fraction", "dsc", "sensitivity", "precision", "hd95", "seed"):
        if column in cases.columns and not pd.api.types.is_numeric_dtype(cases[column]):
            raise ResultsError(f"cases table: column {column!r} has dtype {cases[column].dtype}, "
                               "expected numbers")
