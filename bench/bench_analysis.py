"""Benchmark: the report of a 1,000-trial study with one million ``cases`` rows, from its
per-trial files and from the same study compacted, each against a plain Parquet read of the
same files.

Generates (once; reused when ``--data`` already holds it) a synthetic study through the results
writer in ``DATA/per-trial`` — one Parquet file per trial in ``cases/`` and ``trials/`` — with
the papers' grids for 8 techniques (44 settings) x 5 training fractions x 5 seeds, cut to the
first 1,000 trials (a study still running), 250 test cases x 2 foreground classes x with/without
post-processing = 1,000 rows per trial, and a copy of it in ``DATA/compacted`` compacted by
``study.compact.compact`` (what ``study compact NAME`` runs: one part of two files). Then, for
both layouts side by side:

* a plain ``pyarrow.dataset`` read of the ``cases`` and ``trials`` files into pandas (no
  checks): the floor for loading, and the bytes of the Arrow tables it read;
* the whole report without figures, loading included, in a fresh process: its seconds (and
  CPU seconds), their ratio to the plain read, the tables it wrote and its seconds per table,
  and the process's peak memory above its imports against the Arrow bytes read;
* loading alone: the finished check, reading the rows of the stored trials, categoricals.

Then, from the compacted layout's loaded results, each table as the report builds it: the
aggregates shared by one class's tables (``ClassTables``), the comparison, chosen
hyperparameter, importance (exact functional ANOVA on full grids, optuna's fANOVA elsewhere:
the adversarial and margin calibration sweeps list their settings) and sensitivity tables of
every class, the per-class table, the logit statistics (JSON parsed once) with the logit
shift table and histograms, and the rendering of every table in four formats. The targets
(on 2 cores): every table within 3 s, loading included; peak memory at most twice the Arrow
tables read. Timings on a shared machine are noisy: the load average is printed before and
after.

    python bench/bench_analysis.py [--data /tmp/analysis-bench] [--trials 1000] [--cases 250]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from analysis import (
    hyperparameter_importance,
    load_results,
    logit_histograms,
    logit_shift_table,
    logit_statistics,
    per_class_table,
    write_report,
)
from analysis._synthetic import GRIDS, write_study
from analysis.render import (
    Grid,
    best_hyperparameters_grid,
    comparison_grid,
    importance_grid,
    logit_shift_grid,
    per_class_grid,
    sensitivity_grid,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)
from analysis.report import BLOCKS
from analysis.tables import ClassTables
from study.compact import compact
from study.results import ResultStore

FRACTIONS = (0.05, 0.1, 0.2, 0.5, 1.0)
SEEDS = (0, 1, 2, 3, 4)
CLASS = ["dataset", "model", "class_name"]
LAYOUTS = ("per-trial", "compacted")
SECONDS_PER_TABLE, MEMORY_RATIO = 3.0, 2.0  # the targets


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _line(label: str, seconds: float, plain: float | None = None) -> None:
    ratio = f"   x{seconds / plain:5.2f} the plain read" if plain else ""
    print(f"{label:<58} {seconds:8.2f} s{ratio}", flush=True)


def _row(label: str, *cells: str) -> None:
    print(f"{label:<46}" + "".join(f"{cell:>20}" for cell in cells), flush=True)


def _sources(root: Path) -> dict[str, str | list[str]]:
    """The files of each table: a folder of per-trial files, or the compacted parts."""
    parts = root / "compacted"
    return {table: (sorted(str(p) for p in parts.glob(f"*.{table}.parquet")) if parts.exists()
                    else str(root / table)) for table in ("cases", "trials")}


def _plain_read(sources: dict[str, str | list[str]]) -> tuple[int, int]:
    """Every row of both tables into pandas with no checks (the floor for loading): the bytes
    of the Arrow tables read and the files read."""
    datasets = [ds.dataset(source, format="parquet") for source in sources.values()]
    tables = [d.to_table() for d in datasets]
    for table in tables:
        table.to_pandas()
    return sum(t.nbytes for t in tables), sum(len(d.files) for d in datasets)


def _resident(field: str = "VmRSS") -> int:
    """This process's resident memory now (``VmHWM``: its peak), in bytes (Linux). Not
    ``getrusage``'s ``ru_maxrss``: a child keeps the peak of the parent it was forked from."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def _report_process(root: str) -> None:
    """Load and write the report without figures; print its seconds, CPU seconds, peak memory
    above the imports (bytes; optuna and scikit-learn, which the report imports when it
    estimates importance, count in both) and the tables written as JSON: run in a fresh
    process by ``main``."""
    before, cpu = _resident(), _cpu()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_report(load_results(root), out, figures=False)
        seconds = time.perf_counter() - start
        tables = len([p for p in Path(out).glob("*.md") if p.name != "index.md"])
    peak = _resident("VmHWM") - before
    print(json.dumps({"seconds": seconds, "cpu": _cpu() - cpu, "peak": peak,
                      "tables": tables}))


