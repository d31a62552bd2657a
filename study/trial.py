"""One trial: train a network with a technique's objective, evaluate it, store its results.

``run_trial(param, options, session)`` is a plain function of the trial's config: it runs the
same with Ray Tune (``study.tune`` passes a session that reports to Tune and checkpoints
through it) and without (``LocalSession``, for tests and debugging). It never raises for a
bad trial: a NaN/inf training loss ends it as ``diverged``; any other error is stored as a
``failed`` trial row naming the error (a CUDA out-of-memory error names the model, batch,
patch, GPU and config), and only then re-raised, so that Tune can retry it.

Training (:class:`Training`): the model (``study.models``), the technique's loss, batch
regularizers and augmentation gate (``study.techniques``), one :func:`regularized_step` per
iteration with the experiment's update rule (``training.update``: one summed-loss step as the
papers' equations, or one step per term in the reference code's order), the model's paper
optimiser and LR schedule (``study.models.recipes``). Patches are sampled at the model's
*input* size with labels of its output patch ``training.output_patch`` (for DeepMedic the
input is the context of its pathways around the 37^3 ``input_patch`` segment); on the device
the labels are padded to the input size with the ignore label, so that flips, mixup and
adversarial perturbations treat input and labels alike. The experiment's augmentation regime
(``augmentation``), gated by eq. 21 where the technique has ``bg_aug_prob``, is applied by the
sampler. On CUDA: bf16 autocast, optional ``torch.compile``, batches sampled ahead in a thread
into pinned memory, and the loss read by the host only every ``check_every`` iterations (a
window of on-device losses), so the loop does not wait for the GPU each step; divergence is
still reported at its exact iteration. On the CPU: float32, no prefetch, a check every
iteration.

Evaluation: the test cases and, when the dataset holds some out, the validation cases
(``split`` column), whole-volume inference with test-time mirroring where the experiment asks
for it.

Checkpoints (every ``checkpoint_every`` iterations) hold model, optimizer, LR schedule,
sampler and RNG states (CPU and CUDA); a trial resumed from one ends bit-exactly as an
uninterrupted run on the CPU (CUDA kernels are not bit-reproducible run to run).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import queue
import socket
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

import study
import study.objectives as obj
from study.data import loader, sampling, splits, synthetic
from study.data.registry import DATASETS, DatasetInfo
from study.evaluate import evaluate_segmentation
from study.inference import predict_logits
from study.models import OutputLoss, build_model, centre_crop
from study.models.recipes import RECIPES
from study.progress import REPORT_SECONDS
from study.results import ResultStore, identity_columns, summarise
from study.techniques import IGNORE, AugmentationGate, Context, build_training
from study.trials import Trial, canonical_json, trial_id

LOGIT_BINS = np.linspace(-30.0, 30.0, 61)  # fixed bins so histograms add across trials
LOGIT_STAT_TRAIN_CASES = 4  # training cases whose logits are summarised (inference is costly)
METRIC_KEYS = ("dsc", "sensitivity", "precision", "iou", "hd95", "hd95_max")
VALIDATION_PATCHES = 8  # fixed patches of the test cases scored by periodic validation
VALIDATION_SEED = 0
MODEL_OPTIONS = ("deep_supervision", "base", "stages")  # optional config["model"] keys


@dataclass(frozen=True)
class RunOptions:
    """Where a trial reads data and writes results, and how it uses the machine; not part of
    the trial's identity.

    ``validate_every``: iterations between validations (0 = none); each scores
    ``VALIDATION_PATCHES`` fixed patches of the *test* cases and reports ``val_loss`` and
    ``val_dsc`` — for watching training only, as the reference DeepMedic configs validate on
    their test list; nothing is selected or stopped on it. ``compile``: a ``torch.compile``
    mode (``"default"``, ``"reduce-overhead"``, ...) used on CUDA, or None for eager.
    ``prefetch``: batches sampled ahead in a thread (None: 2 on CUDA, 0 on the CPU).
    ``check_every``: iterations between NaN/inf checks of the loss (None: 1 on the CPU, 25 on
    CUDA). ``report_seconds``: a training trial reports its iteration and loss (no checkpoint)
    at least this often, for live progress, besides its ~10 reports per run.
    ``mlflow_uri``: an MLflow tracking URI to log each trial to (``study.tracking``), or None.
    """

    data_dir: str
    results_uri: str
    dataset_roots: dict[str, str] = field(default_factory=dict)  # real dataset name -> folder
    device: str = "auto"
    checkpoint_every: int = 0  # iterations between checkpoints; 0 = none
    threads: int | None = None
    validate_every: int = 0
    compile: str | None = None
    prefetch: int | None = None
    check_every: int | None = None
    report_seconds: float = REPORT_SECONDS
    mlflow_uri: str | None = None


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
    """The training loss became NaN or infinite at ``iteration``."""

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration


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
        return synthetic.ensure_generated(dataset["synthetic"], folder, preset=dataset["name"])
    root = options.dataset_roots.get(dataset["name"])
    if root is None:
        raise ValueError(f"dataset {dataset['name']}: no folder given (set `root` in the study "
                         f"or pass --dataset-root {dataset['name']}=PATH)")
    return Path(root)


class _BatchStream:
    """Training batches from a sampler, optionally sampled ``prefetch`` batches ahead in a
    background thread. Each batch comes with the sampler's state right after it was drawn, so
    a checkpoint records where the sampler stood after the last batch *trained on*, however
    far the thread has run ahead (the resumed run draws exactly the same batches)."""

    def __init__(self, sampler: sampling.PatchSampler, batch_size: int, prefetch: int,
                 pin: bool, label_dtype: np.dtype):
        self.sampler, self.batch_size = sampler, batch_size
        self.prefetch, self.pin, self.label_dtype = prefetch, pin, label_dtype
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        images, labels = self.sampler.sample(self.batch_size)
        state = self.sampler.state()
        x = torch.from_numpy(images)
        y = torch.from_numpy(labels.astype(self.label_dtype, copy=False))
        if self.pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y, state

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item: Any = self._draw()
            except Exception as error:  # handed to the consumer, raised there
                item = error
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, Exception):
                return

    def next(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        if not self.prefetch:
            return self._draw()
        if self._thread is None:
            self._consumed = self.sampler.state()
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, Exception):
            raise item
        self._consumed = item[2]
        return item

    def close(self) -> None:
        """Stop the thread and rewind the sampler to just after the last batch handed out
        (batches sampled ahead are dropped), so that sampling can continue exactly."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self.sampler.set_state(self._consumed)


