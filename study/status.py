"""Per dataset / fraction / technique counts of a study's trials, and failure reasons."""

from __future__ import annotations

import pandas as pd

from study.results import ResultStore

STATES = ("done", "diverged", "failed", "pending")


def status_table(plan, results_uri: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Counts per (dataset, fraction, technique) of trials done/diverged/failed/pending
    (pending includes running trials) and the (trial id, error) of each failed trial."""
    stored = ResultStore(results_uri).trials().set_index("trial_id")
    rows, failures = [], []
    for param in plan.trials:
        config, tid = param["config"], param["trial_id"]
        state = "pending"
        if tid in stored.index:
            state = {"ok": "done"}.get(stored.at[tid, "status"], stored.at[tid, "status"])
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