def _prepare(root: Path, trials: int, cases: int, regenerate: bool) -> dict[str, Path]:
    """The per-trial study and its compacted copy (generated when missing)."""
    stores = {layout: root / layout for layout in LAYOUTS}
    stamp = root / f".trials-{trials}-cases-{cases}"
    if regenerate or not stamp.exists():
        shutil.rmtree(root, ignore_errors=True)
        settings = sum(len(g) for g in GRIDS.values())
        print(f"generating {trials} trials ({settings} settings x {len(FRACTIONS)} fractions x "
              f"{len(SEEDS)} seeds, cut) x {cases * 4} rows in {stores['per-trial']}")
        _, seconds = _timed(write_study, stores["per-trial"], fractions=FRACTIONS, seeds=SEEDS,
                            cases=cases, max_trials=trials, diverged_every=97)
        _line("generate (through the results writer)", seconds)
        shutil.copytree(stores["per-trial"], stores["compacted"])
        done, seconds = _timed(compact, str(stores["compacted"]))
        _line(f"compact a copy ({len(done.moved)} trials moved; study.compact)", seconds)
        stamp.touch()
    return stores


def _layouts(stores: dict[str, Path]) -> None:
    """Plain read, whole report and loading of each layout, side by side."""
    measured: dict[str, dict] = {}
    for layout, store in stores.items():
        cpu = _cpu()
        (arrow_bytes, files), plain_s = _timed(_plain_read, _sources(store))
        report = subprocess.run([sys.executable, __file__, "--data", str(store),
                                 "--report-process"], capture_output=True, text=True,
                                check=True)
        measured[layout] = {"plain": plain_s, "plain_cpu": _cpu() - cpu, "arrow": arrow_bytes,
                            "files": files,
                            **json.loads(report.stdout.splitlines()[-1])}
        measured[layout]["load"] = _timed(load_results, str(store))[1]
    columns = [measured[layout] for layout in LAYOUTS]
    _row("", *LAYOUTS)
    _row("files read (cases + trials)", *[f"{m['files']:,}" for m in columns])
    _row("plain pyarrow.dataset read: s (CPU s)",
         *[f"{m['plain']:.2f} ({m['plain_cpu']:.2f})" for m in columns])
    _row("whole report, no figures, load incl.: s",
         *[f"{m['seconds']:.2f} (x{m['seconds'] / m['plain']:.2f})" for m in columns])
    _row("  its CPU s (user + sys)", *[f"{m['cpu']:.2f}" for m in columns])
    _row("  tables written", *[str(m["tables"]) for m in columns])
    _row(f"  seconds per table (target <= {SECONDS_PER_TABLE:g})",
         *[f"{m['seconds'] / m['tables']:.2f} "
           f"{'met' if m['seconds'] / m['tables'] <= SECONDS_PER_TABLE else 'NOT met'}"
           for m in columns])
    _row(f"  every table in {SECONDS_PER_TABLE:g} s (whole report)",
         *["met" if m["seconds"] <= SECONDS_PER_TABLE else "NOT met" for m in columns])
    _row(f"  peak memory / Arrow bytes (target <= {MEMORY_RATIO:g})",
         *[f"x{m['peak'] / m['arrow']:.2f} "
           f"{'met' if m['peak'] <= MEMORY_RATIO * m['arrow'] else 'NOT met'}"
           for m in columns])
    _row("  (peak above imports / Arrow tables read, MiB)",
         *[f"{m['peak'] / 2**20:.0f} / {m['arrow'] / 2**20:.0f}" for m in columns])
    _row("load: finished check + read + categoricals: s",
         *[f"{m['load']:.2f} (x{m['load'] / m['plain']:.2f})" for m in columns])


