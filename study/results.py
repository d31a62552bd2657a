"""The Parquet results store: the contract between the trials and the analysis.

Layout under a study's results URI (a local path or any pyarrow filesystem URI, ``s3://...``)::

    <results>/cases/<trial_id>.parquet    one row per (case, class, postprocessed)
    <results>/trials/<trial_id>.parquet   one row per trial
    <results>/running/<trial_id>.json     heartbeat of a trial in progress (for `study status`)

Exactly once, whole or not at all: a trial's rows are one file per table named by its
``trial_id``; each file is written to a hidden temporary name (``.tmp-...``, which Parquet
dataset readers skip) and renamed into place on local filesystems, or uploaded in one PUT on
object stores. A trial that runs again (a resumed or retried trial) replaces its files instead
of adding rows. ``cases`` is written before ``trials``, so a ``trials`` row means the trial's
results are complete; readers join on it.

``cases`` rows carry the trial's ``status`` (``ok``, ``diverged``: metrics NaN, ``failed``) and
the ``split`` the case belongs to: ``"test"`` (the test set, which the papers' tables report)
or ``"validation"`` (cases held out of the training pool and evaluated the same way, for
choosing settings on data the tables do not report). Both tables carry the trial's ``variant``:
the label of a study experiment that reruns techniques of another under a changed regime
(``w/o augmentation``, ``80 % tumour``), null otherwise; the analysis reports each
(technique, variant) as its own method. ``split`` and ``variant`` joined the contract after
the first studies were written: a file without them is read as all ``"test"`` and no variant
(``LATER_COLUMNS``), and the writer takes rows without ``split`` as test rows.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.catalog import HYPERPARAMETERS

HP_COLUMNS = tuple(HYPERPARAMETERS)  # the hyperparameter names; columns hp_<name>

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
    pa.field("split", pa.string()),  # test | validation
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
    pa.field("train_cases", pa.int64()),
    pa.field("test_cases", pa.int64()),
    pa.field("code_version", pa.string()),
    pa.field("host", pa.string()),
    pa.field("device", pa.string()),
    # JSON: {split: {true class: {logit class: {mean, std, hist}}}} with the bin edges
    pa.field("logit_stats", pa.string()),
])

STATUSES = ("ok", "diverged", "failed")
FINISHED_STATUSES = ("ok", "diverged")  # a stored result that need not run again
TEST, VALIDATION = "test", "validation"
SPLITS = (TEST, VALIDATION)
# Columns added to the contract after results were first written, with the value a file
# written before them is read as holding in every row.
LATER_COLUMNS = {"split": TEST, "variant": None}


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


def identity_columns(trial_param: dict[str, Any]) -> dict[str, Any]:
    """The identity columns shared by both tables, from a trial's Tune param dict."""
    config = trial_param["config"]
    row = {
        "study": trial_param["study"],
        "trial_id": trial_param["trial_id"],
        "dataset": config["dataset"]["name"],
        "model": f"{config['model']['name']}-{config['model']['preset']}",
        "technique": config["technique"],
        "fraction": float(config["fraction"]),
        "seed": int(config["seed"]),
        "param_label": trial_param["param_label"],
        "variant": trial_param.get("variant"),
    }
    unknown = set(config["hp"]) - set(HP_COLUMNS)
    if unknown:
        raise ValueError(f"hyperparameters {sorted(unknown)} have no results column")
    row.update({HYPERPARAMETERS[name].column: config["hp"].get(name) for name in HP_COLUMNS})
    return row


