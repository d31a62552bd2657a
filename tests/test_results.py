"""The Parquet results store: atomic per-trial files, replace-not-append, damage detection."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pandas as pd
import pytest

from study.results import ResultStore, identity_columns


def _param(trial_id="t1", technique="asym_focal", hp=None):
    return {"study": "s", "trial_id": trial_id, "param_label": "γ = 2",
            "config": {"dataset": {"name": "d"}, "model": {"name": "unet", "preset": "tiny"},
                       "technique": technique, "fraction": 0.5, "seed": 0,
                       "hp": hp if hp is not None else {"gamma": 2.0}}}


def _store_trial(store, trial_id="t1", status="ok", dsc=0.5):
    identity = identity_columns(_param(trial_id))
    row = {**identity, "status": status, "config": "{}",
           "started_at": datetime.now(timezone.utc)}
    cases = [{**identity, "case_id": f"c{i}", "class_name": "tumour", "postprocessed": pp,
              "dsc": dsc, "hd95": math.inf, "pred_voxels": 0, "ref_voxels": 3, "status": status}
             for i in range(3) for pp in (False, True)]
    store.write_trial(row, cases)


def test_rerun_replaces_rows_instead_of_adding(tmp_path):
    """Writing a trial twice leaves one trials row and its case rows once (the second copy)."""
    store = ResultStore(str(tmp_path))
    _store_trial(store, dsc=0.1)
    _store_trial(store, dsc=0.9)
    assert len(store.trials()) == 1
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


def test_damaged_file_is_detected_and_its_trial_not_finished(tmp_path):
    """A truncated cases file makes its trial unfinished (it reruns) and is reported; the
    other trials stay readable."""
    store = ResultStore(str(tmp_path))
    _store_trial(store, "t1")
    _store_trial(store, "t2")
    damaged = tmp_path / "cases" / "t2.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    fresh = ResultStore(str(tmp_path))
    assert fresh.finished_ids() == {"t1"}
    assert "t2" in fresh.problems and "unreadable" in fresh.problems["t2"]
    assert set(fresh.cases()["trial_id"]) == {"t1"}


def test_file_missing_a_column_is_not_finished(tmp_path):
    """A trials file without a contract column (written by other code) is reported and its
    trial runs again, rather than being read as nulls and counted as finished."""
    import pyarrow.parquet as pq

    store = ResultStore(str(tmp_path))
    _store_trial(store, "t1")
    _store_trial(store, "t2")
    path = tmp_path / "trials" / "t2.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["status"]), path)
    fresh = ResultStore(str(tmp_path))
    assert fresh.finished_ids() == {"t1"} and "t2" in fresh.problems


def test_bad_status_and_foreign_rows_are_refused(tmp_path):
    """Unknown statuses and case rows of another trial are errors, nothing is written."""
    store = ResultStore(str(tmp_path))
    with pytest.raises(ValueError, match="status"):
        _store_trial(store, status="weird")
    row = {**identity_columns(_param("t1")), "status": "ok", "config": "{}"}
    foreign = {**identity_columns(_param("t2")), "case_id": "c", "class_name": "x",
               "postprocessed": False, "status": "ok"}
    with pytest.raises(ValueError, match="another trial"):
        store.write_trial(row, [foreign])
    assert store.trials().empty and store.cases().empty


def test_analysis_agrees_with_the_store_on_finished_trials(tmp_path):
    """`study report` derives pending trials from the loaded tables: the same finished set as
    the store's, damaged files and failed trials excluded."""
    from analysis.load import load_results

    store = ResultStore(str(tmp_path))
    _store_trial(store, "t1")
    _store_trial(store, "t2")
    _store_trial(store, "t3", status="failed")
    damaged = tmp_path / "cases" / "t2.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    loaded = load_results(str(tmp_path), errors="skip").finished_ids()
    assert loaded == ResultStore(str(tmp_path)).finished_ids() == {"t1"}


def _case_rows(trial_id, splits):
    identity = identity_columns(_param(trial_id))
    return identity, [{**identity, "case_id": f"c{i}", "class_name": "tumour",
                       "postprocessed": True, "dsc": dsc, "status": "ok", **split}
                      for i, (dsc, split) in enumerate(splits)]


def test_split_defaults_to_test_and_is_checked(tmp_path):
    """Case rows without ``split`` are test rows; validation rows keep theirs; an unknown
    split is refused before anything is written."""
    store = ResultStore(str(tmp_path))
    identity, rows = _case_rows("t1", [(0.5, {}), (0.7, {"split": "validation"})])
    store.write_trial({**identity, "status": "ok", "config": "{}"}, rows)
    assert store.cases().set_index("case_id")["split"].to_dict() == {"c0": "test",
                                                                     "c1": "validation"}
    identity, rows = _case_rows("t2", [(0.5, {"split": "train"})])
    with pytest.raises(ValueError, match=r"split: expected one of \('test', 'validation'\), "
                                         "got 'train'"):
        store.write_trial({**identity, "status": "ok", "config": "{}"}, rows)
    assert set(store.trials()["trial_id"]) == {"t1"}


def test_summary_means_are_per_split(tmp_path):
    """What Tune sees: ``dsc_pp`` over the test rows only, ``dsc_pp_validation`` over the
    validation rows; rows without ``split`` count as test rows."""
    from study.results import summarise

    _, rows = _case_rows("t1", [(0.2, {}), (0.4, {"split": "test"}),
                                (0.9, {"split": "validation"})])
    summary = summarise({"status": "ok", "iterations_done": 1, "train_seconds": 1.0}, rows)
    assert summary["dsc_pp"] == pytest.approx(0.3)
    assert summary["dsc_pp_validation"] == pytest.approx(0.9)
    assert math.isnan(summary["dsc_raw"]) and math.isnan(summary["dsc_raw_validation"])


def test_files_without_split_are_read_as_test(tmp_path):
    """A cases file written before the ``split`` column existed is read as test rows, alone
    or with newer files, by the store and by ``analysis``; its trial stays finished."""
    import pyarrow.parquet as pq

    from analysis.load import load_results

    store = ResultStore(str(tmp_path))
    _store_trial(store, "old")
    identity, rows = _case_rows("new", [(0.5, {"split": "validation"})])
    store.write_trial({**identity, "status": "ok", "config": "{}"}, rows)
    old = tmp_path / "cases" / "old.parquet"
    pq.write_table(pq.read_table(old).drop_columns(["split"]), old)
    assert "split" not in pq.read_schema(old).names
    for cases in (ResultStore(str(tmp_path)).cases(), load_results(str(tmp_path)).cases):
        splits = cases.groupby("trial_id", observed=True)["split"].unique()
        assert list(splits["old"]) == ["test"] and list(splits["new"]) == ["validation"]
    assert ResultStore(str(tmp_path)).finished_ids() == {"old", "new"}
    damaged = tmp_path / "cases" / "new.parquet"  # the store then reads file by file
    damaged.write_bytes(damaged.read_bytes()[:100])
    fresh = ResultStore(str(tmp_path))
    assert fresh.finished_ids() == {"old"} and set(fresh.problems) == {"new"}
    assert set(fresh.cases()["split"]) == {"test"}
    assert set(load_results(str(tmp_path), errors="skip").cases["split"]) == {"test"}
