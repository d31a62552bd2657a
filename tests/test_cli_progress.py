"""Live progress without Ray: the driver's Monitor, trial heartbeats, resume points, and the
failed row of a trial that fails before training."""

from __future__ import annotations

import json
import re

import pytest

from study import progress
from study.expand import expand
from study.results import ResultStore
from study.run_options import RunOptions
from study.trial import run_trial


@pytest.fixture
def params(tiny_spec):
    return [t.as_param() for t in expand(tiny_spec)]


def test_monitor_plain_lines_and_finish_time_are_each_trials_own(params, monkeypatch):
    """Plain lines per running trial (label, iteration N/TOTAL, loss, elapsed, ETA) and a
    study line (done/running/pending/failed, ETA); a finished trial's time is its own Tune
    ``time_total_s``, not the time since launch."""
    clock = iter(range(1000, 2000, 10))  # every time.monotonic() call: 10 s later
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    lines: list[str] = []
    with progress.Monitor("tiny", total=3, done=1, printer=lines.append, every=5) as monitor:
        assert progress.monitor_for("tiny") is monitor
        first, second = params
        monitor.started(first)
        monitor.tick()
        assert lines[-2].endswith("starting (loading data), 10 s elapsed")
        assert lines[-1] == "tiny: 1/3 done, 1 running, 1 pending, 0 failed; ETA ?"
        monitor.result(first, {"iteration": 1, "train_loss": 0.75, "time_total_s": 3.0})
        monitor.result(first, {"iteration": 2, "train_loss": 0.5, "time_total_s": 13.0})
        monitor.tick()
        label = progress.trial_label(first)
        assert label == "synthetic-brats vanilla — fraction 0.5 seed 0"
        # 1 iteration per 10 s, 2 left, 10 s since the last report: ETA 10 s
        assert lines[-2] == f"  {label}: iteration 2/4, loss 0.5, ETA 10 s, 23 s elapsed"
        monitor.started(second)
        monitor.finished(first, {"status": "ok", "dsc_raw": 0.5, "dsc_pp": 0.625,
                                 "time_total_s": 42.0})
        assert lines[-1] == f"[2/3] {label}: ok, DSC 0.500 (post-processed 0.625) in 42 s"
        monitor.finished(second, {}, error="ValueError: boom")
        assert lines[-1].startswith("[3/3] ") and "failed: ValueError: boom" in lines[-1]
        assert monitor.counts() == {"done": 2, "running": 0, "pending": 0, "failed": 1}
    assert progress.monitor_for("tiny") is None


def test_monitor_live_table_renders(params):
    """On a terminal the running trials are a rich table titled with the study counts."""
    from rich.console import Console

    monitor = progress.Monitor("tiny", total=2)
    monitor.started(params[0])
    monitor.result(params[0], {"iteration": 3, "train_loss": 0.25, "time_total_s": 5.0})
    console = Console(width=140, record=True)
    console.print(monitor.table(progress.time.monotonic()))
    text = console.export_text()
    assert "tiny: 0/2 done, 1 running, 1 pending, 0 failed" in text
    assert "vanilla" in text and "3/4" in text and "0.25" in text


def test_heartbeat_record_lifecycle_and_resume_point(params, tmp_path):
    """The heartbeat carries label, iteration/total, loss, start time and checkpoint; it is
    deleted when the trial ends (also by an error: a failed row says the rest) and kept when
    the trial is interrupted, so resume can say where it continues."""
    results = str(tmp_path / "results")
    first, second = params
    with progress.Heartbeat(results, first) as beat:
        beat.update(iteration=2, loss=0.5, checkpoint=2)
        beats, damaged = progress.read_beats(results)
        record = beats[first["trial_id"]]
        assert damaged == {}
        assert {k: record[k] for k in ("iteration", "total", "loss", "checkpoint")} == {
            "iteration": 2, "total": 4, "loss": 0.5, "checkpoint": 2}
        assert record["label"] == progress.trial_label(first) and record["started_at"]
    assert progress.read_beats(results)[0] == {}
    with pytest.raises(KeyboardInterrupt), progress.Heartbeat(results, second) as beat:
        beat.update(iteration=3, loss=0.25)
        raise KeyboardInterrupt
    kept = progress.read_beats(results)[0][second["trial_id"]]
    assert progress.resume_point(kept) == (
        "starts again from iteration 0 (it had reached 3/4, no checkpoint)")
    assert progress.resume_point({**kept, "checkpoint": 2}) == (
        "continues from its checkpoint at iteration 2/4 (it had reached 3)")
    progress.mark_interrupted(results, {second["trial_id"]})
    assert "interrupted_at" in progress.read_beats(results)[0][second["trial_id"]]
    (tmp_path / "results" / "running" / "x.json").write_text("{")
    assert "unreadable heartbeat" in progress.read_beats(results)[1]["x"]


def test_a_trial_failing_before_training_stores_a_failed_row(params, tmp_path, data_dir):
    """An error before training (here: a device this machine lacks, or a config that does
    not hash to its id) is stored as a `failed` trials row naming it, then raised."""
    import torch

    results = str(tmp_path / "results")
    bad = {**params[0], "config": {**params[0]["config"], "seed": 7}}
    options = RunOptions(data_dir=str(data_dir), results_uri=results)
    with pytest.raises(ValueError, match="does not hash to its id"):
        run_trial(bad, options)
    if not torch.cuda.is_available():
        with pytest.raises((RuntimeError, AssertionError)):
            run_trial(params[1], RunOptions(data_dir=str(data_dir), results_uri=results,
                                            device="cuda"))
    trials = ResultStore(results).trials().set_index("trial_id")
    assert trials.at[bad["trial_id"], "status"] == "failed"
    assert "does not hash to its id" in trials.at[bad["trial_id"], "error"]
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?|\d+\.\d+\.\d+",
                        trials.at[bad["trial_id"], "code_version"])
    if not torch.cuda.is_available():
        assert trials.at[params[1]["trial_id"], "status"] == "failed"
    assert json.loads(trials.at[bad["trial_id"], "config"])["seed"] == 7
