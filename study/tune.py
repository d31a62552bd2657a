"""Ray Tune orchestration: a study's pending trials as one Tune experiment, resume, status.

Storage layout of a study (``<storage>`` is a local folder or a pyarrow URI such as
``s3://bucket/studies`` that every node sees)::

    <storage>/<study>/study.json          the expanded trials and run options (for resume/status)
    <storage>/<study>/results/            Parquet results (``study.results``)
    <storage>/<study>/tune/run-<time>/    Ray Tune experiments, one per launch

Work is never repeated: a launch runs only the trials without a stored result, and a resume
restores the newest Tune experiment (unfinished trials continue from their last checkpoint)
and then runs whatever is still missing.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from study.profiles import gpu_share
from study.results import ResultStore, filesystem
from study.trial import RunOptions, run_trial
from study.trials import Trial

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

CHECKPOINT_FILE = "state.pt"
HEARTBEAT_SECONDS = 60  # well under study.status.RUNNING_TIMEOUT


def gpus_per_trial(models: set[tuple[str, str]], requested: float | None) -> float:
    """``requested`` if given, else the largest share the (model, preset) pairs need when
    the connected Ray cluster has GPUs, else 0."""
    if requested is not None:
        return requested
    import ray

    if not ray.cluster_resources().get("GPU", 0):
        return 0.0
    return max(gpu_share(*model) for model in models)


def study_uri(storage: str, study: str) -> str:
    return f"{str(storage).rstrip('/')}/{study}"


class TuneSession:
    """``study.trial.Session`` backed by Ray Tune's report/checkpoint API (Ray >= 2.40).

    With a ``beat`` callable, every report also refreshes the trial's heartbeat; ``defaults``
    are added to every report (a searcher needs its metric in each one, NaN until known).
    """

    def __init__(self, beat: Callable[[], None] | None = None,
                 defaults: dict[str, Any] | None = None):
        self.beat, self.defaults = beat, defaults or {}

    def restore(self) -> bytes | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return (Path(directory) / CHECKPOINT_FILE).read_bytes()

    def report(self, metrics: dict[str, Any], checkpoint: bytes | None = None) -> None:
        if self.beat is not None:
            self.beat()
        metrics = {**self.defaults, **metrics}
        if checkpoint is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            (Path(directory) / CHECKPOINT_FILE).write_bytes(checkpoint)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def run_tune_trial(param: dict[str, Any], options: RunOptions,
                   defaults: dict[str, Any] | None = None) -> None:
    """The body of every Tune trial: report the stored result of a trial that already
    finished (a driver restart rolled Tune back), else run it with a heartbeat and report
    its summary (with ``defaults`` in every report)."""
    store, trial_id = ResultStore(options.results_uri), param["trial_id"]
    stored = store.stored_summary(trial_id)
    if stored is not None:
        tune.report({**(defaults or {}), **stored, "stored": True})
        return
    started = datetime.now(timezone.utc).isoformat()

    def beat() -> None:
        store.beat(trial_id, socket.gethostname(), started)

    beat()
    stop = threading.Event()

    def keep_beating() -> None:  # data loading and evaluation report nothing for a while
        while not stop.wait(HEARTBEAT_SECONDS):
            beat()

    threading.Thread(target=keep_beating, daemon=True, name="heartbeat").start()
    try:
        summary = run_trial(param, options, TuneSession(beat, defaults))
    finally:
        stop.set()
        store.end_beat(trial_id)
    tune.report({**(defaults or {}), **summary})


def _trainable(options: RunOptions) -> Callable[[dict], None]:
    def trainable(config: dict) -> None:
        run_tune_trial(config["trial"], options)

    return trainable


@dataclass(frozen=True)
class Plan:
    """What ``study.json`` holds: the study's trials and how to run them."""

    study: str
    trials: list[dict[str, Any]]
    options: dict[str, Any]
    cpus_per_trial: float
    gpus_per_trial: float

    def save(self, uri: str) -> None:
        fs, root = filesystem(uri)
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root}/study.json") as stream:
            stream.write(json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, uri: str) -> Plan:
        fs, root = filesystem(uri)
        path = f"{root}/study.json"
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{path}: no launched study here (run `study launch` first)")
        with fs.open_input_stream(path) as stream:
            return cls(**json.loads(stream.read()))


