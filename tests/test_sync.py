"""No host-device synchronisation in a training step: ``Training.step()`` only queues work
(the host reads the losses in ``Training.check``, every ``check_every`` iterations on CUDA).

On CUDA, ``torch.cuda.set_sync_debug_mode("error")`` turns any synchronisation during the
steps into an error. On the CPU, :class:`HostReads` records every read of a tensor's value by
the host (``item``, ``bool``, ``float``, ``int``, ``tolist``, ``numpy``, ``cpu``, printing)
and every operation whose result size depends on the values (``nonzero``, boolean-mask
indexing, ``unique``, ...) that would wait for a GPU: those on tensors that on a GPU live on
the device, i.e. derived from the model's parameters and gradients, the batch, or created
with ``device=`` a ``torch.device``. Host-side tensors (the optimizer's step counters, made with
``device="cpu"``; a CPU generator's draws) are not on the device there either and are not
counted.
"""

from __future__ import annotations

import dataclasses
import math
import traceback
import weakref
from collections.abc import Callable

import pytest
import torch
from helpers import spec_variant, tiny_training
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from study.expand import trial_config
from study.objectives import targets
from study.spec import load_search_spaces
from study.training import Training

Tensor = torch.Tensor
READS = {Tensor.item, Tensor.__bool__, Tensor.__float__, Tensor.__int__, Tensor.__index__,
         Tensor.__complex__, Tensor.tolist, Tensor.numpy, Tensor.cpu, Tensor.__array__,
         Tensor.__repr__, Tensor.__format__}
VALUE_SIZED = {torch.nonzero, Tensor.nonzero, torch.masked_select, Tensor.masked_select,
               torch.unique, Tensor.unique, torch.unique_consecutive, Tensor.unique_consecutive,
               torch.bincount, Tensor.bincount, torch.equal, Tensor.equal, torch.allclose,
               Tensor.allclose, torch.is_nonzero, Tensor.is_nonzero, torch.argwhere,
               Tensor.argwhere}
# a read that happens on the CPU only: on a GPU the function returns without reading
CPU_ONLY = {(targets.__file__, targets.may_be_set.__name__)}
ADVERSARIAL = ("asym_adversarial", {"eps": 1e-5, "l": 10.0})
MIXUP = ("asym_mixup", {"mixup_m": 0.2, "mixup_alpha": 1.0})


def _placed(device) -> bool:
    """Created on the training device: ``device=x.device`` (a ``torch.device``) or a GPU;
    ``device="cpu"`` is the host on purpose (the optimizer's step counters)."""
    return isinstance(device, torch.device) or (isinstance(device, str) and device != "cpu")


def _mask_indexing(func, args) -> bool:
    """``x[mask]``, or ``x[mask] = tensor`` (``x[mask] = number`` is a ``masked_fill``)."""
    if func is Tensor.__setitem__ and not isinstance(args[2], Tensor):
        return False
    return func in (Tensor.__getitem__, Tensor.__setitem__) and any(
        isinstance(a, Tensor) and a.dtype == torch.bool for a in pytree.tree_leaves(args[1]))


class HostReads(TorchFunctionMode):
    """Records (what, where) for each host read of a device tensor in its ``with`` block (see
    the module docstring); ``device(t)`` marks a tensor as living on the device."""

    def __init__(self):
        super().__init__()
        self._device: dict[int, weakref.ref] = {}
        self.reads: list[tuple[str, str]] = []

    def device(self, tensor: Tensor) -> Tensor:
        self._device[id(tensor)] = weakref.ref(tensor)
        return tensor

    def on_device(self, tensor: Tensor) -> bool:
        ref = self._device.get(id(tensor))
        return ref is not None and ref() is tensor

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        placed = _placed(kwargs.get("device")) or (
            func is Tensor.to and any(isinstance(a, torch.device) for a in args[1:]))
        device = placed or any(self.on_device(t) for t in tensors)
        if device and (func in READS or func in VALUE_SIZED
                       or _mask_indexing(func, args)
                       or (func is torch.where and len(args) == 1)):
            self._record(getattr(func, "__qualname__", str(func)))
        out = func(*args, **kwargs)
        if device:
            for tensor in pytree.tree_leaves(out):
                if isinstance(tensor, Tensor):
                    self.device(tensor)
        return out

    def _record(self, what: str) -> None:
        stack = traceback.extract_stack()[:-2]
        if any((frame.filename, frame.name) in CPU_ONLY for frame in stack):
            return
        where = "".join(traceback.format_list([f for f in stack if "/torch/" not in
                                               f.filename][-6:]))
        self.reads.append((what, where))


