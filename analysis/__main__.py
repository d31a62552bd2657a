"""``python -m analysis PATH --out DIR``: write a study's report (tables and figures).

PATH is a study's results folder (holding ``cases/`` and ``trials/``; local or ``s3://...``) or
the study folder above it (``<storage>/<study>``); in the latter case the planned trials in its
``study.json`` tell how many trials have no result yet. Malformed Parquet files are skipped and
listed in the report (``--strict`` stops on them instead, naming file and column).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs

from analysis.load import ResultsError, load_results
from analysis.report import write_report
from study.report_options import add_report_options, report_options
from study.results import filesystem


def _locate(path: str) -> tuple[str, str | None]:
    """(results URI, study.json path or None) for a results folder or a study folder."""
    fs, root = filesystem(path)
    root = root.rstrip("/")
    base = path.rstrip("/")
    if fs.get_file_info(f"{root}/results").type == pafs.FileType.Directory:
        plan = f"{root}/study.json"
        found = fs.get_file_info(plan).type == pafs.FileType.File
        return f"{base}/results", plan if found else None
    return base, None


def _pending(path: str, plan: str | None, finished: set[str]) -> list[dict] | None:
    """Planned trials (``study.json``'s ``trials``) without a stored ok/diverged result."""
    if plan is None:
        return None
    fs, _ = filesystem(path)
    with fs.open_input_stream(plan) as stream:
        trials = json.loads(stream.read()).get("trials", [])
    return [t for t in trials if t.get("trial_id") not in finished]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="results folder (cases/, trials/) or study folder")
    add_report_options(parser, out_required=True)
    args = parser.parse_args(argv)
    say = (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))
    start = time.monotonic()
    try:
        results_uri, plan = _locate(args.path)
        results = load_results(results_uri, errors="raise" if args.strict else "skip")
        pending = _pending(args.path, plan, results.finished_ids())
        title = args.title or f"Study {Path(results_uri.rstrip('/')).parent.name or results_uri}"
        paths = write_report(results, args.out, title=title,
                             missing=len(pending) if pending else 0, pending=pending,
                             **report_options(args, printer=say))
    except (ResultsError, FileNotFoundError, ValueError) as error:
        print(f"analysis: error: {error}", file=sys.stderr)
        return 2
    figures = sum(p.suffix == ".png" for p in paths)
    tables = sum(p.suffix == ".csv" for p in paths)
    say(f"{tables} table(s) and {figures} figure(s) in {time.monotonic() - start:.1f} s; "
        f"report: {paths[-1]} (and {paths[-2].name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
