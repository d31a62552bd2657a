"""Ray Tune orchestration on a local 2-CPU Ray: exactly one result per trial, no repeats."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
from helpers import real_study_file

import study
from study import orchestrate
from study.cli import main
from study.expand import expand
from study.profiles import TINY_GPU_SHARE
from study.results import ResultStore
from study.stored_plan import Plan, study_uri


@pytest.fixture(scope="module")
def launched(ray_session, tiny_study_path, data_dir, tmp_path_factory):
    """`study launch tiny` in this process (the session's Ray), once for this module's tests,
    stdout captured: not a terminal, so progress comes as plain lines (every 0.2 s here)."""
    storage = str(tmp_path_factory.mktemp("launched") / "storage")
    options = orchestrate.RunOptions(data_dir=str(data_dir), results_uri=f"{storage}/tiny/results",
                              threads=1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["launch", str(tiny_study_path), "--storage", storage, "--data-dir",
                       options.data_dir, "--progress-every", "0.2"])
    return storage, options, out.getvalue().splitlines(), status


def test_tune_run_writes_exactly_one_row_per_trial(launched, tiny_spec):
    """A Tune run of 2 trials writes 2 `trials` rows (with the code's version) and
    2 x 2 cases x 1 class x 2 rows; its stdout has progress lines per running trial (label,
    iteration N/4 or loading, elapsed), study lines (done/running/pending/failed, ETA) and
    one line per finished trial with the trial's own time."""
    storage, options, lines, status = launched
    store = ResultStore(options.results_uri)
    trials, cases = store.trials(), store.cases()
    assert status == 0
    assert sorted(trials["trial_id"]) == sorted(t.trial_id for t in expand(tiny_spec))
    assert (trials["status"] == "ok").all()
    assert set(trials["code_version"]) == {study.code_version()}
    assert len(cases[cases["split"] == "test"]) == 8 and not cases.duplicated(
        ["trial_id", "case_id", "class_name", "postprocessed"]).any()
    running = [x for x in lines if re.fullmatch(
        r"  synthetic-brats (vanilla —|asym_focal γ = 2) fraction 0\.5 seed 0: "
        r"(starting \(loading data\)|iteration [0-4]/4, .*), \d+ s elapsed", x)]
    assert running, "\n".join(lines)
    assert any(re.fullmatch(r"tiny: [0-2]/2 done, [0-2] running, [0-2] pending, 0 failed; "
                            r"ETA .+", x) for x in lines)
    finished = [x for x in lines if x.startswith(("[1/2] ", "[2/2] "))]
    assert len(finished) == 2 and all(re.search(r": ok, DSC .* in \d+ s$", x)
                                      for x in finished)
    assert not any("Tuner.restore" in x or "Configuration for experiment" in x for x in lines)


def test_relaunch_and_resume_repeat_no_finished_work(launched, tiny_spec):
    """Launching again runs nothing; after one trial's results are damaged (truncated cases
    file), resume detects it and reruns that trial only."""
    storage, options, _, _ = launched
    results = Path(options.results_uri)
    kept, lost = sorted((results / "trials").glob("*.parquet"))
    kept_mtime = kept.stat().st_mtime_ns
    lines: list[str] = []
    assert orchestrate.launch(expand(tiny_spec), storage, options, printer=lines.append) == []
    assert "2 already done, 0 to run" in lines[0]
    damaged = results / "cases" / lost.name
    damaged.write_bytes(damaged.read_bytes()[:64])
    lost_mtime = lost.stat().st_mtime_ns
    resumed = orchestrate.prepare_resume("tiny", storage, printer=lines.append)
    assert orchestrate.resume(*resumed) == []
    assert any("1 already done, 1 to run" in line for line in lines)
    assert lost.stat().st_mtime_ns > lost_mtime and kept.stat().st_mtime_ns == kept_mtime
    cases = ResultStore(options.results_uri).cases()
    assert len(cases[cases["split"] == "test"]) == 8


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

    assert orchestrate.gpus_per_trial({("deepmedic", "basic")}, None) == 0.0
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 2.0})
    assert orchestrate.gpus_per_trial({("deepmedic", "basic")}, None) == 0.25
    assert orchestrate.gpus_per_trial({("deepmedic", "basic"), ("unet", "paper")}, None) == 1.0
    assert orchestrate.gpus_per_trial({("unet", "tiny")}, None) == TINY_GPU_SHARE
    assert orchestrate.gpus_per_trial({("unet", "paper")}, 0.5) == 0.5


