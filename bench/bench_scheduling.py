"""Scheduling overhead of a study: what a trial costs besides its own work, and what the
finished check (run by every launch, resume, status and Tune restart) costs.

Default: runs a study (tests/data/tiny-study.yaml widened to N settings) with ``study.tune`` on
a local Ray and reports, from the stored ``trials`` rows and file times:

* Ray start and Tune set-up before the first trial function runs;
* per trial, inside the trial function: set-up (data loading, model build) = wall - train -
  evaluation, i.e. trial start to first training step plus the bookkeeping before the write;
* write latency: ``finished_at`` to the Parquet ``trials`` file's modification time;
* Tune's per-trial overhead: slot-seconds not spent inside trial functions, per trial;
* the cost of ``resume`` when every trial is already stored.

``--finished-check N`` instead writes an N-trial synthetic study (``--cases`` x 4 rows per
trial) and counts, through a filesystem that observes every call, the listings, opens, reads
and bytes read by ``ResultStore.finished_ids`` on the trials' own files, then after
``study.compact`` (no Ray needed). On S3 a listing is one request per 1,000 names, an open
given the listed size none, a read one ranged GET.

    python bench/bench_scheduling.py [--settings 6] [--cpus 2]
    python bench/bench_scheduling.py --finished-check 1000 [--cases 250]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
TINY = REPOSITORY / "tests" / "data" / "tiny-study.yaml"


def finished_check_cost(trials: int, cases: int) -> None:
    from analysis._synthetic import write_study
    from study.compact import compact

    sys.path.insert(0, str(REPOSITORY / "tests"))
    from test_store_faults import observed_store  # a filesystem counting every call

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "results"
        clock = time.time()
        write_study(root, fractions=(0.05, 0.1, 0.2, 0.5, 1.0), seeds=(0, 1, 2, 3, 4),
                    cases=cases, max_trials=trials)
        print(f"{trials} trials x {cases * 4} case rows written in {time.time() - clock:.0f} s")
        for label in ("own files", "compacted"):
            if label == "compacted":
                compact(str(root))
            files = [p for p in root.rglob("*") if p.is_file()]
            store, handler = observed_store(root)
            clock = time.perf_counter()
            finished = store.finished_ids()
            seconds = time.perf_counter() - clock
            counts = handler.counts
            print(f"{label}: {len(finished)} finished in {seconds:.2f} s; {len(files)} files, "
                  f"{sum(p.stat().st_size for p in files) / 2**20:.1f} MiB on disk; "
                  f"{counts['list']} listings, {counts['stat']} stats, "
                  f"{counts['open_input_file'] + counts['open_input_stream']} opens, "
                  f"{counts['reads']} reads, {counts['bytes'] / 2**20:.2f} MiB read "
                  f"({counts['bytes'] / max(len(finished), 1) / 1024:.1f} KiB per trial)")
        shutil.rmtree(root)


def scheduling(settings: int, cpus: int) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from study import tune
    from study.results import ResultStore
    from study.spec import TechniqueRun, load_study
    from study.trial import RunOptions
    from study.trials import expand

    spec = load_study(TINY)
    gammas = tuple({"gamma": 0.5 + 0.5 * i} for i in range(settings))
    spec = dataclasses.replace(spec, techniques=(TechniqueRun("vanilla", ({},)),
                                                 TechniqueRun("asym_focal", gammas)))
    trials = expand(spec)
    with tempfile.TemporaryDirectory() as storage:
        options = RunOptions(data_dir=f"{storage}/data", results_uri=f"{storage}/tiny/results",
                             threads=1)
        start = time.time()
        tune.ensure_ray(None, cpus)
        ray_ready = time.time()
        tune.launch(trials, storage, options, printer=lambda line: None)
        wall = time.time() - ray_ready
        rows = ResultStore(options.results_uri).trials()
        started = rows["started_at"].dt.tz_convert(timezone.utc)
        finished = rows["finished_at"].dt.tz_convert(timezone.utc)
        inside = (finished - started).dt.total_seconds()
        setup = inside - rows["train_seconds"] - rows["eval_seconds"]
        mtimes = [Path(options.results_uri, "trials", f"{t}.parquet").stat().st_mtime
                  for t in rows["trial_id"]]
        write = [m - f.timestamp() for m, f in zip(mtimes, finished, strict=True)]
        first_start = started.min().timestamp() - ray_ready
        slot_seconds = wall * cpus
        tune_overhead = (slot_seconds - inside.sum()) / len(rows)
        clock = time.time()
        tune.launch(trials, storage, options, printer=lambda line: None)
        resume_noop = time.time() - clock
    print(f"{len(rows)} trials on {cpus} CPUs (1 CPU each)")
    print(f"ray.init                              {ray_ready - start:6.2f} s")
    print(f"launch to first trial function        {first_start:6.2f} s")
    print(f"study wall (after ray.init)           {wall:6.2f} s")
    print(f"per trial: train / evaluation          {rows['train_seconds'].mean():6.2f} / "
          f"{rows['eval_seconds'].mean():.2f} s")
    print(f"per trial: set-up inside the function  {setup.mean():6.2f} s "
          f"(max {setup.max():.2f})")
    print(f"per trial: finished_at -> Parquet      {sum(write) / len(write):6.3f} s")
    print(f"per trial: Tune overhead (idle slot-s)  {tune_overhead:6.2f} s")
    print(f"relaunch with every trial stored       {resume_noop:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=int, default=6, help="asym_focal gamma values")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--finished-check", type=int, metavar="TRIALS", default=None,
                        help="measure the finished check of a study of TRIALS trials instead")
    parser.add_argument("--cases", type=int, default=250,
                        help="test cases per trial for --finished-check (4 rows each)")
    args = parser.parse_args()
    if args.finished_check:
        finished_check_cost(args.finished_check, args.cases)
    else:
        scheduling(args.settings, args.cpus)


if __name__ == "__main__":
    main()
