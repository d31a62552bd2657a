"""`study compact`: finished trials' small files merged into one file per table, read by the
same reader with the same answers; reruns after compaction win; damage is still found."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from analysis._synthetic import full_config
from analysis.load import load_results
from study.compact import compact
from study.results import ResultStore, identity_columns


def tid(n: int) -> str:
    return f"{n:016x}"


def write(store, n, dsc=0.5, rows=3, status="ok"):
    identity = identity_columns({
        "study": "s", "trial_id": tid(n), "param_label": "—",
        "config": full_config(seed=n)})
    cases = [{**identity, "case_id": f"c{i}", "class_name": "tumour", "postprocessed": False,
              "dsc": dsc, "hd95": math.inf, "status": status,
              "split": "train" if i == 0 else "test", "arvd": i / 4, "abd": 1.5 + i,
              "tp_voxels": i, "case_voxels": 100, "case_correct_voxels": 90 + i}
             for i in range(rows if status != "failed" else 0)]
    store.write_trial({**identity, "status": status, "config": "{}", "final_val_loss": n / 8},
                      cases)


# the columns compared before and after compaction, the later ones included
CASE_COLUMNS = ["trial_id", "case_id", "split", "dsc", "arvd", "abd", "tp_voxels", "case_voxels",
                "case_correct_voxels"]


def rows(root):
    stored = ResultStore(str(root)).read()
    cases = stored.cases.sort_values(["trial_id", "case_id"]).reset_index(drop=True)
    return stored.finished, cases[CASE_COLUMNS].to_dict("records"), sorted(
        zip(stored.trials["trial_id"], stored.trials["final_val_loss"], strict=True))


def names(root, table):
    return sorted(p.name for p in (root / table).iterdir())


@pytest.fixture
def study(tmp_path):
    """Four finished trials, a failed one and one with a truncated cases file."""
    store = ResultStore(str(tmp_path))
    for n in range(4):
        write(store, n, dsc=n / 10)
    write(store, 4, status="failed")
    write(store, 5)
    damaged = tmp_path / "cases" / f"{tid(5)}.parquet"
    damaged.write_bytes(damaged.read_bytes()[:80])
    return store, tmp_path


def test_compaction_moves_finished_trials_and_changes_no_answer(study):
    store, root = study
    before = rows(root)
    done = compact(store)
    assert done.moved == [tid(n) for n in range(4)] and done.part.startswith("part-")
    assert rows(root) == before
    assert names(root, "cases") == [f"{tid(4)}.parquet", f"{tid(5)}.parquet"]
    assert names(root, "compacted") == sorted(
        ["manifest.json", f"{done.part}.cases.parquet", f"{done.part}.trials.parquet"])
    assert f"cases/{tid(5)}.parquet" in store.problems  # damage still reported
    loaded = load_results(str(root), errors="skip")
    assert loaded.finished_ids() == before[0] and len(loaded.cases) == 12
    again = compact(store)
    assert (again.moved, again.part, again.deleted) == ([], None, [])
    assert rows(root) == before


def test_rerun_after_compaction_wins_and_is_compacted_next(study):
    """A trial written again after compaction reads with its new rows; the next compaction
    moves it and drops the first part once none of its trials is live."""
    store, root = study
    first = compact(store).part
    write(store, 1, dsc=0.9, rows=2)
    finished, cases, _ = rows(root)
    assert [c["dsc"] for c in cases if c["trial_id"] == tid(1)] == [0.9, 0.9]
    second = compact(store)
    assert second.moved == [tid(1)] and rows(root) == (finished, cases, rows(root)[2])
    for n in (0, 2, 3):
        write(store, n, dsc=0.7)
    third = compact(store)
    manifest = json.loads((root / "compacted" / "manifest.json").read_text())
    assert set(manifest["parts"]) == {second.part, third.part}
    assert not [p for p in (root / "compacted").iterdir() if first in p.name]
    assert sorted({c["dsc"] for c in rows(root)[1]}) == [0.7, 0.9]


def test_damaged_part_leaves_its_trials_out(study):
    store, root = study
    part = compact(store).part
    path = root / "compacted" / f"{part}.cases.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    fresh = ResultStore(str(root))
    assert fresh.finished_ids() == set()
    assert "not a readable Parquet file" in fresh.problems[f"compacted/{part}.cases.parquet"]
    assert load_results(str(root), errors="skip").cases.empty


def test_part_rows_are_checked_against_the_recorded_counts(study):
    """The manifest records each trial's case rows; a trial whose rows in the part differ is
    left out when the rows are read, with the reason."""
    store, root = study
    part = compact(store).part
    path = root / "compacted" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["trials"][tid(2)]["case_rows"] = 5
    path.write_text(json.dumps(manifest))
    stored = ResultStore(str(root)).read()
    assert tid(2) not in stored.finished and tid(2) not in set(stored.cases["trial_id"])
    assert stored.problems[f"compacted/{part}.cases.parquet"] == (
        f"trial {tid(2)}: 3 rows, expected 5")


def test_unreadable_manifest_stops_compaction_and_deletes_nothing(study):
    store, root = study
    part = compact(store).part
    write(store, 6)
    (root / "compacted" / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match="manifest.json: unreadable"):
        compact(store)
    assert f"{part}.cases.parquet" in names(root, "compacted")
    assert f"{tid(6)}.parquet" in names(root, "cases")


def test_compaction_waits_for_running_trials(study):
    """A fresh heartbeat stops it; a stale or interrupted one does not."""
    store, root = study
    now = datetime.now(timezone.utc)
    beat = root / "running" / f"{tid(7)}.json"
    beat.parent.mkdir()
    beat.write_text(json.dumps({"trial_id": tid(7), "updated_at": now.isoformat()}))
    with pytest.raises(ValueError, match="1 trial.s. are running"):
        compact(store)
    beat.write_text(json.dumps({"trial_id": tid(7), "updated_at": now.isoformat(),
                                "interrupted_at": now.isoformat()}))
    (root / "running" / f"{tid(8)}.json").write_text(json.dumps(
        {"trial_id": tid(8), "updated_at": (now - timedelta(hours=1)).isoformat()}))
    assert compact(store).moved
