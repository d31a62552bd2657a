"""Per dataset / fraction / technique counts of a study's trials, and failure reasons."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd

from study.results import FINISHED_STATUSES, ResultStore

STATES = ("done", "running", "pending", "failed", "diverged")
RUNNING_TIMEOUT = timedelta(minutes=15)  # a heartbeat older than this is a lost trial


def _state(tid: str, stored: pd.DataFrame, beats: dict, now: datetime) -> str:
    status = stored.at[tid, "status"] if tid in stored.index else None
    if status in FINISHED_STATUSES:
        return {"ok": "done"}.get(status, status)
    beat = beats.get(tid)
    if beat and now - datetime.fromisoformat(beat["updated_at"]) < RUNNING_TIMEOUT:
        return "running"  # also a failed trial that Tune is retrying
    return "failed" if status == "failed" else "pending"


def status_table(plan, results_uri: str, now: datetime | None = None
                 ) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Counts per (dataset, fraction, technique) of trials done / running (heartbeat within
    ``RUNNING_TIMEOUT``) / pending / failed / diverged, and (trial id, error) per failure."""
    store = ResultStore(results_uri)
    stored, beats = store.trials().set_index("trial_id"), store.beats()
    now = now or datetime.now(timezone.utc)
    rows, failures = [], []
    for param in plan.trials:
        config, tid = param["config"], param["trial_id"]
        state = _state(tid, stored, beats, now)
        if state == "failed":
            failures.append((tid, stored.at[tid, "error"]))
        rows.append({"dataset": config["dataset"]["name"], "fraction": config["fraction"],
                     "technique": config["technique"], "state": state})
    frame = pd.DataFrame(rows)
    table = (frame.groupby(["dataset", "fraction", "technique", "state"], sort=False).size()
             .unstack("state", fill_value=0).reindex(columns=list(STATES), fill_value=0)
             .reset_index())
    table.columns.name = None
    return table, failures
