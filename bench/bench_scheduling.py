"""Scheduling overhead of a study: what a trial costs besides its own work, what the driver
holds in memory, and what the finished check (run by every launch, resume, status and Tune
restart) costs.

Default: runs a study (tests/data/tiny-study.yaml widened to N settings) with
``study.orchestrate`` on a local Ray and reports, from the stored ``trials`` rows and file times:

* Ray start and Tune set-up before the first trial function runs;
* per trial, inside the trial function: set-up (data loading, model build) = wall - train -
  evaluation, i.e. trial start to first training step plus the bookkeeping before the write;
* write latency: ``finished_at`` to the Parquet ``trials`` file's modification time;
* Tune's per-trial overhead: slot-seconds not spent inside trial functions, per trial;
* the cost of a relaunch when every trial is already stored;
* the driver's resident memory: after ``ray.init``, peak sampled during the run, ru_maxrss.

``--trivial N`` runs N trials that do no training through the same machinery (Tuner, grid,
ProgressCallback, heartbeat, one ``trials`` row each through ``ResultStore.write_trial``; the
trial function is ``study.orchestrate.Runner.trial``) and splits the overhead into actor
start-up and imports (worker process start to its first trial function), the gap between two
trials on one actor, and the rest of Tune's idle slot time.

``--finished-check N`` instead writes an N-trial synthetic study (``--cases`` x 4 rows per
trial) and counts, through a filesystem that observes every call, the listings, opens, reads
and bytes read by ``ResultStore.finished_ids`` on the trials' own files, then after
``study.compact`` (no Ray needed). On S3 a listing is one request per 1,000 names, an open
given the listed size none, a read one ranged GET.

    python bench/bench_scheduling.py [--settings 6] [--cpus 2]
    python bench/bench_scheduling.py --trivial 2000 [--cpus 2]
    python bench/bench_scheduling.py --finished-check 1000 [--cases 250]

Measured on 2 shared CPU cores (load 4-7 from other jobs), trivial trials, slot-seconds per
trial outside trial functions; before: a fresh actor per trial, the params in Tune's grid, its
CSV/JSON/TensorBoard loggers, one experiment per launch (22 trials run, then stopped); after:
``reuse_actors``, trial ids in the grid, result.json only, experiments of ``GRID_BATCH``:

======================================  ==========  ==========  ==========  ==========
                                        before, 22  after, 200  1,000       2,000
======================================  ==========  ==========  ==========  ==========
overhead per trial                      18.4        0.33        0.69        0.80
  actor start-up and imports            18.1        0.06        0.03        0.03
  between two trials on one actor       --          0.04        0.17        0.32
  other idle slot time                  0.2         0.23        0.50        0.46
finished_at to durable Parquet (s)      --          0.008       0.038       0.035
driver RSS growth (MiB)                 --          143         403         991
relaunch of the finished study (s)      --          1.05        5.7         11.6
======================================  ==========  ==========  ==========  ==========

Driver memory grows about linearly, 0.4-0.7 MiB per trial (Tune's trial objects and results).
The driver's RSS after ``ray.init`` is 208 MiB since it imports no torch (500 MiB before). The
relaunch column is ``orchestrate.launch`` with Ray already up and every trial stored (the
finished check, writing study.json and expanding nothing); a fresh ``study launch`` of a
finished study starts no Ray. 2,000 trials in one experiment (before batching) reached ~1.5
slot-s per trial after 155 trials, and Tune's grid expansion alone took over 3 minutes while
it held the params.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from datetime import timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
TINY = REPOSITORY / "tests" / "data" / "tiny-study.yaml"
sys.path.insert(0, str(REPOSITORY / "tests"))
import helpers  # noqa: E402  (the row-only trial, the counting filesystem)


def finished_check_cost(trials: int, cases: int) -> None:
    from analysis._synthetic import write_study
    from study.compact import compact

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
            store, handler = helpers.observed_store(root)  # counts every call
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


class RssSampler:
    """The driver's resident memory: sampled every ``every`` seconds in a thread while
    entered (``peak``), and the process's peak ``ru_maxrss`` (MiB)."""

    def __init__(self, every: float = 0.25):
        self.every, self.peak, self._stop = every, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise ValueError("/proc/self/status: no VmRSS line (Linux only)")

    @staticmethod
    def max_rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> RssSampler:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _process_start(pid: int) -> float:
    """When process ``pid`` started (epoch seconds), from /proc."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def timings_dir(options) -> Path:
    return Path(options.results_uri).parent / "bench-timings"


def trivial_trial(param: dict, options, session) -> dict:
    """A trial that does no training (``study.orchestrate.Runner.trial``): the tests'
    ``helpers.row_only_trial`` (one minimal valid ``ok`` row); its worker process's start, its
    own start and the end of the write go to ``bench-timings/<trial id>.json``."""
    entered = time.time()
    summary = helpers.row_only_trial(param, options, session)
    folder = timings_dir(options)
    folder.mkdir(exist_ok=True)
    (folder / f"{param['trial_id']}.json").write_text(json.dumps(
        {"pid": os.getpid(), "process_start": _process_start(os.getpid()),
         "entered": entered, "written": time.time()}))
    return summary


def _study_trials(count: int):
    """tests/data/tiny-study.yaml widened to ``count`` trials (vanilla + asym_focal with
    ``count - 1`` gamma values)."""
    from study.expand import expand
    from study.spec import TechniqueRun, load_study

    spec = load_study(TINY)
    gammas = tuple({"gamma": 0.5 + 0.001 * i} for i in range(count - 1))
    return expand(dataclasses.replace(spec, techniques=(TechniqueRun("vanilla", ({},)),
                                                        TechniqueRun("asym_focal", gammas))))


def _actor_breakdown(options, rows) -> tuple[float, float, int]:
    """From the trivial trials' timing files: slot-seconds from worker-process start to its
    first trial function (actor start-up and imports), slot-seconds between two trials on
    one actor, and the number of worker processes."""
    by_pid: dict[int, list[dict]] = {}
    for trial_id in rows["trial_id"]:
        stamp = json.loads((timings_dir(options) / f"{trial_id}.json").read_text())
        by_pid.setdefault(stamp["pid"], []).append(stamp)
    startup = between = 0.0
    for stamps in by_pid.values():
        stamps.sort(key=lambda t: t["entered"])
        startup += stamps[0]["entered"] - stamps[0]["process_start"]
        between += sum(b["entered"] - a["written"] for a, b in pairwise(stamps))
    return startup, between, len(by_pid)


def scheduling(trial_count: int | None, settings: int, cpus: int) -> None:
    """Run the study on a local Ray (``trial_count`` trivial trials, or the tiny study with
    ``settings`` gamma values) and print where the slot-seconds went and the driver's RSS."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from study import orchestrate
    from study.results import ResultStore
    from study.run_options import RunOptions

    trivial = trial_count is not None
    trials = _study_trials(trial_count if trial_count is not None else settings + 1)
    runner: dict[str, Any] = {"printer": lambda line: None,
                              **({"trial": trivial_trial} if trivial else {})}
    with tempfile.TemporaryDirectory() as storage:
        options = RunOptions(data_dir=f"{storage}/data", results_uri=f"{storage}/tiny/results",
                             threads=1)
        start = time.time()
        orchestrate.ensure_ray(None, cpus)
        import ray

        ray.cloudpickle.register_pickle_by_value(helpers)  # Ray's workers cannot import tests/
        ray_ready = time.time()
        with RssSampler() as rss:
            baseline = rss.peak
            orchestrate.launch(trials, storage, options, **runner)
            wall = time.time() - ray_ready
            rows = ResultStore(options.results_uri).trials()
            clock = time.time()
            orchestrate.launch(trials, storage, options, **runner)
            relaunch = time.time() - clock
        started = rows["started_at"].dt.tz_convert(timezone.utc)
        finished = rows["finished_at"].dt.tz_convert(timezone.utc)
        inside = (finished - started).dt.total_seconds()
        mtimes = [Path(options.results_uri, "trials", f"{t}.parquet").stat().st_mtime
                  for t in rows["trial_id"]]
        write = [m - f.timestamp() for m, f in zip(mtimes, finished, strict=True)]
        first_start = started.min().timestamp() - ray_ready
        breakdown = _actor_breakdown(options, rows) if trivial else None
    n, slot_seconds = len(rows), wall * cpus
    overhead = slot_seconds - inside.sum()
    print(f"{n} {'trivial ' if trivial else ''}trials on {cpus} CPUs (1 CPU each)")
    print(f"ray.init                                 {ray_ready - start:7.2f} s")
    print(f"launch to first trial function           {first_start:7.2f} s")
    print(f"study wall (after ray.init)              {wall:7.2f} s")
    if not trivial:
        setup = inside - rows["train_seconds"] - rows["eval_seconds"]
        print(f"per trial: train / evaluation            {rows['train_seconds'].mean():7.2f} / "
              f"{rows['eval_seconds'].mean():.2f} s")
        print(f"per trial: start to first step          {setup.mean():7.2f} s "
              f"(max {setup.max():.2f}; set-up and bookkeeping inside the function)")
    print(f"per trial: finished_at -> Parquet        {sum(write) / len(write):7.3f} s")
    if breakdown is not None:
        startup, between, actors = breakdown
        print(f"per trial: actor start-up + imports      {startup / n:7.3f} slot-s "
              f"({actors} worker processes, {startup / actors:.2f} s each)")
        print(f"per trial: between trials on one actor   {between / n:7.3f} slot-s")
        print(f"per trial: other idle slot time          "
              f"{(overhead - startup - between) / n:7.3f} slot-s")
    print(f"per trial: overhead outside trial fns    {overhead / n:7.3f} slot-s")
    print(f"relaunch with every trial stored         {relaunch:7.2f} s")
    print(f"driver RSS: after ray.init {baseline:.0f} MiB, peak sampled {rss.peak:.0f} MiB "
          f"(+{rss.peak - baseline:.0f}), ru_maxrss {rss.max_rss():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=int, default=6, help="asym_focal gamma values")
    parser.add_argument("--trivial", type=int, metavar="N", default=None,
                        help="run N trials that do no training (one row each) instead")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--finished-check", type=int, metavar="TRIALS", default=None,
                        help="measure the finished check of a study of TRIALS trials instead")
    parser.add_argument("--cases", type=int, default=250,
                        help="test cases per trial for --finished-check (4 rows each)")
    args = parser.parse_args()
    if args.finished_check:
        finished_check_cost(args.finished_check, args.cases)
    else:
        scheduling(args.trivial, args.settings, args.cpus)


if __name__ == "__main__":
    main()
