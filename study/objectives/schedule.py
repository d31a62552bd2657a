"""How extra batches (adversarial, mixup) enter a training step (001 §IV-F).

Two updates:

* ``"summed"`` (default): one summed loss and one optimizer step, as eq. 14, 17 and 22 write
  it: ``L(x, y) + sum_r L(x_r, y_r)`` where ``(x, y)`` is the clean (already augmented, eq. 21)
  batch and ``(x_r, y_r)`` the batches of each regularizer (eq. 16, 19), all generated from
  the same weights. Gradients are accumulated term by term (identical to back-propagating the
  sum, with the peak memory of one batch).
* ``"sequential"``: the authors' reference implementations: an optimizer step on the clean
  batch, then one optimizer step per regularizer batch, in order. Where the batches come from
  differs between the two implementations (``generate_before_clean``):

  - U-Net (``False``): each regularizer batch is generated just before its own step, from
    the weights the previous step left (clean step, adversarial direction, adversarial step,
    mixup step);
  - DeepMedic (``True``): every regularizer batch is generated before the clean step, from
    the weights the iteration started with (adversarial direction, clean step, adversarial
    step with that now one-step-stale direction, mixup step).

  Mixup batches do not depend on the weights, so only the adversarial batch differs.

Cost per call with ``k`` regularizers: both updates run ``1 + k`` forward/backward passes (plus
one forward/backward w.r.t. the input for each adversarial direction); ``"summed"`` makes **1**
parameter update, ``"sequential"`` makes **1 + k**: it doubles or triples the number of
updates (and the optimizer's step count, learning-rate schedule and momentum) per iteration,
so an iteration budget means different amounts of training in the two updates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from study.catalog import UPDATE_RULES

from ._validate import check_choice

Regularizer = Callable[[nn.Module, torch.Tensor, torch.Tensor, "torch.Generator | None"],
                       tuple[torch.Tensor, torch.Tensor]]
"""``reg(model, x, target, generator) -> (x', target')``: AdversarialPerturbation, Mixup and
AsymmetricMixup have this signature."""

UPDATES = UPDATE_RULES


@dataclass
class StepResult:
    """Detached loss values by term (``"clean"`` first, then one per regularizer, in order)
    and the number of optimizer steps taken."""

    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer_steps: int = 0

    @property
    def total(self) -> torch.Tensor:
        """Sum of the terms (the paper's summed loss)."""
        values = list(self.losses.values())
        if not values:
            raise ValueError("StepResult.losses is empty: no term to sum")
        return sum(values[1:], values[0])


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
                     regularizers: Sequence[Regularizer] = (), update: str = "summed",
                     generate_before_clean: bool = False,
                     generator: torch.Generator | None = None,
                     scaler: torch.amp.GradScaler | None = None) -> StepResult:
    """One training iteration on a clean batch plus extra-batch regularizers.

    Args:
        model: the network, in training mode.
        loss: objective ``loss(logits, target)``; must accept every regularizer's targets
            (soft targets of :class:`~study.objectives.Mixup`; the ``ignore_index`` of
            :class:`~study.objectives.AsymmetricMixup`).
        optimizer: the optimizer (its gradients are zeroed here).
        x, target: the clean batch ``[N, C_in, *spatial]`` and ``[N, *spatial]``, augmented
            (eq. 20-21) by the patch sampler.
        regularizers: batch generators whose batches are added to the loss (eq. 14, 17); they
            receive the clean batch.
        update: ``"summed"`` or ``"sequential"`` (see the module docstring for the cost).
        generate_before_clean: ``"sequential"`` only: generate every regularizer batch before
            the clean step (DeepMedic's order) instead of before its own step (U-Net's).
            ``"summed"`` generates every batch from the step's starting weights either way.
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
    check_choice("update", update, UPDATES)
    if not isinstance(generate_before_clean, bool):
        raise TypeError(f"generate_before_clean must be a bool, got {generate_before_clean!r}")
    sequential = update == "sequential"
    result = StepResult()

    def step() -> None:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        result.optimizer_steps += 1

    def train_on(name: str, xb: torch.Tensor, tb: torch.Tensor) -> None:
        if sequential:
            optimizer.zero_grad(set_to_none=True)
        value = loss(model(xb), tb)
        (scaler.scale(value) if scaler is not None else value).backward()
        result.losses[name] = value.detach()
        if sequential:
            step()

    batches = ([reg(model, x, target, generator) for reg in regularizers]
               if not sequential or generate_before_clean else None)
    if not sequential:
        optimizer.zero_grad(set_to_none=True)
    train_on("clean", x, target)
    for i, (name, reg) in enumerate(zip(_names(regularizers), regularizers, strict=True)):
        train_on(name, *(batches[i] if batches is not None else reg(model, x, target, generator)))
    if not sequential:
        step()
    return result