def ensure_ray(address: str | None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


class Progress(tune.Callback):
    """Prints one line per finished trial: ``[3/14] asym_focal γ = 2 fraction 0.5 ...``.

    Tune pickles callbacks with the experiment and re-applies them on restore, so the count
    of finished trials is re-read from the result store whenever an experiment (re)starts.
    """

    def __init__(self, plan: Plan, uri: str, printer: Callable[[str], None]):
        self.total, self.uri, self.printer = len(plan.trials), uri, printer
        self.plan_ids = {t["trial_id"] for t in plan.trials}
        self.done, self.start = 0, time.monotonic()

    def setup(self, **info) -> None:
        self.done = len(self.plan_ids & ResultStore(f"{self.uri}/results").finished_ids())
        self.start = time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finished(trial.config["trial"], trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finished(trial.config["trial"], {"status": "failed (see `study status`)"})

    def _finished(self, param: dict, result: dict) -> None:
        config = param["config"]
        status = result.get("status", "?")
        scores = ""
        if status == "ok":
            scores = f"DSC {result['dsc_raw']:.3f} (post-processed {result['dsc_pp']:.3f})"
        if result.get("stored"):  # finished before a restart: counted in setup()
            status = "already stored,"
        else:
            self.done += 1
        self.printer(
            f"[{self.done}/{self.total}] {config['technique']} {param['param_label']} "
            f"fraction {config['fraction']:g} seed {config['seed']}: {status} {scores} "
            f"after {time.monotonic() - self.start:.0f} s"
        )


def _run_experiment(plan: Plan, uri: str, pending: list[dict], restore_path: str | None,
                    printer: Callable[[str], None], max_failures: int) -> None:
    options = RunOptions(**plan.options)
    trainable = tune.with_resources(
        _trainable(options), {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial}
    )
    if restore_path is not None:  # Tune re-applies the first run's RunConfig and callbacks
        tuner = tune.Tuner.restore(restore_path, trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        fs, root = filesystem(f"{uri}/tune")
        name = datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S")
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(pending)},
            tune_config=tune.TuneConfig(
                trial_dirname_creator=lambda t: t.config["trial"]["trial_id"],
                trial_name_creator=lambda t: t.config["trial"]["trial_id"],
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=root,
                storage_filesystem=fs,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[Progress(plan, uri, printer)],
                verbose=0,
            ),
        )
    tuner.fit()


def _latest_experiment(uri: str) -> str | None:
    fs, root = filesystem(f"{uri}/tune")
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return None
    runs = sorted(info.path for info in fs.get_file_info(pafs.FileSelector(root))
                  if info.type == pafs.FileType.Directory and info.base_name.startswith("run-"))
    for path in reversed(runs):
        full = path if "://" not in uri else f"{uri.split('://')[0]}://{path}"
        if tune.Tuner.can_restore(full):
            return full
    return None


def pending_trials(plan: Plan, uri: str) -> list[dict]:
    finished = ResultStore(f"{uri}/results").finished_ids()
    return [t for t in plan.trials if t["trial_id"] not in finished]


def launch(trials: list[Trial], storage: str, options: RunOptions, *,
           cpus_per_trial: float = 1, gpus: float | None = None, address: str | None = None,
           num_cpus: int | None = None, max_failures: int = 1,
           printer: Callable[[str], None] = print) -> list[dict]:
    """Run every trial that has no stored result; return those still missing afterwards.

    ``gpus`` is the GPU share per trial; None picks it from the model
    (:func:`study.profiles.gpu_share`).
    """
    if not trials:
        raise ValueError("launch: the study expands to no trials")
    study = trials[0].study
    uri = study_uri(storage, study)
    ensure_ray(address, num_cpus)
    plan = Plan(study, [t.as_param() for t in trials], asdict(options), cpus_per_trial,
                gpus_per_trial({(t.config["model"]["name"], t.config["model"]["preset"])
                                for t in trials}, gpus))
    plan.save(uri)
    return _continue(plan, uri, address, num_cpus, max_failures, printer, restore=False)


def resume(study: str, storage: str, *, address: str | None = None, num_cpus: int | None = None,
           max_failures: int = 1, printer: Callable[[str], None] = print) -> list[dict]:
    """Continue an interrupted launch; return the trials still missing afterwards."""
    uri = study_uri(storage, study)
    return _continue(Plan.load(uri), uri, address, num_cpus, max_failures, printer, restore=True)


def _continue(plan: Plan, uri: str, address, num_cpus, max_failures, printer, restore: bool):
    pending = pending_trials(plan, uri)
    printer(f"study {plan.study}: {len(plan.trials)} trials, {len(plan.trials) - len(pending)} "
            f"already done, {len(pending)} to run; results in {uri}/results")
    if not pending:
        return []
    ensure_ray(address, num_cpus)
    latest = _latest_experiment(uri) if restore else None
    if latest is not None:
        printer(f"restoring Tune experiment {latest}")
        _run_experiment(plan, uri, pending, latest, printer, max_failures)
        pending = pending_trials(plan, uri)
    if pending:
        _run_experiment(plan, uri, pending, None, printer, max_failures)
    return pending_trials(plan, uri)
