"""One trial: train a network with a technique's objective, evaluate it, store its results.

``run_trial(param, options, session)`` is a plain function of the trial's config: it runs the
same with Ray Tune (``study.tune`` passes a session that reports to Tune and checkpoints
through it) and without (``LocalSession``, for tests and debugging). It never raises for a
bad trial: a NaN/inf training loss ends it as ``diverged``; any other error is stored as a
``failed`` trial row naming the error, and only then re-raised, so that Tune can retry it.
"""

from __future__ import annotations

import io
import json
import math
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

import study
from study.data import loader, sampling, splits, synthetic
from study.data.registry import DATASETS, DatasetInfo
from study.evaluate import evaluate_segmentation
from study.inference import sliding_window_logits
from study.models import build_model
from study.results import ResultStore, identity_columns, summarise
from study.techniques import build_objective
from study.trials import Trial, canonical_json, trial_id

LOGIT_BINS = np.linspace(-30.0, 30.0, 61)  # fixed bins so histograms add across trials
LOGIT_STAT_TRAIN_CASES = 4  # training cases whose logits are summarised (inference is costly)
METRIC_KEYS = ("dsc", "sensitivity", "precision", "iou", "hd95", "hd95_max")


@dataclass(frozen=True)
class RunOptions:
    """Where a trial reads data and writes results; not part of the trial's identity."""

    data_dir: str
    results_uri: str
    dataset_root: str | None = None  # real datasets: the folder holding the cases
    device: str = "auto"
    checkpoint_every: int = 0  # iterations between checkpoints; 0 = none
    threads: int | None = None


class Session(Protocol):
    """How a trial reports progress and checkpoints (Ray Tune or nothing)."""

    def restore(self) -> bytes | None: ...

    def report(self, metrics: dict[str, Any], checkpoint: bytes | None = None) -> None: ...


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


class Diverged(Exception):
    """The training loss became NaN or infinite."""


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def dataset_root(config: dict[str, Any], options: RunOptions) -> Path:
    """The dataset's folder; synthetic data is generated there first if missing."""
    dataset = config["dataset"]
    info = DATASETS[dataset["name"]]
    if info.synthetic:
        key = trial_id({"synthetic": dataset["synthetic"]})[:8]
        folder = Path(options.data_dir) / f"{dataset['name']}-{key}"
        return synthetic.ensure_generated(dataset["synthetic"], folder)
    if options.dataset_root is None:
        raise ValueError(f"dataset {dataset['name']}: no dataset root given")
    return Path(options.dataset_root)


def _state_bytes(model, optimizer, iteration: int, sampler, loss: float) -> bytes:
    buffer = io.BytesIO()
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        "loss": loss,
        "torch_rng": torch.get_rng_state(),
        "sampler": json.dumps(sampler.state()),
    }, buffer)
    return buffer.getvalue()


