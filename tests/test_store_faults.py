"""The results store under observed and failing filesystems: what the finished check costs,
compaction killed at every step, and a property test over random writes, reruns, kills,
damage and compactions (the reader never loses, duplicates or mis-attributes a row)."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from helpers import Killed, observed_store
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from analysis._synthetic import full_config
from analysis.load import load_results
from study.compact import compact
from study.results import ResultStore, identity_columns


def tid(n: int) -> str:
    return f"{n:016x}"


def write(store: ResultStore, trial_id: str, mark: int, rows: int = 2, status: str = "ok"):
    """Store trial ``trial_id`` with ``rows`` case rows tagged by ``mark`` (``case_id``
    ``m<mark>-<i>``, DSC ``mark / 1000``)."""
    identity = identity_columns({
        "study": "s", "trial_id": trial_id, "param_label": "—",
        "config": full_config()})
    cases = [{**identity, "case_id": f"m{mark}-{i}", "class_name": "tumour",
              "postprocessed": False, "dsc": mark / 1000, "hd95": math.inf, "status": status}
             for i in range(rows if status != "failed" else 0)]
    store.write_trial({**identity, "status": status, "config": "{}"}, cases)
    return {(trial_id, c["case_id"]) for c in cases}


def snapshot(root: Path) -> tuple[set[str], list[tuple], list[tuple]]:
    """What a reader sees: the finished trials, the case rows (trial, case, DSC) and the
    trials rows (trial, status, case_rows), sorted; the analysis reader must agree."""
    stored = ResultStore(str(root)).read()
    cases = sorted(zip(stored.cases["trial_id"], stored.cases["case_id"], stored.cases["dsc"],
                       strict=True))
    trials = sorted(zip(stored.trials["trial_id"], stored.trials["status"],
                        stored.trials["case_rows"], strict=True))
    assert load_results(str(root), errors="skip").finished_ids() == stored.finished
    return stored.finished, cases, trials


# -- what the finished check costs ---------------------------------------------------------

@pytest.mark.parametrize("compacted", [False, True])
def test_finished_check_cost_grows_with_trials_not_rows(tmp_path, compacted):
    """No data pages: the same calls for 4 and 3,000 case rows per trial, one read per file
    of at most its last 64 KiB (the footer, and data only in files smaller than that);
    after compaction a handful of calls whatever the number of trials."""
    costs = {}
    for rows in (4, 3000):
        root = tmp_path / str(rows)
        store = ResultStore(str(root))
        for n in range(12):
            write(store, tid(n), n, rows=rows)
        if compacted:
            compact(store)
        observed, handler = observed_store(root)
        assert len(observed.finished_ids()) == 12
        costs[rows] = handler.counts
    small, large = costs[4], costs[3000]
    calls = ("list", "stat", "open_input_file", "open_input_stream", "reads")
    assert {k: small[k] for k in calls} == {k: large[k] for k in calls}
    if compacted:  # the manifest, and one footer read per part file
        manifest = (tmp_path / "3000" / "compacted" / "manifest.json").stat().st_size
        assert large["open_input_stream"] == 1 and large["open_input_file"] == 2
        assert large["bytes"] <= manifest + 2 * 64 * 1024
    else:
        assert large["open_input_file"] == 24 and large["reads"] == 24
        assert large["bytes"] <= 24 * 64 * 1024


# -- compaction killed at every step -------------------------------------------------------

def _study(root: Path) -> None:
    """Trials compacted once, then rerun (one), added (two) and failed (one)."""
    store = ResultStore(str(root))
    for n in range(4):
        write(store, tid(n), n)
    compact(store)
    write(store, tid(1), 11, rows=3)
    write(store, tid(4), 4)
    write(store, tid(5), 5, rows=1, status="diverged")
    write(store, tid(6), 6, status="failed")


def test_compaction_killed_at_every_step_loses_and_duplicates_nothing(tmp_path):
    """Killed after any number of filesystem mutations, a compaction leaves exactly what
    was there for a reader; running it again completes it; a third run does nothing."""
    _study(tmp_path / "study")
    expected = snapshot(tmp_path / "study")
    assert expected[0] == {tid(n) for n in range(6)}
    shutil.copytree(tmp_path / "study", tmp_path / "count")
    store, handler = observed_store(tmp_path / "count")
    compact(store)
    steps = handler.mutations
    assert steps >= 6
    for kill_at in range(steps):
        root = tmp_path / f"kill-{kill_at}"
        shutil.copytree(tmp_path / "study", root)
        killed, _ = observed_store(root, kill_at)
        with pytest.raises(Killed):
            compact(killed)
        assert snapshot(root) == expected, kill_at
        compact(ResultStore(str(root)))
        assert snapshot(root) == expected, kill_at
        again = compact(ResultStore(str(root)))
        assert again.moved == [] and again.deleted == [], kill_at
        assert {p.name for p in (root / "cases").iterdir()} == {f"{tid(6)}.parquet"}


# -- the property: random histories --------------------------------------------------------

IDS = [tid(n) for n in range(4)]
operation = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(IDS), st.integers(0, 3),
              st.sampled_from(["ok", "ok", "diverged", "failed"])),
    st.tuples(st.just("killed"), st.sampled_from(IDS), st.sampled_from(["tmp", "cases"])),
    st.tuples(st.just("damage"), st.sampled_from(IDS),
              st.sampled_from(["truncate-cases", "truncate-trials", "copy", "foreign"]),
              st.sampled_from(IDS)),
    st.tuples(st.just("compact"), st.one_of(st.none(), st.integers(0, 12))),
)


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=10))
@example([("write", IDS[0], 2, "ok"), ("killed", IDS[0], "cases")])
@example([("write", IDS[0], 2, "ok"), ("compact", None), ("write", IDS[0], 3, "diverged"),
          ("compact", 4), ("killed", IDS[0], "cases")])
@example([("write", IDS[0], 2, "ok"), ("write", IDS[1], 2, "ok"),
          ("damage", IDS[1], "foreign", IDS[0]), ("compact", 2)])
def test_reader_follows_the_last_complete_write(history):
    """After any history of writes, reruns, writes killed part way (a temporary file left; a
    cases file written without its trials file), damage (truncation, a copy under another
    name, another trial's file in its place) and compactions (killed or not), the finished
    trials are exactly those whose last write completed and whose files are intact, each
    with the rows of that write: none lost, none twice, none under another trial."""
    with tempfile.TemporaryDirectory() as scratch:
        root, spare = Path(scratch) / "results", Path(scratch) / "spare"
        (root / "cases").mkdir(parents=True)
        store = ResultStore(str(root))
        rows: dict[str, set] = {}  # the model: finished trial -> its rows
        for mark, (kind, *args) in enumerate(history, start=100):
            if kind == "write":
                trial_id, count, status = args
                written = write(store, trial_id, mark, count, status)
                rows.pop(trial_id, None)
                if status != "failed":
                    rows[trial_id] = written
            elif kind == "killed":
                trial_id, stage = args
                cases = root / "cases" / f"{trial_id}.parquet"
                if stage == "tmp":  # killed while writing: the temporary file stays
                    (cases.parent / f".tmp-{trial_id}.parquet-0").write_bytes(b"PAR1")
                else:  # killed between the cases and the trials write
                    write(ResultStore(str(spare)), trial_id, mark)
                    shutil.copy(spare / "cases" / f"{trial_id}.parquet", cases)
                    rows.pop(trial_id, None)
            elif kind == "damage":
                trial_id, how, other = args
                table = "trials" if how == "truncate-trials" else "cases"
                path = root / table / f"{trial_id}.parquet"
                source = root / "cases" / f"{other}.parquet"
                if how.startswith("truncate") and path.exists():
                    path.write_bytes(path.read_bytes()[:60])
                    rows.pop(trial_id, None)
                elif how == "copy" and path.exists():
                    shutil.copy(path, path.with_name(f"{trial_id} (1).parquet"))
                elif how == "foreign" and other != trial_id and source.exists():
                    shutil.copy(source, path)
                    rows.pop(trial_id, None)
            else:
                killed, _ = observed_store(root, args[0])
                try:
                    compact(killed)
                except Killed:
                    pass
        finished, cases, _ = snapshot(root)
        assert finished == set(rows)
        assert Counter((t, c) for t, c, _ in cases) == Counter(
            row for trial in rows.values() for row in trial)
        assert all(dsc * 1000 == pytest.approx(int(c[1:].split("-")[0]))
                   for _, c, dsc in cases)

