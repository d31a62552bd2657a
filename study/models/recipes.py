"""How the papers train each model: baseline loss, optimiser, learning-rate schedule.

* ``deepmedic`` (001 §V-A BraTS/ATLAS): CE; RMSProp (rho 0.9, eps 1e-4 inside the square
  root) with non-normalised Nesterov momentum 0.6 and the preset's L1/L2 on the convolution
  kernels (``default``: 1e-6 / 1e-4, ``basic``: none) (:class:`DeepMedicRMSprop`);
  LR 1e-3 halved at epochs 17, 22, 27, 30 and 33 of 35. The epochs are scaled to the trial's
  iteration budget (the milestones fall at 17/35, 22/35, ... of it), so a short budget runs a
  compressed copy of the paper's schedule.
* ``unet`` (001 §V KiTS, the old nnU-Net fork): CE + sample-wise soft DSC (001 §V-A.4); Adam
  with AMSGrad, LR 3e-4, weight decay 3e-5; ReduceLROnPlateau (factor 0.2, patience 30
  epochs, absolute threshold 1e-3) on the moving average (0.93) of the per-epoch mean training
  loss, epochs of 250 iterations.
  This rule reacts to the loss, not to the budget, so it is not scaled: it cannot fire before
  ~7,500 iterations, and shorter budgets train at the constant initial LR exactly as the
  paper's first epochs do.

A study's ``training.lr`` replaces the paper's initial LR (the schedule's shape is kept).
Every schedule is stepped once per training iteration with that iteration's (clean) loss as
a device tensor and checkpoints with ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from study.models.deepmedic import DeepMedic

DEEPMEDIC_EPOCHS = 35
DEEPMEDIC_HALVING_EPOCHS = (17, 22, 27, 30, 33)
UNET_EPOCH_ITERATIONS = 250


class DeepMedicRMSprop(torch.optim.Optimizer):
    """RMSProp with Nesterov momentum as DeepMedic implements it (``optimizers.py``):

    ``a <- rho a + (1 - rho) g^2``; ``s = lr g / sqrt(a + eps)``; ``v <- mu v - s``;
    ``p <- p + mu v - s`` (Nesterov) or ``p <- p + v`` (classic). Note ``eps`` *inside* the
    square root (PyTorch's RMSprop adds it outside) and momentum that is not normalised by
    ``1 - mu``.

    ``l1`` and ``l2`` (per parameter group) are DeepMedic's regularisation terms
    ``l1 sum |w| + l2 sum w^2`` added to the cost: ``g`` is the gradient of that sum,
    ``g + l1 sign(w) + 2 l2 w`` (``sign(0) = 0``), so the terms pass through the RMSProp
    normalisation as in DeepMedic (not a decoupled weight decay).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, rho: float = 0.9,
                 eps: float = 1e-4, momentum: float = 0.6, nesterov: bool = True,
                 l1: float = 0.0, l2: float = 0.0):
        if (lr <= 0 or not 0 <= rho < 1 or eps <= 0 or not 0 <= momentum < 1 or l1 < 0
                or l2 < 0):
            raise ValueError(f"DeepMedicRMSprop: invalid settings lr={lr}, rho={rho}, eps={eps}, "
                             f"momentum={momentum}, l1={l1}, l2={l2}")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "momentum": momentum,
                                  "nesterov": nesterov, "l1": l1, "l2": l2})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads: tuple[torch.Tensor, ...] | list[torch.Tensor] = [p.grad for p in params]
            if group["l1"]:
                grads = torch._foreach_add(grads, torch._foreach_sign(params), alpha=group["l1"])
            if group["l2"]:
                grads = torch._foreach_add(grads, params, alpha=2 * group["l2"])
            for p in params:
                if not self.state[p]:
                    self.state[p]["square_avg"] = torch.zeros_like(p)
                    self.state[p]["velocity"] = torch.zeros_like(p)
            square = [self.state[p]["square_avg"] for p in params]
            velocity = [self.state[p]["velocity"] for p in params]
            torch._foreach_mul_(square, group["rho"])
            torch._foreach_addcmul_(square, grads, grads, value=1 - group["rho"])
            denom = torch._foreach_add(square, group["eps"])
            torch._foreach_sqrt_(denom)
            steps = torch._foreach_div(grads, denom)
            torch._foreach_mul_(steps, group["lr"])
            torch._foreach_mul_(velocity, group["momentum"])
            torch._foreach_sub_(velocity, steps)
            if group["nesterov"]:
                update = torch._foreach_mul(velocity, group["momentum"])
                torch._foreach_sub_(update, steps)
                torch._foreach_add_(params, update)
            else:
                torch._foreach_add_(params, velocity)
        return loss


