"""The results store on S3 for real: a moto S3 server on loopback, reached through pyarrow's
S3 client with the endpoint and credentials from the standard AWS environment variables."""

from __future__ import annotations

import logging
import os
import re
import socket
import time

import pyarrow.fs as pafs
import pytest

from study.compact import compact
from study.results import ResultsStorageError, ResultStore, check_storage, filesystem

moto_server = pytest.importorskip("moto.server")

BUCKET = "studies"


class _Requests(logging.Handler):
    """The requests the server logs, as "METHOD /path?query"."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        text = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())
        if '"' in text:
            self.lines.append(text.split('"')[1].rsplit(" ", 1)[0])


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, the AWS variables pointing at it, and an
    empty bucket; yields the list of requests it serves."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    requests = _Requests()
    log = logging.getLogger("werkzeug")
    log.addHandler(requests)
    log.setLevel(logging.INFO)
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1",
                            "AWS_EC2_METADATA_DISABLED": "true"}.items():
            env.setenv(name, value)
        env.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"],
                          allow_bucket_creation=True).create_dir(BUCKET)
        yield requests.lines
    log.removeHandler(requests)
    server.stop()


def tid(n: int) -> str:
    return f"{n:016x}"


def _write(store, n, rows=3):
    from analysis._synthetic import full_config
    from study.results import identity_columns

    identity = identity_columns({
        "study": "s", "trial_id": tid(n), "param_label": "—",
        "config": full_config(seed=n)})
    cases = [{**identity, "case_id": f"c{i}", "class_name": "tumour", "postprocessed": False,
              "dsc": n / 10, "hd95": 1.0, "status": "ok"} for i in range(rows)]
    store.write_trial({**identity, "status": "ok", "config": "{}"}, cases)


def test_filesystem_takes_endpoint_and_timeouts_from_the_environment(s3):
    fs, path = filesystem(f"s3://{BUCKET}/a/results")
    options = fs.__reduce__()[1][0]
    assert path == f"{BUCKET}/a/results"
    assert options["endpoint_override"] == os.environ["AWS_ENDPOINT_URL"]
    assert options["connect_timeout"] == 5 and options["request_timeout"] == 60


def test_store_writes_checks_reads_and_compacts_on_s3(s3):
    """Write, the finished check (listings and one ranged GET per file, no HEAD), read back,
    a damaged object and a copy under another name, compaction."""
    uri = f"s3://{BUCKET}/roundtrip/results"
    check_storage(uri)
    store = ResultStore(uri)
    for n in range(4):
        _write(store, n)
    s3.clear()
    assert store.finished_ids() == {tid(n) for n in range(4)}
    assert [r for r in s3 if r.startswith("HEAD")] == []
    assert sum(r.startswith("GET /studies/roundtrip/results/") for r in s3) == 8
    assert sum("list-type=2" in r for r in s3) == 3
    cases = store.cases()
    assert sorted(cases.groupby("trial_id")["dsc"].first()) == [0.0, 0.1, 0.2, 0.3]
    fs, root = filesystem(uri)
    with fs.open_input_stream(f"{root}/cases/{tid(3)}.parquet") as source:
        data = source.read()
    with fs.open_output_stream(f"{root}/cases/{tid(3)}.parquet") as target:
        target.write(data[:100])
    with fs.open_output_stream(f"{root}/cases/{tid(2)} (1).parquet") as target:
        target.write(data)
    fresh = ResultStore(uri)
    assert fresh.finished_ids() == {tid(0), tid(1), tid(2)}
    assert set(fresh.problems) == {f"cases/{tid(3)}.parquet", f"cases/{tid(2)} (1).parquet"}
    done = compact(fresh)
    assert done.moved == [tid(0), tid(1), tid(2)]
    assert ResultStore(uri).finished_ids() == {tid(0), tid(1), tid(2)}
    assert len(ResultStore(uri).cases()) == 9
    left = {i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{root}/cases"))}
    assert left == {f"{tid(3)}.parquet", f"{tid(2)} (1).parquet"}


def test_missing_bucket_is_one_clear_error(s3):
    uri = "s3://no-such-bucket/x/results"
    message = rf"{uri}: bucket 'no-such-bucket' does not exist"
    with pytest.raises(ResultsStorageError, match=message):
        check_storage(uri)
    with pytest.raises(ResultsStorageError, match=message):
        ResultStore(uri).finished_ids()


def test_unreachable_endpoint_fails_within_seconds(s3, monkeypatch):
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    uri = f"s3://{BUCKET}/x/results"
    start = time.monotonic()
    with pytest.raises(ResultsStorageError, match=rf"{uri}: cannot reach bucket '{BUCKET}'"):
        check_storage(uri)
    with pytest.raises(ResultsStorageError, match=rf"{uri}: cannot list compacted/"):
        ResultStore(uri).finished_ids()
    assert time.monotonic() - start < 20


@pytest.mark.slow
def test_launch_kill_resume_status_report_on_s3(s3, tmp_path):
    """`study launch --storage s3://...`, its driver SIGKILLed while a trial trains, `study
    resume`, `study status`, `study report`: every trial stored once on S3, nothing left out."""
    import json
    import subprocess
    import sys

    from helpers import FAULT_STUDY, kill_session, start_driver, wait_for_training

    from study.expand import expand
    from study.spec import load_study

    storage = f"s3://{BUCKET}/e2e"
    common = ["--storage", storage, "--num-cpus", "2", "--progress-every", "0.25"]
    log_path = tmp_path / "drivers.log"
    with log_path.open("w") as log:
        driver = start_driver(["launch", str(FAULT_STUDY), *common,
                          "--data-dir", str(tmp_path / "data")], log)
        assert wait_for_training(log_path, 0, driver, 300), log_path.read_text()[-3000:]
        assert kill_session(driver.pid) > 1
        driver.wait()
        log.flush()
        final = start_driver(["resume", "fault", *common], log)
        assert final.wait(timeout=600) == 0, log_path.read_text()[-3000:]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "study.cli", *args], capture_output=True,
                              text=True, timeout=300)

    status = cli("status", "fault", "--storage", storage, "--json")
    assert status.returncode == 0, status.stderr
    record = json.loads(status.stdout)
    assert sum(group["done"] for group in record["groups"]) == 6
    assert record["left_out"] == [] and record["failed"] == []
    report = cli("report", "fault", "--storage", storage, "--out", str(tmp_path / "report"),
                 "--no-figures")
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "index.md").exists()
    store = ResultStore(f"{storage}/fault/results")
    stored = store.read()
    expected = {t.trial_id for t in expand(load_study(FAULT_STUDY))}
    assert stored.finished == expected and stored.problems == {}
    keys = ["trial_id", "case_id", "class_name", "postprocessed"]
    test_rows = stored.cases[stored.cases["split"] == "test"]
    assert len(test_rows) == 6 * 2 * 2 and not stored.cases.duplicated(keys).any()
