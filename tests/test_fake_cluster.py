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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from test_faults import _kill_session

from study.results import ResultStore
from study.spec import load_study
from study.trials import expand

DATA = Path(__file__).resolve().parent / "data"
CLUSTER_CONFIG = DATA / "fake-cluster.yaml"
TINY_STUDY = DATA / "tiny-study.yaml"
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


def _run(args: list[str], log, env: dict, timeout: float) -> int:
    """Run ``args`` in a new process session; whatever it leaves behind dies with the session."""
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    finally:
        _kill_session(proc.pid)
        proc.wait()


@pytest.mark.cluster
@pytest.mark.skipif(not RAY_CLI.exists(), reason=f"no Ray CLI at {RAY_CLI}")
def test_study_runs_on_workers_the_autoscaler_adds(tmp_path):
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
    storage = tmp_path / "storage"
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
            head_up = time.monotonic() - started

            launched = time.monotonic()
            status = _run([sys.executable, "-m", "study.cli", "launch", str(TINY_STUDY),
                           "--storage", str(storage), "--address", address], log, env, 600)
            assert status == 0, log_path.read_text()[-5000:]
            study_s = time.monotonic() - launched

            with (tmp_path / "probe.log").open("w") as probe_log:
                assert _run([sys.executable, "-c", PROBE, address], probe_log, env, 120) == 0
        probe_out = (tmp_path / "probe.log").read_text()
        line = [x for x in probe_out.splitlines() if x.startswith("PROBE ")]
        assert line, probe_out[-3000:]
        probe = json.loads(line[-1][len("PROBE "):])
    finally:
        if head is not None:
            _kill_session(head.pid)
        if temp_dir.parent != tmp_path:
            shutil.rmtree(temp_dir, ignore_errors=True)

    expected = {t.trial_id for t in expand(load_study(TINY_STUDY))}
    trials = ResultStore(f"{storage}/tiny/results").trials()
    assert set(trials["trial_id"]) == expected and len(trials) == len(expected)
    assert (trials["status"] == "ok").all(), trials[["trial_id", "status"]]

    nodes = {n["id"]: n for n in probe["nodes"]}
    workers = sorted(i for i in nodes if i != HEAD_ID)
    assert HEAD_ID in nodes, nodes  # the fake provider's head, so the ids below are its workers
    assert 1 <= len(workers) <= 2, nodes  # max_workers: 2
    assert {n["ip"] for n in nodes.values()} == {"127.0.0.1"}, nodes  # loopback only
    # Tune's trial actors (one per trial attempt) ran on the workers, never on the CPU-less head.
    trial_nodes = [a["node"] for a in probe["actors"] if a["class"] == "ImplicitFunc"]
    assert len(trial_nodes) >= len(expected), probe["actors"]
    assert set(trial_nodes) <= set(workers), (trial_nodes, workers)
    print(f"\nhead up in {head_up:.0f} s; study {study_s:.0f} s; "
          f"{len(workers)} worker node(s) appeared: {workers}; trial actors on "
          f"{len(set(trial_nodes))} of them; total {time.monotonic() - started:.0f} s")
