"""The Parquet results store: atomic per-trial files, replace-not-append, and one definition of
a stored trial: every way a file can be wrong leaves its trial out (it reruns) with a reason."""

from __future__ import annotations

import math
import shutil
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis._synthetic import full_config
from analysis.load import load_results
from study.results import ResultStore, identity_columns, summarise


def tid(n: int) -> str:
    return f"{n:016x}"


T1 = tid(1)


def _param(trial_id, technique="asym_focal", hp=None):
    return {"study": "s", "trial_id": trial_id, "param_label": "γ = 2",
            "config": full_config(technique=technique,
                                  hp=hp if hp is not None else {"gamma": 2.0})}


def _store_trial(store, trial_id=T1, status="ok", dsc=0.5, cases=3):
    identity = identity_columns(_param(trial_id))
    row = {**identity, "status": status, "config": "{}",
           "started_at": datetime.now(timezone.utc)}
    rows = [{**identity, "case_id": f"c{i}", "class_name": "tumour", "postprocessed": pp,
             "dsc": dsc, "hd95": math.inf, "pred_voxels": 0, "ref_voxels": 3, "status": status}
            for i in range(cases) for pp in (False, True)]
    store.write_trial(row, rows if status != "failed" else [])


def _rewrite(path, change):
    """Rewrite a Parquet file through ``change(table)``, keeping its footer metadata."""
    pq.write_table(change(pq.read_table(path)), path)


@pytest.fixture
def two(tmp_path):
    """A store with two finished trials, 1 and 2 (6 case rows each)."""
    store = ResultStore(str(tmp_path))
    _store_trial(store, tid(1))
    _store_trial(store, tid(2))
    return store, tmp_path


def _left_out(tmp_path, trial):
    """The finished check and the analysis reader agree that ``trial`` is not stored."""
    fresh = ResultStore(str(tmp_path))
    finished = fresh.finished_ids()
    loaded = load_results(str(tmp_path), errors="skip")
    assert trial not in finished and finished == loaded.finished_ids()
    assert trial not in set(loaded.cases["trial_id"]) | set(loaded.trials["trial_id"])
    return fresh.problems


def test_rerun_replaces_rows_instead_of_adding(tmp_path):
    """Writing a trial twice leaves one trials row and its case rows once (the second copy)."""
    store = ResultStore(str(tmp_path))
    _store_trial(store, dsc=0.1)
    _store_trial(store, dsc=0.9)
    assert len(store.trials()) == 1 and store.trials()["case_rows"].tolist() == [6]
    cases = store.cases()
    assert len(cases) == 6 and (cases["dsc"] == 0.9).all()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]


def test_schema_types_hold_for_null_hyperparameters(tmp_path):
    """Unused hyperparameters are typed nulls (float64), inf HD survives the round trip."""
    store = ResultStore(str(tmp_path))
    _store_trial(store)
    cases = pd.read_parquet(tmp_path / "cases")
    assert cases["hp_m"].isna().all() and cases["hp_m"].dtype == "float64"
    assert (cases["hd95"] == math.inf).all()


def test_writer_refuses_what_the_reader_would_leave_out(tmp_path):
    """Unknown statuses, case rows of another trial, ids that are not 16 hex digits and
    metrics out of range are errors; nothing is written."""
    store = ResultStore(str(tmp_path))
    with pytest.raises(ValueError, match="status"):
        _store_trial(store, status="weird")
    row = {**identity_columns(_param(tid(1))), "status": "ok", "config": "{}"}
    foreign = {**identity_columns(_param(tid(2))), "case_id": "c", "class_name": "x",
               "postprocessed": False, "status": "ok"}
    with pytest.raises(ValueError, match="another trial"):
        store.write_trial(row, [foreign])
    with pytest.raises(ValueError, match=r"trial_id: expected 16 hex digits, got 't1'"):
        _store_trial(store, "t1")
    with pytest.raises(ValueError, match=r"column 'dsc' holds values in \[7.5, 7.5\], "
                                         r"outside \[0, 1\]"):
        _store_trial(store, dsc=7.5)
    assert store.trials().empty and store.cases().empty and store.finished_ids() == set()


def test_truncated_cases_file_is_not_finished(two):
    """A truncated cases file makes its trial unfinished (it reruns) and is reported; the
    other trial stays readable."""
    store, root = two
    damaged = root / "cases" / f"{tid(2)}.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    problems = _left_out(root, tid(2))
    assert "not a readable Parquet file" in problems[f"cases/{tid(2)}.parquet"]
    assert set(ResultStore(str(root)).cases()["trial_id"]) == {tid(1)}


