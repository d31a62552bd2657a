"""Normalise ``(logits, target)`` into float logits and a validated target description.

Two target kinds are accepted by every loss:

* hard: an integer tensor ``[N, *spatial]`` with values in ``0..C-1`` (or ``ignore_index``);
* soft: a floating tensor ``[N, C, *spatial]`` of per-voxel class weights (e.g. the symmetric
  mixup target of 001 eq. 18). A voxel whose weights sum to 0 is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._validate import check_labels, check_logits, check_soft_target

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@dataclass(frozen=True)
class Target:
    """A validated target: exactly one of ``hard_labels`` and ``soft_probs`` is set.

    ``hard_labels``: ``[N, 1, *spatial]`` int64 with ignored voxels set to 0 (hard targets).
    ``soft_probs``: ``[N, C, *spatial]`` float (soft targets; zero rows at ignored voxels).
    ``valid``: ``[N, 1, *spatial]`` float 1/0 mask of the voxels that enter the loss.
    ``n_valid``: number of valid voxels, as a 0-d float tensor.
    ``all_valid``: True when no voxel is ignored, as far as is known without reading a GPU
    tensor (lets losses skip the masking).
    """

    hard_labels: torch.Tensor | None
    soft_probs: torch.Tensor | None
    valid: torch.Tensor
    n_valid: torch.Tensor
    all_valid: bool

    @property
    def hard(self) -> bool:
        return self.hard_labels is not None

    @property
    def labels(self) -> torch.Tensor:
        """``hard_labels``; a soft target has none."""
        if self.hard_labels is None:
            raise ValueError("labels asked of a soft target, which has probs [N, C, *spatial]")
        return self.hard_labels

    @property
    def probs(self) -> torch.Tensor:
        """``soft_probs``; a hard target has none."""
        if self.soft_probs is None:
            raise ValueError("probs asked of a hard target, which has labels [N, 1, *spatial]")
        return self.soft_probs


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are computed in float32; float32/float64 stay as they are."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits


def may_be_set(mask: torch.Tensor) -> bool:
    """Whether any element of ``mask`` may be True without waiting for the device: ``mask.any()``
    on the CPU; True elsewhere, where reading a value waits for every queued kernel (the
    masked loss is exact for any mask; skipping it is only a shortcut)."""
    return bool(mask.any()) if mask.device.type == "cpu" else True


def prepare(logits: torch.Tensor, target: torch.Tensor,
            ignore_index: int | None) -> tuple[torch.Tensor, Target]:
    """Validate shapes, dtypes and label values; return float logits and a :class:`Target`.

    Raises ``ValueError`` naming the shapes or dtypes that are wrong, and the label values
    when label checks are on (:func:`~study.objectives.set_label_checks`). Nothing here reads
    a tensor value on a GPU.
    """
    check_logits(logits)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    z = upcast(logits)
    num_classes = logits.shape[1]
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    if target.dtype in _INT_DTYPES:
        expected = (logits.shape[0], *logits.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(
                f"target of shape {tuple(target.shape)} does not match logits of shape "
                f"{tuple(logits.shape)}: expected target shape {expected} ([N, *spatial])"
            )
        check_labels(target, num_classes, ignore_index)
        labels = target.long().unsqueeze(1)
        if ignore_index is not None and may_be_set(labels == ignore_index):
            kept = labels != ignore_index
            valid = kept.to(z.dtype)
            labels = labels * kept            # (torch.where/masked_fill are slow on CPU)
            all_valid = False
        else:
            valid = torch.ones_like(labels, dtype=z.dtype)
            all_valid = True
        return z, Target(labels, None, valid, valid.sum(), all_valid)
    if target.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        if tuple(target.shape) != tuple(logits.shape):
            raise ValueError(
                f"soft target of shape {tuple(target.shape)} does not match logits of shape "
                f"{tuple(logits.shape)} (a floating target must be [N, C, *spatial])"
            )
        probs = target.to(z.dtype)
        check_soft_target(probs)
        valid = (probs.sum(1, keepdim=True) > 0).to(z.dtype)
        return z, Target(None, probs, valid, valid.sum(), not may_be_set(valid == 0))
    raise ValueError(
        f"target must be an integer tensor [N, *spatial] or a floating tensor [N, C, *spatial], "
        f"got dtype {target.dtype}"
    )
