"""Whole-volume inference: Gaussian sliding window (U-Net, nnU-Net style) and dense tiling
(DeepMedic).

:func:`predict_logits` picks the method from the model's geometry: a model whose output is as
large as its input (padded convolutions, the U-Net) has truncated receptive fields at window
borders, so windows overlap and are blended with a Gaussian; a model with valid convolutions
(DeepMedic) computes every output voxel from its full context, so output tiles are simply
laid side by side, each read from the volume with the context its input needs, zero-padded
(0 = the ROI mean after z-scoring) outside the volume.

Both run on the model's device: the volume is copied there once, windows are cut and results
accumulated there, and only the final logits come back, as float32 ``[C, D, H, W]`` on the
CPU. On CUDA the forward passes run under bf16 autocast.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn import functional as F


def gaussian_weight(patch: Sequence[int]) -> torch.Tensor:
    """nnU-Net's window weight: a Gaussian with sigma = patch / 8 per axis, max 1, floor 1e-3."""
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


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _forward(model: torch.nn.Module, batch: torch.Tensor,
             mirror_axes: Sequence[int]) -> torch.Tensor:
    """Logits of ``batch``, averaged over every combination of flips of ``mirror_axes``
    (spatial axes 0-2; none: one plain forward pass)."""
    flips = [()]
    for k in range(1, len(mirror_axes) + 1):
        flips += list(itertools.combinations(mirror_axes, k))
    total = None
    for axes in flips:
        dims = [a + 2 for a in axes]
        x = batch.flip(dims) if dims else batch
        out = model(x).float()
        out = out.flip(dims) if dims else out
        total = out if total is None else total + out
    return total / len(flips)


@torch.no_grad()
def sliding_window_logits(
    model: torch.nn.Module,
    image: np.ndarray,
    patch: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    mirror_axes: Sequence[int] = (),
) -> torch.Tensor:
    """Logits float32 [C, D, H, W] (on the CPU) for ``image`` float32 [channels, D, H, W].

    Windows of ``patch`` step by ``patch * (1 - overlap)`` (the last one flush with the volume's
    end); each window's logits are weighted by :func:`gaussian_weight` and the weighted sum is
    divided by the summed weights. Volumes smaller than a window are zero-padded and cropped
    back. ``mirror_axes`` adds nnU-Net's mirroring test-time augmentation (2^k passes).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap: expected a value in [0, 1), got {overlap}")
    device = torch.device(device)
    spatial = image.shape[1:]
    padded_shape = [max(s, p) for s, p in zip(spatial, patch, strict=True)]
    volume = torch.zeros((image.shape[0], *padded_shape), device=device)
    volume[(slice(None),) + tuple(slice(0, s) for s in spatial)] = (
        torch.from_numpy(np.ascontiguousarray(image)).to(device))
    steps = [max(1, int(p * (1 - overlap))) for p in patch]
    corners = list(itertools.product(*[
        _starts(s, p, st) for s, p, st in zip(padded_shape, patch, steps, strict=True)
    ]))
    weight = gaussian_weight(patch).to(device)
    logits_sum = None
    weight_sum = torch.zeros(padded_shape, device=device)
    model.eval()
    with _autocast(device):
        for i in range(0, len(corners), batch_size):
            windows = [tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
                       for corner in corners[i:i + batch_size]]
            batch = torch.stack([volume[(slice(None),) + w] for w in windows])
            out = _forward(model, batch, mirror_axes)
            if logits_sum is None:
                logits_sum = torch.zeros((out.shape[1], *padded_shape), device=device)
            for window, logits in zip(windows, out, strict=True):
                logits_sum[(slice(None),) + window] += logits * weight
                weight_sum[window] += weight
    logits = logits_sum / weight_sum
    return logits[(slice(None),) + tuple(slice(0, s) for s in spatial)].cpu()


@torch.no_grad()
def dense_tiling_logits(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: Sequence[int],
    batch_size: int = 2,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Logits float32 [C, D, H, W] (on the CPU) of a valid-convolution model, tile by tile.

    Output tiles of size ``tile`` cover the volume without overlap (the last ones reach into
    padding and are cropped); each is computed from an input of ``model.input_size(tile)``
    centred on it. With ``tile`` a multiple of ``model.output_multiple`` every tile sees the
    same subsampling grid, so the result does not depend on where tiles start.
    """
    device = torch.device(device)
    tile = tuple(int(t) for t in tile)
    need = tuple(model.input_size(tile))
    spatial = image.shape[1:]
    counts = [math.ceil(s / t) for s, t in zip(spatial, tile, strict=True)]
    before = [(i - t) // 2 for i, t in zip(need, tile, strict=True)]
    after = [i - t - b + n * t - s
             for i, t, b, n, s in zip(need, tile, before, counts, spatial, strict=True)]
    volume = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    pad = []
    for b, a in zip(reversed(before), reversed(after), strict=True):
        pad += [b, a]
    volume = F.pad(volume, pad)
    corners = list(itertools.product(*[range(0, n * t, t) for n, t in
                                       zip(counts, tile, strict=True)]))
    logits = None
    model.eval()
    with _autocast(device):
        for i in range(0, len(corners), batch_size):
            chunk = corners[i:i + batch_size]
            batch = torch.stack([volume[(slice(None),) + tuple(
                slice(c, c + n) for c, n in zip(corner, need, strict=True))] for corner in chunk])
            out = model(batch).float()
            if tuple(out.shape[2:]) != tile:
                raise ValueError(f"dense tiling: model output {tuple(out.shape[2:])} for input "
                                 f"{need} is not the requested tile {tile}")
            if logits is None:
                logits = torch.empty((out.shape[1], *(n * t for n, t in
                                                      zip(counts, tile, strict=True))),
                                     device=device)
            for corner, tile_logits in zip(chunk, out, strict=True):
                logits[(slice(None),) + tuple(slice(c, c + t) for c, t in
                                              zip(corner, tile, strict=True))] = tile_logits
    return logits[(slice(None),) + tuple(slice(0, s) for s in spatial)].cpu()


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def predict_logits(model: torch.nn.Module, image: np.ndarray, patch: Sequence[int], *,
                   device: str | torch.device = "cpu", overlap: float = 0.5,
                   batch_size: int = 2, mirror_axes: Sequence[int] = ()) -> torch.Tensor:
    """Whole-volume logits float32 [C, D, H, W] on the CPU, the way the model is evaluated.

    ``patch`` is the training output patch. A model with ``input_size(patch) == patch`` uses
    :func:`sliding_window_logits` with windows of ``patch``; any other uses
    :func:`dense_tiling_logits` with tiles of up to three times ``patch`` per axis (fewer
    inputs to read for the context than the training patch; DeepMedic infers on larger
    segments than it trains on too), rounded up to ``model.output_multiple``.
    """
    patch = tuple(int(p) for p in patch)
    if tuple(model.input_size(patch)) == patch:
        return sliding_window_logits(model, image, patch, overlap=overlap,
                                     batch_size=batch_size, device=device,
                                     mirror_axes=mirror_axes)
    if mirror_axes:
        raise ValueError("predict_logits: mirroring is implemented for the sliding window only")
    step = getattr(model, "output_multiple", 1)
    tile = [min(_round_up(s, step), _round_up(3 * p, step))
            for s, p in zip(image.shape[1:], patch, strict=True)]
    return dense_tiling_logits(model, image, tile, batch_size=batch_size, device=device)
