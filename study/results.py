"""The Parquet results store: the contract between the trials and the analysis.

Layout under a study's results URI (a local path or any pyarrow filesystem URI, ``s3://...``)::

    <results>/cases/<trial_id>.parquet    one row per (case, class, postprocessed)
    <results>/trials/<trial_id>.parquet   one row per trial
    <results>/running/<trial_id>.json     heartbeat of a trial in progress (study.progress)
    <results>/compacted/                  many trials per file (``study.compact``)

Writing. A trial's rows are one file per table named by its ``trial_id`` (16 hex digits, see
``study.identity``); each file is written to a hidden temporary name (``.tmp-...``) and renamed
into place on local filesystems, or uploaded in one request on object stores, so it is whole
or absent. ``cases`` is written before ``trials``. Both files carry, in their Parquet footer's
key-value metadata, the token of the write they belong to (``study.write``), and the
``trials`` row records how many ``cases`` rows were written (``case_rows``). A trial that runs
again replaces its files.

Reading: one definition of a stored trial, used by ``study`` (launch, resume, status) and by
``analysis``. A trial is stored when

* ``trials/<id>.parquet`` holds the contract's columns with their types, one row, whose
  ``trial_id`` is ``<id>``, a known ``status`` and ``case_rows``;
* ``cases/<id>.parquet`` holds the contract's columns, ``case_rows`` rows, all of trial
  ``<id>``, every metric within its range (``METRIC_RANGES``; NaN is "undefined" and allowed);
* both files come from the same write (a rerun killed between its two writes leaves a new
  ``cases`` file next to the old ``trials`` file: neither is used).

It is *finished* (not run again) when stored with status ``ok`` or ``diverged``. All of this
is read from the files' footers (row counts, column statistics, key-value metadata), never
from their data pages, so the check costs two small reads per trial whatever the number of
rows. Files whose name is not a trial id (``<id> (1).parquet``, a backup, a temporary file)
are never read into a table. Every file left out is named with the reason in ``problems``
(``{"cases/<name>": reason}``), and its trial runs again.

Compacted trials (``study.compact``) live in ``compacted/<part>.cases.parquet`` and
``compacted/<part>.trials.parquet``, indexed by ``compacted/manifest.json``: per trial its
part, status, ``case_rows`` and write token; per part the byte size and row count of both
files, checked against the listing and the footers. A trial's own files win over its
compacted rows when they come from another (later) write; files of the same write are
leftovers of an interrupted compaction and are ignored.

``cases`` rows carry the trial's ``status`` (``ok``, ``diverged``: metrics NaN, ``failed``) and
the ``split`` the case belongs to (``CASE_SPLITS``): ``"test"`` (the test set, which the
papers' tables report), ``"validation"`` (cases held out of the training pool and evaluated
the same way, for choosing settings on data the tables do not report) or ``"train"`` (a fixed
subset of the trial's own training cases evaluated the same way, for the train-vs-test gap of
001 Fig. 1; ``study.case_evaluation``). Both tables carry the trial's ``variant``:
the label of a study experiment that reruns techniques of another under a changed regime
(``w/o augmentation``, ``80 % tumour``), null otherwise; the analysis reports each
(technique, variant) as its own method. ``split``, ``variant``, ``case_rows`` and the columns
after them (``arvd``, ``abd``, ``tp_voxels``, ``case_voxels``, ``case_correct_voxels``,
``final_val_loss``) joined the contract after the first studies were written: a file without
them is read as all ``"test"``, no variant, an unrecorded row count (such a trial needs at
least one case row to count as finished) and null (NaN) metrics and counts
(``LATER_COLUMNS``); the writer takes rows without ``split`` as test rows.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import uuid
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict, cast
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.catalog import HYPERPARAMETERS, SPLITS, TEST, VALIDATION
from study.identity import TrialConfig

HP_COLUMNS = tuple(HYPERPARAMETERS)  # the hyperparameter names; columns hp_<name>
TRAIN = "train"  # the split of the training cases a trial evaluates (001 Fig. 1)
CASE_SPLITS = (TRAIN, *SPLITS)  # the values of the cases column ``split``

_IDENTITY = [
    pa.field("study", pa.string()),
    pa.field("trial_id", pa.string()),
    pa.field("dataset", pa.string()),
    pa.field("model", pa.string()),
    pa.field("technique", pa.string()),
    pa.field("fraction", pa.float64()),
    pa.field("seed", pa.int64()),
    pa.field("param_label", pa.string()),
    pa.field("variant", pa.string()),  # the experiment's variant label, null when none
    *[pa.field(HYPERPARAMETERS[name].column, pa.float64()) for name in HP_COLUMNS],
]

CASES_SCHEMA = pa.schema([
    *_IDENTITY,
    pa.field("case_id", pa.string()),
    pa.field("class_name", pa.string()),
    pa.field("postprocessed", pa.bool_()),
    pa.field("dsc", pa.float64()),
    pa.field("sensitivity", pa.float64()),
    pa.field("precision", pa.float64()),
    pa.field("iou", pa.float64()),
    pa.field("hd95", pa.float64()),
    pa.field("hd95_max", pa.float64()),
    pa.field("pred_voxels", pa.int64()),
    pa.field("ref_voxels", pa.int64()),
    pa.field("status", pa.string()),
    pa.field("split", pa.string()),  # train | test | validation
    pa.field("arvd", pa.float64()),  # |V_pred - V_ref| / V_ref (004 §4.3), NaN: ref empty
    pa.field("abd", pa.float64()),  # average boundary distance in mm (004 §4.3)
    pa.field("tp_voxels", pa.int64()),  # |pred & ref|: pooled IoU (003 eq. 2 over a dataset)
    pa.field("case_voxels", pa.int64()),  # voxels of the case (repeated on its class rows)
    pa.field("case_correct_voxels", pa.int64()),  # voxels with pred == ref, any class (003)
])

TRIALS_SCHEMA = pa.schema([
    *_IDENTITY,
    pa.field("config", pa.string()),  # canonical JSON of the trial config
    pa.field("status", pa.string()),  # ok | diverged | failed
    pa.field("error", pa.string()),
    pa.field("started_at", pa.timestamp("ms", tz="UTC")),
    pa.field("finished_at", pa.timestamp("ms", tz="UTC")),
    pa.field("train_seconds", pa.float64()),
    pa.field("eval_seconds", pa.float64()),
    pa.field("iterations_done", pa.int64()),
    pa.field("final_train_loss", pa.float64()),
    pa.field("final_val_loss", pa.float64()),  # the last periodic validation loss; null: none
    pa.field("train_cases", pa.int64()),
    pa.field("test_cases", pa.int64()),
    pa.field("code_version", pa.string()),
    pa.field("host", pa.string()),
    pa.field("device", pa.string()),
    # JSON: {split: {true class: {logit class: {mean, std, hist}}}} with the bin edges
    pa.field("logit_stats", pa.string()),
    pa.field("case_rows", pa.int64()),  # rows written to the trial's cases file
])

SCHEMAS = {"cases": CASES_SCHEMA, "trials": TRIALS_SCHEMA}
STATUSES = ("ok", "diverged", "failed")
FINISHED_STATUSES = ("ok", "diverged")  # a stored result that need not run again
# Columns added to the contract after results were first written, with the value a file
# written before them is read as holding in every row.
LATER_COLUMNS = {"split": TEST, "variant": None, "case_rows": None, "arvd": None, "abd": None,
                 "tp_voxels": None, "case_voxels": None, "case_correct_voxels": None,
                 "final_val_loss": None}
# The values a cases row may hold (001 eq. 1-4, the 95th-percentile Hausdorff distance and
# 004's arvd and abd: ratios in [0, 1], arvd, distances and voxel counts >= 0; NaN (undefined)
# and inf allowed).
METRIC_RANGES = {"dsc": (0.0, 1.0), "sensitivity": (0.0, 1.0), "precision": (0.0, 1.0),
                 "iou": (0.0, 1.0), "arvd": (0.0, math.inf), "hd95": (0.0, math.inf),
                 "hd95_max": (0.0, math.inf), "abd": (0.0, math.inf),
                 "pred_voxels": (0, math.inf), "ref_voxels": (0, math.inf),
                 "tp_voxels": (0, math.inf), "case_voxels": (0, math.inf),
                 "case_correct_voxels": (0, math.inf)}
TRIAL_ID = re.compile(r"[0-9a-f]{16}")  # study.identity.trial_id
WRITE_KEY = b"study.write"  # footer key-value metadata: the token of the write
MANIFEST = "manifest.json"  # compacted/manifest.json


class PartFile(TypedDict):
    """A compacted file as ``compacted/manifest.json`` records it (checked against the listing
    and the footer)."""

    size: int
    rows: int


class CompactedTrial(TypedDict):
    """A compacted trial as ``compacted/manifest.json`` records it."""

    part: str
    status: str
    case_rows: int
    write: str | None


class Manifest(TypedDict):
    """``compacted/manifest.json``: per part its files by table (``cases``, ``trials``), per
    trial its part, status, case rows and write token."""

    format: int
    parts: dict[str, dict[str, PartFile]]
    trials: dict[str, CompactedTrial]


def empty_manifest() -> Manifest:
    """The manifest of a store without compacted parts."""
    return {"format": 1, "parts": {}, "trials": {}}

_PART_FILE = re.compile(r"(?P<part>part-[0-9a-f]{16})\.(?P<table>cases|trials)\.parquet")
# Remote filesystems: fail within seconds when the endpoint does not answer.
CONNECT_TIMEOUT_S, REQUEST_TIMEOUT_S, S3_ATTEMPTS = 5.0, 60.0, 3
# String columns are read as dictionaries (the ids and labels of a million rows repeat).
_FORMAT = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=sorted(
    {f.name for schema in SCHEMAS.values() for f in schema if pa.types.is_string(f.type)})))
# Object stores, where one upload is atomic and a rename is a copy; elsewhere files are
# written under a temporary name and renamed into place.
_OBJECT_STORES = tuple(getattr(pafs, name) for name in
                       ("S3FileSystem", "GcsFileSystem", "AzureFileSystem") if hasattr(pafs, name))
_FOOTER_THREADS = 32  # footers read at once (latency-bound on object stores)


class ResultsStorageError(ValueError):
    """A results location that cannot be used (missing bucket, refused credentials,
    unreachable endpoint); the message names the URI and what failed."""


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` as ``schema``: its columns in the schema's order and types; a column of
    ``LATER_COLUMNS`` that ``table`` lacks (a file written before it existed) is added, and
    nulls in one (such files read together with newer ones) filled, with its value. Raises
    ``pyarrow.ArrowInvalid`` / ``KeyError`` when another column is missing or cannot be cast."""
    for name, value in LATER_COLUMNS.items():
        index = schema.get_field_index(name)
        if index < 0:
            continue
        kind = schema.field(index).type
        if name in table.column_names:
            filled = pc.fill_null(table[name].cast(kind), pa.scalar(value, kind))
            table = table.set_column(table.schema.get_field_index(name), name, filled)
        else:
            table = table.append_column(name, pa.array([value] * table.num_rows, kind))
    return table.select(schema.names).cast(schema)


