"""One unattended check of a GPU machine for the study: training throughput of the paper models,
how to fill a GPU with DeepMedic, the objectives and metrics on the device, the sampler against
the models, and a small Ray study on fractional GPU shares surviving a driver SIGKILL.

    bench/gpu_check.sh [OUT] [--only NAMES] [--budget SECONDS] [--dry-run]

(``gpu_check.sh`` sets up the Python path and runs this file; see its header for the GPU
machine.) Each step is a separate process with its own timeout, run in order of importance
until the time budget (whole command, 470 s on CUDA: under 8 minutes) is spent; a failing,
timed-out or skipped step is recorded with its status and the last lines of its output, and the
next one runs. After every step ``OUT`` (default ``$OUT``, else ``./gpu-check``) receives

* ``summary.json``: the device, every step (command, status, seconds, output tail, rows);
* ``summary.md``: the same as tables, the DeepMedic GPU-share suggestion, and a README table
  filled with this run's numbers;
* ``steps.log``: every step's whole output.

The first output line says whether CUDA is there. Without CUDA the CPU variant runs: tiny sizes,
``--device cpu``, no compile, 2 packed processes, the kill-and-resume study on the CPU. The
exit status is 0 once the summary is written, whatever the steps did.

Steps on CUDA (``--only`` takes their names): the ``bench/trial_throughput.py`` rows of both
paper models (U-Net ``paper`` 2 x 128^3; DeepMedic ``basic``, 10 x 37^3 segments) for the plain,
asymmetric adversarial and asymmetric mixup steps, bf16 eager and compiled (``default``;
DeepMedic also ``reduce-overhead``), each with real/ceiling and peak GPU memory; the CUDA
tests of ``tests/test_sync.py`` (no synchronisation in a training step); DeepMedic packed
2/4/8 processes per GPU and batches of 20 and 40; ``bench_objectives.py`` and
``bench_metrics.py`` on the device; ``bench_data.py --only compare`` (sampler batches/s vs
model steps/s); and ``kill-resume``: an 8-trial study launched with ``study launch`` on a local
Ray with ``--gpus-per-trial 0.125``, its driver's process session SIGKILLed once a trial has
stored its result, ``study resume``, then the stored results are counted: every trial exactly
once (Parquet ``trials`` files and rows), no trial stored before the kill run again, all case
rows present once.

``python bench/gpu_check.py kill-resume --work DIR --device cuda --json FILE`` runs that last
check alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from study.processes import kill_session

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CUDA_BUDGET = 470.0  # seconds for the whole command on a GPU machine (under 8 minutes)
CPU_BUDGET = 2400.0  # the CPU variant took 17 minutes on a 2-core machine shared with other work
MIN_STEP_SECONDS = 10.0  # a step is not started with less time than this left
TAIL_LINES = 15
SHARE_TOLERANCE = 0.95  # packing N counts as "as fast" as the best at this share of its rate
MEMORY_HEADROOM = 0.9  # packed processes may use this share of the GPU's memory
STUDY_NAME = "gpucheck"
PROCESSES = {"cuda": (2, 4, 8), "cpu": (2,)}
BATCHES = {"cuda": (20, 40), "cpu": (20,)}
THROUGHPUT_TECHNIQUES = "plain,asym_adversarial,asym_mixup"


@dataclass(frozen=True)
class Step:
    """One command of the check: ``json`` is the file its rows land in (None: none)."""

    name: str
    title: str
    group: str
    argv: list[str]
    timeout: float
    json: str | None = None


@dataclass
class Outcome:
    name: str
    title: str
    group: str
    command: str
    status: str  # ok, failed, timeout, skipped
    seconds: float = 0.0
    returncode: int | None = None
    tail: list[str] = field(default_factory=list)
    data: Any = None


# -- the plan -------------------------------------------------------------------------------
def plan(cuda: bool, work: Path, python: str = sys.executable) -> list[Step]:
    """The steps, most important first (the budget may cut the last ones)."""
    kind = "cuda" if cuda else "cpu"
    device = "cuda" if cuda else "cpu"
    size = "paper" if cuda else "tiny"
    cores = os.cpu_count() or 1
    tt = [python, str(BENCH / "trial_throughput.py"), "--device", device, "--size", size]

    def timing(model: str) -> list[str]:
        if not cuda:
            return ["--steps", "1", "--rounds", "1", "--warmup", "1"]
        # U-Net: ~13 steps/s plain, a third of that adversarial; DeepMedic: ~65 steps/s
        return (["--steps", "10", "--rounds", "2", "--warmup", "3"] if model == "unet"
                else ["--steps", "30", "--rounds", "2", "--warmup", "5"])

    def seconds(on_cuda: float, on_cpu: float) -> float:
        return on_cuda if cuda else on_cpu

    def throughput(name: str, title: str, model: str, extra: list[str], timeout: float,
                   techniques: str = THROUGHPUT_TECHNIQUES) -> Step:
        out = str(work / f"{name}.json")
        return Step(name, title, "throughput",
                    [*tt, "--models", model, "--techniques", techniques, *timing(model), *extra,
                     "--json", out], seconds(timeout, 600), out)

    steps = [
        throughput("unet-eager", "U-Net training step, eager", "unet", [], 120),
        throughput("deepmedic-eager", "DeepMedic training step, eager", "deepmedic", [], 90),
        *([Step("sync", "no host-device sync in a training step (tests/test_sync.py)", "sync",
                [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                 str(ROOT / "tests" / "test_sync.py")], 60)] if cuda else []),
        Step("kill-resume", "8-trial Ray study, driver SIGKILL, resume", "study",
             [python, str(Path(__file__).resolve()), "kill-resume", "--device", device,
              "--work", str(work / "study"), "--json", str(work / "kill-resume.json"),
              "--budget", str(seconds(140, 600))],
             seconds(155, 615), str(work / "kill-resume.json")),
    ]
    for n in PROCESSES[kind]:
        steps.append(throughput(f"deepmedic-x{n}", f"DeepMedic, {n} processes on one device",
                                "deepmedic", ["--processes", str(n), "--threads",
                                              str(max(1, cores // n))], 75, "plain"))
    for batch in BATCHES[kind]:
        steps.append(throughput(f"deepmedic-b{batch}", f"DeepMedic, batch {batch}",
                                "deepmedic", ["--batch-size", str(batch)], 45, "plain"))
    if cuda:
        steps += [
            throughput("unet-compile", "U-Net training step, torch.compile default", "unet",
                       ["--compile", "default"], 150),
            throughput("deepmedic-compile", "DeepMedic training step, torch.compile default",
                       "deepmedic", ["--compile", "default"], 100),
            throughput("deepmedic-cudagraphs", "DeepMedic, torch.compile reduce-overhead",
                       "deepmedic", ["--compile", "reduce-overhead"], 100),
        ]
    objectives = str(work / "objectives.json")
    metrics = str(work / "metrics.json")
    data = str(work / "data.json")
    steps += [
        Step("objectives", "objectives forward+backward vs cross-entropy", "objectives",
             [python, str(BENCH / "bench_objectives.py"), "--device", device, "--quick",
              "--json", objectives, *(["--dtype", "bfloat16"] if cuda else [])],
             seconds(45, 180), objectives),
        Step("metrics", "metrics of one BRATS-size case vs MONAI and medpy", "metrics",
             [python, str(BENCH / "bench_metrics.py"), "--quick", "--device", device,
              "--json", metrics], seconds(90, 300), metrics),
        Step("data", "sampler batches/s vs model steps/s needed", "data",
             [python, str(BENCH / "bench_data.py"), "--only", "compare", "--device", device,
              "--size", size, "--seconds", "2", "--out", data,
              "--throughput-json", str(work / "unet-eager.json"),
              "--throughput-json", str(work / "deepmedic-eager.json")],
             seconds(90, 300), data),
    ]
    return steps


# -- running steps --------------------------------------------------------------------------
def _tail(text: str, lines: int = TAIL_LINES) -> list[str]:
    return text.rstrip("\n").splitlines()[-lines:]


def _read_rows(path: str | None) -> Any:
    if path is None or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError:  # cut short while being written
        return None


def run_step(step: Step, deadline: float, log: Path) -> Outcome:
    """Run ``step`` in its own process session, killed (the whole session) at its timeout or
    at ``deadline`` (``time.monotonic()``), whichever is first; its output goes to ``log``."""
    outcome = Outcome(step.name, step.title, step.group, " ".join(step.argv), "skipped")
    left = deadline - time.monotonic()
    if left < MIN_STEP_SECONDS:
        outcome.tail = [f"not started: {left:.0f} s left of the time budget"]
        return outcome
    timeout = min(step.timeout, left)
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(step.argv, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=ROOT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            outcome.returncode = process.wait(timeout=timeout)
            outcome.status = "ok" if outcome.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            kill_session(process.pid)
            process.wait()
            outcome.status = "timeout"
    outcome.seconds = time.monotonic() - started
    outcome.tail = _tail(log.read_text(errors="replace"))
    if outcome.status == "timeout":
        outcome.tail.append(f"killed after {timeout:.0f} s")
    outcome.data = _read_rows(step.json)
    return outcome


# -- summary --------------------------------------------------------------------------------
def _fmt(value: Any, digits: int | None = None) -> str:
    """A table cell: floats with ``digits`` decimals, else 3 significant digits (no
    exponent below 1000)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if digits is None:
            digits = max(0, 2 - int(math.floor(math.log10(abs(value))))) if value else 0
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def throughput_rows(outcomes: list[Outcome]) -> list[dict]:
    return [row for o in outcomes if o.group == "throughput" and isinstance(o.data, list)
            for row in o.data]


