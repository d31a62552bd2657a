"""How extra batches (adversarial, mixup) and augmentation enter a training step (001 §IV-F).

Two modes:

* ``"paper"`` (default): one summed loss and one optimizer step, as eq. 14, 17 and 22 write it:
  ``L(x~, y~) + sum_r L(x_r, y_r)`` where ``x~`` is the (asymmetrically) augmented clean batch
  (eq. 21) and ``(x_r, y_r)`` the batches of each regularizer (eq. 16, 19), all generated from
  the same weights. Gradients are accumulated term by term (identical to back-propagating the
  sum, with the peak memory of one batch).
* ``"sequential"``: the reference code's schedule (techniques.md A6): an optimizer step on the
  clean batch, then for each regularizer a new batch generated with the *updated* weights and a
  separate optimizer step.

Cost per call with ``k`` regularizers: both modes run ``1 + k`` forward/backward passes (plus one
forward/backward w.r.t. the input for each adversarial direction); ``"paper"`` makes **1**
parameter update, ``"sequential"`` makes **1 + k** — it doubles or triples the number of
updates (and the optimizer's step count, learning-rate schedule and momentum) per iteration,
so an iteration budget means different amounts of training in the two modes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

Regularizer = Callable[[nn.Module, torch.Tensor, torch.Tensor, "torch.Generator | None"],
                       tuple[torch.Tensor, torch.Tensor]]
"""``reg(model, x, target, generator) -> (x', target')``: AdversarialPerturbation, Mixup,
AsymmetricMixup, AsymmetricAugmentation all have this signature."""

MODES = ("paper", "sequential")


@dataclass
class StepResult:
    """Detached loss values by term (``"clean"`` first, then one per regularizer, in order)
    and the number of optimizer steps taken."""

    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer_steps: int = 0

    @property
    def total(self) -> torch.Tensor:
        """Sum of the terms (the paper's summed loss)."""
        return sum(self.losses.values())


def _names(regularizers: Sequence[Regularizer]) -> list[str]:
    names: list[str] = []
    for reg in regularizers:
        base = type(reg).__name__
        name, i = base, 1
        while name in names or name == "clean":
            i += 1
            name = f"{base}{i}"
        names.append(name)
    return names


def regularized_step(model: nn.Module, loss: nn.Module, optimizer: torch.optim.Optimizer,
                     x: torch.Tensor, target: torch.Tensor, *,
                     regularizers: Sequence[Regularizer] = (),
                     augmentation: Regularizer | None = None, mode: str = "paper",
                     generator: torch.Generator | None = None,
                     scaler: torch.amp.GradScaler | None = None) -> StepResult:
    """One training iteration with optional augmentation and extra-batch regularizers.

    Args:
        model: the network, in training mode.
        loss: objective ``loss(logits, target)``; must accept every regularizer's targets
            (soft targets of :class:`~study.objectives.Mixup`; the ``ignore_index`` of
            :class:`~study.objectives.AsymmetricMixup`).
        optimizer: the optimizer (its gradients are zeroed here).
        x, target: the batch ``[N, C_in, *spatial]`` and ``[N, *spatial]``.
        regularizers: batch generators whose batches are added to the loss (eq. 14, 17);
            they receive the un-augmented batch, as eq. 22's separately generated sets.
        augmentation: transform of the clean batch (e.g.
            :class:`~study.objectives.AsymmetricAugmentation`, eq. 21), or None.
        mode: ``"paper"`` or ``"sequential"`` (see the module docstring for the cost).
        generator: RNG for the regularizers (None: torch's global RNG).
        scaler: optional ``GradScaler`` for float16 training. Wrap the call in
            ``torch.autocast`` for mixed precision.

    Returns:
        :class:`StepResult`.

    Example::

        >>> import torch
        >>> from study.objectives import AdversarialPerturbation, FocalLoss
        >>> net = torch.nn.Conv3d(1, 2, 3, padding=1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> x, y = torch.randn(2, 1, 8, 8, 8), torch.randint(0, 2, (2, 8, 8, 8))
        >>> out = regularized_step(net, FocalLoss(2.0, rare=[0, 1]), opt, x, y,
        ...                        regularizers=[AdversarialPerturbation(1e-5, 10.0, [0, 1])])
        >>> sorted(out.losses), out.optimizer_steps
        (['AdversarialPerturbation', 'clean'], 1)
    """
    if mode not in MODES:
        raise ValueError(f'mode must be "paper" or "sequential", got {mode!r}')
    names = _names(regularizers)
    result = StepResult()

    def backward(value: torch.Tensor) -> None:
        (scaler.scale(value) if scaler is not None else value).backward()

    def step() -> None:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        result.optimizer_steps += 1

    x_clean, t_clean = (augmentation(model, x, target, generator) if augmentation is not None
                        else (x, target))
    optimizer.zero_grad(set_to_none=True)
    if mode == "paper":
        batches = [reg(model, x, target, generator) for reg in regularizers]
        value = loss(model(x_clean), t_clean)
        backward(value)
        result.losses["clean"] = value.detach()
        for name, (xb, tb) in zip(names, batches, strict=True):
            value = loss(model(xb), tb)
            backward(value)
            result.losses[name] = value.detach()
        step()
        return result
    value = loss(model(x_clean), t_clean)
    backward(value)
    result.losses["clean"] = value.detach()
    step()
    for name, reg in zip(names, regularizers, strict=True):
        xb, tb = reg(model, x, target, generator)
        optimizer.zero_grad(set_to_none=True)
        value = loss(model(xb), tb)
        backward(value)
        result.losses[name] = value.detach()
        step()
    return result