def categorical(schema: pa.Schema) -> pa.Schema:
    """``schema`` with its string columns dictionary-encoded (pandas categoricals: a million
    rows of a few hundred distinct ids filter and group several times faster)."""
    return pa.schema([pa.field(f.name, pa.dictionary(pa.int32(), pa.string()))
                      if pa.types.is_string(f.type) else f for f in schema])


def _compatible(found: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type ``found`` can stand for ``expected`` without losing meaning:
    the same type, all nulls, another width of integer or float, strings in any encoding."""
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


def schema_problems(found: pa.Schema, expected: pa.Schema) -> list[str]:
    """What keeps a file of schema ``found`` from holding the table ``expected``: missing
    contract columns (but ``LATER_COLUMNS``) and columns of an incompatible type."""
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


@functools.lru_cache(maxsize=64)
def _file_schema_problems(found: pa.Schema, table: str) -> tuple[str, ...]:
    """``schema_problems`` of a file of ``table`` (cached: a study's files share a few
    schemas; ``found`` without its metadata, which holds each write's token)."""
    return tuple(schema_problems(found, SCHEMAS[table]))


def identity_columns(trial_param: dict[str, Any]) -> dict[str, Any]:
    """The identity columns shared by both tables, from a trial's Tune param dict (its
    ``config`` read with :meth:`study.identity.TrialConfig.from_dict`: ``ValueError`` naming
    any missing, unknown or mistyped key)."""
    config = TrialConfig.from_dict(trial_param["config"])
    row = {
        "study": trial_param["study"],
        "trial_id": trial_param["trial_id"],
        "dataset": config.dataset.name,
        "model": config.model.label,
        "technique": config.technique,
        "fraction": float(config.fraction),
        "seed": config.seed,
        "param_label": trial_param["param_label"],
        "variant": trial_param.get("variant"),
    }
    unknown = set(config.hp) - set(HP_COLUMNS)
    if unknown:
        raise ValueError(f"hyperparameters {sorted(unknown)} have no results column")
    row.update({HYPERPARAMETERS[name].column: config.hp.get(name) for name in HP_COLUMNS})
    return row


def summarise(trial_row: dict[str, Any], case_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A trial's final metrics as reported to Tune: status, iterations, training time, the
    mean raw / post-processed DSC over its test case rows (``dsc_raw``, ``dsc_pp``) and over
    its validation case rows (``dsc_raw_validation``, ``dsc_pp_validation``); NaN where none
    is defined. Rows without ``split`` are test rows; ``train`` rows are left out."""
    summary = {"status": trial_row["status"], "iterations_done": trial_row["iterations_done"],
               "train_seconds": trial_row["train_seconds"]}
    for split, tail in ((TEST, ""), (VALIDATION, "_validation")):
        for postprocessed, suffix in ((False, "raw"), (True, "pp")):
            values = [r["dsc"] for r in case_rows
                      if r.get("split", TEST) == split and r["postprocessed"] == postprocessed
                      and r["dsc"] is not None and not math.isnan(r["dsc"])]
            summary[f"dsc_{suffix}{tail}"] = sum(values) / len(values) if values else math.nan
    return summary


def _s3(uri: str) -> tuple[pafs.FileSystem, str]:
    """An S3 filesystem for ``s3://bucket/path[?endpoint_override=..&scheme=..&region=..]``
    with bounded connect/request timeouts and retries. The endpoint comes from the URI, else
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; the region from the URI, else
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else the bucket's (AWS only); credentials from
    the AWS SDK's usual chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, profiles,
    instance roles)."""
    parts = urlsplit(uri)
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - {"endpoint_override", "scheme", "region"}
    if unknown:
        raise ValueError(f"{uri}: unknown S3 option(s) {sorted(unknown)}; expected "
                         "endpoint_override, scheme or region")
    endpoint = (options.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    region = (options.get("region") or os.environ.get("AWS_REGION")
              or os.environ.get("AWS_DEFAULT_REGION"))
    if not parts.netloc:
        raise ValueError(f"{uri}: expected s3://BUCKET/PATH")
    try:
        if region is None and endpoint is None:
            region = pafs.resolve_s3_region(parts.netloc)
        fs = pafs.S3FileSystem(
            region=region, endpoint_override=endpoint, scheme=options.get("scheme"),
            connect_timeout=CONNECT_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS))
    except OSError as error:
        raise ResultsStorageError(f"{uri}: {str(error).splitlines()[0]}") from error
    return fs, f"{parts.netloc}{parts.path}".rstrip("/")


def filesystem(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of ``uri``: ``s3://`` through ``_s3`` (timeouts,
    endpoint from the environment), another URI through ``FileSystem.from_uri``, anything
    else an absolute local path."""
    text = str(uri)
    if text.startswith("s3://"):
        return _s3(text)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).resolve())


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _require_bucket(fs: pafs.FileSystem, root: str, uri: str) -> None:
    """On S3, raise ``ResultsStorageError`` unless the bucket of ``root`` exists and answers
    (an object store lists a missing bucket as an empty folder)."""
    if not isinstance(fs, pafs.S3FileSystem):
        return
    bucket = root.split("/", 1)[0]
    try:
        missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except OSError as error:
        raise ResultsStorageError(f"{uri}: cannot reach bucket {bucket!r}: "
                                  f"{_first_line(error)}") from error
    if missing:
        raise ResultsStorageError(f"{uri}: bucket {bucket!r} does not exist (create it first, "
                                  "or check AWS_ENDPOINT_URL)")


