"""bench/gpu_check.sh: steps run in order with their own timeouts, every outcome (failures with
their last output lines) lands in summary.json/summary.md, the exit status is 0; the CPU variant
runs every step (slow)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.sh"
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # for its dataclasses
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def _run(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_CHECK_STARTED")}
    return subprocess.run(["bash", str(SCRIPT), str(out), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def test_dry_run_writes_the_summary_of_every_planned_step(tmp_path, gpu_check):
    """Stubbed steps: the first line names the device, every step of the plan is in
    summary.json (in plan order, ok, with its command), summary.md has the steps table and the
    README table, steps.log every step's output; exit 0."""
    out = tmp_path / "out"
    done = _run(out, "--dry-run", "--work", str(tmp_path / "work"), timeout=120)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("CUDA: ") if CUDA else first.startswith("no CUDA on this machine")
    summary = json.loads((out / "summary.json").read_text())
    planned = gpu_check.plan(CUDA, tmp_path / "work")
    assert [s["name"] for s in summary["steps"]] == [s.name for s in planned]
    assert all(s["status"] == "ok" and s["tail"][0].startswith("dry run: ")
               for s in summary["steps"])
    assert summary["dry_run"] and summary["first_line"] == first
    markdown = (out / "summary.md").read_text()
    assert "| kill-resume | 8-trial Ray study, driver SIGKILL, resume | ok |" in markdown
    assert "## For the README (paste)" in markdown
    assert (out / "steps.log").read_text().count("===== ") == len(planned)
    cpu_plan = {s.name for s in gpu_check.plan(False, tmp_path)}
    assert {"unet-eager", "deepmedic-eager", "kill-resume", "deepmedic-x2", "objectives",
            "metrics", "data"} <= cpu_plan and not any("compile" in n for n in cpu_plan)
    assert {"unet-compile", "deepmedic-cudagraphs", "deepmedic-x8", "deepmedic-b40"} <= {
        s.name for s in gpu_check.plan(True, tmp_path)}


def test_failed_timed_out_and_skipped_steps_are_recorded(tmp_path, gpu_check):
    """A failing step keeps its exit status and last output lines, a step past its timeout is
    killed with the processes it started, a step with no budget left is skipped, and the rows
    a step wrote are in the summary whatever the others did."""
    Step, python = gpu_check.Step, sys.executable
    rows = tmp_path / "rows.json"
    steps = [
        Step("fail", "fails", "objectives",
             [python, "-c", "import sys\nfor i in range(40): print('line', i)\nsys.exit(3)"], 30),
        Step("hang", "hangs", "objectives",
             [python, "-c", "import subprocess, time\nprint('started', flush=True)\n"
              "subprocess.Popen(['sleep', '97.25'])\ntime.sleep(60)"], 2),
        Step("rows", "writes rows", "objectives",
             [python, "-c", f"import json; json.dump([{{'loss': 'L', 'ms': 2.0, 'ce_ms': 1.0, "
              f"'x_ce': 2.0}}], open({str(rows)!r}, 'w'))"], 30, str(rows)),
    ]
    out = tmp_path / "out"
    summary = gpu_check.check(out, only=None, budget=300.0, dry_run=False,
                              work=tmp_path / "work", started=time.time(), steps=steps)
    by_name = {s["name"]: s for s in summary["steps"]}
    assert by_name["fail"]["status"] == "failed" and by_name["fail"]["returncode"] == 3
    assert by_name["fail"]["tail"] == [f"line {i}" for i in range(25, 40)]
    assert by_name["hang"]["status"] == "timeout" and 2 <= by_name["hang"]["seconds"] < 10
    assert by_name["hang"]["tail"] == ["started", "killed after 2 s"]
    assert subprocess.run(["pgrep", "-f", "^sleep 97.25$"], capture_output=True).returncode == 1
    assert by_name["rows"]["status"] == "ok" and by_name["rows"]["data"][0]["x_ce"] == 2.0
    markdown = (out / "summary.md").read_text()
    assert "### fail: failed" in markdown and "line 39" in markdown
    assert "| L | 2.00 | 1.00 | 2.00 |" in markdown
    late = Step("late", "no time left", "metrics", [python, "-c", "print('never')"], 30)
    skipped = gpu_check.run_step(late, time.monotonic() + 5, tmp_path / "late.log")
    assert skipped.status == "skipped" and skipped.tail == ["not started: 5 s left of the time "
                                                            "budget"]


