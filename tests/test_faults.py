"""Exactly-once results through driver kills: SIGKILL `study launch`/`study resume` at random
points, resume, and compare the final result set with the study's trial set."""

from __future__ import annotations

import random
import time

import pytest
from helpers import FAULT_STUDY, kill_session, start_driver, wait_for_training

from study.expand import expand
from study.results import ResultStore
from study.spec import load_study


@pytest.mark.slow
def test_driver_sigkill_loses_and_duplicates_nothing(tmp_path):
    """Up to three SIGKILLs of the driver while a trial trains (the first always happens),
    each followed by `study resume`: the final results hold every trial of the study exactly
    once, all `ok`, with all case rows."""
    storage = str(tmp_path / "storage")
    expected = {t.trial_id for t in expand(load_study(FAULT_STUDY))}
    rng = random.Random(20261126)
    log_path = tmp_path / "drivers.log"
    kills, started = 0, time.monotonic()
    common = ["--storage", storage, "--num-cpus", "2", "--progress-every", "0.25"]
    with log_path.open("w") as log:
        args = ["launch", str(FAULT_STUDY), *common]
        for _ in range(3):
            log.flush()
            offset = len(log_path.read_text())
            driver = start_driver(args, log)
            if not wait_for_training(log_path, offset, driver, 300):
                driver.wait()
                break  # finished every trial before its kill
            time.sleep(rng.uniform(0, 3))
            assert kill_session(driver.pid) > 1
            driver.wait()
            kills += 1
            args = ["resume", "fault", *common]
        assert kills >= 1, log_path.read_text()[-3000:]
        final = start_driver(["resume", "fault", *common], log)
        assert final.wait(timeout=600) == 0, log_path.read_text()[-3000:]
    elapsed = time.monotonic() - started
    store = ResultStore(f"{storage}/fault/results")
    trials, cases = store.trials(), store.cases()
    assert set(trials["trial_id"]) == expected and len(trials) == len(expected)
    assert (trials["status"] == "ok").all(), trials[["trial_id", "status", "error"]]
    keys = ["trial_id", "case_id", "class_name", "postprocessed"]
    test_rows = cases[cases["split"] == "test"]
    assert len(test_rows) == len(expected) * 2 * 2 and not cases.duplicated(keys).any()
    assert store.problems == {}
    progress = [line for line in log_path.read_text().splitlines()
                if line.startswith(("study fault:", "restoring", "["))]
    print("\n".join(progress))
    print(f"kills survived: {kills}, trials lost: 0, duplicated: 0, wall {elapsed:.0f} s")