def check_storage(uri: str) -> None:
    """Raise one ``ResultsStorageError`` naming ``uri`` and what failed when results cannot
    be stored there: a missing bucket, refused credentials, an unreachable endpoint (within
    ``CONNECT_TIMEOUT_S`` x ``S3_ATTEMPTS``), a read-only folder. Writes and deletes an empty
    probe file; call it before any trial starts."""
    fs, root = filesystem(uri)
    _require_bucket(fs, root, uri)
    step = "create the folder"
    try:
        fs.create_dir(root, recursive=True)
        step = "write a file"
        probe = f"{root}/.probe-{uuid.uuid4().hex}"
        with fs.open_output_stream(probe) as stream:
            stream.write(b"")
        step = "delete a file"
        fs.delete_file(probe)
    except OSError as error:
        raise ResultsStorageError(f"{uri}: cannot {step}: {_first_line(error)}") from error


@dataclass(frozen=True)
class StoredTrial:
    """A stored trial as its footers (or the compacted manifest) describe it."""

    trial_id: str
    status: str
    case_rows: int
    write: str | None  # token of the write; None for files written before tokens existed
    part: str | None = None  # the compacted part holding it; None: its own two files


@dataclass
class Scan:
    """What a finished check found: the stored trials (any status), the files left out with
    the reason (``{"cases/<name>": reason}``), the trial ids with a ``cases`` file but no
    ``trials`` file (running, or killed between the two writes), the compacted manifest
    (empty without one) and ``garbage``: paths whose rows are stored elsewhere or nowhere
    (a compacted trial's own files of the same write, compacted files the manifest does not
    name, temporary files), which ``study.compact`` deletes."""

    trials: dict[str, StoredTrial]
    problems: dict[str, str]
    incomplete: list[str]
    manifest: Manifest
    garbage: list[str] = field(default_factory=list)
    fragments: dict[str, ds.ParquetFileFragment] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> set[str]:
        """Trials stored ``ok`` or ``diverged``: they need not run again."""
        return {t for t, s in self.trials.items() if s.status in FINISHED_STATUSES}

    def only(self, trial_ids: Iterable[str]) -> Scan:
        """The same scan restricted to ``trial_ids`` (problems and manifest kept)."""
        ids = set(trial_ids)
        return replace(self, trials={t: s for t, s in self.trials.items() if t in ids},
                       incomplete=[t for t in self.incomplete if t in ids])


