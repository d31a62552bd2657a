"""Scheduling overhead of a study on a local Ray: what a trial costs besides its own work.

Runs a study (default: tests/data/tiny-study.yaml widened to N settings) with ``study.tune``
and reports, from the stored ``trials`` rows and file times:

* Ray start and Tune set-up before the first trial function runs;
* per trial, inside the trial function: set-up (data loading, model build) = wall - train -
  evaluation, i.e. trial start to first training step plus the bookkeeping before the write;
* write latency: ``finished_at`` to the Parquet ``trials`` file's modification time;
* Tune's per-trial overhead: slot-seconds not spent inside trial functions, per trial;
* the cost of ``resume`` when every trial is already stored.

    python bench/bench_scheduling.py [--settings 6] [--cpus 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from datetime import timezone
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from study import tune  # noqa: E402
from study.results import ResultStore  # noqa: E402
from study.spec import TechniqueRun, load_study  # noqa: E402
from study.trial import RunOptions  # noqa: E402
from study.trials import expand  # noqa: E402

TINY = Path(__file__).resolve().parent.parent / "tests" / "data" / "tiny-study.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=int, default=6, help="asym_focal gamma values")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    spec = load_study(TINY)
    gammas = tuple({"gamma": 0.5 + 0.5 * i} for i in range(args.settings))
    spec = dataclasses.replace(spec, techniques=(TechniqueRun("vanilla", ({},)),
                                                 TechniqueRun("asym_focal", gammas)))
    trials = expand(spec)
    with tempfile.TemporaryDirectory() as storage:
        options = RunOptions(data_dir=f"{storage}/data", results_uri=f"{storage}/tiny/results",
                             threads=1)
        start = time.time()
        tune.ensure_ray(None, args.cpus)
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
        slot_seconds = wall * args.cpus
        tune_overhead = (slot_seconds - inside.sum()) / len(rows)
        clock = time.time()
        tune.launch(trials, storage, options, printer=lambda line: None)
        resume_noop = time.time() - clock
    print(f"{len(rows)} trials on {args.cpus} CPUs (1 CPU each)")
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


if __name__ == "__main__":
    main()
