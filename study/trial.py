"""One trial, end to end: data, training, evaluation, its rows in the results store.

``run_trial(param, options, session)`` is a plain function of the trial's config and the
launch's :class:`~study.run_options.RunOptions` (torch-free, shared with the driver): it runs the
same with Ray Tune (``study.orchestrate`` passes a session that reports to Tune and checkpoints
through it) and without (``LocalSession``, for tests and debugging). It loads the dataset's
training, test and held-out validation cases (``study.data``), trains
(``study.training``, resuming from the session's checkpoint), evaluates the test and
validation cases and a fixed subset of its training cases (``study.case_evaluation``) and
stores one ``trials`` row, with the logit statistics as JSON (``study.logit_stats``) and the
last periodic validation loss, and the ``cases`` rows (``study.results``).

It never raises for a bad trial: a NaN/inf training loss ends it as ``diverged``; any other
error is stored as a ``failed`` trial row naming the error (a CUDA out-of-memory error names
the model, batch, patch, GPU and config), and only then re-raised, so that Tune can retry it.
"""

from __future__ import annotations

import socket
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch

import study
from study.case_evaluation import diverged_rows, evaluate_cases, evaluated_cases
from study.data import loader, splits, synthetic
from study.data.inline import dataset_info
from study.data.registry import DatasetInfo
from study.expand import Trial
from study.identity import TrialConfig, canonical_json
from study.logit_stats import to_json
from study.results import ResultStore, identity_columns, summarise
from study.run_options import RunOptions, record_failure
from study.training import Diverged, Reporter, Training, Validation


class Session(Reporter, Protocol):
    """How a trial reports progress and checkpoints (Ray Tune or nothing), and where a
    resumed trial finds its last checkpoint."""

    def restore(self) -> bytes | None: ...


