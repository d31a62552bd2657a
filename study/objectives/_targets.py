"""Normalise ``(logits, target)`` into float logits and a validated target description.

Two target kinds are accepted by every loss:

* hard: an integer tensor ``[N, *spatial]`` with values in ``0..C-1`` (or ``ignore_index``);
* soft: a floating tensor ``[N, C, *spatial]`` of per-voxel class weights (e.g. the symmetric
  mixup target of 001 eq. 18). A voxel whose weights sum to 0 is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._validate import check_logits

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


@dataclass(frozen=True)
class Target:
    """A validated target.

    ``labels``: ``[N, 1, *spatial]`` int64 with ignored voxels set to 0 (hard targets only).
    ``probs``: ``[N, C, *spatial]`` float (soft targets only; zero rows at ignored voxels).
    ``valid``: ``[N, 1, *spatial]`` float 1/0 mask of the voxels that enter the loss.
    ``n_valid``: number of valid voxels, as a 0-d float tensor.
    ``all_valid``: True when no voxel is ignored (lets losses skip the masking).
    """

    labels: torch.Tensor | None
    probs: torch.Tensor | None
    valid: torch.Tensor
    n_valid: torch.Tensor
    all_valid: bool

    @property
    def hard(self) -> bool:
        return self.labels is not None


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are computed in float32; float32/float64 stay as they are."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits


def prepare(logits: torch.Tensor, target: torch.Tensor,
            ignore_index: int | None) -> tuple[torch.Tensor, Target]:
    """Validate shapes, dtypes and label values; return float logits and a :class:`Target`.

    Raises ``ValueError`` naming the shapes, dtypes or label values that are wrong.
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
        labels = target.long().unsqueeze(1)
        out_of_range = (labels < 0) | (labels >= num_classes)
        if ignore_index is not None:
            ignored = labels == ignore_index
            out_of_range = out_of_range & ~ignored
        if bool(out_of_range.any()):
            bad = torch.unique(labels[out_of_range])[:5].tolist()
            raise ValueError(
                f"target contains labels {bad} outside 0..{num_classes - 1} "
                f"(ignore_index={ignore_index})"
            )
        if ignore_index is not None and bool(ignored.any()):
            valid = (~ignored).to(z.dtype)
            labels = labels * ~ignored        # (torch.where/masked_fill are slow on CPU)
            all_valid = False
        else:
            valid = torch.ones_like(labels, dtype=z.dtype)
            all_valid = True
        n_valid = valid.sum()
        return z, Target(labels, None, valid, n_valid, all_valid)
    if target.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        if tuple(target.shape) != tuple(logits.shape):
            raise ValueError(
                f"soft target of shape {tuple(target.shape)} does not match logits of shape "
                f"{tuple(logits.shape)} (a floating target must be [N, C, *spatial])"
            )
        probs = target.to(z.dtype)
        if bool((probs < 0).any()) or not bool(torch.isfinite(probs).all()):
            raise ValueError("soft target must be finite and non-negative")
        valid = (probs.sum(1, keepdim=True) > 0).to(z.dtype)
        return z, Target(None, probs, valid, valid.sum(), bool(valid.all()))
    raise ValueError(
        f"target must be an integer tensor [N, *spatial] or a floating tensor [N, C, *spatial], "
        f"got dtype {target.dtype}"
    )