def deepmedic_fill(rows: list[dict]) -> list[dict]:
    """The DeepMedic plain eager rows (1, 2, 4, 8 processes; batches 10, 20, 40), each with
    its real supervised voxels/s relative to one process at batch 10."""
    fill = sorted((r for r in rows if r["model"].startswith("deepmedic")
                   and r["technique"] == "plain" and r["mode"] == "eager"),
                  key=lambda r: (r["processes"], r["batch"]))
    base = next((r["real_voxels"] for r in fill if r["processes"] == 1), None)
    return [{**r, "gain": r["real_voxels"] / base if base else None} for r in fill]


def suggest_share(fill: list[dict], gpu_gib: float | None) -> dict | None:
    """The GPU share per DeepMedic trial the packing rows support: 1/N for the fewest
    processes N whose summed real steps/s reach ``SHARE_TOLERANCE`` of the best packing's,
    and whose N peaks fit ``MEMORY_HEADROOM`` of the GPU's memory."""
    packed = {r["processes"]: r for r in fill if r["batch"] == min(f["batch"] for f in fill)}
    if len(packed) < 2:
        return None
    fits = {n: r for n, r in packed.items()
            if gpu_gib is None or r["peak_gib"] is None
            or n * r["peak_gib"] <= MEMORY_HEADROOM * gpu_gib}
    if not fits:
        return None
    best = max(r["real_steps"] for r in fits.values())
    n = min(n for n, r in fits.items() if r["real_steps"] >= SHARE_TOLERANCE * best)
    return {"processes": n, "share": 1 / n, "real_steps": fits[n]["real_steps"],
            "best_real_steps": best, "gain": fits[n]["real_steps"] / packed[1]["real_steps"]
            if 1 in packed else None}


