"""`study status`: done / running / pending / failed / diverged per group, with reasons."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from study.results import ResultStore, identity_columns
from study.status import status_table


def _param(tid):
    return {"study": "s", "trial_id": tid, "param_label": "—",
            "config": {"dataset": {"name": "d"}, "model": {"name": "unet", "preset": "tiny"},
                       "technique": "vanilla", "fraction": 0.5, "seed": 0, "hp": {}}}


def test_states_from_results_and_heartbeats(tmp_path):
    """Stored ok -> done; fresh heartbeat -> running (even after a failed attempt); stale
    heartbeat or none -> pending; failed row without a fresh heartbeat -> failed, with reason."""
    store = ResultStore(str(tmp_path))
    now = datetime.now(timezone.utc)
    for tid, status in [("ok1", "ok"), ("div", "diverged"), ("fail", "failed"),
                        ("retry", "failed")]:
        store.write_trial({**identity_columns(_param(tid)), "status": status, "config": "{}",
                           "error": "OSError: disk" if status == "failed" else None}, [])
    store.beat("run", "host-a", now.isoformat())
    store.beat("retry", "host-b", now.isoformat())
    store.beat("stale", "host-c", now.isoformat())
    stale = tmp_path / "running" / "stale.json"
    beat = json.loads(stale.read_text())
    beat["updated_at"] = (now - timedelta(hours=2)).isoformat()
    stale.write_text(json.dumps(beat))
    plan = SimpleNamespace(trials=[_param(t) for t in
                                   ["ok1", "div", "fail", "retry", "run", "stale", "new"]])
    table, failures = status_table(plan, str(tmp_path), now=now)
    row = table.iloc[0]
    assert (row["done"], row["running"], row["pending"], row["failed"], row["diverged"]) == (
        1, 2, 2, 1, 1)
    assert failures == [("fail", "OSError: disk")]
    store.end_beat("run")
    assert "run" not in store.beats()
