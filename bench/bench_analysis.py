"""Benchmark: every table of a 1,000-trial study with one million ``cases`` rows.

Generates (once; reused when ``--data`` already holds it) a synthetic study in the results
store's layout — one Parquet file per trial in ``cases/`` and ``trials/`` — with the papers'
grids for 8 techniques (44 settings) x 5 training fractions x 5 seeds, cut to the first 1,000
trials (a study still running), 250 test cases x 2 foreground classes x with/without
post-processing = 1,000 rows per trial. Then times, in one process:

* loading (schema check of all 2,000 files + read + completeness join),
* every sensitivity table (per dataset, model, class, fraction, post-processing),
* every best-hyperparameter and comparison table (per class; both blocks),
* the fANOVA importance tables (needs scikit-learn; skipped with a note otherwise),
* the logit-shift table (JSON logit statistics of 1,000 trials),
* the whole report folder without figures (all tables in 4 formats, both indexes).

    python bench/bench_analysis.py [--data /tmp/analysis-bench] [--trials 1000] [--cases 250]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

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

FRACTIONS = (0.05, 0.1, 0.2, 0.5, 1.0)
SEEDS = (0, 1, 2, 3, 4)


def _timed(label: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:<58} {seconds:8.2f} s", flush=True)
    return result, seconds


def _sensitivity_tables(cases):
    return [sensitivity_from_block(rows) for _, rows in blocks(cases)]


def _per_class(cases, function, **kwargs):
    out = []
    for (dataset, model, class_name), _ in cases.groupby(["dataset", "model", "class_name"]):
        out.append(function(cases, dataset, model=model, class_name=class_name, **kwargs))
    return out


def _comparisons(cases):
    return (_per_class(cases, comparison_table, postprocessed=True)
            + _per_class(cases, comparison_table, postprocessed=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "analysis-bench"))
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=250)
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()
    root = Path(args.data)
    stamp = root / f".trials-{args.trials}-cases-{args.cases}"
    if args.regenerate or not stamp.exists():
        shutil.rmtree(root, ignore_errors=True)
        settings = sum(len(g) for g in GRIDS.values())
        print(f"generating {args.trials} trials ({settings} settings x {len(FRACTIONS)} "
              f"fractions x {len(SEEDS)} seeds, cut) x {args.cases * 4} rows in {root}")
        _timed("generate (write 2 Parquet files per trial)", write_study, root,
               fractions=FRACTIONS, seeds=SEEDS, cases=args.cases, max_trials=args.trials,
               diverged_every=97)
        stamp.touch()
    results, load_s = _timed("load: check 2,000 file schemas, read, join", load_results,
                             str(root))
    cases = results.cases
    print(f"  {len(results.trials)} trials, {len(cases):,} cases rows, "
          f"{cases.memory_usage(deep=True).sum() / 2**20:.0f} MiB in pandas")
    times = {"load": load_s}
    tables, times["sensitivity"] = _timed("sensitivity tables (all blocks)", _sensitivity_tables,
                                          cases)
    print(f"  {len(tables)} tables, {sum(len(t) for t in tables)} rows")
    _, times["best"] = _timed("best-hyperparameter tables (per class)", _per_class, cases,
                              best_hyperparameters)
    _, times["comparison"] = _timed("comparison tables (per class, both blocks)", _comparisons,
                                    cases)
    importance, times["importance"] = _timed("fANOVA importance tables (per class)", _per_class,
                                             cases, hyperparameter_importance)
    if importance and importance[0].unavailable:
        print(f"  ({importance[0].unavailable})")
    _, times["logit"] = _timed("logit-shift table (1,000 trials' JSON)", logit_shift_table,
                               results.trials)
    every = sum(times.values())
    print(f"{'every table, from Parquet (sum of the above)':<58} {every:8.2f} s")
    with tempfile.TemporaryDirectory() as out:
        paths, _ = _timed("whole report without figures (load excluded)", write_report, results,
                          out, figures=False)
    print(f"  {len(paths)} files written")


if __name__ == "__main__":
    main()