def _model_options(model_config: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(model_config) - {"name", "preset", *MODEL_OPTIONS})
    if unknown:
        raise ValueError(f"model: unknown option(s) {unknown} (known: {', '.join(MODEL_OPTIONS)})")
    return {k: model_config[k] for k in MODEL_OPTIONS if k in model_config}


class Training:
    """One trial's training: model, objective, optimizer, schedule, batches; :meth:`run`.

    ``training.output_patch`` is the patch the loss sees (DeepMedic: the 21^3 labelled by its
    37^3 ``input_patch`` segment); the model says which input tensor it needs for it
    (``model.input_size``: for DeepMedic the context of all its pathways) and the sampler cuts
    patches of that size.
    """

    def __init__(self, config: dict[str, Any], cases, info: DatasetInfo, device: torch.device,
                 options: RunOptions):
        training = config["training"]
        name = config["model"]["name"]
        self.config, self.device, self.iterations = config, device, training["iterations"]
        torch.manual_seed(config["seed"])
        self.recipe = RECIPES[name]
        self.num_classes = len(info.classes)
        self.model = build_model(name, config["model"]["preset"], len(info.channels),
                                 self.num_classes, **_model_options(config["model"])).to(device)
        self.output_patch = tuple(int(p) for p in training["output_patch"])
        self.input_size = tuple(self.model.input_size(self.output_patch))
        context = Context(tuple(info.rare_vector()), self.recipe.dsc_term,
                          class_counts=lambda: obj.class_counts((c.label for c in cases),
                                                                self.num_classes),
                          batch_dice=self.recipe.batch_dice,
                          mixup_lambda=training.get("mixup_lambda", "paper"))
        self.update = training.get("update", "summed")
        built = build_training(config["technique"], config["hp"], context)
        self.loss = OutputLoss(built.loss)
        self.regularizers = built.regularizers
        self.optimizer = self.recipe.optimizer(self.model, training.get("lr"))
        self.schedule = self.recipe.schedule(self.optimizer, self.iterations)
        self.sampler = self._sampler(cases, config["seed"], built.augmentation)
        cuda = device.type == "cuda"
        prefetch = options.prefetch if options.prefetch is not None else (2 if cuda else 0)
        self.batches = _BatchStream(self.sampler, training["batch_size"], prefetch, pin=cuda,
                                    label_dtype=np.uint8 if self.num_classes <= 255
                                    else np.int64)
        self.check_every = options.check_every or (25 if cuda else 1)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
                         else nullcontext())
        self.forward_model = self.model
        if cuda:
            torch.backends.cudnn.benchmark = True
            if options.compile:
                self.forward_model = torch.compile(self.model, mode=options.compile)
        self.iteration, self.last_loss = 0, math.nan
        self.sampler_state = self.sampler.state()
        self._window: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def _sampler(self, cases, seed: int, gate: AugmentationGate | None):
        """Patches at the model's input size with labels of its output size, sampled by the
        experiment's scheme (``training.sampling``) and augmented by its regime
        (``augmentation``), which eq. 21's gate restricts to rare samples plus a share
        ``bg_aug_prob`` of the others (on the CPU, in the prefetch thread on CUDA)."""
        training = self.config["training"]
        gate_options = ({"bg_aug_prob": gate.bg_aug_prob, "rare": gate.rare}
                        if gate is not None else {})
        return sampling.PatchSampler(
            cases, self.input_size, training["fg_fraction"], seed=seed,
            label_patch=self.output_patch, augmentation=self.config["augmentation"],
            oversampling=training["sampling"], **gate_options)

    # -- state ------------------------------------------------------------------------------
    def state_bytes(self) -> bytes:
        """Everything a resumed run needs to continue bit-exactly (checks the loss first)."""
        self.check()
        buffer = io.BytesIO()
        torch.save({
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "iteration": self.iteration,
            "loss": self.last_loss,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                         else None),
            "sampler": json.dumps(self.sampler_state),
        }, buffer)
        return buffer.getvalue()

    def load_state(self, saved: bytes) -> None:
        state = torch.load(io.BytesIO(saved), weights_only=True, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.sampler_state = json.loads(state["sampler"])
        self.sampler.set_state(self.sampler_state)
        self.iteration, self.last_loss = state["iteration"], state["loss"]

    # -- one iteration ----------------------------------------------------------------------
    def _labels(self, labels: torch.Tensor) -> torch.Tensor:
        """int64 labels at the input size (every batch regularizer needs them aligned with the
        input) from labels of the output or input size; voxels outside the output are
        ``IGNORE``."""
        inner = centre_crop(labels.long(), self.output_patch)
        if self.input_size == self.output_patch:
            return inner
        marked = torch.full((labels.shape[0], *self.input_size), IGNORE, dtype=torch.int64,
                            device=labels.device)
        centre_crop(marked, self.output_patch).copy_(inner)
        return marked

    def step(self) -> obj.StepResult:
        """Sample a batch and take one training step (no host-device synchronisation)."""
        images, labels, self.sampler_state = self.batches.next()
        x = images.to(self.device, non_blocking=True)
        y = self._labels(labels.to(self.device, non_blocking=True))
        self.model.train()
        with self.autocast:
            result = obj.regularized_step(
                self.forward_model, self.loss, self.optimizer, x, y,
                regularizers=self.regularizers, update=self.update,
                generate_before_clean=self.recipe.generate_before_clean)
        clean = result.losses["clean"]
        self.schedule.step(clean)
        self.iteration += 1
        self._window.append((self.iteration, result.total, clean))
        return result

    def check(self) -> None:
        """Read the losses of the iterations since the last check (one synchronisation);
        raise :class:`Diverged` naming the first iteration whose loss was NaN or inf."""
        if not self._window:
            return
        values = torch.stack([torch.stack([t.float(), c.float()])
                              for _, t, c in self._window]).cpu()
        iterations = [i for i, _, _ in self._window]
        self._window.clear()
        finite = torch.isfinite(values).all(dim=1)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            value = float(values[bad, 0])
            raise Diverged(f"training loss is {value} at iteration {iterations[bad]}",
                           iterations[bad])
        self.schedule.settle()  # the LR schedule's host reads, after this synchronisation
        self.last_loss = float(values[-1, 1])

    # -- the loop ---------------------------------------------------------------------------
    def run(self, session: Session, checkpoint_every: int = 0,
            validation: _Validation | None = None, validate_every: int = 0,
            report_seconds: float = REPORT_SECONDS) -> None:
        """Train from the current iteration to the budget, reporting ~10 times and at least
        every ``report_seconds`` (for progress; no checkpoint), checkpointing every
        ``checkpoint_every`` and validating every ``validate_every`` iterations."""
        report_every = max(1, self.iterations // 10)
        reported = time.monotonic()
        try:
            while self.iteration < self.iterations:
                self.step()
                it = self.iteration
                due_checkpoint = bool(checkpoint_every) and it % checkpoint_every == 0 \
                    and it < self.iterations
                due_validation = bool(validate_every) and validation is not None \
                    and it % validate_every == 0
                due_report = (it % report_every == 0 or due_checkpoint or due_validation
                              or time.monotonic() - reported >= report_seconds)
                if due_report or it % self.check_every == 0 or it == self.iterations:
                    self.check()
                if due_report:
                    metrics = {"iteration": it, "train_loss": self.last_loss,
                               "lr": self.optimizer.param_groups[0]["lr"]}
                    if due_validation:
                        metrics.update(validation.score(self))
                    session.report(metrics, self.state_bytes() if due_checkpoint else None)
                    reported = time.monotonic()
        except Diverged:
            raise
        except Exception:
            self.check()  # a NaN that broke a later step is divergence, not a failure
            raise
        finally:
            self.batches.close()


class _Validation:
    """Fixed patches of the test cases (sampled once, the same for every trial of a dataset),
    scored in eval mode: the objective's loss and the pooled hard DSC of the foreground
    classes."""

    def __init__(self, cases, training: Training, fg_fraction: float):
        sampler = sampling.PatchSampler(cases, training.input_size, fg_fraction,
                                        seed=VALIDATION_SEED)
        images, labels = sampler.sample(VALIDATION_PATCHES)
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)

    @torch.no_grad()
    def score(self, training: Training) -> dict[str, float]:
        model, device = training.model, training.device
        model.eval()
        losses, tp, total = [], torch.zeros(training.num_classes), torch.zeros(
            training.num_classes)
        batch = training.config["training"]["batch_size"]
        with training.autocast:
            for i in range(0, len(self.images), batch):
                x = self.images[i:i + batch].to(device)
                y = training._labels(self.labels[i:i + batch].to(device))
                logits = model(x).float()
                losses.append(float(training.loss(logits, y)))
                target = centre_crop(y, logits.shape[2:])
                prediction = logits.argmax(1)
                for k in range(1, training.num_classes):
                    p, t = prediction == k, target == k
                    tp[k] += float((p & t).sum())
                    total[k] += float(p.sum() + t.sum())
        model.train()
        dsc = [2 * tp[k] / total[k] for k in range(1, training.num_classes) if total[k] > 0]
        return {"val_loss": float(np.mean(losses)),
                "val_dsc": float(np.mean(dsc)) if dsc else math.nan}


def _train(config, cases, info: DatasetInfo, device, session: Session, options: RunOptions,
           test_cases=()) -> Training:
    """Train (resuming from the session's checkpoint if any); raises ``Diverged``."""
    training = Training(config, cases, info, device, options)
    saved = session.restore()
    if saved is not None:
        training.load_state(saved)
    validation = None
    if options.validate_every and test_cases:
        validation = _Validation(test_cases, training, config["training"]["fg_fraction"])
    training.run(session, options.checkpoint_every, validation, options.validate_every,
                 options.report_seconds)
    return training


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


def _evaluate(model, config, info, evaluated: dict[str, list], train_cases, device):
    """Per-case metric rows of the evaluated cases (``{"test": cases, "validation": cases}``,
    each row tagged with its ``split``) and the train/test logit statistics.

    Whole-volume logits by :func:`study.inference.predict_logits` (U-Net: Gaussian sliding
    window over the training patch, overlap 0.5, optionally averaged over mirrorings;
    DeepMedic: dense tiling with its inference segments), argmax, metrics with and without
    largest-component post-processing.
    """
    patch = config["training"]["output_patch"]
    mirror = (0, 1, 2) if config.get("inference", {}).get("mirroring") else ()

    def logits_of(case) -> np.ndarray:
        return predict_logits(model, case.image, patch, device=device,
                              mirror_axes=mirror).numpy()

    rows = []
    stats = {"train": _LogitStats(len(info.classes)), "test": _LogitStats(len(info.classes))}
    for case in train_cases[:LOGIT_STAT_TRAIN_CASES]:
        stats["train"].add(logits_of(case), case.label, case.roi)
    for split, cases in evaluated.items():
        for case in cases:
            logits = logits_of(case)
            if split == "test":
                stats["test"].add(logits, case.label, case.roi)
            prediction = logits.argmax(axis=0).astype(np.uint8)
            for row in evaluate_segmentation(prediction, case.label, case.spacing,
                                             info.class_names, info.lcc_classes):
                rows.append({"case_id": case.case_id, "split": split, **row})
    logit_stats = {"bin_edges": LOGIT_BINS.tolist()}
    logit_stats.update({split: s.as_dict(info.class_names) for split, s in stats.items()})
    return rows, logit_stats


def _diverged_rows(evaluated: dict[str, list], info: DatasetInfo) -> list[dict]:
    """Rows for a diverged trial: metrics undefined (NaN), reference sizes kept."""
    rows = []
    for split, cases in evaluated.items():
        for case, k in itertools.product(cases, range(1, len(info.class_names))):
            name = info.class_names[k]
            for postprocessed in (False, True):
                rows.append({"case_id": case.case_id, "split": split, "class_name": name,
                             "postprocessed": postprocessed, "pred_voxels": None,
                             "ref_voxels": int((case.label == k).sum()),
                             **{key: math.nan for key in METRIC_KEYS}})
    return rows


def _out_of_memory_message(error: BaseException, config: dict[str, Any],
                           device: torch.device) -> str:
    """What ran out of memory: model, batch, patch, technique, GPU and its memory use."""
    training = config["training"]
    model = config["model"]
    gpu = ""
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        gpu = f" on {torch.cuda.get_device_name(device)} ({total:.0f} GiB, peak {peak:.1f} GiB)"
        torch.cuda.empty_cache()
    return (f"CUDA out of memory training {model['name']}/{model['preset']} with batch "
            f"{training['batch_size']} x input segment {list(training['input_patch'])} "
            f"(output {list(training['output_patch'])}), technique "
            f"{config['technique']} {config['hp']}{gpu}: {error} (config: "
            f"{canonical_json(config)})")


def _failure_message(error: BaseException, config: dict[str, Any],
                     device: torch.device | None) -> str:
    if isinstance(error, torch.cuda.OutOfMemoryError) and device is not None:
        return _out_of_memory_message(error, config, device)
    return f"{type(error).__name__}: {error}"


def _identity(param: dict[str, Any]) -> dict[str, Any]:
    """The identity columns of ``param``, or as many as a malformed param allows (a failed
    row is stored even for a trial whose config cannot be read)."""
    try:
        return identity_columns(param)
    except (KeyError, TypeError, ValueError):
        config = param.get("config") if isinstance(param.get("config"), dict) else {}
        return {"study": param.get("study"), "trial_id": param.get("trial_id"),
                "param_label": param.get("param_label"), "variant": param.get("variant"),
                "technique": config.get("technique")}


def record_failure(param: dict[str, Any], options: RunOptions, error: BaseException | str,
                   row: dict[str, Any] | None = None) -> None:
    """Store a ``failed`` trials row for ``param`` naming ``error`` (over ``row``, what the
    trial had recorded so far), so that ``study status`` lists the reason; the trial runs
    again on resume."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    now = datetime.now(timezone.utc)
    base = {**_identity(param), "config": canonical_json(param.get("config")),
            "started_at": now, "code_version": study.code_version(),
            "host": socket.gethostname()}
    ResultStore(options.results_uri).write_trial(
        {**base, **(row or {}), "status": "failed", "error": message, "finished_at": now}, [])


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
    config, device, tracker = param.get("config"), None, None
    case_rows: list[dict] = []
    try:
        trial = Trial.from_param(param)
        config = trial.config
        if options.threads:
            torch.set_num_threads(options.threads)
        device = resolve_device(options.device)
        row.update(identity_columns(param), config=canonical_json(config), error=None,
                   code_version=study.code_version(), host=socket.gethostname(),
                   device=torch.cuda.get_device_name(device) if device.type == "cuda"
                   else "cpu", train_seconds=None, eval_seconds=None, iterations_done=0,
                   final_train_loss=None, logit_stats=None)
        store = ResultStore(options.results_uri)
        info = DATASETS[config["dataset"]["name"]]
        tracker = _tracker(options, param)
        if tracker is not None:
            from study.tracking import TrackedSession

            session = TrackedSession(session, tracker)
        root = dataset_root(config, options)
        dataset = config["dataset"]
        case_ids = loader.list_cases(info, root)
        held_out = dataset.get("validation_cases", 0)
        train_ids, test_ids = splits.split(case_ids, dataset["test_cases"], config["fraction"],
                                           counts=info.train_counts, validation_cases=held_out)
        cache = Path(options.data_dir) / "preprocessed"  # shared by the trials of a node

        def load(ids):
            return [loader.load_case(info, root, c, cache_dir=cache) for c in ids]

        train_cases = load(train_ids)
        loader.require_foreground(train_cases, info)
        test_cases = load(test_ids)
        evaluated = {"test": test_cases}
        if held_out:
            evaluated["validation"] = load(splits.validation(case_ids, dataset["test_cases"],
                                                             held_out))
        row.update(train_cases=len(train_cases), test_cases=len(test_cases))
        clock = time.perf_counter()
        try:
            training = _train(config, train_cases, info, device, session, options,
                              evaluated.get("validation") or test_cases)
            row.update(status="ok", iterations_done=training.iteration,
                       final_train_loss=training.last_loss)
        except Diverged as error:
            row.update(status="diverged", error=str(error), iterations_done=error.iteration - 1)
        row["train_seconds"] = time.perf_counter() - clock
        clock = time.perf_counter()
        if row["status"] == "ok":
            case_rows, logit_stats = _evaluate(training.model, config, info, evaluated,
                                               train_cases, device)
            row["logit_stats"] = json.dumps(logit_stats)
        else:
            case_rows = _diverged_rows(evaluated, info)
        row["eval_seconds"] = time.perf_counter() - clock
        row["finished_at"] = datetime.now(timezone.utc)
        identity = identity_columns(param)
        case_rows = [{**identity, **r, "status": row["status"]} for r in case_rows]
        store.write_trial(row, case_rows)
    except Exception as error:
        message = _failure_message(error, config, device)
        record_failure(param, options, message, row)
        if tracker is not None:
            tracker.finish("failed", {}, [])
        error.add_note(traceback.format_exc(limit=3))
        raise
    summary = summarise(row, case_rows)
    if tracker is not None:
        tracker.finish(row["status"], summary, case_rows)
    return summary
