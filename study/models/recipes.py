"""How the papers train each model: baseline loss, optimiser, learning-rate schedule.

* ``deepmedic`` (techniques.md A8; 001 §V BraTS/ATLAS): CE; RMSProp (rho 0.9, eps 1e-4 inside
  the square root) with non-normalised Nesterov momentum 0.6 (:class:`DeepMedicRMSprop`);
  LR 1e-3 halved at epochs 17, 22, 27, 30 and 33 of 35. The epochs are scaled to the trial's
  iteration budget (the milestones fall at 17/35, 22/35, ... of it), so a short budget runs a
  compressed copy of the paper's schedule.
* ``unet`` (A9; 001 §V KiTS, the old nnU-Net fork): CE + soft DSC; Adam with AMSGrad, LR 3e-4,
  weight decay 3e-5; ReduceLROnPlateau (factor 0.2, patience 30 epochs, absolute threshold 1e-3)
  on the moving average (0.93) of the per-epoch mean training loss, epochs of 250 iterations.
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

DEEPMEDIC_EPOCHS = 35
DEEPMEDIC_HALVING_EPOCHS = (17, 22, 27, 30, 33)
UNET_EPOCH_ITERATIONS = 250


class DeepMedicRMSprop(torch.optim.Optimizer):
    """RMSProp with Nesterov momentum as DeepMedic implements it (``optimizers.py``):

    ``a <- rho a + (1 - rho) g^2``; ``s = lr g / sqrt(a + eps)``; ``v <- mu v - s``;
    ``p <- p + mu v - s`` (Nesterov) or ``p <- p + v`` (classic). Note ``eps`` *inside* the
    square root (PyTorch's RMSprop adds it outside) and momentum that is not normalised by
    ``1 - mu``. ``weight_decay`` adds ``wd p`` to the gradient (DeepMedic's L2; 0 for 001's
    BraTS setting).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, rho: float = 0.9,
                 eps: float = 1e-4, momentum: float = 0.6, nesterov: bool = True,
                 weight_decay: float = 0.0):
        if lr <= 0 or not 0 <= rho < 1 or eps <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"DeepMedicRMSprop: invalid settings lr={lr}, rho={rho}, eps={eps}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "momentum": momentum,
                                  "nesterov": nesterov, "weight_decay": weight_decay})

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
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
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

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


class PlateauOnTrainingLoss:
    """nnU-Net (v1 fork)'s schedule: ReduceLROnPlateau on the moving average of the epoch-mean
    training loss, ``MA <- 0.93 MA + 0.07 mean`` (the first epoch sets MA). The per-iteration
    losses are summed on the device; the host reads the sum once per epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, epoch: int = UNET_EPOCH_ITERATIONS,
                 alpha: float = 0.93):
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.2, patience=30, threshold=1e-3,
            threshold_mode="abs")
        self.epoch, self.alpha = epoch, alpha
        self.moving_average: float | None = None
        self.total: torch.Tensor | None = None
        self.count = 0

    def step(self, loss: torch.Tensor) -> None:
        value = loss.detach().float()
        self.total = value if self.total is None else self.total + value
        self.count += 1
        if self.count < self.epoch:
            return
        mean = float(self.total) / self.count
        self.total, self.count = None, 0
        self.moving_average = mean if self.moving_average is None else (
            self.alpha * self.moving_average + (1 - self.alpha) * mean)
        self.scheduler.step(self.moving_average)

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict(), "moving_average": self.moving_average,
                "total": self.total, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.moving_average, self.total = state["moving_average"], state["total"]
        self.count = state["count"]


@dataclass(frozen=True)
class Recipe:
    """A model's training settings in the papers."""

    model: str
    lr: float  # initial learning rate
    dsc_term: bool  # baseline is CE + soft DSC (U-Net) rather than CE alone (DeepMedic)
    description: str

    def optimizer(self, params: Iterable[Any], lr: float | None) -> torch.optim.Optimizer:
        lr = self.lr if lr is None else lr
        if self.model == "deepmedic":
            return DeepMedicRMSprop(params, lr=lr)
        return torch.optim.Adam(params, lr=lr, weight_decay=3e-5, amsgrad=True)

    def schedule(self, optimizer: torch.optim.Optimizer, iterations: int):
        if self.model == "deepmedic":
            return StepHalving(optimizer, iterations)
        return PlateauOnTrainingLoss(optimizer)


RECIPES: dict[str, Recipe] = {
    "deepmedic": Recipe("deepmedic", 1e-3, False,
                        "CE; RMSProp + Nesterov 0.6, LR 1e-3 halved at 17,22,27,30,33/35 of the "
                        "budget"),
    "unet": Recipe("unet", 3e-4, True,
                   "CE + DSC; Adam (AMSGrad) LR 3e-4, wd 3e-5, plateau x0.2 on the training "
                   "loss"),
}