def _probed(training: Training) -> HostReads:
    """A probe for ``training``: its parameters, buffers, gradients and batches are device
    tensors."""
    probe = HostReads()
    for tensor in [*training.model.parameters(), *training.model.buffers()]:
        probe.device(tensor)
    def gradient_on_device(parameter: Tensor) -> None:
        probe.device(parameter.grad)

    for parameter in training.model.parameters():
        parameter.register_post_accumulate_grad_hook(gradient_on_device)
    draw = training.batches.next

    def next_batch():
        images, labels, state, deferred = draw()
        return probe.device(images), probe.device(labels), state, deferred

    training.batches.next = next_batch
    return probe


def _steps_read_nothing(training: Training, steps: int,
                        before: Callable[[int], None] = lambda i: None) -> None:
    probe = _probed(training)
    try:
        for i in range(steps):
            before(i)
            with probe:
                training.step()
            assert not probe.reads, (
                f"step {i + 1} reads device tensors on the host:\n"
                + "\n".join(f"{what} at\n{where}" for what, where in probe.reads))
    finally:
        training.batches.close()
    training.check()
    assert math.isfinite(training.last_loss)


def test_the_probe_sees_reads_of_device_tensors_only():
    """Reads of device tensors (and of what is computed from them, or placed on a device)
    are recorded with their line; host tensors are not."""
    probe = HostReads()
    x = probe.device(torch.randn(4))
    host = torch.ones(2)
    with probe:
        host.sum().item()  # a host tensor: no wait on a GPU
        float(host[host > 0].sum())
        loss = (x * 2).sum()
        loss.item()
        bool(torch.isfinite(loss))
        x[x > 0]
        x[x > 0] = 0.0  # a masked_fill: no wait
        torch.full((2,), 1.0, device=x.device).tolist()
    whats = [what for what, _ in probe.reads]
    assert whats == ["TensorBase.item", "TensorBase.__bool__", "TensorBase.__getitem__",
                     "TensorBase.tolist"]
    assert all("test_sync.py" in where for _, where in probe.reads)


def test_the_probe_sees_a_read_inside_a_training_step(tiny_spec, tiny_data,  # noqa: F811
                                                      run_options):
    """The probe follows the batch and the parameters through the model into the loss: a loss
    that reads its value is reported, with the line that reads."""
    training = tiny_training(tiny_spec, tiny_data, run_options, "vanilla", {}, prefetch=2)
    loss = training.loss

    def reading_loss(logits, target):
        value = loss(logits, target)
        float(value.detach())
        return value

    training.loss = reading_loss
    with pytest.raises(AssertionError, match=r"(?s)TensorBase.__float__ at.*float\(value.detach"):
        _steps_read_nothing(training, 1)


SPACES = load_search_spaces()
# DeepMedic shares the objectives with the U-Net; its own path (labels padded to the context,
# regularizer batches generated before the clean step) is covered by the regularized steps,
# and the other techniques are a slow sweep
STEP_CASES = [pytest.param(model, technique, marks=[] if model == "unet" or technique in (
                  ADVERSARIAL[0], MIXUP[0]) else [pytest.mark.slow])
              for model in ("unet", "deepmedic") for technique in SPACES]


@pytest.mark.parametrize("model, technique", STEP_CASES)
def test_training_steps_do_not_read_device_tensors(tiny_spec, tiny_data, run_options,  # noqa: F811
                                                   model, technique):
    """A technique's step (its loss, regularizer batches, update rule, optimizer and LR
    schedule), with batches sampled ahead in a thread as on CUDA: no host read of a device
    tensor in the first step (optimizer state created) nor the second."""
    training = tiny_training(tiny_spec, tiny_data, run_options, technique,
                         SPACES[technique].settings()[0], model=model, prefetch=2)
    _steps_read_nothing(training, 2)


def test_unet_schedule_epoch_end_does_not_read_the_loss(tiny_spec, tiny_data,  # noqa: F811
                                                        run_options):
    """The U-Net's plateau schedule at an epoch end (epochs shortened to 2 iterations): the
    epoch's loss waits for ``Training.check``, which applies it."""
    training = tiny_training(tiny_spec, tiny_data, run_options, "vanilla", {}, prefetch=2)
    training.schedule.epoch = 2
    _steps_read_nothing(training, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model", ["unet", "deepmedic"])
@pytest.mark.parametrize("technique, hp", [ADVERSARIAL, MIXUP])
def test_cuda_steps_do_not_synchronise(tiny_spec, tiny_data, run_options, model,  # noqa: F811
                                       technique, hp):
    """bf16 steps of the tiny models with adversarial and mixup batches and prefetching
    (after two warm-up steps: cuDNN autotuning, optimizer state): no synchronisation; the
    losses read afterwards by ``check`` are finite."""
    config = trial_config(spec_variant(tiny_spec, model), tiny_spec.fractions[0], technique, hp, 0)
    info, train, _ = tiny_data
    training = Training(config, train, info, torch.device("cuda"),
                        dataclasses.replace(run_options, device="cuda", prefetch=2))
    try:
        for _ in range(2):
            training.step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(4):
                training.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    finally:
        training.batches.close()
    training.check()
    assert training.iteration == 6 and math.isfinite(training.last_loss)