def _readme_table(rows: list[dict], device: str) -> str:
    """Per model and technique: eager and compiled steps/s, real/ceiling, peak memory."""
    single = [r for r in rows if r["processes"] == 1]
    keys = list(dict.fromkeys((r["model"], r["technique"], r["batch"]) for r in single))
    table = []
    for model, technique, batch in keys:
        modes = {r["mode"]: r for r in single
                 if (r["model"], r["technique"], r["batch"]) == (model, technique, batch)}
        eager = modes.get("eager")
        compiled = [f"{_fmt(r['real_steps'])} ({mode})" for mode, r in modes.items()
                    if mode != "eager"]
        table.append([model, technique, batch,
                      _fmt(eager["real_steps"]) if eager else "-",
                      "; ".join(compiled) or "-",
                      f"{eager['ratio']:.0%}" if eager else "-",
                      _fmt(max((r["peak_gib"] for r in modes.values()
                                if r["peak_gib"] is not None), default=None), 1)])
    return (f"Training steps per second on one {device}, measured by `bench/gpu_check.sh` "
            "(`bench/trial_throughput.py`: the trial's own loop; real/ceiling: the loop against "
            "the same step on a batch kept on the device):\n\n"
            + _table(["model", "technique", "batch", "eager steps/s", "compiled steps/s",
                      "real/ceiling (eager)", "peak GiB"], table))