def test_file_missing_a_column_is_not_finished(two):
    """A trials file without a contract column (written by other code) is reported and its
    trial runs again, rather than being read as nulls and counted as finished."""
    store, root = two
    _rewrite(root / "trials" / f"{tid(2)}.parquet", lambda t: t.drop_columns(["status"]))
    assert "missing column(s) 'status'" in _left_out(root, tid(2))[f"trials/{tid(2)}.parquet"]


def test_wrongly_typed_cases_file_is_not_finished(two):
    store, root = two

    def to_strings(table):
        return table.set_column(table.schema.get_field_index("dsc"), "dsc",
                                table["dsc"].cast(pa.string()))

    _rewrite(root / "cases" / f"{tid(2)}.parquet", to_strings)
    problems = _left_out(root, tid(2))
    assert "column 'dsc': type string, expected double" in problems[f"cases/{tid(2)}.parquet"]


@pytest.mark.parametrize("damage, reason", [
    (lambda path: path.unlink(), "its cases file cases/{id}.parquet is missing"),
    (lambda path: _rewrite(path, lambda t: t.slice(0, 0)), "holds 0 rows, the trials file "
                                                           "recorded 6"),
    (lambda path: _rewrite(path, lambda t: t.slice(0, 4)), "holds 4 rows, the trials file "
                                                           "recorded 6"),
])
def test_missing_empty_or_short_cases_file_is_not_finished(two, damage, reason):
    """A cases file that is missing, empty or short never counts as finished: the trials
    row records how many case rows were written."""
    store, root = two
    damage(root / "cases" / f"{tid(2)}.parquet")
    problems = _left_out(root, tid(2))
    assert reason.format(id=tid(2)) in " ".join(problems.values())


def test_copies_under_other_names_are_ignored_and_named(two):
    """A sync-conflict copy or backup of a trial's file is never read: no row is counted
    twice, its trial stays finished, and the copy is reported."""
    store, root = two
    for table in ("cases", "trials"):
        for name in (f"{tid(1)} (1).parquet", "backup.parquet", f".tmp-{tid(1)}-x.parquet"):
            shutil.copy(root / table / f"{tid(1)}.parquet", root / table / name)
    fresh = ResultStore(str(root))
    assert fresh.finished_ids() == {tid(1), tid(2)}
    assert len(fresh.cases()) == 12 and len(fresh.trials()) == 2
    assert "ignored" in fresh.problems[f"cases/{tid(1)} (1).parquet"]
    assert "temporary file" in fresh.problems[f"trials/.tmp-{tid(1)}-x.parquet"]
    assert len(fresh.problems) == 6
    loaded = load_results(str(root), errors="skip")
    assert len(loaded.cases) == 12 and set(loaded.problems) == set(fresh.problems)


def test_rows_of_another_trial_inside_are_not_attributed(two):
    """A trial's files replaced by another trial's (trial_id inside != file name) leave it
    unfinished; the rows are never counted under the name of the file."""
    store, root = two
    for table in ("cases", "trials"):
        shutil.copy(root / table / f"{tid(1)}.parquet", root / table / f"{tid(2)}.parquet")
    problems = _left_out(root, tid(2))
    assert (f"column 'trial_id' holds '{tid(1)}', expected '{tid(2)}' (the file name)"
            in problems[f"trials/{tid(2)}.parquet"])
    cases = ResultStore(str(root)).cases()
    assert len(cases) == 6 and set(cases["trial_id"]) == {tid(1)}


def test_metrics_out_of_range_are_not_finished(two):
    """A DSC of 7.5 (a file written by other code) is impossible: the trial is left out
    with the column and the range, instead of printing as 750 %."""
    store, root = two
    _rewrite(root / "cases" / f"{tid(2)}.parquet",
             lambda t: t.set_column(t.schema.get_field_index("dsc"), "dsc",
                                    pa.array([7.5] * len(t))))
    problems = _left_out(root, tid(2))
    assert problems[f"cases/{tid(2)}.parquet"] == (
        "column 'dsc' holds values in [7.5, 7.5], outside [0, 1]")


