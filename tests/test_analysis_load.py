"""Reading results: empty, partial and malformed Parquet give messages naming file and column."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import ResultsError, load, load_results, sensitivity_table
from analysis._synthetic import write_study
from study.compact import compact


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    ids = write_study(root, techniques=["vanilla", "asym_focal"], fractions=(0.1,), seeds=(0,),
                      cases=3, logits=False)
    return root, ids


def _rewrite(path, change):
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def test_reads_complete_trials_only(results):
    """A cases file without its trials row (running, or killed between the writes) is left
    out and named; the other trials are read."""
    root, ids = results
    (root / "trials" / f"{ids[0]}.parquet").unlink()
    loaded = load_results(str(root))
    assert loaded.incomplete == [ids[0]]
    assert ids[0] not in set(loaded.cases["trial_id"])
    assert set(loaded.cases["trial_id"]) == set(ids[1:])
    assert len(load(str(root))) == len(loaded.cases) == 3 * 2 * 2 * (len(ids) - 1)


def test_missing_column_named_with_file(results):
    root, ids = results
    path = root / "cases" / f"{ids[1]}.parquet"
    _rewrite(path, lambda t: t.drop_columns(["dsc", "hd95"]))
    with pytest.raises(ResultsError, match=rf"cases/{ids[1]}\.parquet: missing column\(s\) "
                                           r"'dsc', 'hd95'"):
        load(str(root))


def test_wrong_type_named_with_file_column_and_types(results):
    root, ids = results
    path = root / "cases" / f"{ids[2]}.parquet"

    def to_strings(table):
        index = table.schema.get_field_index("dsc")
        return table.set_column(index, "dsc", table["dsc"].cast(pa.string()))

    _rewrite(path, to_strings)
    with pytest.raises(ResultsError, match=rf"{ids[2]}\.parquet: column 'dsc': type string, "
                                           "expected double"):
        load(str(root))
    skipped = load_results(str(root), errors="skip")
    assert list(skipped.problems) == [f"cases/{ids[2]}.parquet"]
    assert ids[2] not in set(skipped.cases["trial_id"])


def test_widened_and_null_columns_are_accepted(results):
    """int32 seeds, float32 metrics and an all-null column stand for the schema's types."""
    root, ids = results
    path = root / "cases" / f"{ids[0]}.parquet"

    def narrow(table):
        table = table.set_column(table.schema.get_field_index("seed"), "seed",
                                 table["seed"].cast(pa.int32()))
        table = table.set_column(table.schema.get_field_index("dsc"), "dsc",
                                 table["dsc"].cast(pa.float32()))
        return table.set_column(table.schema.get_field_index("hp_beta"), "hp_beta",
                                pa.nulls(len(table)))

    _rewrite(path, narrow)
    cases = load(str(root))
    assert cases["seed"].dtype == "int64" and cases["dsc"].dtype == "float64"


def test_damaged_empty_and_misnamed_files(results):
    """A truncated file and a zero-byte file are named as unreadable Parquet; a file not
    named after a trial id is named as ignored; nothing of them is read."""
    root, ids = results
    damaged = root / "trials" / f"{ids[0]}.parquet"
    damaged.write_bytes(damaged.read_bytes()[:50])
    (root / "cases" / f"{ids[1]}.parquet").write_bytes(b"")
    (root / "cases" / "empty.parquet").write_bytes(b"")
    with pytest.raises(ResultsError) as error:
        load(str(root))
    message = str(error.value)
    assert f"trials/{ids[0]}.parquet: not a readable Parquet file" in message
    assert f"cases/{ids[1]}.parquet: not a readable Parquet file" in message
    assert "cases/empty.parquet: not named <trial_id>.parquet" in message
    skipped = load_results(str(root), errors="skip")
    assert set(skipped.cases["trial_id"]) == set(ids[2:]) == skipped.finished_ids()


def test_empty_and_absent_folders(tmp_path):
    """No folder: FileNotFoundError naming it. An empty study: empty tables, and asking it for
    a table says there are no finished trials."""
    with pytest.raises(FileNotFoundError, match="no-such-study"):
        load(str(tmp_path / "no-such-study"))
    (tmp_path / "empty").mkdir()
    cases = load(str(tmp_path / "empty"))
    assert cases.empty and "dsc" in cases.columns
    with pytest.raises(ValueError, match="cases table is empty"):
        sensitivity_table(cases, "d", 0.1, True)


def test_frames_without_columns_are_named():
    """A hand-made frame that lacks contract columns or holds text metrics is refused."""
    with pytest.raises(ResultsError, match="missing column.*'param_label'"):
        sensitivity_table(pd.DataFrame({"technique": ["vanilla"]}), "d", 0.1, True)
    frame = pd.DataFrame({c: ["x"] for c in (
        "technique", "param_label", "dataset", "model", "case_id", "class_name", "status")})
    frame = frame.assign(fraction=0.1, seed=0, postprocessed=True, dsc="0.5", sensitivity=0.5,
                         precision=0.5, hd95=1.0)
    with pytest.raises(ResultsError, match="column 'dsc' has dtype"):
        sensitivity_table(frame, "x", 0.1, True)


def test_rows_equal_a_plain_parquet_read(results):
    """On a clean study the reader returns exactly the rows a plain ``pyarrow.dataset`` read
    of ``cases/`` returns, with string columns as categoricals."""
    import pyarrow.dataset as ds

    root, ids = results
    loaded = load(str(root))
    plain = ds.dataset(root / "cases").to_table().to_pandas()
    keys = ["trial_id", "case_id", "class_name", "postprocessed"]
    assert isinstance(loaded["trial_id"].dtype, pd.CategoricalDtype)
    left = loaded.astype({c: str for c in loaded.select_dtypes("category")})
    left = left.sort_values(keys).reset_index(drop=True)
    right = plain[left.columns].sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)
    assert len(left) == len(ids) * 3 * 2 * 2


def test_compacted_part_read_whole_holds_no_other_trials_rows(tmp_path):
    """A part is read whole when its row count is that of the trials wanted from it; should
    it hold rows of another trial after all (here: a manifest naming one trial less, whose
    rows it gives to another), those rows are still left out, and the trial whose count is
    off is dropped with the reason."""
    ids = write_study(tmp_path, techniques=["vanilla", "asym_focal"], fractions=(0.1,),
                      seeds=(0,), cases=3, logits=False)
    part = compact(str(tmp_path)).part
    path = tmp_path / "compacted" / "manifest.json"
    manifest = json.loads(path.read_text())
    kept, gone = ids[0], ids[1]
    manifest["trials"][kept]["case_rows"] += manifest["trials"].pop(gone)["case_rows"]
    path.write_text(json.dumps(manifest))
    results = load_results(str(tmp_path), errors="skip")
    assert set(results.cases["trial_id"]) == set(ids) - {kept, gone}
    assert len(results.cases) == 12 * (len(ids) - 2)
    assert results.problems[f"compacted/{part}.cases.parquet"] == (
        f"trial {kept}: 12 rows, expected 24")