def render(summary: dict) -> str:
    """``summary.md``."""
    outcomes = [Outcome(**o) for o in summary["steps"]]
    out = [f"# GPU check: {summary['device']}", "",
           f"{summary['first_line']}  ",
           f"torch {summary['torch']}, Python {summary['python']}, {summary['cpus']} CPUs; "
           f"{summary['date']}; {summary['elapsed']:.0f} s of a {summary['budget']:.0f} s "
           f"budget{' (dry run: stub steps)' if summary['dry_run'] else ''}.", "",
           "## Steps", "",
           _table(["step", "what", "status", "seconds"],
                  [[o.name, o.title, o.status, _fmt(o.seconds, 0)] for o in outcomes])]
    rows = throughput_rows(outcomes)
    out += ["", "## Training throughput", ""]
    out.append(_table(["model", "technique", "mode", "batch", "processes", "real steps/s",
                       "ceiling steps/s", "real/ceiling", "sample ms", "peak GiB"],
                      [[r["model"], r["technique"], f"{r['precision']} {r['mode']}",
                        r["batch"], r["processes"], r["real_steps"], r["ceiling_steps"],
                        f"{r['ratio']:.0%}", _fmt(r["sample_ms"], 1), _fmt(r["peak_gib"], 1)]
                       for r in rows]) if rows else "no rows")
    fill = deepmedic_fill(rows)
    out += ["", "## Filling a GPU with DeepMedic", ""]
    if fill:
        out.append(_table(["processes", "batch", "real steps/s (sum)", "real Mvox/s",
                           "x one process, batch 10", "real/ceiling", "peak GiB per process"],
                          [[r["processes"], r["batch"], r["real_steps"],
                            r["real_voxels"] / 1e6, r["gain"], f"{r['ratio']:.0%}",
                            _fmt(r["peak_gib"], 1)] for r in fill]))
        share = suggest_share(fill, summary.get("gpu_gib"))
        out += ["", f"Suggested GPU share per DeepMedic trial: {share['share']:g} "
                f"({share['processes']} processes reach {share['real_steps']:.1f} steps/s, "
                f"{_fmt(share['gain'])}x one process; the best packing measured "
                f"{share['best_real_steps']:.1f})." if share else
                "Too few packing rows for a share suggestion."]
    else:
        out.append("no rows")
    study = next((o.data for o in outcomes if o.group == "study" and o.data), None)
    out += ["", "## Ray study: driver SIGKILL and resume", ""]
    if study:
        out.append(_table(["expected trials", "trials files", "trials rows", "lost",
                           "duplicated", "run again after the kill", "stored at the kill",
                           "killed mid-run", "case rows (expected)", "GPU share", "resume rc",
                           "seconds"],
                          [[study["expected"], study["trial_files"], study["trial_rows"],
                            study["lost"], study["duplicated"], len(study["rerun"]),
                            study["done_at_kill"], study["killed_mid_run"],
                            f"{study['case_rows']} ({study['expected_case_rows']})",
                            study["gpus_per_trial"], study["resume_rc"],
                            _fmt(study["seconds"], 0)]]))
    else:
        out.append("no result")
    for group, title, header, keys in (
            ("objectives", "Objectives (forward+backward)", ["loss", "ms", "CE ms", "x CE"],
             ["loss", "ms", "ce_ms", "x_ce"]),
            ("metrics", "Metrics of one case", ["case", "ours s", "MONAI s", "MONAI device",
                                               "medpy s", "agree"],
             ["case", "ours_s", "monai_s", "monai_device", "medpy_s", "agree"])):
        data = next((o.data for o in outcomes if o.group == group and o.data), None)
        out += ["", f"## {title}", ""]
        out.append(_table(header, [[r[k] for k in keys] for r in data]) if data else "no rows")
    data = next((o.data for o in outcomes if o.group == "data" and o.data), None)
    out += ["", "## Sampler batches/s vs model steps/s needed", ""]
    if data:
        out.append(_table(["model", "regime", "batch x input -> output", "sampler, 1 thread",
                           "sampler, all threads", "ceiling steps/s", "GPU reference steps/s",
                           "needed steps/s", "sampler / needed", ">= 2x"],
                          [[r["model"], r["regime"], f"{r['batch']} x {r['input']} -> "
                            f"{r['output']}", r["batches_per_second_1"],
                            f"{_fmt(r['batches_per_second_all'])} ({r['threads']})",
                            f"{_fmt(r['ceiling_steps'])} ({r['ceiling_device']} "
                            f"{r['ceiling_mode']})", r["reference_steps"], r["needed_steps"],
                            r["sampler_over_need"], "yes" if r["target_met"] else "no"]
                           for r in data["compare"]]))
    else:
        out.append("no rows")
    out += ["", "## For the README (paste)", "", _readme_table(rows, summary["device"])
            if rows else "(no throughput rows in this run)"]
    skipped = [o.name for o in outcomes if o.status == "skipped"]
    if skipped:
        out += ["", f"Skipped for lack of time: {', '.join(skipped)}. Run them with "
                f"`bash bench/gpu_check.sh --only {','.join(skipped)}` (and `--budget` for more "
                "than the default)."]
    failed = [o for o in outcomes if o.status != "ok"]
    if failed:
        out += ["", "## Steps that did not finish", ""]
        for o in failed:
            out += [f"### {o.name}: {o.status}", "", f"`{o.command}`", "", "```",
                    *o.tail, "```", ""]
    return "\n".join(out).rstrip() + "\n"


