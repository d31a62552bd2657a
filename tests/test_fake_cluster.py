"""A real autoscaling study on one machine, with Ray's fake multi-node provider.

The head (started with ``ray start --head``, in a process session of its own) offers no CPU, so
the tiny study's two 1-CPU trials stay pending until the head's autoscaler (v1) starts worker
"nodes": more Ray processes on this machine, each registered as a node of 1 CPU
(``tests/data/fake-cluster.yaml``). ``study launch --address`` must finish the study on them.

Loopback only: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes every node (the head, the workers
the autoscaler starts in-process, the driver) register as 127.0.0.1. That knob only forbids
``ray start --address`` joins, which the fake provider does not use.

Never ``ray stop`` here (it would kill every Ray on the machine): teardown SIGKILLs the head's
process session, which holds the autoscaler, the fake workers and their trial processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import kill_session

from study.expand import expand
from study.results import ResultStore
from study.spec import load_study

DATA = Path(__file__).resolve().parent / "data"
CLUSTER_CONFIG = DATA / "fake-cluster.yaml"
TINY_STUDY = DATA / "tiny-study.yaml"
WORKER_KILL_STUDY = DATA / "worker-kill-study.yaml"
RAY_CLI = Path(sys.executable).with_name("ray")
HEAD_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"  # FAKE_HEAD_NODE_ID
ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "PYTHONUNBUFFERED": "1",
}
HEAD_ENV = {
    "RAY_FAKE_CLUSTER": "1",  # required by the provider; makes the head's node id HEAD_ID
    "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the default 5 s round slows every scale-up
}

# Prints the cluster's nodes and where each trial actor ran (dead ones too), as JSON.
PROBE = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
nodes = [{"id": n["NodeID"], "alive": n["Alive"], "ip": n["NodeManagerAddress"],
          "cpu": n["Resources"].get("CPU", 0) if n["Alive"] else None} for n in ray.nodes()]
actors = [{"class": a["ActorClassName"], "node": a["Address"]["NodeID"]}
          for a in ray._private.state.actors().values()]
print("PROBE " + json.dumps({"nodes": nodes, "actors": actors}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log, env: dict) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _run(args: list[str], log, env: dict, timeout: float) -> int:
    """Run ``args`` in a new process session; whatever it leaves behind dies with the session."""
    proc = _start(args, log, env)
    try:
        return proc.wait(timeout=timeout)
    finally:
        kill_session(proc.pid)
        proc.wait()


@dataclass
class FakeCluster:
    """A running fake multi-node cluster: its address, environment and shared log."""

    address: str
    env: dict
    log: object  # the open cluster log, also for the processes a test starts
    log_path: Path
    tmp_path: Path
    started: float  # time.monotonic() before the head started
    head_up: float  # seconds the head took to start

    def launch(self, study: Path, storage: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "study.cli", "launch", str(study),
                "--storage", str(storage), "--address", self.address, *args]

    def probe(self) -> dict:
        """The cluster's nodes and where each trial actor ran (``PROBE``)."""
        path = self.tmp_path / "probe.log"
        with path.open("w") as probe_log:
            assert _run([sys.executable, "-c", PROBE, self.address], probe_log, self.env,
                        120) == 0, path.read_text()[-3000:]
        line = [x for x in path.read_text().splitlines() if x.startswith("PROBE ")]
        assert line, path.read_text()[-3000:]
        return json.loads(line[-1][len("PROBE "):])

    def tail(self, chars: int = 5000) -> str:
        self.log.flush()
        return self.log_path.read_text()[-chars:]