def _render(tables: list[tuple[Grid, pd.DataFrame]]) -> None:
    for grid, frame in tables:
        to_markdown(grid), to_latex(grid), to_html(grid), to_csv(frame)


def _tables(store: Path) -> None:
    """Each table as the report builds it, from the loaded results of ``store``."""
    results, load_s = _timed(load_results, str(store))
    cases, trials = results.cases, results.trials
    print(f"\ntables from {store} ({len(trials)} trials, {len(cases):,} cases rows, "
          f"{cases.memory_usage(deep=True).sum() / 2**20:.0f} MiB in pandas; loaded in "
          f"{load_s:.2f} s):")
    spent = []

    def step(label: str, build):
        result, seconds = _timed(build)
        spent.append(seconds)
        _line(f"  {label}", seconds)
        return result

    keys = list(cases[CLASS].drop_duplicates().itertuples(index=False))
    classes = step(f"aggregates shared by a class's tables ({len(keys)} classes)",
                   lambda: [ClassTables(cases, *key) for key in keys])
    comparison = step("comparison tables (per class, both blocks)",
                      lambda: [c.comparison(pp) for c in classes for _, pp in BLOCKS])
    chosen = step("best-hyperparameter tables (per class)",
                  lambda: [c.best_hyperparameters() for c in classes])
    importance = step("importance tables (per class; exact on full grids)", lambda: [
        hyperparameter_importance(c.rows, c.dataset, c.model, c.class_name) for c in classes])
    if importance[0].estimated:
        print(f"  (estimated with optuna's fANOVA, no full grid: "
              f"{', '.join(importance[0].estimated)})")
    sensitivity = step("sensitivity tables (all blocks)", lambda: [
        c.sensitivity(f, pp) for c in classes for f in c.fractions() for _, pp in BLOCKS
        if c.has_block(f, pp)])
    per_class = step("per-class table (000 Table V)",
                     lambda: per_class_table(cases, classes[0].dataset, classes[0].model))
    statistics = step("logit statistics (JSON of every trial, parsed once)",
                      lambda: logit_statistics(trials))
    shift = step("logit shift table and histograms", lambda: (
        logit_shift_table(trials, statistics), logit_histograms(trials, statistics)))[0]
    step("every table laid out, in Markdown, LaTeX, HTML and CSV", lambda: _render([
        *[(comparison_grid(t, ""), t) for t in comparison],
        *[(best_hyperparameters_grid(t, ""), t) for t in chosen],
        *[(importance_grid(i.table, "", i.skipped), i.table) for i in importance],
        *[(sensitivity_grid({"": t}, ""), t) for t in sensitivity],
        (per_class_grid(per_class, ""), per_class), (logit_shift_grid(shift, ""), shift)]))
    _line("  sum (the report also writes the files and its index)", sum(spent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "analysis-bench"))
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=250)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--report-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report_process:
        _report_process(args.data)
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; pyarrow "
          f"{pa.__version__}, memory pool {pa.default_memory_pool().backend_name}")
    stores = _prepare(Path(args.data), args.trials, args.cases, args.regenerate)
    finished, seconds = _timed(ResultStore(str(stores["per-trial"])).finished_ids)
    _line(f"finished check, per-trial ({len(finished)} finished)", seconds)
    _layouts(stores)
    _tables(stores["compacted"])
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
