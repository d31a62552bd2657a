"""One trial's training: model, objective, optimiser, batches, the loop, its checkpoints.

:class:`Training` holds the model (``study.models``), the technique's loss, batch
regularizers and augmentation gate (``study.techniques``), and takes one
``study.objectives.regularized_step`` per iteration with the experiment's update rule
(``training.update``: one summed-loss step as the papers' equations, or one step per term in
the reference code's order), the model's paper optimiser and LR schedule
(``study.models.recipes``). Patches are sampled at the model's *input* size with labels of its
output patch ``training.output_patch`` (for DeepMedic the input packs its pathways' inputs:
the 37^3 ``input_patch`` segment and the x3 / x5 grids around it, zero-padded to 37^3 in their
own channels); on the device the labels are padded to the input size with the ignore label,
so that flips, mixup and adversarial perturbations treat input and labels alike. The
experiment's augmentation regime (``augmentation``), gated by eq. 21 where the technique has
``bg_aug_prob``, is applied by the sampler.

On CUDA: bf16 autocast, optional ``torch.compile``, batches sampled ahead in a thread into
pinned memory (``study.batches``), and the loss read by the host only every ``check_every``
iterations (a window of on-device losses), so the loop does not wait for the GPU each step; a
NaN/inf loss still raises :class:`Diverged` naming its exact iteration. On the CPU: float32,
no prefetch, a check every iteration.

:meth:`Training.run` trains to the budget, reporting to a session, checkpointing every
``checkpoint_every`` iterations and scoring :class:`Validation` patches every
``validate_every``. A checkpoint (:meth:`Training.state_bytes`) holds model, optimizer, LR
schedule, sampler and RNG states (CPU and CUDA); a run resumed from one
(:meth:`Training.load_state`) ends bit-exactly as an uninterrupted run on the CPU (CUDA
kernels are not bit-reproducible run to run).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Protocol, TypedDict, cast

import numpy as np
import torch
from torch import nn

import study.objectives as obj
from study.batches import BatchStream
from study.data import sampling
from study.data.device_augmentation import BatchAugmenter
from study.data.registry import DatasetInfo
from study.identity import TrialConfig
from study.models import DeepMedic, OutputLoss, build_model, centre_crop
from study.models.recipes import RECIPES
from study.progress import REPORT_SECONDS
from study.techniques import IGNORE, AugmentationGate, Context, build_training

VALIDATION_PATCHES = 8  # fixed patches of the test cases scored by periodic validation
VALIDATION_SEED = 0


class MachineOptions(Protocol):
    """The options :class:`Training` reads: how it uses the machine, as
    ``study.trial.RunOptions`` (which documents them) holds them."""

    @property
    def prefetch(self) -> int | None: ...

    @property
    def check_every(self) -> int | None: ...

    @property
    def compile(self) -> str | None: ...


class Reporter(Protocol):
    """Where a training reports progress and checkpoints (``study.trial.Session`` is one)."""

    def report(self, metrics: dict[str, Any], checkpoint: bytes | None = None) -> None: ...


class _GateOptions(TypedDict, total=False):
    """The keywords of ``sampling.PatchSampler`` that eq. 21's gate sets (none without one,
    the sampler's defaults)."""

    bg_aug_prob: float
    rare: Sequence[float]


class Diverged(Exception):
    """The training loss became NaN or infinite at ``iteration``."""

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration


