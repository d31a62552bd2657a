"""`study status` from the finished check: copies of result files do not crash it, and it
says which files were left out and why."""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from analysis._synthetic import full_config
from study.compact import compact
from study.results import ResultStore, identity_columns
from study.status import status_table


def _param(n):
    return {"study": "s", "trial_id": f"{n:016x}", "param_label": "—",
            "config": full_config(seed=n)}


def _write(store, n, status="ok"):
    identity = identity_columns(_param(n))
    rows = [] if status == "failed" else [
        {**identity, "case_id": "c", "class_name": "t", "postprocessed": False, "dsc": 0.5,
         "hd95": math.inf, "status": status}]
    store.write_trial({**identity, "status": status, "config": "{}",
                       "error": "OSError: disk" if status == "failed" else None}, rows)


def test_copies_damage_and_compaction_in_status(tmp_path):
    """A sync-conflict copy is listed, not counted (before, ``status`` crashed on the
    duplicate row); a damaged trial is pending with its file and reason listed; compacted
    trials count as done."""
    store = ResultStore(str(tmp_path))
    for n in range(3):
        _write(store, n)
    _write(store, 3, status="failed")
    compact(store)
    _write(store, 4)
    _write(store, 5)
    shutil.copy(tmp_path / "trials" / f"{4:016x}.parquet",
                tmp_path / "trials" / f"{4:016x} (1).parquet")
    damaged = tmp_path / "cases" / f"{5:016x}.parquet"
    damaged.write_bytes(damaged.read_bytes()[:90])
    plan = SimpleNamespace(study="s", trials=[_param(n) for n in range(7)])
    table, failures, left_out = status_table(plan, str(tmp_path), now=datetime.now(timezone.utc))
    row = table.iloc[0]
    assert (row["done"], row["pending"], row["failed"]) == (4, 2, 1)
    assert failures == [(f"{3:016x}", "OSError: disk")]
    assert [name for name, _ in left_out] == [f"cases/{5:016x}.parquet",
                                              f"trials/{4:016x} (1).parquet"]
    assert "not a readable Parquet file" in left_out[0][1] and "ignored" in left_out[1][1]


def test_states_from_results_and_heartbeats(tmp_path):
    """Stored ok -> done; fresh heartbeat -> running (even after a failed attempt); stale or
    interrupted heartbeat or none -> pending; failed row without a fresh heartbeat ->
    failed, with reason."""
    store = ResultStore(str(tmp_path))
    now = datetime.now(timezone.utc)
    for n, status in [(0, "ok"), (1, "diverged"), (2, "failed"), (3, "failed")]:
        _write(store, n, status)
    (tmp_path / "running").mkdir()
    for n, age, interrupted in [(3, 0, False), (4, 0, False), (5, 2, False), (6, 0, True)]:
        beat = {"trial_id": f"{n:016x}", "updated_at": (now - timedelta(hours=age)).isoformat()}
        if interrupted:
            beat["interrupted_at"] = now.isoformat()
        (tmp_path / "running" / f"{n:016x}.json").write_text(json.dumps(beat))
    plan = SimpleNamespace(study="s", trials=[_param(n) for n in range(8)])
    table, failures, left_out = status_table(plan, str(tmp_path), now=now)
    row = table.iloc[0]
    assert (row["done"], row["running"], row["pending"], row["failed"], row["diverged"]) == (
        1, 2, 3, 1, 1)
    assert failures == [(f"{2:016x}", "OSError: disk")] and left_out == []


def test_status_names_study_json_the_trial_and_the_key_of_a_malformed_config(tmp_path):
    """``status`` over a study.json whose trial config lacks a key (``training``) stops with
    one error naming study.json, the trial and the key."""
    param = _param(0)
    del param["config"]["training"]
    plan = SimpleNamespace(study="s", trials=[_param(1), param])
    with pytest.raises(ValueError, match=(r"study.json of study 's', trial 0{16}: trial config: "
                                          r"missing key\(s\) \['training'\]")):
        status_table(plan, str(tmp_path))