def test_negative_distance_is_out_of_range_but_inf_and_nan_are_not(tmp_path):
    store = ResultStore(str(tmp_path))
    _store_trial(store, tid(1))
    path = tmp_path / "cases" / f"{tid(1)}.parquet"
    values = [math.inf, math.nan, 0.0, 3.0, math.nan, math.inf]
    _rewrite(path, lambda t: t.set_column(t.schema.get_field_index("hd95"), "hd95",
                                          pa.array(values)))
    assert ResultStore(str(tmp_path)).finished_ids() == {tid(1)}
    _rewrite(path, lambda t: t.set_column(t.schema.get_field_index("hd95"), "hd95",
                                          pa.array([-1.0] + values[1:])))
    problems = _left_out(tmp_path, tid(1))
    assert problems[f"cases/{tid(1)}.parquet"] == (
        "column 'hd95' holds values in [-1, inf], outside [0, inf]")


def test_rerun_killed_between_its_two_writes_is_not_finished(two):
    """A rerun that replaced the cases file but was killed before the trials file: the old
    trials row and the new cases rows come from different writes and are not joined."""
    store, root = two
    old_trials = (root / "trials" / f"{tid(2)}.parquet").read_bytes()
    _store_trial(store, tid(2), dsc=0.9)
    (root / "trials" / f"{tid(2)}.parquet").write_bytes(old_trials)
    problems = _left_out(root, tid(2))
    assert "not from the write of" in problems[f"cases/{tid(2)}.parquet"]


def test_cases_without_trials_file_is_incomplete(two):
    store, root = two
    (root / "trials" / f"{tid(2)}.parquet").unlink()
    _left_out(root, tid(2))
    assert ResultStore(str(root)).scan().incomplete == [tid(2)]
    assert load_results(str(root)).incomplete == [tid(2)]


def test_failed_trials_are_stored_but_not_finished(tmp_path):
    """A failed trial keeps its row (for `study status`) and reruns."""
    store = ResultStore(str(tmp_path))
    _store_trial(store, tid(1))
    _store_trial(store, tid(3), status="failed")
    assert store.finished_ids() == {tid(1)}
    assert dict(zip(store.trials()["trial_id"], store.trials()["status"], strict=True)) == {
        tid(1): "ok", tid(3): "failed"}


def test_stored_summary_reads_only_a_whole_result(two):
    store, root = two
    summary = store.stored_summary(tid(1))
    assert summary["status"] == "ok" and summary["dsc_raw"] == pytest.approx(0.5)
    damaged = root / "cases" / f"{tid(2)}.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert store.stored_summary(tid(2)) is None and store.stored_summary(tid(9)) is None


def _case_rows(trial_id, splits):
    identity = identity_columns(_param(trial_id))
    return identity, [{**identity, "case_id": f"c{i}", "class_name": "tumour",
                       "postprocessed": True, "dsc": dsc, "status": "ok", **split}
                      for i, (dsc, split) in enumerate(splits)]


def test_split_defaults_to_test_and_is_checked(tmp_path):
    """Case rows without ``split`` are test rows; validation and train rows keep theirs; an
    unknown split is refused before anything is written."""
    store = ResultStore(str(tmp_path))
    identity, rows = _case_rows(tid(1), [(0.5, {}), (0.7, {"split": "validation"}),
                                         (0.9, {"split": "train"})])
    store.write_trial({**identity, "status": "ok", "config": "{}"}, rows)
    assert store.cases().set_index("case_id")["split"].to_dict() == {
        "c0": "test", "c1": "validation", "c2": "train"}
    identity, rows = _case_rows(tid(2), [(0.5, {"split": "training"})])
    with pytest.raises(ValueError, match=r"split: expected one of \('train', 'test', "
                                         r"'validation'\), got 'training'"):
        store.write_trial({**identity, "status": "ok", "config": "{}"}, rows)
    assert set(store.trials()["trial_id"]) == {tid(1)}


def test_summary_means_are_per_split():
    """What Tune sees: ``dsc_pp`` over the test rows only, ``dsc_pp_validation`` over the
    validation rows; rows without ``split`` count as test rows, train rows nowhere."""
    _, rows = _case_rows(tid(1), [(0.2, {}), (0.4, {"split": "test"}),
                                  (0.9, {"split": "validation"}), (1.0, {"split": "train"})])
    summary = summarise({"status": "ok", "iterations_done": 1, "train_seconds": 1.0}, rows)
    assert summary["dsc_pp"] == pytest.approx(0.3)
    assert summary["dsc_pp_validation"] == pytest.approx(0.9)
    assert math.isnan(summary["dsc_raw"]) and math.isnan(summary["dsc_raw_validation"])


def _as_old_file(path, drop):
    """Rewrite ``path`` as the first studies wrote it: without ``drop`` and the write token."""
    table = pq.read_table(path).drop_columns(drop)
    pq.write_table(table.replace_schema_metadata(None), path)