class LocalSession:
    """Runs without Ray: keeps the last checkpoint in memory and prints nothing."""

    def __init__(self, checkpoint: bytes | None = None):
        self.checkpoint = checkpoint
        self.reports: list[dict[str, Any]] = []

    def restore(self) -> bytes | None:
        return self.checkpoint

    def report(self, metrics: dict[str, Any], checkpoint: bytes | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            self.checkpoint = checkpoint


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def dataset_root(config: TrialConfig, options: RunOptions) -> Path:
    """The dataset's folder; synthetic data is generated there first if missing."""
    dataset = config.dataset
    if dataset.synthetic is not None:
        return synthetic.ensure_dataset(dataset, options.data_dir)
    root = options.dataset_roots.get(dataset.name)
    if root is None:
        raise ValueError(f"dataset {dataset.name}: no folder given (set `root` in the study "
                         f"or pass --dataset-root {dataset.name}=PATH)")
    return Path(root)


def _train(config: TrialConfig, cases, info: DatasetInfo, device, session: Session,
           options: RunOptions, test_cases=()) -> tuple[Training, Validation | None]:
    """Train (resuming from the session's checkpoint if any), with the periodic validation
    when ``options`` asks for one; raises ``Diverged``."""
    training = Training(config, cases, info, device, options)
    saved = session.restore()
    if saved is not None:
        training.load_state(saved)
    validation = None
    if options.validate_every and test_cases:
        validation = Validation(test_cases, training, config.training.fg_fraction)
    training.run(session, options.checkpoint_every, validation, options.validate_every,
                 options.report_seconds)
    return training, validation


def _out_of_memory_message(error: BaseException, config: TrialConfig,
                           device: torch.device) -> str:
    """What ran out of memory: model, batch, patch, technique, GPU and its memory use."""
    training, model = config.training, config.model
    gpu = ""
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        gpu = f" on {torch.cuda.get_device_name(device)} ({total:.0f} GiB, peak {peak:.1f} GiB)"
        torch.cuda.empty_cache()
    return (f"CUDA out of memory training {model.name}/{model.preset} with batch "
            f"{training.batch_size} x input segment {list(training.input_patch)} "
            f"(output {list(training.output_patch)}), technique "
            f"{config.technique} {dict(config.hp)}{gpu}: {error} (config: "
            f"{canonical_json(config.to_dict())})")


def _failure_message(error: BaseException, config: TrialConfig | None,
                     device: torch.device | None) -> str:
    if (isinstance(error, torch.cuda.OutOfMemoryError) and device is not None
            and config is not None):
        return _out_of_memory_message(error, config, device)
    return f"{type(error).__name__}: {error}"


def _tracker(options: RunOptions, param: dict[str, Any]):
    if options.mlflow_uri is None:
        return None
    from study.tracking import Tracker

    return Tracker(options.mlflow_uri, param)


def run_trial(param: dict[str, Any], options: RunOptions, session: Session | None = None
              ) -> dict[str, Any]:
    """Run one trial end to end and store its results; return its summary metrics.

    Any error, from reading the trial's config on, is stored as a ``failed`` row naming it
    (:func:`record_failure`) and re-raised."""
    session = session or LocalSession()
    row: dict[str, Any] = {"started_at": datetime.now(timezone.utc)}
    config: TrialConfig | None = None
    device, tracker = None, None
    case_rows: list[dict] = []
    try:
        trial = Trial.from_param(param)
        config = trial.config
        if options.threads:
            torch.set_num_threads(options.threads)
        device = resolve_device(options.device)
        identity = identity_columns(param)
        row.update(identity, config=canonical_json(config.to_dict()), error=None,
                   code_version=study.code_version(), host=socket.gethostname(),
                   device=torch.cuda.get_device_name(device) if device.type == "cuda"
                   else "cpu", train_seconds=None, eval_seconds=None, iterations_done=0,
                   final_train_loss=None, final_val_loss=None, logit_stats=None)
        store = ResultStore(options.results_uri)
        tracker = _tracker(options, param)
        if tracker is not None:
            from study.tracking import TrackedSession

            session = TrackedSession(session, tracker)
        root = dataset_root(config, options)
        dataset = config.dataset
        info = dataset_info(dataset, root)
        case_ids = loader.list_cases(info, root)
        given_test = loader.given_test_cases(info, root)  # a labelled imagesTs/ of its own
        held_out = dataset.validation_cases
        train_ids, test_ids = splits.split(case_ids, dataset.test_cases, config.fraction,
                                           counts=info.train_counts, validation_cases=held_out,
                                           given_test=given_test)
        cache = Path(options.data_dir) / "preprocessed"  # shared by the trials of a node

        def load(ids):
            return [loader.load_case(info, root, c, cache_dir=cache) for c in ids]

        train_cases = load(train_ids)
        loader.require_foreground(train_cases, info)
        test_cases = load(test_ids)
        validation_cases = load(splits.validation(case_ids, dataset.test_cases, held_out,
                                                  given_test)) if held_out else []
        evaluated = evaluated_cases(train_cases, test_cases, validation_cases)
        row.update(train_cases=len(train_cases), test_cases=len(test_cases))
        clock = time.perf_counter()
        try:
            training, validation = _train(config, train_cases, info, device, session, options,
                                          validation_cases or test_cases)
            row.update(status="ok", iterations_done=training.iteration,
                       final_train_loss=training.last_loss,
                       final_val_loss=None if validation is None else validation.last_loss)
        except Diverged as error:
            row.update(status="diverged", error=str(error), iterations_done=error.iteration - 1)
        row["train_seconds"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if row["status"] == "ok":
            case_rows, logit_stats = evaluate_cases(training.model, config, info, evaluated,
                                                    device)
            row["logit_stats"] = to_json(logit_stats, info.class_names)
        else:
            case_rows = diverged_rows(evaluated, info)
        row["eval_seconds"] = time.perf_counter() - clock
        row["finished_at"] = datetime.now(timezone.utc)
        case_rows = [{**identity, **r, "status": row["status"]} for r in case_rows]
        store.write_trial(row, case_rows)
    except Exception as error:
        message = _failure_message(error, config, device)
        record_failure(param, options, message, row)
        if tracker is not None:
            tracker.finish("failed", {}, [])
        # its first frames, kept with the error itself (exception notes are new in 3.11)
        if sys.version_info >= (3, 11):
            error.add_note(traceback.format_exc(limit=3))
        raise
    summary = summarise(row, case_rows)
    if tracker is not None:
        tracker.finish(row["status"], summary, case_rows)
    return summary
