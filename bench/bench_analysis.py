"""Benchmark: the report of a 1,000-trial study with one million ``cases`` rows, against a plain
Parquet read of the same files.

Generates (once; reused when ``--data`` already holds it) a synthetic study through the results
writer — one Parquet file per trial in ``cases/`` and ``trials/`` — with the papers' grids for
8 techniques (44 settings) x 5 training fractions x 5 seeds, cut to the first 1,000 trials (a
study still running), 250 test cases x 2 foreground classes x with/without post-processing =
1,000 rows per trial (``--compact`` also compacts it). Then times, side by side with a plain
``pyarrow.dataset`` read of ``cases/`` and ``trials/`` into pandas (no checks), each with its
ratio to that read:

* the finished check alone (footers of 2,000 files);
* loading: the finished check, reading the rows of the stored trials, categoricals;
* the whole report without figures, loading included, in a fresh process, with that process's
  peak memory above its imports against the size of the Arrow tables read;
* each table as the report builds it: the aggregates shared by one class's tables
  (``ClassTables``), then the comparison, chosen-hyperparameter, importance (exact functional
  ANOVA on full grids, optuna's fANOVA elsewhere: the adversarial and margin calibration
  sweeps list their settings) and sensitivity tables of every class, and the logit shift
  table.

    python bench/bench_analysis.py [--data /tmp/analysis-bench] [--trials 1000] [--cases 250]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

from analysis import hyperparameter_importance, load_results, logit_shift_table, write_report
from analysis._synthetic import GRIDS, write_study
from analysis.report import BLOCKS
from analysis.tables import ClassTables
from study.compact import compact
from study.results import ResultStore

FRACTIONS = (0.05, 0.1, 0.2, 0.5, 1.0)
SEEDS = (0, 1, 2, 3, 4)
CLASS = ["dataset", "model", "class_name"]


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _line(label: str, seconds: float, plain: float | None = None) -> None:
    ratio = f"   x{seconds / plain:5.2f} the plain read" if plain else ""
    print(f"{label:<52} {seconds:8.2f} s{ratio}", flush=True)


def _plain_read(sources: dict[str, str | list[str]]) -> tuple[list, int]:
    """Every row of both tables into pandas with no checks (the floor for loading), and the
    bytes of the Arrow tables read."""
    tables = [ds.dataset(source, format="parquet").to_table() for source in sources.values()]
    return [t.to_pandas() for t in tables], sum(t.nbytes for t in tables)


def _resident() -> int:
    """This process's resident memory now, in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def _report_process(root: str) -> None:
    """Load and write the report without figures; print its seconds and peak memory above
    the imports (bytes) as JSON: run in a fresh process by ``main``."""
    before = _resident()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_report(load_results(root), out, figures=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps({"seconds": seconds, "peak": peak}))


def _classes(cases):
    return [ClassTables(rows, *key) for key, rows in cases.groupby(CLASS, observed=True)]


def _sensitivity(classes):
    return [t.sensitivity(fraction, postprocessed) for t in classes for fraction in t.fractions()
            for _, postprocessed in BLOCKS if t.has_block(fraction, postprocessed)]


def _importance(classes):
    return [hyperparameter_importance(t.rows, t.dataset, t.model, t.class_name) for t in classes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "analysis-bench"))
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=250)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--compact", action="store_true",
                        help="compact the study first (study.compact); the plain read then "
                        "reads the compacted files")
    parser.add_argument("--report-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = Path(args.data)
    if args.report_process:
        _report_process(str(root))
        return
    stamp = root / f".trials-{args.trials}-cases-{args.cases}"
    if args.regenerate or not stamp.exists():
        shutil.rmtree(root, ignore_errors=True)
        settings = sum(len(g) for g in GRIDS.values())
        print(f"generating {args.trials} trials ({settings} settings x {len(FRACTIONS)} "
              f"fractions x {len(SEEDS)} seeds, cut) x {args.cases * 4} rows in {root}")
        _, seconds = _timed(write_study, root, fractions=FRACTIONS, seeds=SEEDS,
                            cases=args.cases, max_trials=args.trials, diverged_every=97)
        _line("generate (through the results writer)", seconds)
        stamp.touch()
    if args.compact:
        done, seconds = _timed(compact, str(root))
        _line(f"compact ({len(done.moved)} trials moved)", seconds)
    sources = {table: (sorted(str(p) for p in (root / "compacted").glob(f"*.{table}.parquet"))
                       if args.compact else str(root / table)) for table in ("cases", "trials")}
    ((plain_cases, _), arrow_bytes), plain_s = _timed(_plain_read, sources)
    _line(f"plain pyarrow.dataset read ({len(plain_cases):,} rows)", plain_s)
    del plain_cases
    report = subprocess.run([sys.executable, __file__, "--data", str(root), "--report-process"],
                            capture_output=True, text=True, check=True)
    measured = json.loads(report.stdout.splitlines()[-1])
    _line("whole report without figures, load included", measured["seconds"], plain_s)
    print(f"  (fresh process; peak memory above its imports {measured['peak'] / 2**20:.0f} MiB "
          f"= x{measured['peak'] / arrow_bytes:.2f} the {arrow_bytes / 2**20:.0f} MiB of Arrow "
          "tables read)")
    finished, seconds = _timed(ResultStore(str(root)).finished_ids)
    _line(f"finished check ({len(finished)} finished)", seconds, plain_s)
    results, load_s = _timed(load_results, str(root))
    _line("load: finished check + read + categoricals", load_s, plain_s)
    cases = results.cases
    print(f"  {len(results.trials)} trials, {len(cases):,} cases rows, "
          f"{cases.memory_usage(deep=True).sum() / 2**20:.0f} MiB in pandas")
    classes, seconds = _timed(_classes, cases)
    _line(f"  aggregates shared by a class's tables ({len(classes)})", seconds, plain_s)
    for label, function in (
            ("comparison tables (per class, both blocks)",
             lambda: [t.comparison(pp) for t in classes for _, pp in BLOCKS]),
            ("best-hyperparameter tables (per class)",
             lambda: [t.best_hyperparameters() for t in classes]),
            ("importance tables (per class; exact on full grids)",
             lambda: _importance(classes)),
            ("sensitivity tables (all blocks)", lambda: _sensitivity(classes)),
            ("logit-shift table (JSON logit statistics)",
             lambda: logit_shift_table(results.trials))):
        result, seconds = _timed(function)
        _line(f"  {label}", seconds, plain_s)
        if label.startswith("importance") and result and result[0].estimated:
            print(f"  (estimated with optuna's fANOVA, no full grid: "
                  f"{', '.join(result[0].estimated)})")


if __name__ == "__main__":
    main()