def _row(processes: int, real: float, peak: float, batch: int = 10, mode: str = "eager",
         model: str = "deepmedic-basic", technique: str = "plain") -> dict:
    return {"model": model, "technique": technique, "mode": mode, "precision": "bf16",
            "batch": batch, "processes": processes, "real_steps": real,
            "real_voxels": real * batch * 21**3, "ceiling_steps": real * 1.25,
            "ratio": 0.8, "sample_ms": 3.0, "peak_gib": peak}


def test_deepmedic_share_is_the_fewest_processes_near_the_best_that_fit(gpu_check):
    """1/N for the fewest packed processes whose summed steps/s reach 95 % of the best
    packing's, among those whose peaks fit 90 % of the GPU's memory."""
    rows = [_row(1, 60.0, 10.0), _row(2, 100.0, 10.0), _row(4, 118.0, 10.0),
            _row(8, 120.0, 10.0), _row(1, 35.0, 19.0, batch=20)]
    fill = gpu_check.deepmedic_fill(rows)
    assert [(r["processes"], r["batch"]) for r in fill] == [(1, 10), (1, 20), (2, 10), (4, 10),
                                                            (8, 10)]
    assert fill[1]["gain"] == pytest.approx(35 * 20 / (60 * 10))
    share = gpu_check.suggest_share(fill, gpu_gib=140.0)
    assert share["processes"] == 4 and share["share"] == 0.25
    assert share["gain"] == pytest.approx(118 / 60)
    assert gpu_check.suggest_share(fill, gpu_gib=35.0)["processes"] == 2  # 4 x 10 GiB > 31.5
    assert gpu_check.suggest_share(fill[:2], gpu_gib=140.0) is None  # no packing measured


def test_readme_table_puts_eager_and_compiled_rates_side_by_side(gpu_check):
    """summary.md ends with the README table: one row per model, technique and batch with the
    eager and the compiled steps/s side by side; packed DeepMedic rows stay out of it."""
    rows = [_row(1, 12.0, 30.0, batch=2, model="unet-paper"),
            _row(1, 20.0, 28.0, batch=2, model="unet-paper", mode="default"),
            _row(2, 100.0, 10.0)]
    throughput = gpu_check.Outcome("unet-paper", "throughput", "throughput", "bench", "ok",
                                   data=rows)
    summary = {"device": "NVIDIA H200", "first_line": "CUDA: NVIDIA H200", "torch": "2",
               "python": "3", "cpus": 16, "gpu_gib": 140.0, "date": "today", "elapsed": 1.0,
               "budget": 470.0, "dry_run": False, "steps": [dataclasses.asdict(throughput)]}
    markdown = gpu_check.render(summary)
    summary_part, table = markdown.split("## For the README (paste)\n")
    assert "| deepmedic-basic | plain | bf16 eager | 10 | 2 |" in summary_part
    assert "| unet-paper | plain | 2 | 12.0 | 20.0 (default) | 80% | 30.0 |" in table
    assert "one NVIDIA H200" in table and "deepmedic" not in table  # packed rows stay out


@pytest.mark.slow
@pytest.mark.skipif(CUDA, reason="the CPU variant runs where there is no CUDA")
def test_cpu_variant_runs_every_step(tmp_path):
    """The whole CPU variant: every step ok, throughput rows of both tiny models for the three
    techniques and two packed DeepMedic processes, the study killed mid-run and resumed with
    no trial lost or duplicated, the sampler table, and the README table."""
    out = tmp_path / "out"
    done = _run(out, "--work", str(tmp_path / "work"), timeout=2700)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    failed = {s["name"]: s["tail"] for s in summary["steps"] if s["status"] != "ok"}
    assert not failed, failed
    rows = [r for s in summary["steps"] if s["group"] == "throughput" for r in s["data"]]
    assert {(r["model"], r["technique"]) for r in rows if r["processes"] == 1} >= {
        (m, t) for m in ("unet-tiny", "deepmedic-tiny")
        for t in ("plain", "asym_adversarial", "asym_mixup")}
    assert any(r["processes"] == 2 for r in rows)
    assert all(r["real_steps"] > 0 and r["peak_gib"] is None for r in rows)
    study = next(s["data"] for s in summary["steps"] if s["name"] == "kill-resume")
    assert study["passed"] and study["killed_mid_run"]
    assert study["lost"] == study["duplicated"] == 0 and study["trial_rows"] == 8
    markdown = (out / "summary.md").read_text()
    assert "| deepmedic-tiny | none |" in markdown and "## For the README (paste)" in markdown