class Training:
    """One trial's training: model, objective, optimizer, schedule, batches; :meth:`run`.

    ``training.output_patch`` is the patch the loss sees (DeepMedic: the 21^3 labelled by its
    37^3 ``input_patch`` segment); the model says which input tensor it needs for it
    (``model.input_size``: for DeepMedic the normal-pathway segment, which packs the inputs of
    all its pathways, ``model.pathways``) and the sampler cuts patches of that size.
    """

    def __init__(self, config: TrialConfig, cases, info: DatasetInfo, device: torch.device,
                 options: MachineOptions):
        training = config.training
        name = config.model.name
        self.config, self.device, self.iterations = config, device, training.iterations
        torch.manual_seed(config.seed)
        self.recipe = RECIPES[name]
        self.num_classes = len(info.classes)
        self.model = build_model(name, config.model.preset, len(info.channels),
                                 self.num_classes).to(device)
        self.output_patch = training.output_patch
        self.input_size = tuple(self.model.input_size(self.output_patch))
        context = Context(tuple(info.rare_vector()), self.recipe.dsc_term,
                          class_counts=lambda: obj.class_counts((c.label for c in cases),
                                                                self.num_classes),
                          batch_dice=self.recipe.batch_dice,
                          mixup_lambda=training.mixup_lambda or "paper")
        self.update = training.update or "summed"
        built = build_training(config.technique, config.hp, context)
        self.pretrain = training.pretrain
        # (loss, batch regularizers, eq. 21's bg_aug_prob) of 003 §4's CE pre-training and of
        # the technique; :meth:`_enter_phase` picks one by the iteration
        self._pretraining = (OutputLoss(obj.CrossEntropyLoss(ignore_index=IGNORE)), (), 1.0)
        self._technique = (OutputLoss(built.loss), built.regularizers,
                           built.augmentation.bg_aug_prob if built.augmentation else 1.0)
        self.optimizer = self.recipe.optimizer(self.model, training.lr)
        self.schedule = self.recipe.schedule(self.optimizer, self.iterations)
        self.sampler = self._sampler(cases, config.seed, built.augmentation)
        cuda = device.type == "cuda"
        prefetch = options.prefetch if options.prefetch is not None else (2 if cuda else 0)
        # on CUDA the nnunet regime's resampling runs on the GPU (the CPU only cuts regions)
        deferred = cuda and config.augmentation == "nnunet"
        self.augmenter = (BatchAugmenter(self.num_classes, self.sampler.augmentation)
                          if deferred else None)
        self.batches = BatchStream(self.sampler, training.batch_size, prefetch, pin=cuda,
                                   label_dtype=np.uint8 if self.num_classes <= 255
                                   else np.int64, deferred=deferred)
        self.check_every = options.check_every or (25 if cuda else 1)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
                         else nullcontext())
        self.forward_model: nn.Module = self.model
        if cuda:
            torch.backends.cudnn.benchmark = True
            if options.compile:
                # torch.compile of a module returns an OptimizedModule (an nn.Module); its
                # stubs type every result as the callable it was given
                self.forward_model = cast(nn.Module,
                                          torch.compile(self.model, mode=options.compile))
        self.iteration, self.last_loss = 0, math.nan
        self.sampler_state = self.sampler.state()
        self._window: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self._enter_phase()

    def _sampler(self, cases, seed: int, gate: AugmentationGate | None):
        """Patches at the model's input size with labels of its output size, sampled by the
        experiment's scheme (``training.sampling``) and augmented by its regime
        (``augmentation``), which eq. 21's gate restricts to rare samples plus a share
        ``bg_aug_prob`` of the others (on the CPU, in the prefetch thread on CUDA)."""
        training = self.config.training
        gate_options: _GateOptions = ({"bg_aug_prob": gate.bg_aug_prob, "rare": gate.rare}
                                      if gate is not None else {})
        return self.patch_sampler(cases, training.fg_fraction, seed,
                                  augmentation=self.config.augmentation,
                                  oversampling=training.sampling, **gate_options)

    def patch_sampler(self, cases, fg_fraction: float, seed: int, **options
                      ) -> sampling.PatchSampler:
        """A sampler of the model's inputs for ``training.output_patch`` with labels of that
        output (DeepMedic: its packed pathway grids, ``model.pathways``); ``options``: further
        ``PatchSampler`` keywords."""
        pathways = (self.model.pathways(self.output_patch) if isinstance(self.model, DeepMedic)
                    else None)
        return sampling.PatchSampler(cases, self.input_size, fg_fraction, seed=seed,
                                     label_patch=self.output_patch, pathways=pathways, **options)

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
        self._enter_phase()

    def _enter_phase(self) -> None:
        """The objective of the current iteration: 003 §4's pre-training for the first
        ``training.pretrain`` iterations — plain cross-entropy (001 eq. 1), no batch
        regularizer, the experiment's augmentation regime on every patch (eq. 21's gate open,
        as for the vanilla baseline) — then the technique's loss, regularizers and gate. The
        model, optimizer and LR schedule carry on across the switch (003 fine-tunes the
        pre-trained model); a checkpoint needs no more than its iteration to resume either
        phase. Batches sampled ahead under the other gate are dropped (the sampler rewound)."""
        self.loss, self.regularizers, bg_aug_prob = (
            self._pretraining if self.iteration < self.pretrain else self._technique)
        if self.sampler.bg_aug_prob != bg_aug_prob:
            self.batches.close()
            self.sampler.bg_aug_prob = bg_aug_prob

    # -- one iteration ----------------------------------------------------------------------
    def labels_at_input(self, labels: torch.Tensor) -> torch.Tensor:
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
        images, labels, self.sampler_state, draws = self.batches.next()
        x = images.to(self.device, non_blocking=True)
        y = labels.to(self.device, non_blocking=True)
        if draws is not None and self.augmenter is not None:  # fp32, before autocast
            x, y = self.augmenter.apply(x, y, draws)
        y = self.labels_at_input(y)
        self.model.train()
        with self.autocast:
            result = obj.regularized_step(
                self.forward_model, self.loss, self.optimizer, x, y,
                regularizers=self.regularizers, update=self.update,
                generate_before_clean=self.recipe.generate_before_clean)
        clean = result.losses["clean"]
        self.schedule.step(clean)
        self.iteration += 1
        if self.iteration == self.pretrain:
            self._enter_phase()
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
    def run(self, session: Reporter, checkpoint_every: int = 0,
            validation: Validation | None = None, validate_every: int = 0,
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
                scored = (validation if validate_every and it % validate_every == 0
                          else None)
                due_report = (it % report_every == 0 or due_checkpoint or scored is not None
                              or time.monotonic() - reported >= report_seconds)
                if due_report or it % self.check_every == 0 or it == self.iterations:
                    self.check()
                if due_report:
                    metrics = {"iteration": it, "train_loss": self.last_loss,
                               "lr": self.optimizer.param_groups[0]["lr"]}
                    if scored is not None:
                        metrics.update(scored.score(self))
                    session.report(metrics, self.state_bytes() if due_checkpoint else None)
                    reported = time.monotonic()
        except Diverged:
            raise
        except Exception:
            self.check()  # a NaN that broke a later step is divergence, not a failure
            raise
        finally:
            self.batches.close()


class Validation:
    """Fixed patches of ``cases`` (the validation or test cases; sampled once, the same for
    every trial of a dataset), scored in eval mode: the objective's loss and the pooled hard
    DSC of the foreground classes. ``last_loss``: the loss of the latest score (NaN before
    the first; not restored on resume), the trial's ``final_val_loss``."""

    def __init__(self, cases, training: Training, fg_fraction: float):
        sampler = training.patch_sampler(cases, fg_fraction, VALIDATION_SEED)
        images, labels = sampler.sample(VALIDATION_PATCHES)
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)
        self.last_loss = math.nan

    @torch.no_grad()
    def score(self, training: Training) -> dict[str, float]:
        model, device = training.model, training.device
        model.eval()
        losses, tp, total = [], torch.zeros(training.num_classes), torch.zeros(
            training.num_classes)
        batch = training.config.training.batch_size
        with training.autocast:
            for i in range(0, len(self.images), batch):
                x = self.images[i:i + batch].to(device)
                y = training.labels_at_input(self.labels[i:i + batch].to(device))
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
        self.last_loss = float(np.mean(losses))
        return {"val_loss": self.last_loss,
                "val_dsc": float(np.mean(dsc)) if dsc else math.nan}
