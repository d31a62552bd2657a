"""Read a study's Parquet results (the contract of ``study.results``) into pandas.

A results folder holds ``cases/`` and ``trials/``, one Parquet file per trial in each; it may
be a local path or any pyarrow filesystem URI (``s3://bucket/studies/NAME/results``). Every file
is checked against the schema of ``study.results`` before its rows are read: a file that is not
Parquet, lacks a column or holds a column of another type is named in the error with the
column, the type found and the type expected. Columns the schema does not know are ignored;
integer or float columns of another width are widened, and an all-null column is accepted. A
``cases`` file written before the ``split`` column existed is read as test rows.

>>> cases = load("study-results/demo/results")          # doctest: +SKIP
>>> results = load_results("s3://bucket/studies/demo/results", errors="skip")  # doctest: +SKIP
>>> results.problems                                     # doctest: +SKIP
{'cases/4f….parquet': "column 'dsc': type string, expected double"}
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.results import (
    CASES_SCHEMA,
    FINISHED_STATUSES,
    LATER_COLUMNS,
    TRIALS_SCHEMA,
    conform,
    filesystem,
)

__all__ = ["Results", "ResultsError", "load", "load_results", "load_trials", "check_cases"]


class ResultsError(ValueError):
    """Results that cannot be read as the results contract says; the message names the file
    (or table) and the column."""


@dataclass
class Results:
    """One study's results: ``cases`` rows of complete trials, the ``trials`` table, the trial
    ids whose ``cases`` file exists without a ``trials`` row (running, or killed between the two
    writes: left out), and the files skipped as unreadable (``{file: reason}``)."""

    cases: pd.DataFrame
    trials: pd.DataFrame
    source: str
    incomplete: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    def finished_ids(self) -> set[str]:
        """Trials with a stored ok/diverged result whose files were all read (as
        ``study.results.ResultStore.finished_ids``, from the tables already loaded)."""
        done = self.trials.loc[self.trials["status"].isin(FINISHED_STATUSES), "trial_id"]
        damaged = {name.split("/")[-1].removesuffix(".parquet") for name in self.problems}
        return set(done) - damaged

    def restrict(self, trial_ids: set[str]) -> Results:
        """Only the rows of ``trial_ids`` (e.g. the trials of the current study file: results
        of an edited study's old trials stay on disk but belong to no table)."""
        return Results(
            cases=self.cases[self.cases["trial_id"].isin(trial_ids)].reset_index(drop=True),
            trials=self.trials[self.trials["trial_id"].isin(trial_ids)].reset_index(drop=True),
            source=self.source,
            incomplete=[t for t in self.incomplete if t in trial_ids],
            problems=dict(self.problems),
        )


def _compatible(found: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type ``found`` can stand for ``expected`` without losing meaning."""
    if found.equals(expected) or pa.types.is_null(found):
        return True
    if pa.types.is_dictionary(found):
        found = found.value_type
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found) or (
            hasattr(pa.types, "is_string_view") and pa.types.is_string_view(found))
    if pa.types.is_int64(expected):
        return pa.types.is_integer(found)
    if pa.types.is_float64(expected):
        return pa.types.is_floating(found) or pa.types.is_integer(found)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(found)
    return False


def _schema_problems(found: pa.Schema, expected: pa.Schema) -> list[str]:
    problems = []
    missing = [f.name for f in expected
               if found.get_field_index(f.name) < 0 and f.name not in LATER_COLUMNS]
    if missing:
        problems.append(f"missing column(s) {', '.join(repr(m) for m in missing)}")
    for f in expected:
        index = found.get_field_index(f.name)
        if index >= 0 and not _compatible(found.field(index).type, f.type):
            problems.append(f"column {f.name!r}: type {found.field(index).type}, "
                            f"expected {f.type}")
    return problems


def _read_table(fs: pafs.FileSystem, directory: str, schema: pa.Schema, label: str,
                problems: dict[str, str]) -> pa.Table:
    """All readable, well-formed files of one table as one Arrow table of ``schema``; the
    others are recorded in ``problems`` under ``label/<file>``."""
    info = fs.get_file_info(directory)
    if info.type == pafs.FileType.NotFound:
        return schema.empty_table()
    if info.type == pafs.FileType.File:
        paths = [directory]
    else:
        selector = pafs.FileSelector(directory, recursive=False)
        paths = sorted(i.path for i in fs.get_file_info(selector)
                       if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                       and not posixpath.basename(i.path).startswith((".", "_")))
    good = []
    for path in paths:
        name = f"{label}/{posixpath.basename(path)}"
        try:
            fragment_schema = pq.read_schema(path, filesystem=fs)
        except (pa.ArrowException, OSError) as error:
            problems[name] = f"not a readable Parquet file ({str(error).splitlines()[0]})"
            continue
        found = _schema_problems(fragment_schema, schema)
        if found:
            problems[name] = "; ".join(found)
        else:
            good.append(path)
    if not good:
        return schema.empty_table()
    try:
        return conform(ds.dataset(good, filesystem=fs, format="parquet", schema=schema)
                       .to_table(), schema)
    except (pa.ArrowException, OSError):
        pass  # a file is damaged past its footer: read one by one to name it
    tables = []
    for path in good:
        name = f"{label}/{posixpath.basename(path)}"
        try:
            fragment = ds.dataset(path, filesystem=fs, format="parquet")
            columns = [c for c in schema.names if c in fragment.schema.names]
            tables.append(conform(fragment.to_table(columns=columns), schema))
        except (pa.ArrowException, OSError, ValueError) as error:
            problems[name] = f"unreadable ({str(error).splitlines()[0]})"
    return pa.concat_tables(tables or [schema.empty_table()])


def _raise_if(problems: dict[str, str], source: str) -> None:
    if problems:
        lines = [f"{source}/{name}: {reason}" for name, reason in sorted(problems.items())]
        more = f"\n(and {len(lines) - 10} more)" if len(lines) > 10 else ""
        raise ResultsError("malformed results:\n" + "\n".join(lines[:10]) + more)


def _categorical(table: pa.Table) -> pa.Table:
    """String columns dictionary-encoded, so pandas gets categoricals: a million rows of a
    few hundred distinct ids filter and group several times faster than as strings."""
    for index, column in enumerate(table.schema):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            table = table.set_column(index, column.name,
                                     pc.dictionary_encode(table.column(index)))
    return table


def load_results(path: str, errors: Literal["raise", "skip"] = "raise") -> Results:
    """The results under ``path``: a folder (or URI) holding ``cases/`` and ``trials/``.

    ``cases`` keeps only rows of trials that have a ``trials`` row (complete trials, whatever
    was killed when); its string columns are pandas categoricals. With ``errors="raise"`` a
    malformed file raises ``ResultsError`` naming every bad file and column; with ``"skip"``
    such files are left out and listed in ``Results.problems``. Raises ``FileNotFoundError``
    when ``path`` does not exist; an existing folder without results gives empty tables (a
    study with no finished trial yet).
    """
    source = str(path).rstrip("/")
    fs, root = filesystem(source)
    root = root.rstrip("/") or "/"
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{source}: no such results folder (expected the folder "
                                "holding cases/ and trials/)")
    problems: dict[str, str] = {}
    cases = _read_table(fs, f"{root}/cases", CASES_SCHEMA, "cases", problems)
    trials = _read_table(fs, f"{root}/trials", TRIALS_SCHEMA, "trials", problems)
    if errors == "raise":
        _raise_if(problems, source)
    cases_frame = _categorical(cases).to_pandas()
    trials_frame = trials.to_pandas()
    complete = cases_frame["trial_id"].isin(trials_frame["trial_id"])
    incomplete = sorted(set(cases_frame.loc[~complete, "trial_id"]))
    if not complete.all():
        cases_frame = cases_frame[complete].reset_index(drop=True)
    return Results(cases_frame, trials_frame, source, incomplete, problems)


def load(path: str) -> pd.DataFrame:
    """The ``cases`` table of the study results under ``path`` (the folder or URI holding
    ``cases/`` and ``trials/``): rows of trials whose ``trials`` row exists, i.e. complete
    trials only. Raises ``ResultsError`` naming the file and column of malformed Parquet and
    ``FileNotFoundError`` when ``path`` does not exist."""
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