@pytest.fixture
def fake_cluster(tmp_path):
    """Start the fake cluster's head in a process session of its own; SIGKILL that session
    (head, autoscaler, fake workers, their trial processes) afterwards."""
    if not RAY_CLI.exists():
        pytest.skip(f"no Ray CLI at {RAY_CLI}")
    started = time.monotonic()
    env = {**os.environ, **ENV}
    gcs_port = _free_port()
    address = f"127.0.0.1:{gcs_port}"
    config = yaml.safe_load(CLUSTER_CONFIG.read_text())
    config["provider"]["gcs_address"] = address  # where the fake workers join (default 6379)
    config_path = tmp_path / "fake-cluster.json"
    config_path.write_text(json.dumps(config))
    # Ray's Unix sockets live under the temp dir (session_<time>_<pid>/sockets/...), and
    # pytest's tmp_path can push them past the 107-byte limit of a socket path.
    temp_dir = (tmp_path / "ray" if len(str(tmp_path)) < 40
                else Path(tempfile.mkdtemp(prefix="rayfc-", dir="/tmp")))
    log_path = tmp_path / "cluster.log"
    head = None
    try:
        with log_path.open("w") as log:
            head = subprocess.Popen(
                [str(RAY_CLI), "start", "--head", f"--port={gcs_port}", "--num-cpus=0",
                 f"--autoscaling-config={config_path}", f"--temp-dir={temp_dir}",
                 "--include-dashboard=false", "--disable-usage-stats",
                 f"--dashboard-agent-listen-port={_free_port()}",
                 "--min-worker-port=0", "--max-worker-port=0",
                 "--object-store-memory=100000000"],
                stdout=log, stderr=subprocess.STDOUT, env={**env, **HEAD_ENV},
                start_new_session=True)
            assert head.wait(timeout=120) == 0, log_path.read_text()[-3000:]
            yield FakeCluster(address, env, log, log_path, tmp_path, started,
                              time.monotonic() - started)
    finally:
        if head is not None:
            kill_session(head.pid)
        if temp_dir.parent != tmp_path:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _worker_ids(probe: dict) -> list[str]:
    nodes = {n["id"]: n for n in probe["nodes"]}
    assert HEAD_ID in nodes, nodes  # the fake provider's head, so the other ids are its workers
    assert {n["ip"] for n in nodes.values()} == {"127.0.0.1"}, nodes  # loopback only
    return sorted(i for i in nodes if i != HEAD_ID)


@pytest.mark.cluster
def test_study_runs_on_workers_the_autoscaler_adds(fake_cluster, tmp_path):
    cluster = fake_cluster
    storage = tmp_path / "storage"
    launched = time.monotonic()
    status = _run(cluster.launch(TINY_STUDY, storage), cluster.log, cluster.env, 600)
    assert status == 0, cluster.tail()
    study_s = time.monotonic() - launched
    probe = cluster.probe()

    expected = {t.trial_id for t in expand(load_study(TINY_STUDY))}
    trials = ResultStore(f"{storage}/tiny/results").trials()
    assert set(trials["trial_id"]) == expected and len(trials) == len(expected)
    assert (trials["status"] == "ok").all(), trials[["trial_id", "status"]]

    workers = _worker_ids(probe)
    assert 1 <= len(workers) <= 2, probe["nodes"]  # max_workers: 2
    # Tune's trial actors (reused from trial to trial) ran on the workers, never on the
    # CPU-less head.
    trial_nodes = [a["node"] for a in probe["actors"] if a["class"] == "ImplicitFunc"]
    assert trial_nodes, probe["actors"]
    assert set(trial_nodes) <= set(workers), (trial_nodes, workers)
    print(f"\nhead up in {cluster.head_up:.0f} s; study {study_s:.0f} s; "
          f"{len(workers)} worker node(s) appeared: {workers}; trial actors on "
          f"{len(set(trial_nodes))} of them; total {time.monotonic() - cluster.started:.0f} s")