def test_files_without_later_columns_are_read_as_before(tmp_path):
    """Files written before ``split``, ``case_rows`` and write tokens existed: read as test
    rows, alone or with newer files, by the store and by ``analysis``; the trial stays
    finished with whatever rows it has, but not with none."""
    store = ResultStore(str(tmp_path))
    _store_trial(store, tid(1))
    identity, rows = _case_rows(tid(2), [(0.5, {"split": "validation"})])
    store.write_trial({**identity, "status": "ok", "config": "{}"}, rows)
    _as_old_file(tmp_path / "cases" / f"{tid(1)}.parquet", ["split"])
    _as_old_file(tmp_path / "trials" / f"{tid(1)}.parquet", ["case_rows"])
    for cases in (ResultStore(str(tmp_path)).cases(), load_results(str(tmp_path)).cases):
        splits = cases.groupby("trial_id", observed=True)["split"].unique()
        assert list(splits[tid(1)]) == ["test"] and list(splits[tid(2)]) == ["validation"]
    assert ResultStore(str(tmp_path)).finished_ids() == {tid(1), tid(2)}
    assert ResultStore(str(tmp_path)).trials().set_index("trial_id")["case_rows"].isna()[tid(1)]
    _rewrite(tmp_path / "cases" / f"{tid(1)}.parquet", lambda t: t.slice(0, 0))
    problems = _left_out(tmp_path, tid(1))
    assert "holds no rows for a trial stored 'ok'" in problems[f"cases/{tid(1)}.parquet"]


NEW_CASES = {"arvd": 0.25, "abd": 1.5, "tp_voxels": 3, "case_voxels": 1000,
             "case_correct_voxels": 990}  # cases columns later than split


def test_later_metric_columns_round_trip_and_old_files_read_them_as_null(tmp_path):
    """arvd, abd, tp_voxels, case_voxels, case_correct_voxels and final_val_loss are stored
    with their types; files written before them read as null (NaN in pandas) beside newer
    files, and their trials stay finished."""
    store = ResultStore(str(tmp_path))
    for n in (1, 2):
        identity, rows = _case_rows(tid(n), [(0.5, {"split": "train"}), (0.6, {})])
        store.write_trial({**identity, "status": "ok", "config": "{}", "final_val_loss": 0.3},
                          [{**row, **NEW_CASES} for row in rows])
    cases = pq.read_table(tmp_path / "cases" / f"{tid(1)}.parquet").schema
    assert [str(cases.field(c).type) for c in NEW_CASES] == ["double", "double", "int64",
                                                             "int64", "int64"]
    _as_old_file(tmp_path / "cases" / f"{tid(1)}.parquet", list(NEW_CASES))
    _as_old_file(tmp_path / "trials" / f"{tid(1)}.parquet", ["final_val_loss"])
    for results in (ResultStore(str(tmp_path)).read(), load_results(str(tmp_path))):
        by_trial = results.cases.set_index(["trial_id", "case_id"])
        for column, value in NEW_CASES.items():
            assert by_trial.loc[tid(1), column].isna().all()
            assert (by_trial.loc[tid(2), column] == value).all()
        losses = results.trials.set_index("trial_id")["final_val_loss"]
        assert pd.isna(losses[tid(1)]) and losses[tid(2)] == 0.3
    assert ResultStore(str(tmp_path)).finished_ids() == {tid(1), tid(2)}


@pytest.mark.parametrize("column", ["arvd", "abd", "tp_voxels", "case_correct_voxels"])
def test_later_metric_columns_are_range_checked(tmp_path, column):
    """A negative relative volume difference, boundary distance or voxel count is refused
    by the writer."""
    store = ResultStore(str(tmp_path))
    identity, rows = _case_rows(tid(1), [(0.5, {})])
    with pytest.raises(ValueError, match=rf"column '{column}' holds values in \[-1, -1\]"):
        store.write_trial({**identity, "status": "ok", "config": "{}"},
                          [{**row, **NEW_CASES, column: -1} for row in rows])


def test_files_without_statistics_are_checked_on_their_values(two):
    """Another tool may write no column statistics: the same checks run on the values."""
    store, root = two
    path = root / "cases" / f"{tid(2)}.parquet"
    table = pq.read_table(path)
    pq.write_table(table, path, write_statistics=False)
    assert ResultStore(str(root)).finished_ids() == {tid(1), tid(2)}
    bad = table.set_column(table.schema.get_field_index("dsc"), "dsc", pa.array([2.0] * 6))
    pq.write_table(bad, path, write_statistics=False)
    assert "outside [0, 1]" in _left_out(root, tid(2))[f"cases/{tid(2)}.parquet"]
