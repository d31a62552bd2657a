"""Ray Tune orchestration on a local 2-CPU Ray: exactly one result per trial, no repeats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from study import tune
from study.profiles import TINY_GPU_SHARE
from study.results import ResultStore
from study.trials import expand


@pytest.fixture
def launched(ray_session, tiny_spec, run_options, tmp_path):
    storage = str(tmp_path / "storage")
    options = tune.RunOptions(**{**run_options.__dict__,
                                 "results_uri": f"{storage}/tiny/results"})
    lines: list[str] = []
    missing = tune.launch(expand(tiny_spec), storage, options, printer=lines.append)
    return storage, options, lines, missing


def test_tune_run_writes_exactly_one_row_per_trial(launched, tiny_spec):
    """A Tune run of 2 trials writes 2 `trials` rows and 2 x 2 cases x 1 class x 2 rows."""
    storage, options, lines, missing = launched
    store = ResultStore(options.results_uri)
    trials, cases = store.trials(), store.cases()
    assert missing == []
    assert sorted(trials["trial_id"]) == sorted(t.trial_id for t in expand(tiny_spec))
    assert (trials["status"] == "ok").all()
    assert len(cases) == 8 and not cases.duplicated(
        ["trial_id", "case_id", "class_name", "postprocessed"]).any()
    assert any(line.startswith("[2/2]") for line in lines)


def test_relaunch_and_resume_repeat_no_finished_work(launched, tiny_spec):
    """Launching again runs nothing; after one trial's results are damaged (truncated cases
    file), resume detects it and reruns that trial only."""
    storage, options, _, _ = launched
    results = Path(options.results_uri)
    kept, lost = sorted((results / "trials").glob("*.parquet"))
    kept_mtime = kept.stat().st_mtime_ns
    lines: list[str] = []
    assert tune.launch(expand(tiny_spec), storage, options, printer=lines.append) == []
    assert "2 already done, 0 to run" in lines[0]
    damaged = results / "cases" / lost.name
    damaged.write_bytes(damaged.read_bytes()[:64])
    lost_mtime = lost.stat().st_mtime_ns
    assert tune.resume("tiny", storage, printer=lines.append) == []
    assert any("1 already done, 1 to run" in line for line in lines)
    assert lost.stat().st_mtime_ns > lost_mtime and kept.stat().st_mtime_ns == kept_mtime
    assert len(ResultStore(options.results_uri).cases()) == 8


def test_status_command_counts_trials(launched):
    """`study status` prints per dataset/fraction/technique counts from the stored results."""
    storage, _, _, _ = launched
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    out = subprocess.run([sys.executable, "-m", "study.cli", "status", "tiny", "--storage",
                          storage], capture_output=True, text=True, check=True, env=env)
    assert "asym_focal" in out.stdout and "vanilla" in out.stdout
    assert out.stdout.split("\n")[0].split()[-5:] == [
        "done", "running", "pending", "failed", "diverged"]


def test_gpu_share_follows_the_model_profile(monkeypatch, ray_session):
    """Without GPUs trials ask for none; with GPUs DeepMedic shares one 4 ways, a paper U-Net
    takes a whole one, and an explicit request wins."""
    import ray

    assert tune.gpus_per_trial({("deepmedic", "basic")}, None) == 0.0
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 2.0})
    assert tune.gpus_per_trial({("deepmedic", "basic")}, None) == 0.25
    assert tune.gpus_per_trial({("deepmedic", "basic"), ("unet", "paper")}, None) == 1.0
    assert tune.gpus_per_trial({("unet", "tiny")}, None) == TINY_GPU_SHARE
    assert tune.gpus_per_trial({("unet", "paper")}, 0.5) == 0.5