def _reports(result_json: Path) -> list[dict]:
    """The trial's Tune results so far (a line being written is skipped)."""
    rows = []
    for line in result_json.read_text().splitlines() if result_json.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _kill_trial_node(pid: int) -> int:
    """SIGKILL the fake worker node hosting the trial process ``pid``: its raylet (the trial
    worker's parent, started by the head's autoscaler), then the trial process itself.
    Return the raylet's pid."""
    raylet = _ppid(pid)
    cmdline = Path(f"/proc/{raylet}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "raylet" in cmdline, f"trial pid {pid}'s parent {raylet} is not a raylet: {cmdline}"
    os.kill(raylet, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    return raylet


@pytest.mark.cluster
def test_trial_resumes_from_checkpoint_after_its_worker_node_dies(fake_cluster, tmp_path):
    """Issue 6: SIGKILL the worker node running a trial after its first checkpoints; Tune
    retries the trial (``--max-failures 1``) on a worker that is left or that the autoscaler
    adds, from its last checkpoint, and the study still finishes with one ok result."""
    cluster = fake_cluster
    storage = tmp_path / "storage"
    [trial] = expand(load_study(WORKER_KILL_STUDY))
    every = yaml.safe_load(WORKER_KILL_STUDY.read_text())["training"]["checkpoint_every"]
    iterations = trial.config.training.iterations
    launched = time.monotonic()
    driver = _start(cluster.launch(WORKER_KILL_STUDY, storage, "--max-failures", "1"),
                    cluster.log, cluster.env)
    try:
        # Wait until the trial has reported (and so persisted) at least two checkpoints.
        deadline = time.monotonic() + 300
        killed_at = None
        while killed_at is None:
            assert driver.poll() is None, f"launch ended before the kill:\n{cluster.tail()}"
            assert time.monotonic() < deadline, cluster.tail()
            [*_, last] = [{}, *[r for run in storage.glob(f"workerkill/tune/run-*/{trial.trial_id}")
                                for r in _reports(run / "result.json") if "iteration" in r]]
            if last.get("iteration", 0) >= 2 * every:
                assert last["iteration"] < iterations, "the trial ended before it could be killed"
                raylet = _kill_trial_node(last["pid"])
                killed_at, kill_s = last["iteration"], time.monotonic() - launched
            time.sleep(0.1)
        status = driver.wait(timeout=600)
        assert status == 0, cluster.tail()
    finally:
        kill_session(driver.pid)
        driver.wait()
    study_s = time.monotonic() - launched
    probe = cluster.probe()

    trials = ResultStore(f"{storage}/workerkill/results").trials()
    assert list(trials["trial_id"]) == [trial.trial_id], trials[["trial_id", "status"]]
    assert list(trials["status"]) == ["ok"], trials[["trial_id", "status", "error"]]
    assert list(trials["iterations_done"]) == [iterations]

    [run] = storage.glob(f"workerkill/tune/run-*/{trial.trial_id}")
    rows = [r for r in _reports(run / "result.json") if "iteration" in r]
    restarts = [i for i, r in enumerate(rows) if i and r["iterations_since_restore"] == 1]
    assert len(restarts) == 1, [(r["iteration"], r["iterations_since_restore"]) for r in rows]
    before, after = rows[:restarts[0]], rows[restarts[0]:]
    assert before[-1]["iteration"] >= killed_at and before[-1]["pid"] != after[0]["pid"]
    # Every report at a multiple of `every` carried a checkpoint; the retry restored the last
    # persisted one, so its first report is one checkpoint interval later, not iteration
    # `every` as a run from scratch would be, and training_iteration continues.
    resumed_from = after[0]["iteration"] - every
    assert every < after[0]["iteration"] and resumed_from % every == 0, after[0]
    assert 2 * every <= resumed_from <= before[-1]["iteration"], (resumed_from, before[-1])
    assert [r["iteration"] for r in after] == list(range(resumed_from + every, iterations + 1,
                                                         every))
    assert after[0]["training_iteration"] > after[0]["iterations_since_restore"]

    workers = _worker_ids(probe)
    trial_nodes = [a["node"] for a in probe["actors"] if a["class"] == "ImplicitFunc"]
    assert len(trial_nodes) == 2 and set(trial_nodes) <= set(workers), (trial_nodes, workers)
    dead = {n["id"] for n in probe["nodes"] if not n["alive"]}
    assert trial_nodes[0] in dead or trial_nodes[1] in dead, (trial_nodes, probe["nodes"])
    print(f"\nhead up in {cluster.head_up:.0f} s; killed raylet {raylet} (worker node of trial "
          f"pid {before[-1]['pid']}) at iteration {killed_at} ({kill_s:.0f} s after launch); "
          f"the retry resumed from iteration {resumed_from} (pid {after[0]['pid']}); "
          f"study {study_s:.0f} s; nodes {[(n['id'][-6:], n['alive']) for n in probe['nodes']]}; "
          f"total {time.monotonic() - cluster.started:.0f} s")
