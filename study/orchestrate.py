"""Ray Tune orchestration: a study's pending trials as Tune experiments, resume, progress.

A study lives in a folder of its storage (:mod:`study.stored_plan`: ``study.json``,
``results/``, and here ``tune/run-<time>/``, one Ray Tune experiment per GRID_BATCH trials).
Work is never repeated: a launch runs only the trials without a stored result, and a resume
restores the newest Tune experiment (unfinished trials continue from their last checkpoint)
and then runs whatever is still missing.

Before Ray starts, :func:`check_before_ray` checks what can be checked (device, dataset
folders, writable storage). Ctrl-C (SIGINT) stops the trials gracefully, Tune saves the
experiment, and :class:`Interrupted` tells how to continue.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from study import progress
from study.expand import Trial
from study.identity import DatasetConfig
from study.profiles import gpu_share
from study.progress import Interrupted
from study.results import ResultStore, check_storage, filesystem
from study.run_options import RunOptions, record_failure
from study.stored_plan import Plan, pending_trials, storage_of, study_uri

if TYPE_CHECKING:
    from study.trial import Session

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tune's own console output (its configuration box, TensorBoard hint, trial tables) off:
# progress is the Monitor's; with the classic reporter verbose=0 prints nothing.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# A failed trial is one line of the Monitor and a `failed` row, not Ray's traceback.
os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
# Tune's automatic CSV and TensorBoard loggers off (nothing reads progress.csv or the event
# files; they cost every result a write); its result.json, each trial's record of every report
# (iteration, pid, ...), is kept by passing JsonLoggerCallback explicitly (_run_experiment).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_META = "progress.json"  # {"iteration": N} beside the state
# Trials per Tune experiment of a grid launch: Tune's controller scans every trial of its
# experiment at each step, so one experiment of N trivial trials costs O(N^2) (2,000 trials:
# ~1.5 slot-s per trial at the end vs 0.4 for 200); batches keep that bounded, at the price of
# one actor start-up per slot and the slots idle while a batch's last trials finish.
GRID_BATCH = 500
# How a Tune trial runs one trial and stores its rows: ``study.trial.run_trial``'s signature.
TrialFunction = Callable[[dict[str, Any], RunOptions, "Session"], dict[str, Any]]


def run_in_worker(param: dict[str, Any], options: RunOptions, session: Session
                  ) -> dict[str, Any]:
    """``study.trial.run_trial``, imported in the Tune worker that runs the trial, so that the
    driver (launch, resume, status) does not import torch and the training stack (only
    :func:`check_before_ray` does, to check ``--device cuda``)."""
    from study.trial import run_trial

    return run_trial(param, options, session)


def gpus_per_trial(models: set[tuple[str, str]], requested: float | None) -> float:
    """``requested`` if given, else the largest share the (model, preset) pairs need when
    the connected Ray cluster has GPUs, else 0."""
    if requested is not None:
        return requested
    import ray

    if not ray.cluster_resources().get("GPU", 0):
        return 0.0
    return max(gpu_share(*model) for model in models)


class TuneSession:
    """``study.trial.Session`` backed by Ray Tune's report/checkpoint API (Ray >= 2.40).

    Every report also updates the trial's ``heartbeat``; ``defaults`` are added to every
    report (a searcher or scheduler needs its metric in each one, NaN until known). A report
    with validation scores carries ``val_iteration``, the time attribute of pruning.
    """

    def __init__(self, heartbeat: progress.Heartbeat | None = None,
                 defaults: dict[str, Any] | None = None):
        self.heartbeat, self.defaults = heartbeat, defaults or {}

    def restore(self) -> bytes | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            meta = Path(directory) / CHECKPOINT_META
            if self.heartbeat is not None and meta.is_file():
                iteration = json.loads(meta.read_text())["iteration"]
                self.heartbeat.update(iteration=iteration, checkpoint=iteration)
            return (Path(directory) / CHECKPOINT_FILE).read_bytes()

    def report(self, metrics: dict[str, Any], checkpoint: bytes | None = None) -> None:
        validated = "val_dsc" in metrics and "iteration" in metrics
        metrics = {**self.defaults, **metrics}
        if validated:
            metrics["val_iteration"] = metrics["iteration"]
        if checkpoint is None:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as directory:
                (Path(directory) / CHECKPOINT_FILE).write_bytes(checkpoint)
                (Path(directory) / CHECKPOINT_META).write_text(
                    json.dumps({"iteration": metrics["iteration"]}))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        if self.heartbeat is not None and "iteration" in metrics:
            update = {"iteration": metrics["iteration"], "loss": metrics.get("train_loss")}
            if checkpoint is not None:
                update["checkpoint"] = metrics["iteration"]
            self.heartbeat.update(**update)


def run_tune_trial(param: dict[str, Any], options: RunOptions,
                   defaults: dict[str, Any] | None = None,
                   trial: TrialFunction = run_in_worker) -> None:
    """The body of every Tune trial: report the stored result of a trial that already
    finished (a driver restart rolled Tune back), else run it (``trial``) with a heartbeat and
    report its summary (with ``defaults`` in every report). A failure before the trial starts
    (its heartbeat cannot be written) is stored as a ``failed`` row too."""
    defaults = defaults or {}
    stored = ResultStore(options.results_uri).stored_summary(param["trial_id"])
    if stored is not None:
        tune.report({**defaults, **stored, "stored": True})
        return
    try:
        heartbeat = progress.Heartbeat(options.results_uri, param).__enter__()
    except Exception as error:
        record_failure(param, options, error)
        raise
    with heartbeat:
        summary = trial(param, options, TuneSession(heartbeat, defaults))
    tune.report({**defaults, **summary})


@dataclass(frozen=True)
class GridParams:
    """A grid experiment's trial params by trial id; called with a Tune config, the param of
    its trial. Tune's config holds only the trial id (``{"trial": id}``): Tune's grid search
    deep-copies the whole search space for every trial it creates, so a space holding the
    params would cost time quadratic in the trials (minutes before the first of 2,000)."""

    params: dict[str, dict[str, Any]]

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        return self.params[config["trial"]]


def _trainable(options: RunOptions, to_param: GridParams, trial: TrialFunction
               ) -> Callable[[dict], None]:
    def trainable(config: dict) -> None:
        run_tune_trial(to_param(config), options, trial=trial)

    return trainable


# -- Ray -------------------------------------------------------------------------------------
def ensure_ray(address: str | None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def check_resources(cpus: float, gpus: float, address: str | None,
                    printer: Callable[[str], None]) -> None:
    """Refuse a per-trial request that no node of the connected Ray can satisfy (Ray would
    warn every minute, forever): an error for a local Ray, whose nodes are all there will be;
    a warning for a cluster at ``address``, whose autoscaler may still add such a node."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    problem = (f"a trial asks for {cpus:g} CPU(s) and {gpus:g} GPU(s), but no node offers "
               f"that (the largest: {most_cpus:g} CPUs, {most_gpus:g} GPUs)")
    if address is None:
        raise ValueError(f"{problem}; lower --cpus-per-trial / --gpus-per-trial, or start "
                         "Ray with more (--num-cpus)")
    printer(f"warning: {problem} yet; trials wait until the autoscaler adds such a node")


