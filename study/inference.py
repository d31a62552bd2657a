"""Sliding-window inference over whole volumes with Gaussian weighting (nnU-Net style).

Windows of the training patch size step by ``patch * (1 - overlap)``; each window's logits are
weighted by a Gaussian centred in the window (sigma = patch / 8) so that window borders, where
the receptive field is truncated, count less; the weighted sum is divided by the summed
weights. Volumes smaller than a window are zero-padded and cropped back.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch


def gaussian_weight(patch: Sequence[int]) -> torch.Tensor:
    axes = []
    for size in patch:
        x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        axes.append(torch.exp(-0.5 * (x / (size / 8)) ** 2))
    weight = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (weight / weight.max()).clamp_min(1e-3)


def _starts(size: int, window: int, step: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, step)) + [size - window]
    return sorted(set(starts))


@torch.no_grad()
def sliding_window_logits(
    model: torch.nn.Module,
    image: np.ndarray,
    patch: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Logits float32 [C, D, H, W] (on the CPU) for ``image`` float32 [channels, D, H, W]."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap: expected a value in [0, 1), got {overlap}")
    spatial = image.shape[1:]
    padded_shape = [max(s, p) for s, p in zip(spatial, patch, strict=True)]
    volume = torch.zeros((image.shape[0], *padded_shape))
    volume[(slice(None),) + tuple(slice(0, s) for s in spatial)] = torch.from_numpy(image)
    steps = [max(1, int(p * (1 - overlap))) for p in patch]
    corners = list(itertools.product(*[
        _starts(s, p, st) for s, p, st in zip(padded_shape, patch, steps, strict=True)
    ]))
    weight = gaussian_weight(patch)
    logits_sum = None
    weight_sum = torch.zeros(padded_shape)
    model.eval()
    for i in range(0, len(corners), batch_size):
        chunk = corners[i:i + batch_size]
        windows = [tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
                   for corner in chunk]
        batch = torch.stack([volume[(slice(None),) + w] for w in windows]).to(device)
        out = model(batch).float().cpu()
        if logits_sum is None:
            logits_sum = torch.zeros((out.shape[1], *padded_shape))
        for window, logits in zip(windows, out, strict=True):
            logits_sum[(slice(None),) + window] += logits * weight
            weight_sum[window] += weight
    logits = logits_sum / weight_sum
    return logits[(slice(None),) + tuple(slice(0, s) for s in spatial)]