def test_a_trial_failing_inside_ray_is_stored_and_fails_status(ray_session, tmp_path, data_dir,
                                                               capsys):
    """A trial that fails after Ray started (unreadable images behind a valid listing) is a
    `failed` row with the error; the launch says so and exits 1, `study status` exits 1 with
    the reason."""
    root = tmp_path / "brats"
    for i in range(6):
        case = root / f"c{i}"
        case.mkdir(parents=True)
        for channel in ("t1", "t1ce", "t2", "flair", "seg"):
            (case / f"c{i}_{channel}.nii.gz").write_bytes(b"garbage")
    path = real_study_file(tmp_path, root)
    storage = str(tmp_path / "storage")
    assert main(["launch", str(path), "--storage", storage, "--data-dir", str(data_dir),
                 "--max-failures", "0"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"\[1/1\] brats vanilla — fraction 0\.5 seed 0: failed: DataError: "
                     r".*c\d_\w+\.nii\.gz: not a readable image", out), out
    trials = ResultStore(f"{storage}/real/results").trials()
    assert list(trials["status"]) == ["failed"] and "not a readable image" in trials.at[
        0, "error"]
    assert main(["status", "real", "--storage", storage]) == 1
    assert "not a readable image" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_pauses_and_resume_continues(tmp_path):
    """SIGINT to the launch's process group (Ctrl-C in a terminal): exit 130 with
    "interrupted: N done, M left — continue with `study resume fault --storage S`", no Ray
    restore hint; `study resume` says where each started trial continues and finishes."""
    storage = str(tmp_path / "storage")
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with out.open("w") as stdout, err.open("w") as stderr:
        launch = subprocess.Popen(
            [sys.executable, "-m", "study.cli", "launch", str(helpers.FAULT_STUDY), "--storage",
             storage, "--num-cpus", "2", "--progress-every", "0.25"],
            stdout=stdout, stderr=stderr, start_new_session=True, env=env)
        try:
            assert helpers.wait_for_training(out, 0, launch, 300), (
                out.read_text()[-3000:] + err.read_text()[-3000:])
            os.killpg(launch.pid, signal.SIGINT)
            assert launch.wait(timeout=300) == 130, err.read_text()[-3000:]
        finally:
            try:
                os.killpg(launch.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    message = err.read_text().strip().splitlines()[-1]
    found = re.fullmatch(r"study: interrupted: (\d) done, (\d) left — continue with "
                         rf"`study resume fault --storage {re.escape(storage)}`", message)
    assert found and int(found[1]) + int(found[2]) == 6 and int(found[2]) > 0, message
    assert "Tuner.restore" not in out.read_text() + err.read_text()
    resumed = subprocess.run([sys.executable, "-m", "study.cli", "resume", "fault",
                              "--storage", storage, "--num-cpus", "2"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"^  synthetic-brats .*: (continues from its checkpoint at iteration "
                     r"(4|8|12|16|20)/24|starts again from iteration 0)", resumed.stdout,
                     re.MULTILINE)
    trials = ResultStore(f"{storage}/fault/results").trials()
    assert len(trials) == 6 and (trials["status"] == "ok").all()
    print(out.read_text()[-2000:], message, resumed.stdout[:1500], sep="\n")


def test_a_request_no_node_can_satisfy_is_refused(ray_session):
    """More CPUs or GPUs per trial than any node of a local Ray has: one error instead of
    Ray's endless warnings; on a cluster (an address) a warning, the autoscaler may help."""
    with pytest.raises(ValueError, match=r"asks for 3 CPU\(s\) and 0 GPU\(s\), but no node"):
        orchestrate.check_resources(3, 0, None, print)
    with pytest.raises(ValueError, match=r"and 0.25 GPU\(s\), but no node offers that"):
        orchestrate.check_resources(1, 0.25, None, print)
    lines: list[str] = []
    orchestrate.check_resources(1, 0.25, "auto", lines.append)
    assert lines and lines[0].startswith("warning: a trial asks for")
    orchestrate.check_resources(1, 0, None, lines.append)  # fits: nothing said
    assert len(lines) == 1


def test_grid_params_map_tune_configs_to_trial_params():
    """Tune's grid holds trial ids only; the param of each comes from the plan."""
    params = {"a" * 16: {"trial_id": "a" * 16, "x": 1}, "b" * 16: {"trial_id": "b" * 16}}
    to_param = orchestrate.GridParams(params)
    assert to_param({"trial": "a" * 16}) is params["a" * 16]
    with pytest.raises(KeyError):
        to_param({"trial": "c" * 16})


def test_launch_runs_large_studies_in_batches(ray_session, tiny_spec, data_dir, tmp_path,
                                              monkeypatch):
    """With experiments of at most one trial, the 2-trial study runs as 2 Tune experiments,
    each trial stored once (trials that train nothing: the batching is the driver's)."""
    monkeypatch.setattr(orchestrate, "GRID_BATCH", 1)
    storage = str(tmp_path / "storage")
    options = orchestrate.RunOptions(data_dir=str(data_dir),
                                     results_uri=f"{storage}/tiny/results", threads=1)
    cloudpickle = ray_session.cloudpickle
    cloudpickle.register_pickle_by_value(helpers)  # Ray's workers cannot import tests/
    try:
        missing = orchestrate.launch(expand(tiny_spec), storage, options,
                                     trial=helpers.row_only_trial, printer=lambda line: None)
    finally:
        cloudpickle.unregister_pickle_by_value(helpers)
    assert missing == []
    experiments = sorted(p.name for p in (Path(storage) / "tiny" / "tune").iterdir()
                         if p.name.startswith("run-"))
    assert len(experiments) == 2, experiments
    trials = ResultStore(f"{storage}/tiny/results").trials()
    planned = Plan.load(study_uri(storage, "tiny")).trials
    assert sorted(trials["trial_id"]) == sorted(t["trial_id"] for t in planned)
    assert (trials["status"] == "ok").all() and not trials["trial_id"].duplicated().any()