def check_before_ray(options: RunOptions, uri: str, datasets: list[DatasetConfig],
                     address: str | None) -> None:
    """What can be checked before Ray starts; raises ``ValueError`` (or the loader's
    ``DataError``) with one clear message.

    The device (``cuda`` needs a CUDA device here, unless the trials run on a cluster at
    ``address``), each real dataset's folder (exists and lists cases; a quick listing, not
    ``study data check``), and that the study folder and the data folder are writable.
    """
    device = options.device
    if not (device in ("auto", "cpu") or device == "cuda"
            or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not address:
        import torch

        if not torch.cuda.is_available():
            build = ("a CPU-only build" if torch.version.cuda is None
                     else f"built for CUDA {torch.version.cuda}, but sees no GPU")
            raise ValueError(f"--device {device}: no CUDA device on this machine (torch "
                             f"{torch.__version__} is {build}); use --device cpu or auto, or "
                             "--address to run the trials on a cluster with GPUs")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    from study.data import loader
    from study.data.inline import dataset_info

    for name, dataset in sorted({d.name: d for d in datasets}.items()):
        if dataset.synthetic is not None:
            continue
        root = options.dataset_roots.get(name)
        if root is None:
            raise ValueError(f"dataset {name}: no folder given (set `root` in the study or "
                             f"pass --dataset-root {name}=PATH)")
        loader.list_cases(dataset_info(dataset, root), Path(root))
    for folder in (uri, options.data_dir):
        check_storage(folder)


class ProgressCallback(tune.Callback):
    """Forwards Tune's trial events to the :class:`study.progress.Monitor` entered under
    ``key`` in this driver. It holds no paths or printers: Tune pickles callbacks with the
    experiment and re-applies them on restore, possibly in another process or after the
    study folder moved. ``to_param`` maps a Tune config to the trial's param."""

    def __init__(self, key: str, to_param: Callable[[dict], dict]):
        self.key, self.to_param = key, to_param

    def _monitor(self):
        return progress.monitor_for(self.key)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if (monitor := self._monitor()) is not None:
            monitor.started(self.to_param(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if (monitor := self._monitor()) is not None:
            monitor.result(self.to_param(trial.config), result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if (monitor := self._monitor()) is not None:
            monitor.finished(self.to_param(trial.config), trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if (monitor := self._monitor()) is not None:
            monitor.finished(self.to_param(trial.config), trial.last_result or {},
                             error=error_message(_trial_error(trial)))

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        if (monitor := self._monitor()) is not None:
            monitor.retrying(self.to_param(trial.config), error_message(_trial_error(trial)))

    def on_step_end(self, iteration, trials, **info) -> None:
        if (monitor := self._monitor()) is not None:
            monitor.tick()


def _trial_error(trial) -> BaseException | None:
    """The latest error of a Tune trial, from the driver's copy (Tune writes it there before
    calling back; the storage copy follows later)."""
    import ray.cloudpickle

    path = trial.pickled_error_file
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as stream:
        return ray.cloudpickle.load(stream)


def error_message(error: BaseException | None) -> str:
    """One line naming what went wrong in a trial (the trainable's own exception inside
    Ray's wrapper; a lost worker process said so)."""
    from ray.exceptions import RayActorError, RayTaskError

    if error is None:
        return "unknown error (see the trial's error.txt in the Tune experiment)"
    if isinstance(error, RayActorError):
        return f"its worker process died ({type(error).__name__}): killed or out of memory?"
    if isinstance(error, RayTaskError):
        error = error.cause if error.cause is not None else error
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


class _TuneLog(logging.Filter):
    """Ray Tune's driver log, filtered: its SIGINT notice sets ``interrupted`` (and is
    replaced by one line of ours); its restore hint (``Tuner.restore(...)``, not how this
    CLI resumes), its list of unfinished trials and its save notice are dropped."""

    HIDDEN = ("Experiment has been interrupted", "Training has been interrupted",
              "Trials did not complete", "Wrote the latest version of all result files")

    def __init__(self, printer: Callable[[str], None]):
        super().__init__()
        self.printer, self.interrupted = printer, False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Stop signal received"):
            self.interrupted = True
            self.printer("interrupt: stopping the trials and saving their state "
                         "(Ctrl-C again to stop at once)")
            return False
        return not message.startswith(self.HIDDEN)


@contextmanager
def tune_log(printer: Callable[[str], None]) -> Iterator[_TuneLog]:
    """Filter Ray Tune's driver log (:class:`_TuneLog`) while Tune runs."""
    logger = logging.getLogger("ray.tune.tune")
    log = _TuneLog(printer)
    logger.addFilter(log)
    try:
        yield log
    finally:
        logger.removeFilter(log)


def result_config(result: tune.Result) -> dict[str, Any]:
    """The Tune config of a trial's ``result`` (``ValueError`` naming the trial's folder if it
    has none)."""
    if result.config is None:
        raise ValueError(f"Tune result {result.path}: no config")
    return result.config


def fit(tuner: tune.Tuner, options: RunOptions, to_param: Callable[[dict], dict],
        printer: Callable[[str], None]) -> tuple[list[tune.Result], bool]:
    """Run ``tuner``; return its results and whether Ctrl-C interrupted it. A trial whose
    worker process died wrote no result of its own: a ``failed`` row is stored for it."""
    from ray.exceptions import RayActorError

    with tune_log(printer) as log:
        grid = tuner.fit()
    # ResultGrid iterates through __getitem__ and __len__ only, which mypy does not follow
    results = [grid[i] for i in range(len(grid))]
    for result in results:
        if isinstance(result.error, RayActorError):
            # a trial whose actor died before its first report has no config: its folder is
            # named by its trial id (trial_dirname_creator)
            config = result.config or {"trial": result.path.rstrip("/").rsplit("/", 1)[-1]}
            record_failure(to_param(config), options, error_message(result.error))
    return results, log.interrupted


# -- launch and resume -------------------------------------------------------------------------
@dataclass(frozen=True)
class Runner:
    """How the driver runs trials: Ray cluster (None: a local Ray with ``num_cpus``), retries
    of a failed trial, progress display (:class:`study.progress.Monitor`), and ``trial``, the
    function each Tune trial calls to run one trial and store its rows (:func:`run_in_worker`;
    the scheduling benchmark passes one that only writes a row, to time the orchestration)."""

    address: str | None = None
    num_cpus: int | None = None
    max_failures: int = 1
    printer: Callable[[str], None] = print
    live: bool = False
    every: float = progress.PLAIN_SECONDS
    trial: TrialFunction = run_in_worker

    def monitor(self, key: str, total: int, done: int, **hooks: Any) -> progress.Monitor:
        return progress.Monitor(key, total, done, printer=self.printer, live=self.live,
                                every=self.every, **hooks)


def _run_experiment(plan: Plan, uri: str, pending: list[dict], restore_path: str | None,
                    runner: Runner) -> bool:
    """Run (or restore) one Tune experiment of ``pending`` trials; True if interrupted."""
    options = plan.run_options(uri)
    to_param = GridParams({param["trial_id"]: param for param in plan.trials})
    trainable = tune.with_resources(_trainable(options, to_param, runner.trial),
                                    {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
    if restore_path is not None:  # Tune re-applies the first run's RunConfig and callbacks
        tuner = tune.Tuner.restore(restore_path, trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        fs, root = filesystem(f"{uri}/tune")
        name = datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S-%f")
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([p["trial_id"] for p in pending])},
            # reuse_actors: a trial actor (its worker process, imports and all) runs trial
            # after trial; each trial still starts from its config alone (run_trial seeds
            # torch and builds its data, model and samplers anew; threads come from options)
            tune_config=tune.TuneConfig(
                reuse_actors=True,
                trial_dirname_creator=lambda t: t.config["trial"],
                trial_name_creator=lambda t: t.config["trial"],
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=root,
                storage_filesystem=fs,
                failure_config=tune.FailureConfig(max_failures=runner.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[ProgressCallback(plan.study, to_param), JsonLoggerCallback()],
                verbose=0,
            ),
        )
    return fit(tuner, options, to_param, runner.printer)[1]


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


def datasets_of(params: list[dict[str, Any]]) -> list[DatasetConfig]:
    """The dataset configs of trial params (``study.json``'s trials)."""
    return [DatasetConfig.from_dict(p["config"]["dataset"]) for p in params]


def launch(trials: list[Trial], storage: str, options: RunOptions, *,
           cpus_per_trial: float = 1, gpus: float | None = None, **runner: Any) -> list[dict]:
    """Run every trial that has no stored result; return those still missing afterwards.

    ``gpus`` is the GPU share per trial; None picks it from the model
    (:func:`study.profiles.gpu_share`) when the cluster has GPUs. ``runner``: the fields of
    :class:`Runner` (``address``, ``num_cpus``, ``max_failures``, ``printer``, ``live``,
    ``every``, ``trial``). A study whose trials are all stored starts no Ray: it says so and
    returns (its plan keeps the GPU share it was launched with). Raises :class:`Interrupted`
    after Ctrl-C.
    """
    if not trials:
        raise ValueError("launch: the study expands to no trials")
    run = Runner(**runner)
    study = trials[0].study
    uri = study_uri(storage, study)
    params = [t.as_param() for t in trials]
    check_before_ray(options, uri, [t.config.dataset for t in trials], run.address)
    plan = Plan.create(study, params, options, storage, cpus_per_trial=cpus_per_trial,
                       gpus_per_trial=_stored_gpu_share(uri) if gpus is None else gpus)
    pending = pending_trials(plan, uri)
    if pending and gpus is None:  # the cluster's GPUs decide the share: Ray is needed now
        ensure_ray(run.address, run.num_cpus)
        models = {(t.config.model.name, t.config.model.preset) for t in trials}
        plan = replace(plan, gpus_per_trial=gpus_per_trial(models, None))
    plan.save(uri)
    return _continue(plan, uri, run, restore=False, pending=pending)


def _stored_gpu_share(uri: str) -> float:
    """The GPU share of the study's stored plan (0 when there is none): what a launch with
    nothing to run keeps, asking no cluster."""
    try:
        return Plan.load(uri).gpus_per_trial
    except (FileNotFoundError, ValueError):
        return 0.0


def prepare_resume(study: str, storage: str, **runner: Any) -> tuple[Plan, str, Runner]:
    """The plan, study URI and runner of an interrupted launch, after the checks that can be
    made before Ray starts (either mode: the caller continues it)."""
    run = Runner(**runner)
    uri = study_uri(storage, study)
    plan = Plan.load(uri)
    options = plan.run_options(uri)
    check_before_ray(options, uri, datasets_of(plan.trials) + _search_datasets(plan),
                     run.address)
    return plan, uri, run


def resume(plan: Plan, uri: str, run: Runner) -> list[dict]:
    """Continue an interrupted grid launch (:func:`prepare_resume`); return the trials still
    missing afterwards. Says where each unfinished trial continues."""
    return _continue(plan, uri, run, restore=True)


def _search_datasets(plan: Plan) -> list[DatasetConfig]:
    groups = (plan.search or {}).get("groups", [])
    return [DatasetConfig.from_dict(g["base"]["dataset"]) for g in groups]


def say_resume_points(uri: str, pending: list[dict], printer: Callable[[str], None]) -> None:
    """One line per unfinished trial that had started: where it continues."""
    beats, _ = progress.read_beats(f"{uri}/results")
    for param in pending:
        if param["trial_id"] in beats:
            printer(f"  {progress.trial_label(param)}: "
                    f"{progress.resume_point(beats[param['trial_id']])}")


def run_grid(plan: Plan, uri: str, pending: list[dict], runner: Runner, restore: bool) -> bool:
    """Run ``pending`` (trials of ``plan`` without a stored result) as grid experiments of at
    most ``GRID_BATCH`` trials, after restoring the newest experiment first if ``restore``;
    True if Ctrl-C interrupted them. Optimize mode runs its fixed trials this way too."""
    latest = _latest_experiment(uri) if restore else None
    interrupted = False
    if latest is not None:
        runner.printer(f"restoring Tune experiment {latest}")
        interrupted = _run_experiment(plan, uri, pending, latest, runner)
        left = {t["trial_id"] for t in pending_trials(plan, uri)}
        pending = [t for t in pending if t["trial_id"] in left]
    for start in range(0, len(pending), GRID_BATCH):
        if interrupted:
            break
        interrupted = _run_experiment(plan, uri, pending[start:start + GRID_BATCH], None,
                                      runner)
    return interrupted


def _continue(plan: Plan, uri: str, runner: Runner, restore: bool,
              pending: list[dict] | None = None) -> list[dict]:
    """Run the plan's ``pending`` trials (default: those without a stored result), Ray
    started only if there are any; return those still missing afterwards."""
    if pending is None:
        pending = pending_trials(plan, uri)
    done = len(plan.trials) - len(pending)
    runner.printer(f"study {plan.study}: {len(plan.trials)} trials, {done} already done, "
                   f"{len(pending)} to run; results in {uri}/results")
    if not pending:
        return []
    if restore:
        say_resume_points(uri, pending, runner.printer)
    ensure_ray(runner.address, runner.num_cpus)
    check_resources(plan.cpus_per_trial, plan.gpus_per_trial, runner.address, runner.printer)
    with runner.monitor(plan.study, len(plan.trials), done):
        interrupted = run_grid(plan, uri, pending, runner, restore)
    pending = pending_trials(plan, uri)
    if interrupted:
        progress.mark_interrupted(f"{uri}/results", {t["trial_id"] for t in pending})
        raise Interrupted(plan.study, storage_of(uri), len(plan.trials) - len(pending),
                          len(pending))
    return pending