def write_summary(out: Path, summary: dict, logs: list[tuple[str, Path]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(render(summary))
    with (out / "steps.log").open("w") as log:
        for name, path in logs:
            log.write(f"===== {name}\n")
            log.write(path.read_text(errors="replace") if path.is_file() else "(no output)\n")


# -- the 8-trial study with a driver kill ----------------------------------------------------
def study_yaml(cuda: bool) -> str:
    """8 trials (2 fractions x vanilla, asymmetric focal, adversarial, mixup) of the tiny U-Net
    with checkpoints; longer on CUDA so that the kill lands while trials run."""
    iterations, patch, every = (40, 32, 10) if cuda else (8, 16, 2)
    shape = 48 if cuda else 24
    return textwrap.dedent(f"""\
        # written by bench/gpu_check.py: 8 trials for the driver-kill check
        name: {STUDY_NAME}
        dataset:
          name: synthetic-brats
          test_cases: 2
          synthetic: {{cases: 6, shape: [{shape}, {shape}, {shape}], seed: 1, lesion_scale: 1.0}}
        fractions: [0.5, 1.0]
        model: {{name: unet, preset: tiny}}
        seeds: [0]
        training:
          iterations: {iterations}
          batch_size: 2
          input_patch: [{patch}, {patch}, {patch}]
          lr: 0.003
          checkpoint_every: {every}
        techniques:
          - vanilla
          - {{technique: asym_focal, grid: {{gamma: [2]}}}}
          - {{technique: asym_adversarial, grid: [{{eps: 1.0e-5, l: 10}}]}}
          - {{technique: asym_mixup, grid: {{mixup_m: [0.2], mixup_alpha: [1]}}}}
        """)


def _stored_files(results: Path) -> dict[str, tuple[int, int]]:
    """trial id -> (mtime ns, size) of each stored ``trials`` Parquet file."""
    folder = results / "trials"
    if not folder.is_dir():
        return {}
    return {p.stem: (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.glob("*.parquet") if not p.name.startswith(".")}


def _driver(argv: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "study.cli", *argv], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill_resume(work: Path, device: str, budget: float, gpus: float | None,
                num_cpus: int | None, say: Callable[[str], None] = print) -> dict:
    """Launch the 8-trial study, SIGKILL the driver's session once a trial is stored (or at
    half the budget), resume, and count what is stored."""
    from study.expand import expand
    from study.results import ResultStore
    from study.spec import load_studies

    for key, value in (("RAY_USAGE_STATS_ENABLED", "0"), ("RAY_AUTH_MODE", "disabled"),
                       ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")):
        os.environ.setdefault(key, value)
    cuda = device.startswith("cuda")
    gpus = gpus if gpus is not None else (0.125 if cuda else 0.0)
    work.mkdir(parents=True, exist_ok=True)
    spec_file = work / f"{STUDY_NAME}.yaml"
    spec_file.write_text(study_yaml(cuda))
    specs = load_studies(spec_file)
    expected = {t.trial_id for spec in specs for t in expand(spec)}
    storage = work / "storage"
    results = storage / STUDY_NAME / "results"
    ray = ["--storage", str(storage), *(["--num-cpus", str(num_cpus)] if num_cpus else [])]
    started = time.monotonic()
    deadline = started + budget
    report: dict[str, Any] = {"expected": len(expected), "device": device,
                              "gpus_per_trial": gpus, "storage": str(storage)}
    with (work / "drivers.log").open("w") as log:
        driver = _driver(["launch", str(spec_file), "--device", device, "--gpus-per-trial",
                          str(gpus), *ray], log)
        at_kill: dict[str, tuple[int, int]] = {}
        while driver.poll() is None:
            stored = _stored_files(results)
            if stored or time.monotonic() > started + budget / 2:
                at_kill = stored
                report["processes_killed"] = kill_session(driver.pid)
                driver.wait()
                break
            time.sleep(0.2)
        report["launch_rc"] = driver.returncode
        report["done_at_kill"] = len(at_kill)
        report["killed_mid_run"] = "processes_killed" in report and len(at_kill) < len(expected)
        report["launch_seconds"] = time.monotonic() - started
        say(f"launch: {'killed' if 'processes_killed' in report else 'ended'} after "
            f"{report['launch_seconds']:.0f} s with {len(at_kill)} of {len(expected)} trials "
            "stored")
        clock = time.monotonic()
        resume = _driver(["resume", STUDY_NAME, *ray], log)
        try:
            report["resume_rc"] = resume.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            report["resume_rc"] = None
        kill_session(resume.pid)  # what a finished driver's Ray left, or the timed-out run
        resume.wait()
        report["resume_seconds"] = time.monotonic() - clock
    final = _stored_files(results)
    store = ResultStore(str(results))
    trials, cases = store.trials(), store.cases()
    ids = list(trials["trial_id"].astype(str))
    report.update(
        trial_files=len(final), trial_rows=len(ids), unique_trials=len(set(ids)),
        lost=len(expected - {t for t, s in zip(ids, trials["status"], strict=True)
                             if s == "ok"}),
        rerun=sorted(t for t, stamp in at_kill.items() if final.get(t) != stamp),
        statuses={str(k): int(v) for k, v in trials["status"].value_counts().items()},
        case_rows=len(cases),
        expected_case_rows=int(trials["case_rows"].sum()) if "case_rows" in trials else None,
        duplicate_case_rows=int(cases.duplicated(
            ["trial_id", "case_id", "class_name", "postprocessed"]).sum()),
        problems=store.problems, seconds=time.monotonic() - started)
    report["duplicated"] = (len(ids) - len(set(ids)) + len(report["rerun"])
                            + report["duplicate_case_rows"])
    report["passed"] = bool(report["lost"] == 0 and report["duplicated"] == 0
                            and report["resume_rc"] == 0 and report["killed_mid_run"]
                            and report["case_rows"] == report["expected_case_rows"])
    say(json.dumps({k: v for k, v in report.items() if k != "problems"}))
    return report


# -- command line ---------------------------------------------------------------------------
def _environment(cuda: bool) -> dict[str, Any]:
    import torch

    info = {"torch": torch.__version__, "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "gpu_gib": None}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, gpu_gib=props.total_memory / 2**30,
                    first_line=f"CUDA: {props.name} ({props.total_memory / 2**30:.0f} GiB), "
                    f"torch {torch.__version__}: running the GPU check")
    else:
        info.update(device="CPU (no CUDA)",
                    first_line="no CUDA on this machine: running the CPU variant (tiny sizes, "
                    "--device cpu, no compile, 2 processes, the study on the CPU)")
    return info


def check(out: Path, *, only: set[str] | None, budget: float | None, dry_run: bool,
          work: Path | None, started: float, steps: list[Step] | None = None) -> dict:
    """Run the plan (or ``steps``) and write the summary after every step; return it."""
    import torch

    cuda = torch.cuda.is_available()
    env = _environment(cuda)
    print(env["first_line"], flush=True)
    budget = budget or (CUDA_BUDGET if cuda else CPU_BUDGET)
    deadline = time.monotonic() - (time.time() - started) + budget
    work = work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    steps = steps if steps is not None else plan(cuda, work)
    unknown = (only or set()) - {s.name for s in steps}
    if unknown:
        raise ValueError(f"--only: unknown step(s) {sorted(unknown)} (known: "
                         f"{', '.join(s.name for s in steps)})")
    steps = [s for s in steps if only is None or s.name in only]
    if dry_run:
        steps = [Step(s.name, s.title, s.group,
                      [sys.executable, "-c", f"print({'dry run: ' + ' '.join(s.argv)!r})"],
                      s.timeout) for s in steps]
    summary = {**env, "dry_run": dry_run, "budget": budget, "work": str(work),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "elapsed": 0.0, "steps": []}
    logs: list[tuple[str, Path]] = []
    for step in steps:
        print(f"-- {step.name}: {step.title} (timeout {step.timeout:.0f} s)", flush=True)
        log = work / f"{step.name}.log"
        outcome = run_step(step, deadline, log)
        print(f"   {outcome.status} in {outcome.seconds:.0f} s", flush=True)
        logs.append((step.name, log))
        summary["steps"].append(asdict(outcome))
        summary["elapsed"] = time.time() - started
        write_summary(out, summary, logs)
    if not steps:
        write_summary(out, summary, logs)
    return summary


def _kill_resume_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py kill-resume",
                                     description="only the 8-trial study with a driver kill")
    parser.add_argument("--work", required=True, help="scratch folder (study file, storage)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds for the whole check (default 600)")
    parser.add_argument("--gpus-per-trial", type=float, default=None,
                        help="default 0.125 on CUDA, 0 on the CPU")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the local Ray (default: 2 on the CPU, all on CUDA)")
    parser.add_argument("--json", default=None, help="write the counts here")
    args = parser.parse_args(argv)
    cpus = args.num_cpus or (None if args.device.startswith("cuda") else 2)
    report = kill_resume(Path(args.work), args.device, args.budget, args.gpus_per_trial, cpus)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0 if report["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kill-resume"]:
        return _kill_resume_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="`gpu_check.py kill-resume --help`: that step alone")
    parser.add_argument("out", nargs="?", default=None,
                        help="summary folder (default: $OUT, else ./gpu-check)")
    parser.add_argument("--only", default=None, help="comma-separated step names")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole command (default {CUDA_BUDGET:.0f} on "
                        f"CUDA, {CPU_BUDGET:.0f} on the CPU), counted from $GPU_CHECK_STARTED")
    parser.add_argument("--dry-run", action="store_true",
                        help="stub every step (prints its command): checks the summary writing")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)
    out = Path(args.out or os.environ.get("OUT") or "gpu-check")
    started = float(os.environ.get("GPU_CHECK_STARTED") or time.time())
    summary = check(out, only=set(args.only.split(",")) if args.only else None,
                    budget=args.budget, dry_run=args.dry_run,
                    work=Path(args.work) if args.work else None, started=started)
    print((out / "summary.md").read_text(), flush=True)
    print(f"summary: {out / 'summary.md'}, {out / 'summary.json'} "
          f"({sum(s['status'] == 'ok' for s in summary['steps'])} of "
          f"{len(summary['steps'])} steps ok)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