def _train(config, cases, info: DatasetInfo, device, session: Session, checkpoint_every: int):
    """Train; return (model, iterations done, last loss). Raises ``Diverged``."""
    training = config["training"]
    torch.manual_seed(config["seed"])
    model = build_model(config["model"]["name"], config["model"]["preset"],
                        len(info.channels), len(info.classes)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=training["lr"])
    objective = build_objective(config["technique"], config["hp"], info.rare_vector())
    sampler = sampling.PatchSampler(cases, training["patch"], training["fg_fraction"],
                                    seed=config["seed"])
    start, loss_value = 0, math.nan
    saved = session.restore()
    if saved is not None:
        state = torch.load(io.BytesIO(saved), weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        sampler.set_state(json.loads(state["sampler"]))
        start, loss_value = state["iteration"], state["loss"]
    iterations = training["iterations"]
    report_every = max(1, iterations // 10)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()
    for iteration in range(start + 1, iterations + 1):
        images, labels = sampler.sample(training["batch_size"])
        images = torch.from_numpy(images).to(device, non_blocking=True)
        labels = torch.from_numpy(labels).to(device, non_blocking=True)
        with autocast:
            loss = objective(model(images), labels)
        loss_value = loss.detach().item()
        if not math.isfinite(loss_value):
            raise Diverged(f"training loss is {loss_value} at iteration {iteration}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        checkpoint = None
        if checkpoint_every and iteration % checkpoint_every == 0 and iteration < iterations:
            checkpoint = _state_bytes(model, optimizer, iteration, sampler, loss_value)
        if checkpoint is not None or iteration % report_every == 0:
            session.report({"iteration": iteration, "train_loss": loss_value}, checkpoint)
    return model, iterations, loss_value


class _LogitStats:
    """Per (true class, logit) running mean/std and fixed-bin histogram (001 §III-A, Fig. 3)."""

    def __init__(self, num_classes: int):
        shape = (num_classes, num_classes)
        self.count = np.zeros(shape)
        self.total = np.zeros(shape)
        self.squares = np.zeros(shape)
        self.hist = np.zeros((*shape, len(LOGIT_BINS) - 1), np.int64)

    def add(self, logits: np.ndarray, label: np.ndarray, roi: np.ndarray) -> None:
        for t in range(self.count.shape[0]):
            voxels = logits[:, (label == t) & roi].astype(np.float64)
            for k, values in enumerate(voxels):
                self.count[t, k] += values.size
                self.total[t, k] += values.sum()
                self.squares[t, k] += (values ** 2).sum()
                clipped = np.clip(values, LOGIT_BINS[0], LOGIT_BINS[-1])
                self.hist[t, k] += np.histogram(clipped, LOGIT_BINS)[0]

    def as_dict(self, class_names) -> dict:
        out = {}
        for t, true_name in enumerate(class_names):
            out[true_name] = {}
            for k, logit_name in enumerate(class_names):
                n = self.count[t, k]
                mean = self.total[t, k] / n if n else None
                std = math.sqrt(max(self.squares[t, k] / n - mean ** 2, 0.0)) if n else None
                out[true_name][logit_name] = {"voxels": int(n), "mean": mean, "std": std,
                                              "hist": self.hist[t, k].tolist()}
        return out


def _evaluate(model, config, info, test_cases, train_cases, device):
    """Per-case metric rows of the test cases and the train/test logit statistics."""
    patch = config["training"]["patch"]
    rows = []
    stats = {"train": _LogitStats(len(info.classes)), "test": _LogitStats(len(info.classes))}
    for case in train_cases[:LOGIT_STAT_TRAIN_CASES]:
        logits = sliding_window_logits(model, case.image, patch, device=device).numpy()
        stats["train"].add(logits, case.label, case.roi)
    for case in test_cases:
        logits = sliding_window_logits(model, case.image, patch, device=device).numpy()
        stats["test"].add(logits, case.label, case.roi)
        prediction = logits.argmax(axis=0).astype(np.uint8)
        for row in evaluate_segmentation(prediction, case.label, case.spacing, info.class_names,
                                         info.lcc_classes):
            rows.append({"case_id": case.case_id, **row})
    logit_stats = {"bin_edges": LOGIT_BINS.tolist()}
    logit_stats.update({split: s.as_dict(info.class_names) for split, s in stats.items()})
    return rows, logit_stats


def _diverged_rows(test_cases, info: DatasetInfo) -> list[dict]:
    """Rows for a diverged trial: metrics undefined (NaN), reference sizes kept."""
    rows = []
    for case in test_cases:
        for k, name in enumerate(info.class_names[1:], start=1):
            for postprocessed in (False, True):
                rows.append({"case_id": case.case_id, "class_name": name,
                             "postprocessed": postprocessed, "pred_voxels": None,
                             "ref_voxels": int((case.label == k).sum()),
                             **{key: math.nan for key in METRIC_KEYS}})
    return rows


def run_trial(param: dict[str, Any], options: RunOptions, session: Session | None = None
              ) -> dict[str, Any]:
    """Run one trial end to end and store its results; return its summary metrics."""
    session = session or LocalSession()
    trial = Trial.from_param(param)
    config = trial.config
    if options.threads:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    started = datetime.now(timezone.utc)
    row = {**identity_columns(param), "config": canonical_json(config), "error": None,
           "started_at": started, "code_version": study.__version__,
           "host": socket.gethostname(),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "train_seconds": None, "eval_seconds": None, "iterations_done": 0,
           "final_train_loss": None, "logit_stats": None}
    store = ResultStore(options.results_uri)
    info = DATASETS[config["dataset"]["name"]]
    case_rows: list[dict] = []
    try:
        root = dataset_root(config, options)
        train_ids, test_ids = splits.split(loader.list_cases(info, root),
                                           config["dataset"]["test_cases"], config["fraction"])
        train_cases = [loader.load_case(info, root, c) for c in train_ids]
        test_cases = [loader.load_case(info, root, c) for c in test_ids]
        row.update(train_cases=len(train_cases), test_cases=len(test_cases))
        clock = time.perf_counter()
        try:
            model, done, loss = _train(config, train_cases, info, device, session,
                                       options.checkpoint_every)
            row.update(status="ok", iterations_done=done, final_train_loss=loss)
        except Diverged as error:
            row.update(status="diverged", error=str(error))
        row["train_seconds"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if row["status"] == "ok":
            case_rows, logit_stats = _evaluate(model, config, info, test_cases, train_cases,
                                               device)
            row["logit_stats"] = json.dumps(logit_stats)
        else:
            case_rows = _diverged_rows(test_cases, info)
        row["eval_seconds"] = time.perf_counter() - clock
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        if isinstance(error, torch.cuda.OutOfMemoryError):
            message += f" (config: {canonical_json(config)})"
        row.update(status="failed", error=message, finished_at=datetime.now(timezone.utc))
        store.write_trial(row, [])
        error.add_note(traceback.format_exc(limit=3))
        raise
    row["finished_at"] = datetime.now(timezone.utc)
    identity = identity_columns(param)
    store.write_trial(row, [{**identity, **r, "status": row["status"]} for r in case_rows])
    return summarise(row, case_rows)

