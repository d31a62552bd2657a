"""Exactly-once results through driver kills: SIGKILL `study launch`/`study resume` at random
points, resume, and compare the final result set with the study's trial set."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.results import ResultStore
from study.spec import load_study
from study.trials import expand

FAULT_STUDY = Path(__file__).resolve().parent / "data" / "fault-study.yaml"


def _kill_session(sid: int) -> int:
    """SIGKILL every process of session ``sid`` (the driver and the Ray processes it started,
    as when the driver's machine is lost); return how many were signalled."""
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid:  # field 6 of /proc/PID/stat: session id
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def _driver(args: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "study.cli", *args], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_driver_sigkill_loses_and_duplicates_nothing(tmp_path):
    """Three SIGKILLs of the driver at random points, each followed by `study resume`: the
    final results hold every trial of the study exactly once, all `ok`, with all case rows."""
    storage = str(tmp_path / "storage")
    expected = {t.trial_id for t in expand(load_study(FAULT_STUDY))}
    rng = random.Random(20261126)
    log_path = tmp_path / "drivers.log"
    kills, started = 0, time.monotonic()
    with log_path.open("w") as log:
        args = ["launch", str(FAULT_STUDY), "--storage", storage, "--num-cpus", "2"]
        for _ in range(3):
            driver = _driver(args, log)
            try:
                driver.wait(timeout=rng.uniform(8, 25))
                break  # finished before its kill time
            except subprocess.TimeoutExpired:
                assert _kill_session(driver.pid) > 1
                driver.wait()
                kills += 1
            args = ["resume", "fault", "--storage", storage, "--num-cpus", "2"]
        final = _driver(["resume", "fault", "--storage", storage, "--num-cpus", "2"], log)
        assert final.wait(timeout=600) == 0, log_path.read_text()[-3000:]
    elapsed = time.monotonic() - started
    store = ResultStore(f"{storage}/fault/results")
    trials, cases = store.trials(), store.cases()
    assert set(trials["trial_id"]) == expected and len(trials) == len(expected)
    assert (trials["status"] == "ok").all(), trials[["trial_id", "status", "error"]]
    keys = ["trial_id", "case_id", "class_name", "postprocessed"]
    assert len(cases) == len(expected) * 2 * 2 and not cases.duplicated(keys).any()
    assert store.problems == {}
    progress = [line for line in log_path.read_text().splitlines()
                if line.startswith(("study fault:", "restoring", "["))]
    print("\n".join(progress))
    print(f"kills survived: {kills}, trials lost: 0, duplicated: 0, wall {elapsed:.0f} s")
