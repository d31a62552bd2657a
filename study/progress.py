"""Live progress of a study: each running trial's heartbeat, and the driver's view of all.

A trial in progress keeps ``<results>/running/<trial_id>.json`` (:class:`Heartbeat`)::

    {"trial_id", "label", "host", "started_at", "updated_at",
     "iteration", "total", "loss", "checkpoint"}

``started_at`` is when this attempt of the trial started, ``iteration`` / ``total`` its
training iterations, ``loss`` the last training loss it reported and ``checkpoint`` the
iteration of its last checkpoint (where a resumed run continues; None before the first). The
file is rewritten (whole, atomically) on every report and every ``HEARTBEAT_SECONDS`` while
the trial loads data or evaluates, deleted when the trial stores its result, and left in place
when the trial is interrupted, so that ``study resume`` can say where each trial stood.
``study status`` counts a trial with a fresh heartbeat as running.

The driver's :class:`Monitor` shows, per running trial, its label, iteration ``N/TOTAL``,
recent loss, its own elapsed time and ETA, and study-wide done / running / pending / failed
counts with an ETA: a ``rich`` live table on a terminal, else plain lines, at least every
``every`` seconds per running trial. It is fed by Ray Tune's callback events
(``study.orchestrate.ProgressCallback``) through :func:`monitor_for`.
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from study.identity import TrialConfig
from study.results import ResultStore

RUNNING = "running"  # the heartbeat folder under a study's results
HEARTBEAT_SECONDS = 60.0  # refresh while a trial reports nothing (data loading, evaluation)
REPORT_SECONDS = 15.0  # a training trial reports its iteration and loss at least this often
PLAIN_SECONDS = 30.0  # plain progress lines: at least this often per running trial


def write_json(store: ResultStore, path: str, record: Any) -> None:
    """Write ``record`` as JSON to ``path`` (in ``store``'s filesystem) whole or not at all
    (:meth:`study.results.ResultStore.put`)."""
    data = json.dumps(record, indent=1).encode()

    def write(target: str) -> None:
        with store.fs.open_output_stream(target) as stream:
            stream.write(data)

    store.put(path, write)


def trial_label(param: dict[str, Any], config: TrialConfig | None = None) -> str:
    """How a trial is named in progress lines: dataset, technique, setting, fraction, seed and
    the experiment's variant, e.g. ``synthetic-brats asym_focal γ = 2 fraction 0.5 seed 0``.
    ``config``: the param's config, where already read (else read here)."""
    config = config or TrialConfig.from_dict(param["config"])
    variant = f" ({param['variant']})" if param.get("variant") else ""
    return (f"{config.dataset.name} {config.technique} {param['param_label']} "
            f"fraction {config.fraction:g} seed {config.seed}{variant}")


class Interrupted(Exception):
    """Ctrl-C stopped the study (its trials' state saved); the message says how to continue
    (``study resume``)."""

    def __init__(self, study: str, storage: str, done: int, left: int):
        super().__init__(f"interrupted: {done} done, {left} left — continue with "
                         f"`study resume {study} --storage {storage}`")
        self.done, self.left = done, left


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Heartbeat:
    """The heartbeat file of one running trial (see the module docstring); a context manager
    that refreshes it from a thread and deletes it when the trial ends, except when the trial
    was interrupted (``KeyboardInterrupt``, ``SystemExit``: not an ``Exception``)."""

    def __init__(self, results_uri: str, param: dict[str, Any]):
        config = TrialConfig.from_dict(param["config"])
        self.store = ResultStore(results_uri)
        self.path = self.store.path(RUNNING, f"{param['trial_id']}.json")
        self.record = {"trial_id": param["trial_id"], "label": trial_label(param, config),
                       "host": socket.gethostname(), "started_at": _now(), "updated_at": None,
                       "iteration": 0, "total": config.training.iterations,
                       "loss": None, "checkpoint": None}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def update(self, **fields: Any) -> None:
        """Record ``fields`` (iteration, loss, checkpoint) and rewrite the file (nothing once
        the trial ended)."""
        with self._lock:
            if self._stop.is_set():
                return
            self.record.update(fields, updated_at=_now())
            write_json(self.store, self.path, self.record)

    def __enter__(self) -> Heartbeat:
        self.update()
        threading.Thread(target=self._keep_beating, daemon=True, name="heartbeat").start()
        return self

    def _keep_beating(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.update()

    def __exit__(self, kind, error, trace) -> None:
        with self._lock:
            self._stop.set()
            if kind is None or issubclass(kind, Exception):
                remove_beats(self.store, {self.record["trial_id"]})


def remove_beats(store: ResultStore, trial_ids: set[str]) -> None:
    """Delete the heartbeats of ``trial_ids`` (those that exist)."""
    for trial_id in trial_ids:
        path = store.path(RUNNING, f"{trial_id}.json")
        if store.fs.get_file_info(path).type == pafs.FileType.File:
            store.fs.delete_file(path)


def read_beats(results_uri: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every heartbeat under ``results_uri`` as ``{trial_id: record}``, and
    ``{trial_id: problem}`` for files that are not a heartbeat record (damaged)."""
    store = ResultStore(results_uri)
    fs, directory = store.fs, store.path(RUNNING)
    if fs.get_file_info(directory).type != pafs.FileType.Directory:
        return {}, {}
    beats, problems = {}, {}
    for info in fs.get_file_info(pafs.FileSelector(directory)):
        if not info.base_name.endswith(".json") or info.base_name.startswith("."):
            continue
        trial_id = info.base_name[:-len(".json")]
        try:
            with fs.open_input_stream(info.path) as stream:
                record = json.loads(stream.read())
            if not isinstance(record, dict) or "updated_at" not in record:
                raise ValueError("not a heartbeat record")
            datetime.fromisoformat(record["updated_at"])
        except (OSError, ValueError, TypeError) as error:
            problems[trial_id] = f"{info.path}: unreadable heartbeat ({error})"
            continue
        beats[trial_id] = record
    return beats, problems


def mark_interrupted(results_uri: str, trial_ids: set[str]) -> None:
    """Stamp the heartbeats of ``trial_ids`` with ``interrupted_at``: their trials stopped with
    the driver and are not running any more, whatever the age of the heartbeat."""
    store = ResultStore(results_uri)
    beats, _ = read_beats(results_uri)
    for trial_id in trial_ids & set(beats):
        write_json(store, store.path(RUNNING, f"{trial_id}.json"),
                   {**beats[trial_id], "interrupted_at": _now()})


def resume_point(beat: dict[str, Any] | None) -> str:
    """Where an unfinished trial continues, from its last heartbeat."""
    if beat is None:
        return "starts from iteration 0 (it never started)"
    total, reached = beat.get("total"), beat.get("iteration") or 0
    if beat.get("checkpoint"):
        return (f"continues from its checkpoint at iteration {beat['checkpoint']}/{total} "
                f"(it had reached {reached})")
    return f"starts again from iteration 0 (it had reached {reached}/{total}, no checkpoint)"


def duration(seconds: float | None) -> str:
    """``45 s``, ``12 min 5 s``, ``3 h 05 min``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclass
class _Running:
    """What the driver knows of one running trial from its reports."""

    label: str
    total: int
    started: float  # time.monotonic() when the driver started it
    iteration: int = 0
    loss: float | None = None
    elapsed: float = 0.0  # the trial's own running time at its last report (Tune time_total_s)
    seen: float | None = None  # time.monotonic() of its last report
    first: tuple[float, int] | None = None  # (time, iteration) of its first training report
    printed: float = -math.inf

    def now_elapsed(self, now: float) -> float:
        return self.elapsed + (now - self.seen if self.seen is not None else now - self.started)

    def eta(self, now: float) -> float | None:
        """Seconds of training left at the iteration rate seen since its first report."""
        if self.first is None or self.seen is None or self.iteration <= self.first[1]:
            return None
        rate = (self.iteration - self.first[1]) / (self.seen - self.first[0])
        return max(0.0, (self.total - self.iteration) / rate - (now - self.seen))

    def line(self, now: float) -> str:
        if self.seen is None:
            state = "starting (loading data)"
        elif self.iteration >= self.total:
            state = f"iteration {self.iteration}/{self.total}, evaluating"
        else:
            loss = f"{self.loss:.4g}" if self.loss is not None else "?"
            state = (f"iteration {self.iteration}/{self.total}, loss {loss}, "
                     f"ETA {duration(self.eta(now))}")
        return f"  {self.label}: {state}, {duration(self.now_elapsed(now))} elapsed"


@dataclass
class Monitor:
    """The driver's view of ``total`` trials of which ``done`` are finished already (see the
    module docstring). ``live``: a ``rich`` table (for a terminal); else plain lines through
    ``printer`` every ``every`` seconds. ``on_start(param)`` is called when a trial starts.
    Registered under ``key`` while entered, for :func:`monitor_for`."""

    key: str
    total: int
    done: int = 0
    printer: Callable[[str], None] = print
    live: bool = False
    every: float = PLAIN_SECONDS
    on_start: Callable[[dict], None] | None = None
    failed: int = 0
    pruned: int = 0
    running: dict[str, _Running] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    _summarised: float = -math.inf
    _live: Any = None

    def __enter__(self) -> Monitor:
        if self.live:
            from rich.live import Live

            self._live = Live(self.table(time.monotonic()), refresh_per_second=2,
                              transient=True)
            self._live.__enter__()
        with _LOCK:
            _MONITORS[self.key] = self
        return self

    def __exit__(self, *exc) -> None:
        with _LOCK:
            _MONITORS.pop(self.key, None)
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    # -- events -----------------------------------------------------------------------------
    def started(self, param: dict[str, Any]) -> None:
        config = TrialConfig.from_dict(param["config"])
        self.running[param["trial_id"]] = _Running(
            trial_label(param, config), config.training.iterations, time.monotonic())
        if self.on_start is not None:
            self.on_start(param)

    def result(self, param: dict[str, Any], result: dict[str, Any]) -> None:
        trial = self.running.get(param["trial_id"])
        if trial is None or "iteration" not in result:
            return
        now = time.monotonic()
        trial.iteration, trial.loss = int(result["iteration"]), result.get("train_loss")
        trial.elapsed, trial.seen = float(result.get("time_total_s", 0.0)), now
        if trial.first is None:
            trial.first = (now, trial.iteration)

    def finished(self, param: dict[str, Any], result: dict[str, Any],
                 error: str | None = None) -> None:
        """A trial ended: stored (``status`` in its result), failed (``error``), or stopped
        early by the scheduler (no ``status``: pruned)."""
        trial = self.running.pop(param["trial_id"], None)
        label = trial.label if trial is not None else trial_label(param)
        took = float(result.get("time_total_s", 0.0))
        status = result.get("status")
        if error is not None:
            self.failed += 1
            outcome = f"failed: {error}"
        elif status is None:
            self.pruned += 1
            outcome = f"stopped early at iteration {result.get('iteration', '?')} (pruned)"
        elif result.get("stored"):  # finished before a restart: counted in ``done``
            self._say(f"[{self.done + self.failed}/{self.total}] {label}: already stored")
            return
        else:
            self.done += 1
            self.durations.append(took)
            outcome = status
            if status == "ok":
                outcome += (f", DSC {result['dsc_raw']:.3f} "
                            f"(post-processed {result['dsc_pp']:.3f})")
        self._say(f"[{self.done + self.failed + self.pruned}/{self.total}] {label}: {outcome}"
                  f" in {duration(took)}")

    def retrying(self, param: dict[str, Any], error: str) -> None:
        """A failed trial that Tune starts again from its last checkpoint."""
        trial = self.running.get(param["trial_id"])
        label = trial.label if trial is not None else trial_label(param)
        self._say(f"  {label}: failed ({error}); retrying from its last checkpoint")

    def tick(self) -> None:
        """Refresh the live table, or print the plain lines that are due."""
        now = time.monotonic()
        if self._live is not None:
            self._live.update(self.table(now))
            return
        due = [t for t in self.running.values() if now - t.printed >= self.every]
        for trial in due:
            self._say(trial.line(now))
            trial.printed = now
        if self.running and now - self._summarised >= self.every:
            self._say(self.summary(now))
            self._summarised = now

    # -- views ------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        running = len(self.running)
        pending = max(0, self.total - self.done - self.failed - self.pruned - running)
        return {"done": self.done, "running": running, "pending": pending,
                "failed": self.failed}

    def eta(self, now: float) -> float | None:
        """Study ETA: the running trials' remaining time plus the pending trials at the mean
        duration of those finished in this run, shared by the trials running at once."""
        typical = statistics.fmean(self.durations) if self.durations else None
        left = []
        for trial in self.running.values():
            eta = trial.eta(now)
            if eta is None and typical is not None:
                eta = max(0.0, typical - trial.now_elapsed(now))
            left.append(eta)
        pending = self.counts()["pending"]
        known = [eta for eta in left if eta is not None]
        if len(known) < len(left) or (pending and typical is None):
            return None
        return (sum(known) + pending * (typical or 0.0)) / max(1, len(self.running))

    def summary(self, now: float) -> str:
        counts = self.counts()
        return (f"{self.key}: {counts['done']}/{self.total} done, {counts['running']} running, "
                f"{counts['pending']} pending, {counts['failed']} failed; "
                f"ETA {duration(self.eta(now))}")

    def table(self, now: float):
        """The live view at ``now`` (``time.monotonic()``): a ``rich`` table titled with
        :meth:`summary`, one row per running trial (label, iteration/total, loss, elapsed,
        ETA)."""
        from rich.table import Table

        table = Table(title=self.summary(now), title_justify="left", expand=False)
        for column in ("trial", "iteration", "loss", "elapsed", "ETA"):
            table.add_column(column, justify="left" if column == "trial" else "right")
        for trial in self.running.values():
            table.add_row(trial.label, f"{trial.iteration}/{trial.total}",
                          f"{trial.loss:.4g}" if trial.loss is not None else "",
                          duration(trial.now_elapsed(now)), duration(trial.eta(now)))
        return table

    def _say(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            self.printer(line)


_MONITORS: dict[str, Monitor] = {}
_LOCK = threading.Lock()


def monitor_for(key: str) -> Monitor | None:
    """The monitor entered under ``key`` in this process, if any."""
    with _LOCK:
        return _MONITORS.get(key)
