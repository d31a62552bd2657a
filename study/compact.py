"""`study compact`: merge finished trials' small files into one larger Parquet file per table.

A study writes two small files per trial (``study.results``); a finished check then costs two
footer reads per trial, and reading the tables thousands of small requests. Compaction moves
the finished trials' rows into ``compacted/<part>.cases.parquet`` and
``compacted/<part>.trials.parquet`` and records them in ``compacted/manifest.json``, which the
results reader uses in place of their own files. The steps, each safe to be killed after:

1. write the part's two files (whole or absent; the manifest does not name them yet, so a
   reader ignores them);
2. replace the manifest by one that also names the part and its trials (one atomic rename or
   upload: the switch; a trial's own files of the same write are now ignored leftovers);
3. delete what a fresh scan calls garbage: those leftovers, compacted files the manifest does
   not name (from an interrupted run, or parts whose trials were all compacted again), and
   temporary files.

No row is lost or counted twice at any point, and running it again finishes an interrupted
run (it is idempotent). Only trials stored ``ok`` or ``diverged`` move; failed and damaged
trials keep their own files (they run again). A trial rerun after compaction writes its own
files again, which win over its compacted rows until the next compaction moves them.
Compaction refuses to run while trials of the study are running (a fresh heartbeat): run one
at a time, when the study is stopped.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow.fs as pafs

from study.progress import read_beats
from study.results import MANIFEST, Manifest, PartFile, ResultStore, Scan
from study.status import running


@dataclass(frozen=True)
class Compaction:
    """What one compaction did: the trials it moved into the new ``part`` (None when there
    was nothing to move) and the files it deleted."""

    moved: list[str]
    part: str | None
    deleted: list[str]


def _write_part(store: ResultStore, scan: Scan, ids: list[str]
                ) -> tuple[str, dict[str, PartFile], list[str]]:
    """Write the rows of ``ids`` as a new part; return its name, its manifest entry and the
    trials in it (those whose data turned out unreadable stay where they are)."""
    trials, cases, dropped = store.tables(scan.only(ids))
    ids = [t for t in ids if t not in dropped]
    part = f"part-{uuid.uuid4().hex[:16]}"
    entry: dict[str, PartFile] = {}
    for table, rows in (("cases", cases), ("trials", trials)):
        rows = rows.sort_by([("trial_id", "ascending")])
        path = store.path("compacted", f"{part}.{table}.parquet")
        store.put_table(path, rows)
        entry[table] = {"size": store.fs.get_file_info(path).size, "rows": rows.num_rows}
    return part, entry, ids


def compact(results: str | ResultStore) -> Compaction:
    """Compact the study results under ``results`` (a results URI, or a ``ResultStore``):
    move every finished trial stored in its own files into one new part, switch the
    manifest, then delete the garbage. Raises ``ValueError`` while trials are running."""
    store = results if isinstance(results, ResultStore) else ResultStore(results)
    now = datetime.now(timezone.utc)
    busy = sorted(t for t, beat in read_beats(store.uri)[0].items() if running(beat, now))
    if busy:
        raise ValueError(f"{store.uri}: {len(busy)} trial(s) are running ({busy[0]}, ...): "
                         "compact when the study has stopped")
    scan = store.scan()
    if f"compacted/{MANIFEST}" in scan.problems:
        raise ValueError(f"{store.uri}/compacted/{MANIFEST}: "
                         f"{scan.problems[f'compacted/{MANIFEST}']}; not compacting")
    moving = sorted(t for t in scan.finished if scan.trials[t].part is None)
    part = None
    if moving:
        part, files, moving = _write_part(store, scan, moving)
        if moving:  # (none when every moving trial turned out unreadable)
            manifest: Manifest = {"format": 1, "parts": dict(scan.manifest["parts"]),
                                  "trials": dict(scan.manifest["trials"])}
            manifest["parts"][part] = files
            for trial_id in moving:
                stored = scan.trials[trial_id]
                manifest["trials"][trial_id] = {"part": part, "status": stored.status,
                                                "case_rows": stored.case_rows,
                                                "write": stored.write}
            live = {entry["part"] for entry in manifest["trials"].values()}
            manifest["parts"] = {p: f for p, f in manifest["parts"].items() if p in live}
            text = json.dumps(manifest, sort_keys=True).encode()

            def write(path: str) -> None:
                with store.fs.open_output_stream(path) as stream:
                    stream.write(text)

            store.put(store.path("compacted", MANIFEST), write)
    deleted = []
    for path in store.scan().garbage:
        if store.fs.get_file_info(path).type == pafs.FileType.File:
            store.fs.delete_file(path)
            deleted.append(path)
    return Compaction(moving, part if moving else None, deleted)

