"""Benchmark: the report of a 1,000-trial study with one million ``cases`` rows, against a plain
Parquet read of the same files.

Generates (once; reused when ``--data`` already holds it) a synthetic study through the results
writer — one Parquet file per trial in ``cases/`` and ``trials/`` — with the papers' grids for
8 techniques (44 settings) x 5 training fractions x 5 seeds, cut to the first 1,000 trials (a
study still running), 250 test cases x 2 foreground classes x with/without post-processing =
1,000 rows per trial (``--compact`` also compacts it). Then times, in one process, side by side
with a plain ``pyarrow.dataset`` read of ``cases/`` and ``trials/`` into pandas (no checks):

* the finished check alone (footers of 2,000 files);
* loading: the finished check, reading the rows of the stored trials, categoricals;
* the whole report without figures, loading included;
* each table of it: sensitivity, best-hyperparameter, comparison, fANOVA importance (needs
  scikit-learn; skipped with a note otherwise), logit shift.

    python bench/bench_analysis.py [--data /tmp/analysis-bench] [--trials 1000] [--cases 250]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

from analysis import (
    best_hyperparameters,
    comparison_table,
    hyperparameter_importance,
    load_results,
    logit_shift_table,
    write_report,
)
from analysis._synthetic import GRIDS, write_study
from analysis.tables import blocks, sensitivity_from_block
from study.compact import compact
from study.results import ResultStore

FRACTIONS = (0.05, 0.1, 0.2, 0.5, 1.0)
SEEDS = (0, 1, 2, 3, 4)


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _line(label: str, seconds: float, plain: float | None = None) -> None:
    ratio = f"{seconds:8.2f} s   x{seconds / plain:5.1f} the plain read" if plain else \
        f"{seconds:8.2f} s"
    print(f"{label:<52} {ratio}", flush=True)


def _plain_read(sources: dict[str, str | list[str]]):
    """Every row of both tables into pandas with no checks: the floor for loading."""
    return [ds.dataset(source, format="parquet").to_table().to_pandas()
            for source in sources.values()]


def _report(root: Path, out: str):
    return write_report(load_results(str(root)), out, figures=False)


def _sensitivity_tables(cases):
    return [sensitivity_from_block(rows) for _, rows in blocks(cases)]


def _per_class(cases, function, **kwargs):
    return [function(cases, dataset, model=model, class_name=class_name, **kwargs)
            for (dataset, model, class_name), _ in cases.groupby(
                ["dataset", "model", "class_name"], observed=True)]


def _comparisons(cases):
    return (_per_class(cases, comparison_table, postprocessed=True)
            + _per_class(cases, comparison_table, postprocessed=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "analysis-bench"))
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=250)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--compact", action="store_true",
                        help="compact the study first (study.compact); the plain read then "
                        "reads the compacted files")
    args = parser.parse_args()
    root = Path(args.data)
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
    (plain_cases, _), plain_s = _timed(_plain_read, sources)
    _line(f"plain pyarrow.dataset read ({len(plain_cases):,} rows)", plain_s)
    finished, seconds = _timed(ResultStore(str(root)).finished_ids)
    _line(f"finished check ({len(finished)} finished)", seconds, plain_s)
    results, load_s = _timed(load_results, str(root))
    _line("load: finished check + read + categoricals", load_s, plain_s)
    cases = results.cases
    print(f"  {len(results.trials)} trials, {len(cases):,} cases rows, "
          f"{cases.memory_usage(deep=True).sum() / 2**20:.0f} MiB in pandas")
    with tempfile.TemporaryDirectory() as out:
        paths, report_s = _timed(_report, root, out)
    _line("whole report without figures, load included", report_s, plain_s)
    print(f"  {len(paths)} files written; the report itself {report_s - load_s:.2f} s")
    for label, function, *extra in (
            ("sensitivity tables (all blocks)", _sensitivity_tables),
            ("best-hyperparameter tables (per class)", _per_class, best_hyperparameters),
            ("comparison tables (per class, both blocks)", _comparisons),
            ("fANOVA importance tables (per class)", _per_class, hyperparameter_importance)):
        result, seconds = _timed(function, cases, *extra)
        _line(f"  {label}", seconds)
        if function is _per_class and extra[0] is hyperparameter_importance \
                and result and result[0].unavailable:
            print(f"  ({result[0].unavailable})")
    _, seconds = _timed(logit_shift_table, results.trials)
    _line("  logit-shift table (JSON logit statistics)", seconds)


if __name__ == "__main__":
    main()