@dataclass
class StoredResults:
    """Rows of stored trials: ``trials`` (one per stored trial, any status) and ``cases``
    (their case rows), with the scan's ``finished``, ``incomplete`` and ``problems``."""

    trials: pd.DataFrame
    cases: pd.DataFrame
    finished: set[str]
    incomplete: list[str]
    problems: dict[str, str]


def _stats(meta: pq.FileMetaData, index: int) -> tuple[Any, Any, int] | None:
    """(min, max, null count) of column ``index`` over all row groups from the footer's
    statistics (NaN is not counted in min/max); min/max None when every value is null or
    NaN; None when a row group has no statistics for it."""
    low = high = None
    nulls = 0
    for g in range(meta.num_row_groups):
        column = meta.row_group(g).column(index)
        if not column.is_stats_set:
            return None
        stats = column.statistics
        nulls += stats.null_count
        if stats.has_min_max:
            low = stats.min if low is None else min(low, stats.min)
            high = stats.max if high is None else max(high, stats.max)
    return low, high, nulls


def _table_stats(column: pa.ChunkedArray | pa.Array) -> tuple[Any, Any, int]:
    """``_stats`` computed from the values of a column."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    values = column
    if pa.types.is_floating(column.type):
        values = pc.filter(column, pc.invert(pc.is_nan(column)))
    bounds = pc.min_max(values)
    return bounds["min"].as_py(), bounds["max"].as_py(), column.null_count


def _facts(fragment: ds.ParquetFileFragment, meta: pq.FileMetaData, names: Iterable[str]
           ) -> dict[str, tuple[Any, Any, int]]:
    """Min, max and null count of the columns ``names`` present in the file: from the
    footer's statistics, or from the values for a column without statistics (files written
    by other tools)."""
    leaves = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    footer = {name: _stats(meta, leaves[name]) for name in names if name in leaves}
    missing = [name for name, value in footer.items() if value is None]
    computed: dict[str, tuple[Any, Any, int]] = {}
    if missing:
        table = fragment.to_table(columns=missing)
        computed = {name: _table_stats(table[name]) for name in missing}
    return {name: computed[name] if value is None else value for name, value in footer.items()}


def range_problems(facts: dict[str, tuple[Any, Any, int]]) -> list[str]:
    """Columns of ``METRIC_RANGES`` whose values leave their range."""
    out = []
    for name, (low, high) in METRIC_RANGES.items():
        found = facts.get(name)
        if found and found[0] is not None and (found[0] < low or found[1] > high):
            out.append(f"column {name!r} holds values in [{found[0]:g}, {found[1]:g}], "
                       f"outside [{low:g}, {high:g}]")
    return out


def _only_value(facts: dict, name: str, expected: str) -> str | None:
    """Why column ``name`` does not hold ``expected`` in every row, or None."""
    low, high, nulls = facts[name]
    if nulls or low != high or low != expected:
        found = "nulls" if nulls else (repr(low) if low == high else f"{low!r} .. {high!r}")
        return f"column {name!r} holds {found}, expected {expected!r} (the file name)"
    return None


def _token(meta: pq.FileMetaData) -> str | None:
    value = (meta.metadata or {}).get(WRITE_KEY)
    return value.decode() if value is not None else None


class ResultStore:
    """Reads and writes one study's results under ``uri`` (local path or filesystem URI);
    ``fs`` overrides the filesystem ``uri`` names (then ``uri`` is a path in ``fs``)."""

    def __init__(self, uri: str, fs: pafs.FileSystem | None = None):
        self.uri = str(uri)
        self.fs, self.root = (fs, self.uri) if fs is not None else filesystem(uri)
        self.root = self.root.rstrip("/")
        self._uploads = isinstance(self.fs, _OBJECT_STORES)
        self.problems: dict[str, str] = {}

    def path(self, table: str, name: str = "") -> str:
        """The path of ``<table>/<name>`` (of the folder ``table`` without a name)."""
        return f"{self.root}/{table}" + (f"/{name}" if name else "")

    # -- writing ---------------------------------------------------------------------------

    def put(self, path: str, write) -> None:
        """Create ``path`` whole or not at all: on object stores ``write(path)`` (one upload:
        atomic), elsewhere ``write(temporary path)`` then a rename."""
        directory, name = path.rsplit("/", 1)
        self.fs.create_dir(directory, recursive=True)
        if self._uploads:
            write(path)
            return
        temporary = f"{directory}/.tmp-{name}-{uuid.uuid4().hex}"
        try:
            write(temporary)
            self.fs.move(temporary, path)  # rename(2): atomic, replaces an older copy
        finally:
            if self.fs.get_file_info(temporary).type != pafs.FileType.NotFound:
                self.fs.delete_file(temporary)

    def put_table(self, path: str, table: pa.Table, **options) -> None:
        self.put(path, lambda p: pq.write_table(table, p, filesystem=self.fs, **options))

    def write_trial(self, trial_row: dict[str, Any], case_rows: Sequence[dict[str, Any]]) -> None:
        """Store one trial: its ``cases`` rows, then its ``trials`` row (with ``case_rows``,
        the number of case rows), both tagged with a fresh write token. A case row without
        ``split`` is a test row. Raises ``ValueError`` (nothing written) for a trial id that
        is not 16 hex digits, an unknown status or split, case rows of another trial or
        metrics outside ``METRIC_RANGES``."""
        trial_id = trial_row["trial_id"]
        if not isinstance(trial_id, str) or not TRIAL_ID.fullmatch(trial_id):
            raise ValueError(f"trial_id: expected 16 hex digits, got {trial_id!r}")
        if trial_row["status"] not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {trial_row['status']!r}")
        if any(row["trial_id"] != trial_id for row in case_rows):
            raise ValueError(f"case rows of another trial passed with trial {trial_id}")
        case_rows = [{**LATER_COLUMNS, **row} for row in case_rows]
        bad = sorted({repr(r["split"]) for r in case_rows if r["split"] not in CASE_SPLITS})
        if bad:
            raise ValueError(f"split: expected one of {CASE_SPLITS}, got {', '.join(bad)}")
        cases = pa.Table.from_pylist(case_rows, schema=CASES_SCHEMA)
        out_of_range = range_problems({name: _table_stats(cases[name])
                                       for name in METRIC_RANGES})
        if out_of_range:
            raise ValueError(f"trial {trial_id}: " + "; ".join(out_of_range))
        trial = pa.Table.from_pylist([{**trial_row, "case_rows": len(case_rows)}],
                                     schema=TRIALS_SCHEMA)
        token = {WRITE_KEY: uuid.uuid4().hex.encode()}
        self.put_table(self.path("cases", f"{trial_id}.parquet"),
                       cases.replace_schema_metadata(token))
        self.put_table(self.path("trials", f"{trial_id}.parquet"),
                       trial.replace_schema_metadata(token))

    # -- the finished check ----------------------------------------------------------------

    def _list(self, table: str, trial_ids: Collection[str] | None) -> list[pafs.FileInfo]:
        """The entries of ``<table>/`` (only ``<id>.parquet`` of ``trial_ids`` when given)."""
        try:
            if trial_ids is not None:
                infos = self.fs.get_file_info([self.path(table, f"{t}.parquet")
                                               for t in sorted(trial_ids)])
                return [i for i in infos if i.type != pafs.FileType.NotFound]
            selector = pafs.FileSelector(self.path(table), allow_not_found=True)
            return self.fs.get_file_info(selector)
        except OSError as error:
            raise ResultsStorageError(f"{self.uri}: cannot list {table}/: "
                                      f"{_first_line(error)}") from error

    def _footers(self, infos: Sequence[pafs.FileInfo]
                 ) -> dict[str, tuple[ds.ParquetFileFragment, pq.FileMetaData] | str]:
        """Each file's footer (one ranged read, no size request: the listing gave the
        size), or why it cannot be read."""
        def read(info: pafs.FileInfo):
            try:
                fragment = _FORMAT.make_fragment(info.path, self.fs, file_size=info.size)
                return fragment, fragment.metadata
            except (pa.ArrowException, OSError, ValueError) as error:
                return f"not a readable Parquet file ({_first_line(error)})"

        if not infos:
            return {}
        with ThreadPoolExecutor(min(_FOOTER_THREADS, len(infos))) as pool:
            return dict(zip((i.path for i in infos), pool.map(read, infos), strict=True))

    def _manifest(self, problems: dict[str, str], garbage: list[str],
                  trial_ids: Collection[str] | None) -> tuple[Manifest, set[str], dict]:
        """The compacted manifest, its parts that check out (both files listed with their
        recorded size, footers with their recorded row counts and the contract's columns)
        and the parts' footers. Files in ``compacted/`` the manifest does not name are
        problems (leftovers of an interrupted compaction)."""
        path = self.path("compacted", MANIFEST)
        entries = {i.base_name: i for i in self._list("compacted", None)}
        manifest = empty_manifest()
        if MANIFEST in entries:
            try:
                with self.fs.open_input_stream(path) as stream:
                    manifest = json.loads(stream.read())
                manifest["parts"], manifest["trials"]  # noqa: B018 - the keys must exist
            except (OSError, ValueError, KeyError, TypeError) as error:
                # nothing in compacted/ is garbage while the manifest cannot be read
                problems[f"compacted/{MANIFEST}"] = f"unreadable ({_first_line(error)})"
                return empty_manifest(), set(), {}
        for name, info in entries.items():
            match = _PART_FILE.fullmatch(name)
            if name != MANIFEST and (not match or match["part"] not in manifest["parts"]):
                problems[f"compacted/{name}"] = ("not named by compacted/manifest.json (left "
                                                 "by an interrupted compaction): ignored")
                garbage.append(info.path)
        wanted = set(manifest["parts"])
        if trial_ids is not None:
            wanted = {manifest["trials"][t]["part"] for t in trial_ids
                      if t in manifest["trials"]}
        files = {f"{part}.{table}.parquet": (part, table) for part in wanted for table in SCHEMAS}
        footers = self._footers([entries[n] for n in files if n in entries])
        valid = set(wanted)
        for name, (part, table) in files.items():
            recorded = manifest["parts"][part][table]
            reason: str | None
            footer = footers.get(self.path("compacted", name), "missing")
            if isinstance(footer, str):
                reason = footer
            elif entries[name].size != recorded["size"]:
                reason = f"{entries[name].size} bytes, the manifest says {recorded['size']}"
            elif footer[1].num_rows != recorded["rows"]:
                reason = f"{footer[1].num_rows} rows, the manifest says {recorded['rows']}"
            else:
                reason = "; ".join(_file_schema_problems(
                    footer[0].physical_schema.remove_metadata(), table)) or None
            if reason:
                problems[f"compacted/{name}"] = reason
                valid.discard(part)
        return manifest, valid, footers

    def _own_files(self, trial_id: str, infos: dict, footers: dict, problems: dict[str, str]
                   ) -> StoredTrial | None:
        """The trial stored in its own two files, or None (the reason in ``problems``)."""
        name = f"{trial_id}.parquet"
        trials_file = footers[infos["trials"][trial_id].path]
        if isinstance(trials_file, str):
            problems[f"trials/{name}"] = trials_file
            return None
        fragment, meta = trials_file
        found = list(_file_schema_problems(fragment.physical_schema.remove_metadata(), "trials"))
        if meta.num_rows != 1:
            found.append(f"holds {meta.num_rows} rows, expected 1")
        try:
            facts = {} if found else _facts(fragment, meta, ("trial_id", "status", "case_rows"))
        except (pa.ArrowException, OSError) as error:
            problems[f"trials/{name}"] = f"unreadable ({_first_line(error)})"
            return None
        status, recorded = facts.get("status", (None,))[0], facts.get("case_rows", (None,))[0]
        if facts and (problem := _only_value(facts, "trial_id", trial_id)):
            found.append(problem)
        if facts and status not in STATUSES:
            found.append(f"status {status!r}, expected one of {STATUSES}")
        if not found and trial_id not in infos["cases"]:
            found.append(f"its cases file cases/{name} is missing")
        if found:
            problems[f"trials/{name}"] = "; ".join(found)
            return None
        cases_file = footers[infos["cases"][trial_id].path]
        if isinstance(cases_file, str):
            problems[f"cases/{name}"] = cases_file
            return None
        cases_fragment, cases_meta = cases_file
        rows = cases_meta.num_rows
        found = list(_file_schema_problems(cases_fragment.physical_schema.remove_metadata(),
                                           "cases"))
        if not found:
            try:
                facts = _facts(cases_fragment, cases_meta, ("trial_id", *METRIC_RANGES))
            except (pa.ArrowException, OSError) as error:
                problems[f"cases/{name}"] = f"unreadable ({_first_line(error)})"
                return None
            found = range_problems(facts)
            if rows and (problem := _only_value(facts, "trial_id", trial_id)):
                found.append(problem)
        if recorded is not None and rows != recorded:
            found.append(f"holds {rows} rows, the trials file recorded {recorded}")
        if recorded is None and rows == 0 and status in FINISHED_STATUSES:
            found.append(f"holds no rows for a trial stored {status!r}")
        if _token(cases_meta) != _token(meta):
            found.append(f"not from the write of trials/{name} (a rerun killed between "
                         "its two writes, or a copied file)")
        if found:
            problems[f"cases/{name}"] = "; ".join(found)
            return None
        # no problem found: the trials file holds one status of STATUSES
        return StoredTrial(trial_id, cast(str, status), rows, _token(meta))

    def scan(self, trial_ids: Collection[str] | None = None) -> Scan:
        """The finished check: which trials are stored, from file listings, footers and the
        compacted manifest only (no data pages). ``trial_ids`` limits it to those trials
        (looked up by name instead of listing every file). Raises ``ResultsStorageError``
        when the location cannot be listed."""
        problems: dict[str, str] = {}
        garbage: list[str] = []
        manifest, valid_parts, part_footers = self._manifest(problems, garbage, trial_ids)
        infos: dict[str, dict[str, pafs.FileInfo]] = {"trials": {}, "cases": {}}
        for table in infos:
            for info in self._list(table, trial_ids):
                stem = info.base_name.removesuffix(".parquet")
                if info.type == pafs.FileType.File and info.base_name.endswith(".parquet") \
                        and TRIAL_ID.fullmatch(stem):
                    infos[table][stem] = info
                elif info.base_name.startswith(".tmp-"):
                    problems[f"{table}/{info.base_name}"] = ("temporary file of a write in "
                                                             "progress or killed: ignored")
                    garbage.append(info.path)
                else:
                    problems[f"{table}/{info.base_name}"] = (
                        "not named <trial_id>.parquet (16 hex digits; a copy or a backup?): "
                        "ignored")
        if not (infos["trials"] or infos["cases"] or manifest["trials"] or problems):
            _require_bucket(self.fs, self.root, self.uri)  # nothing stored, or no bucket?
        footers = self._footers([*infos["trials"].values(), *infos["cases"].values()])
        compacted = {t: e for t, e in manifest["trials"].items() if e["part"] in valid_parts
                     and (trial_ids is None or t in trial_ids)}
        trials: dict[str, StoredTrial] = {}
        incomplete = []
        for trial_id in sorted(set(infos["trials"]) | set(infos["cases"]) | set(compacted)):
            entry = compacted.get(trial_id)
            own = [footers[infos[t][trial_id].path] for t in infos if trial_id in infos[t]]
            if entry is not None and all(not isinstance(f, str) and _token(f[1]) ==
                                         entry["write"] for f in own):
                trials[trial_id] = StoredTrial(trial_id, entry["status"], entry["case_rows"],
                                               entry["write"], entry["part"])
                garbage += [infos[t][trial_id].path for t in infos if trial_id in infos[t]]
            elif trial_id not in infos["trials"]:
                incomplete.append(trial_id)
            elif stored := self._own_files(trial_id, infos, footers, problems):
                trials[trial_id] = stored
        fragments = {path: f[0] for path, f in {**footers, **part_footers}.items()
                     if not isinstance(f, str)}
        self.problems = problems
        return Scan(trials, problems, incomplete, manifest, garbage, fragments)

    def finished_ids(self) -> set[str]:
        """Trials with a stored ``ok`` or ``diverged`` result: they need not run again.
        Reads listings and footers only; what was left out is in ``self.problems``."""
        return self.scan().finished

    # -- reading rows ----------------------------------------------------------------------

    def _read(self, table: str, scan: Scan, drop: dict[str, tuple[str, str]],
              as_categorical: bool) -> pa.Table:
        """Rows of ``table`` of the scan's trials, conformed to the contract. A file whose
        data cannot be read, or a compacted trial whose row count differs from the recorded
        one, drops its trial: ``drop[trial_id] = (file, reason)``."""
        schema = categorical(SCHEMAS[table]) if as_categorical else SCHEMAS[table]
        own = [t for t, s in scan.trials.items() if s.part is None]
        fragments = {t: scan.fragments[self.path(table, f"{t}.parquet")] for t in own}
        pieces = []
        try:
            pieces.append(ds.FileSystemDataset(list(fragments.values()), schema, _FORMAT,
                                               self.fs).to_table())
        except (pa.ArrowException, OSError):  # damaged past the footer: find which
            for trial_id, fragment in fragments.items():
                try:
                    pieces.append(fragment.to_table(schema=schema))
                except (pa.ArrowException, OSError) as error:
                    drop[trial_id] = (f"{table}/{trial_id}.parquet",
                                      f"unreadable ({_first_line(error)})")
        parts: dict[str, list[str]] = {}
        for trial_id, stored in scan.trials.items():
            if stored.part is not None:
                parts.setdefault(stored.part, []).append(trial_id)
        for part, ids in sorted(parts.items()):
            name = f"{part}.{table}.parquet"
            fragment = scan.fragments[self.path("compacted", name)]
            expected = {t: 1 if table == "trials" else scan.trials[t].case_rows for t in ids}
            try:
                # A part holding as many rows as these trials have is read whole: filtering
                # while reading takes as long as the read and holds the rows twice. Should it
                # hold rows of other trials after all, one of these is short of its rows:
                # dropped, and ``tables`` keeps the rows of the trials kept only.
                whole = fragment.metadata.num_rows == sum(expected.values())
                rows = fragment.to_table(schema=schema, filter=None if whole else
                                         pc.field("trial_id").isin(ids))
            except (pa.ArrowException, OSError) as error:
                drop.update({t: (f"compacted/{name}", f"unreadable ({_first_line(error)})")
                             for t in ids})
                continue
            found = {c["values"]: c["counts"]
                     for c in pc.value_counts(rows["trial_id"]).to_pylist()}
            for trial_id, rows_expected in expected.items():
                if found.get(trial_id, 0) != rows_expected:
                    drop[trial_id] = (f"compacted/{name}", f"trial {trial_id}: "
                                      f"{found.get(trial_id, 0)} rows, expected {rows_expected}")
            pieces.append(rows)
        return conform(pa.concat_tables(pieces) if pieces else schema.empty_table(), schema)

    def tables(self, scan: Scan, cases: bool = True, as_categorical: bool = False
               ) -> tuple[pa.Table, pa.Table, dict[str, str]]:
        """``read`` as Arrow tables, and the trials dropped as unreadable ({id: file})."""
        drop: dict[str, tuple[str, str]] = {}
        trials = self._read("trials", scan, drop, False)
        rows = (self._read("cases", scan, drop, as_categorical) if cases else
                (categorical(CASES_SCHEMA) if as_categorical else CASES_SCHEMA).empty_table())
        problems = dict(scan.problems)
        problems.update({name: reason for name, reason in drop.values()})
        if drop:
            keep = pa.array(sorted(set(scan.trials) - set(drop)), pa.string())
            trials, rows = (t.filter(pc.is_in(t["trial_id"].cast(pa.string()), keep))
                            for t in (trials, rows))
        self.problems = problems
        return trials, rows, {trial_id: name for trial_id, (name, _) in drop.items()}

    def read(self, scan: Scan | None = None, *, cases: bool = True,
             as_categorical: bool = False) -> StoredResults:
        """The rows of the stored trials of ``scan`` (a new scan when None): the ``trials``
        table and, with ``cases``, the ``cases`` table (else an empty one), whose string
        columns are pandas categoricals with ``as_categorical``. A trial whose data turn out
        unreadable is left out of both tables and of ``finished``, its file named in
        ``problems``."""
        scan = scan or self.scan()
        trials, rows, dropped = self.tables(scan, cases, as_categorical)
        finished, incomplete = scan.finished - set(dropped), list(scan.incomplete)
        del scan  # its footers (some 70 KB per file once parsed) go before the conversion
        # self_destruct frees each column's Arrow buffers once converted (one pandas block per
        # column): a table and its frame are never both held whole
        return StoredResults(trials.to_pandas(self_destruct=True, split_blocks=True),
                             rows.to_pandas(self_destruct=True, split_blocks=True),
                             finished, incomplete, self.problems)

    def trials(self) -> pd.DataFrame:
        """One row per stored trial (any status)."""
        return self.read(cases=False).trials

    def cases(self) -> pd.DataFrame:
        """Case rows of the stored trials."""
        return self.read().cases

    def stored_summary(self, trial_id: str) -> dict[str, Any] | None:
        """The summary of a trial whose result is stored whole (``ok``/``diverged``), else
        None. Looks up that trial's files only."""
        scan = self.scan({trial_id})
        if trial_id not in scan.finished:
            return None
        trials, rows, dropped = self.tables(scan, cases=True, as_categorical=False)
        if dropped:
            return None
        return summarise(trials.to_pylist()[0], rows.to_pylist())
