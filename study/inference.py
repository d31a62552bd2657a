"""Whole-volume inference: Gaussian sliding window (U-Net, nnU-Net style) and dense tiling
(DeepMedic).

:func:`predict_logits` picks the method from the model: a model with padded convolutions (the
U-Net) has truncated receptive fields at window borders, so windows of its training patch
overlap and are blended with a Gaussian; a model with valid convolutions (DeepMedic, which
states ``inference_output``) reads the full context of its outputs, so output tiles of its
inference segment (the papers: 45^3 normal-pathway segments, 29^3 outputs) are laid side by
side as DeepMedic does, each tile's input packed from the volume by the model (``model.pack``:
the normal segment and the subsampled grids centred on the tile, exactly as the sampler cuts
them in training), zero-padded (0 = the ROI mean after z-scoring) outside the volume.

Test-time mirroring (nnU-Net; the KiTS experiment of 001): ``mirror_axes`` averages the logits
over all ``2^k`` combinations of flips of the given spatial axes, each flipped back (nnU-Net
averages softmax probabilities; the logits are averaged here so that the logit statistics stay
logits). The model's receptive fields are symmetric about their outputs, so a flipped window
predicts the flipped voxels.

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
    flips: list[tuple[int, ...]] = [()]
    for k in range(1, len(mirror_axes) + 1):
        flips += list(itertools.combinations(mirror_axes, k))

    def flipped(axes: tuple[int, ...]) -> torch.Tensor:
        dims = [a + 2 for a in axes]
        x = batch.flip(dims) if dims else batch
        out = model(x).float()
        return out.flip(dims) if dims else out

    total = flipped(flips[0])
    for axes in flips[1:]:
        total = total + flipped(axes)
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
    if logits_sum is None:
        raise ValueError(f"sliding window: no window of {list(patch)} in {list(spatial)}")
    logits = logits_sum / weight_sum
    return logits[(slice(None),) + tuple(slice(0, s) for s in spatial)].cpu()


@torch.no_grad()
def dense_tiling_logits(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: Sequence[int],
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    mirror_axes: Sequence[int] = (),
) -> torch.Tensor:
    """Logits float32 [C, D, H, W] (on the CPU) of a valid-convolution model, tile by tile.

    Output tiles of size ``tile`` cover the volume without overlap from its first voxel (the
    last ones reach into padding and are cropped); each is computed from the input
    ``model.pack(volume, centre, tile)`` packs around the tile's centre voxel, the volume
    zero-padded by ``model.margin`` (the farthest any pathway reads beyond its outputs). As in
    DeepMedic, the result depends on the tiling in two ways: the subsampling grid's phase
    changes from tile to tile unless ``tile`` is a multiple of ``model.output_multiple`` (it
    is not for the 29^3 tiles), and a first FC kernel wider than 1^3 sees mirror-padded
    features at the tile's outermost outputs. ``mirror_axes``: test-time mirroring (module
    docstring).
    """
    device = torch.device(device)
    tile = tuple(int(t) for t in tile)
    # torch's stubs type a module attribute as Tensor | Module; the model defines these
    margin = int(model.margin)  # type: ignore[arg-type]
    spatial = image.shape[1:]
    counts = [math.ceil(s / t) for s, t in zip(spatial, tile, strict=True)]
    volume = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    pad = []
    for t, n, s in zip(reversed(tile), reversed(counts), reversed(spatial), strict=True):
        pad += [margin, margin + n * t - s]
    volume = F.pad(volume, pad)
    corners = list(itertools.product(*[range(0, n * t, t) for n, t in
                                       zip(counts, tile, strict=True)]))
    logits = None
    model.eval()
    with _autocast(device):
        for i in range(0, len(corners), batch_size):
            chunk = corners[i:i + batch_size]
            batch = torch.stack([model.pack(  # type: ignore[operator]
                volume, [c + margin + t // 2 for c, t in zip(corner, tile, strict=True)], tile)
                for corner in chunk])
            out = _forward(model, batch, mirror_axes)
            if tuple(out.shape[2:]) != tile:
                raise ValueError(f"dense tiling: model output {tuple(out.shape[2:])} for input "
                                 f"{tuple(batch.shape[2:])} is not the requested tile {tile}")
            if logits is None:
                logits = torch.empty((out.shape[1], *(n * t for n, t in
                                                      zip(counts, tile, strict=True))),
                                     device=device)
            for corner, tile_logits in zip(chunk, out, strict=True):
                logits[(slice(None),) + tuple(slice(c, c + t) for c, t in
                                              zip(corner, tile, strict=True))] = tile_logits
    if logits is None:
        raise ValueError(f"dense tiling: no tile of {list(tile)} in {list(spatial)}")
    return logits[(slice(None),) + tuple(slice(0, s) for s in spatial)].cpu()


def predict_logits(model: torch.nn.Module, image: np.ndarray, patch: Sequence[int] | None, *,
                   device: str | torch.device = "cpu", overlap: float = 0.5,
                   batch_size: int = 2, mirror_axes: Sequence[int] = ()) -> torch.Tensor:
    """Whole-volume logits float32 [C, D, H, W] on the CPU, the way the model is evaluated.

    A model with an ``inference_output`` (DeepMedic: the output of its preset's inference
    segment, 29^3 for 45^3) uses :func:`dense_tiling_logits` with tiles of that size and
    ignores ``patch``; any other (the U-Net) uses :func:`sliding_window_logits` with windows of
    ``patch``, its training patch, and ``overlap``. ``mirror_axes`` (spatial axes 0-2) adds
    test-time mirroring over every combination of flips of those axes (``(0, 1, 2)``: 8
    passes; nnU-Net's setting for KiTS in 001).
    """
    if any(a not in (0, 1, 2) for a in mirror_axes) or len(set(mirror_axes)) < len(mirror_axes):
        raise ValueError(f"mirror_axes: expected distinct spatial axes among 0, 1, 2, got "
                         f"{tuple(mirror_axes)}")
    tile = getattr(model, "inference_output", None)
    if tile is not None:
        return dense_tiling_logits(model, image, tile, batch_size=batch_size, device=device,
                                   mirror_axes=mirror_axes)
    if patch is None:
        raise ValueError("predict_logits: a sliding-window model needs its patch")
    return sliding_window_logits(model, image, tuple(int(p) for p in patch), overlap=overlap,
                                 batch_size=batch_size, device=device, mirror_axes=mirror_axes)