class StepHalving:
    """DeepMedic's schedule: LR halved at fixed fractions of the iteration budget."""

    def __init__(self, optimizer: torch.optim.Optimizer, iterations: int):
        # a repeated milestone (short budgets) halves twice there: the final LR is always /32
        milestones = [max(1, round(iterations * e / DEEPMEDIC_EPOCHS))
                      for e in DEEPMEDIC_HALVING_EPOCHS]
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.5)

    def step(self, loss: torch.Tensor) -> None:
        self.scheduler.step()

    def settle(self) -> None:
        """Nothing waits for the host: the milestones are known in advance."""

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


class PlateauOnTrainingLoss:
    """nnU-Net (v1 fork)'s schedule: ReduceLROnPlateau on the moving average of the epoch-mean
    training loss, ``MA <- 0.93 MA + 0.07 mean`` (the first epoch sets MA).

    The per-iteration losses are summed on the device and :meth:`step` never reads them: an
    epoch's sum waits until :meth:`settle`, which the trial loop calls where it reads the
    losses anyway (every ``check_every`` iterations), so the training step never waits for
    the GPU. On CUDA the LR therefore changes up to ``check_every`` iterations after the epoch
    end (a patience of 30 epochs makes that immaterial); on the CPU at once."""

    def __init__(self, optimizer: torch.optim.Optimizer, epoch: int = UNET_EPOCH_ITERATIONS,
                 alpha: float = 0.93):
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.2, patience=30, threshold=1e-3,
            threshold_mode="abs")
        self.epoch, self.alpha = epoch, alpha
        self.moving_average: float | None = None
        self.total: torch.Tensor | None = None
        self.count = 0
        self.pending: list[torch.Tensor] = []  # finished epochs' loss sums, not yet read

    def step(self, loss: torch.Tensor) -> None:
        value = loss.detach().float()
        self.total = value if self.total is None else self.total + value
        self.count += 1
        if self.count < self.epoch:
            return
        self.pending.append(self.total)
        self.total, self.count = None, 0

    def settle(self) -> None:
        """Read the finished epochs' sums (one host read) and step the plateau rule."""
        for total in self.pending:
            mean = float(total) / self.epoch
            self.moving_average = mean if self.moving_average is None else (
                self.alpha * self.moving_average + (1 - self.alpha) * mean)
            self.scheduler.step(self.moving_average)
        self.pending.clear()

    def state_dict(self) -> dict:
        self.settle()
        return {"scheduler": self.scheduler.state_dict(), "moving_average": self.moving_average,
                "total": self.total, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.moving_average, self.total = state["moving_average"], state["total"]
        self.count, self.pending = state["count"], []


@dataclass(frozen=True)
class Recipe:
    """A model's training settings in the papers."""

    model: str
    lr: float  # initial learning rate
    dsc_term: bool  # baseline is CE + soft DSC (U-Net) rather than CE alone (DeepMedic)
    description: str
    # the DSC term per sample (001 §V-A.4: "sample-wise DSC loss") rather than over the batch
    batch_dice: bool = False
    # sequential updates: extra batches made from the weights before the clean step (the
    # reference DeepMedic) or each just before its own step (the reference U-Net)
    generate_before_clean: bool = False

    def optimizer(self, model: nn.Module, lr: float | None) -> torch.optim.Optimizer:
        """The paper's optimiser for ``model``'s parameters, initial LR ``lr`` (None: the
        paper's). DeepMedic: :class:`DeepMedicRMSprop` with the preset's L1/L2 on
        ``model.regularised_parameters()`` (the convolution kernels) and none on the rest."""
        lr = self.lr if lr is None else lr
        if self.model == "deepmedic":
            if not isinstance(model, DeepMedic):
                raise TypeError(f"the deepmedic recipe needs a DeepMedic model, got "
                                f"{type(model).__name__}")
            kernels = {id(p) for p in model.regularised_parameters()}
            config = model.config
            return DeepMedicRMSprop(
                [{"params": [p for p in model.parameters() if id(p) in kernels],
                  "l1": config.l1, "l2": config.l2},
                 {"params": [p for p in model.parameters() if id(p) not in kernels]}], lr=lr)
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=3e-5, amsgrad=True)

    def schedule(self, optimizer: torch.optim.Optimizer, iterations: int):
        if self.model == "deepmedic":
            return StepHalving(optimizer, iterations)
        return PlateauOnTrainingLoss(optimizer)


RECIPES: dict[str, Recipe] = {
    "deepmedic": Recipe("deepmedic", 1e-3, False,
                        "CE; RMSProp + Nesterov 0.6, LR 1e-3 halved at 17,22,27,30,33/35 of the "
                        "budget", generate_before_clean=True),
    "unet": Recipe("unet", 3e-4, True,
                   "CE + sample-wise DSC; Adam (AMSGrad) LR 3e-4, wd 3e-5, plateau x0.2 on the "
                   "training loss"),
}