def summarise(trial_row: dict[str, Any], case_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A trial's final metrics as reported to Tune: status, iterations, training time, the
    mean raw / post-processed DSC over its test case rows (``dsc_raw``, ``dsc_pp``) and over
    its validation case rows (``dsc_raw_validation``, ``dsc_pp_validation``); NaN where none
    is defined. Rows without ``split`` are test rows."""
    summary = {"status": trial_row["status"], "iterations_done": trial_row["iterations_done"],
               "train_seconds": trial_row["train_seconds"]}
    for split, tail in ((TEST, ""), (VALIDATION, "_validation")):
        for postprocessed, suffix in ((False, "raw"), (True, "pp")):
            values = [r["dsc"] for r in case_rows
                      if r.get("split", TEST) == split and r["postprocessed"] == postprocessed
                      and r["dsc"] is not None and not math.isnan(r["dsc"])]
            summary[f"dsc_{suffix}{tail}"] = sum(values) / len(values) if values else math.nan
    return summary


def filesystem(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of ``uri``: a URI (``s3://...``) through
    ``FileSystem.from_uri``, anything else an absolute local path."""
    if "://" in str(uri):
        return pafs.FileSystem.from_uri(str(uri))
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


class ResultStore:
    """Reads and writes one study's results under ``uri`` (local path or filesystem URI)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = filesystem(uri)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self.problems: dict[str, str] = {}

    def _dir(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def _write(self, table: str, name: str, frame: pa.Table) -> None:
        directory = self._dir(table)
        self.fs.create_dir(directory, recursive=True)
        final = f"{directory}/{name}.parquet"
        if not self._local:
            pq.write_table(frame, final, filesystem=self.fs)  # one PUT: atomic on object stores
            return
        temporary = f"{directory}/.tmp-{name}-{uuid.uuid4().hex}.parquet"
        try:
            pq.write_table(frame, temporary, filesystem=self.fs)
            self.fs.move(temporary, final)  # rename(2): atomic, replaces an older copy
        finally:
            if self.fs.get_file_info(temporary).type != pafs.FileType.NotFound:
                self.fs.delete_file(temporary)

    def write_trial(self, trial_row: dict[str, Any], case_rows: Sequence[dict[str, Any]]) -> None:
        """Store one finished trial: its ``cases`` rows, then its ``trials`` row. A case row
        without ``split`` is a test row."""
        if trial_row["status"] not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {trial_row['status']!r}")
        trial_id = trial_row["trial_id"]
        if any(row["trial_id"] != trial_id for row in case_rows):
            raise ValueError(f"case rows of another trial passed with trial {trial_id}")
        case_rows = [{**LATER_COLUMNS, **row} for row in case_rows]
        bad = sorted({repr(r["split"]) for r in case_rows if r["split"] not in SPLITS})
        if bad:
            raise ValueError(f"split: expected one of {SPLITS}, got {', '.join(bad)}")
        cases = pa.Table.from_pylist(case_rows, schema=CASES_SCHEMA)
        self._write("cases", trial_id, cases)
        self._write("trials", trial_id, pa.Table.from_pylist([trial_row], schema=TRIALS_SCHEMA))

    def _read(self, table: str, schema: pa.Schema) -> pd.DataFrame:
        """All rows of ``table``; files that cannot be read whole with ``schema`` are skipped
        and named in ``self.problems`` (``{trial_id: reason}``), so their trials run again."""
        directory = self._dir(table)
        if self.fs.get_file_info(directory).type != pafs.FileType.Directory:
            return schema.empty_table().to_pandas()
        dataset = ds.dataset(directory, filesystem=self.fs, format="parquet", schema=schema)
        required = set(schema.names) - set(LATER_COLUMNS)
        try:  # fast path, unless a footer lacks a column (the dataset would read it as null)
            if all(required <= set(pq.read_schema(path, filesystem=self.fs).names)
                   for path in dataset.files):
                return conform(dataset.to_table(), schema).to_pandas()
        except (pa.ArrowException, OSError):
            pass  # some file is damaged: find which, keep the others
        frames = []
        for path in dataset.files:
            try:
                frames.append(conform(pq.read_table(path, filesystem=self.fs), schema))
            except (pa.ArrowException, OSError, ValueError, KeyError) as error:
                trial_id = path.rsplit("/", 1)[-1].removesuffix(".parquet")
                self.problems[trial_id] = f"{path}: unreadable ({error})".splitlines()[0]
        return pa.concat_tables(frames or [schema.empty_table()]).to_pandas()

    def trials(self) -> pd.DataFrame:
        return self._read("trials", TRIALS_SCHEMA)

    def cases(self) -> pd.DataFrame:
        """Cases rows of trials whose ``trials`` row exists (complete trials only)."""
        cases = self._read("cases", CASES_SCHEMA)
        return cases[cases["trial_id"].isin(self.trials()["trial_id"])].reset_index(drop=True)

    def stored_summary(self, trial_id: str) -> dict[str, Any] | None:
        """The summary of a trial whose result is stored whole (``ok``/``diverged``), else
        None. Reads only that trial's two files."""
        paths = {table: f"{self._dir(table)}/{trial_id}.parquet" for table in ("trials", "cases")}
        try:
            rows = pq.read_table(paths["trials"], filesystem=self.fs).to_pylist()
            cases = pq.read_table(paths["cases"], filesystem=self.fs).to_pylist()
        except (pa.ArrowException, OSError):
            return None
        if len(rows) != 1 or rows[0]["status"] not in FINISHED_STATUSES:
            return None
        return summarise(rows[0], cases)

    def beat(self, trial_id: str, host: str, started_at: str) -> None:
        """Record that ``trial_id`` is running now (``running/<trial_id>.json``)."""
        directory = self._dir("running")
        self.fs.create_dir(directory, recursive=True)
        beat = {"host": host, "started_at": started_at,
                "updated_at": datetime.now(timezone.utc).isoformat()}
        with self.fs.open_output_stream(f"{directory}/{trial_id}.json") as stream:
            stream.write(json.dumps(beat).encode())

    def end_beat(self, trial_id: str) -> None:
        path = f"{self._dir('running')}/{trial_id}.json"
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    def beats(self) -> dict[str, dict[str, str]]:
        """The last heartbeat of every trial that started and has not ended cleanly."""
        directory = self._dir("running")
        if self.fs.get_file_info(directory).type != pafs.FileType.Directory:
            return {}
        beats = {}
        for info in self.fs.get_file_info(pafs.FileSelector(directory)):
            if info.base_name.endswith(".json"):
                try:
                    with self.fs.open_input_stream(info.path) as stream:
                        beats[info.base_name[:-5]] = json.loads(stream.read())
                except (OSError, ValueError):
                    continue  # a beat being rewritten right now
        return beats

    def finished_ids(self) -> set[str]:
        """Trials with a stored, readable result that need not run again (``ok`` or
        ``diverged``); a trial whose ``cases`` or ``trials`` file is damaged is not finished."""
        self.problems = {}
        trials = self.trials()
        self._read("cases", CASES_SCHEMA)
        finished = set(trials.loc[trials["status"].isin(FINISHED_STATUSES), "trial_id"])
        return finished - set(self.problems)
