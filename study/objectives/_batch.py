"""Helpers shared by the batch regularizers (adversarial, mixup)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._functional import to_device
from ._validate import as_class_vector


def binary_rare(rare: Sequence[float] | torch.Tensor | None, name: str = "rare",
                ) -> tuple[float, ...]:
    """A rare vector whose entries are exactly 0 or 1 (eq. 19 tests ``y . r == 1``)."""
    r = as_class_vector(name, rare, low=0.0, high=1.0)
    if r is None:
        raise ValueError(f"{name} is required (one 0/1 entry per class), got None")
    for k, v in enumerate(r):
        if v not in (0.0, 1.0):
            raise ValueError(f"{name}[{k}] must be 0 or 1 for this technique, got {v!r}")
    return r


def check_batch(x: torch.Tensor, target: torch.Tensor) -> None:
    """``x [N, C_in, *spatial]`` float and an integer ``target [N, *spatial]``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor [N, C_in, *spatial], got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or \
            target.dtype == torch.bool:
        raise ValueError(f"target must be an integer tensor [N, *spatial], got "
                         f"{getattr(target, 'dtype', type(target).__name__)}")
    if x.ndim < 2 or tuple(target.shape) != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"target of shape {tuple(target.shape)} does not match x of shape "
                         f"{tuple(x.shape)}: expected [N, *spatial] = "
                         f"{(x.shape[0], *x.shape[2:]) if x.ndim >= 2 else '?'}")


def sample_dims(t: torch.Tensor) -> tuple[int, ...]:
    """All dimensions but the batch dimension."""
    return tuple(range(1, t.ndim))


def per_sample_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape ``[N]`` to broadcast against ``like [N, ...]``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (float32 or wider), drawn on the generator's
    device (so a CPU generator also seeds CUDA batches) and moved to ``x``'s device."""
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    device = generator.device if generator is not None else x.device
    return to_device(torch.randn(x.shape, generator=generator, dtype=dtype, device=device),
                     x.device)
