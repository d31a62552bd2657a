"""Per dataset / fraction / technique counts of a study's trials, failure reasons, and the
result files left out (with why)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import pandas as pd

from study.identity import TrialConfig
from study.progress import read_beats
from study.results import FINISHED_STATUSES, ResultStore

STATES = ("done", "running", "pending", "failed", "diverged", "pruned")
PRUNED = "pruned"  # the study.json status of a trial the search pruned (study.optimize)
RUNNING_TIMEOUT = timedelta(minutes=15)  # a heartbeat older than this is a lost trial


class Status(NamedTuple):
    """``table``: counts per (dataset, fraction, technique) and state; ``failures``: (trial
    id, error; None when none was stored) per failed trial; ``left_out``: (file, reason) per
    result file not used (its trial, if any, counts as pending and runs again)."""

    table: pd.DataFrame
    failures: list[tuple[str, str | None]]
    left_out: list[tuple[str, str]]


def running(beat: dict | None, now: datetime) -> bool:
    """Whether a heartbeat says its trial is running: fresh (within ``RUNNING_TIMEOUT``) and
    not stamped interrupted."""
    if not beat:
        return False
    return not beat.get("interrupted_at") and (
        now - datetime.fromisoformat(beat["updated_at"]) < RUNNING_TIMEOUT)


def _state(status: str | None, beat: dict | None, now: datetime) -> str:
    if status in FINISHED_STATUSES:
        return {"ok": "done"}.get(status, status)
    if running(beat, now):
        return "running"  # also a failed trial that Tune is retrying
    return "failed" if status == "failed" else "pending"


def _config(plan, param: dict) -> TrialConfig:
    """The typed config of one of ``plan``'s trials; ``ValueError`` naming ``study.json``, the
    trial and the key when it cannot be read."""
    where = f"study.json of study {plan.study!r}, trial {param.get('trial_id')}"
    if "config" not in param:
        raise ValueError(f"{where}: missing key 'config'")
    try:
        return TrialConfig.from_dict(param["config"])
    except ValueError as error:
        raise ValueError(f"{where}: {error} (edited? launch the study again)") from error


def status_table(plan, results_uri: str, now: datetime | None = None) -> Status:
    """Counts per (dataset, fraction, technique) of trials done / running (heartbeat within
    ``RUNNING_TIMEOUT``) / pending / failed / diverged / pruned (optimize mode: stopped by the
    search, its ``failed`` row says why), (trial id, error) per failure and
    (file, reason) per result file left out. Reads footers, and the data of failed trials'
    ``trials`` rows only (for their errors)."""
    store = ResultStore(results_uri)
    scan, (beats, _) = store.scan(), read_beats(results_uri)
    now = now or datetime.now(timezone.utc)
    rows, failed = [], []
    for param in plan.trials:
        config, tid = _config(plan, param), param["trial_id"]
        stored = scan.trials.get(tid)
        state = _state(stored.status if stored else None, beats.get(tid), now)
        if state == "failed" and param.get("status") == PRUNED:
            state = PRUNED  # stopped by the search on purpose: not a failure, never rerun
        if state == "failed":
            failed.append(tid)
        rows.append({"dataset": config.dataset.name, "fraction": config.fraction,
                     "technique": config.technique, "state": state})
    errors = {}
    if failed:
        trials = store.read(scan.only(failed), cases=False).trials
        errors = dict(zip(trials["trial_id"], trials["error"], strict=True))
    frame = pd.DataFrame(rows)
    # the pruned column only where a search pruned something (grid studies never prune)
    states = [s for s in STATES if s != PRUNED or (frame["state"] == PRUNED).any()]
    table = (frame.groupby(["dataset", "fraction", "technique", "state"], sort=False).size()
             .unstack("state", fill_value=0).reindex(columns=states, fill_value=0)
             .reset_index())
    table.columns.name = None
    return Status(table, [(tid, errors.get(tid)) for tid in failed],
                  sorted(store.problems.items()))
