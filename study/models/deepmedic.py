"""DeepMedic-like two-pathway 3D CNN (Kamnitsas et al., MedIA 2017; the BraTS/ATLAS network
of paper 001 §V).

Architecture (valid, i.e. unpadded, convolutions throughout):

* a *normal* pathway of ``len(features)`` 3^3 convolutions (conv -> BatchNorm -> PReLU) on a
  normal-resolution segment: ``O + 2 L`` voxels per side give ``O`` output voxels
  (``L`` = number of convolutions; paper: 8 layers, 37^3 -> 21^3);
* one pathway per subsampling factor ``f`` with the same layer stack on the image subsampled
  by ``f`` (every ``f``-th voxel, as DeepMedic's sampler does, no averaging), covering ``f``
  times the context; its output is upsampled by repetition and centre-cropped to ``O``;
* the pathways' features are concatenated and go through 1^3 "fully connected" layers
  (conv -> BatchNorm -> PReLU, optional dropout) and a 1^3 classifier giving the logits
  ``[N, C, O, O, O]`` (what the objectives receive).

The model takes **one** input tensor that covers the largest context any pathway needs
(the normal segment plus the subsampled pathways' wider context, centred on the same voxel)
and extracts each pathway's input itself. That keeps every batch regularizer (adversarial
perturbation, mixup, flips) a plain operation on one tensor. :meth:`DeepMedic.input_size` gives
the input needed for an output patch (paper: 67^3 for 21^3; tiny: 31^3 for 9^3) and
:meth:`DeepMedic.output_size` the inverse; labels are needed only for the central output.

Presets: ``paper`` — 8 layers [30, 30, 40, 40, 40, 40, 50, 50] per pathway, one x3 pathway,
two FC layers of 150 (the original two-pathway DeepMedic; 001 trains it on 37^3 segments);
``tiny`` — 4 layers of 16, one x3 pathway, one FC layer of 32 (tests, CPU).
Differences from the reference code: no residual connections (001's BraTS "basic setting" has
none), conv -> BN -> PReLU order instead of DeepMedic's pre-activation, and the x5 pathway of
DeepMedic v0.7 is available (``factors=(3, 5)``) but not in a preset.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DeepMedicConfig:
    """Widths of a DeepMedic: conv features per pathway layer, subsampling factors of the
    extra pathways (odd integers >= 3), hidden FC widths, FC dropout probability."""

    features: tuple[int, ...]
    factors: tuple[int, ...]
    fc: tuple[int, ...]
    dropout: float = 0.0


PRESETS: dict[str, DeepMedicConfig] = {
    "paper": DeepMedicConfig((30, 30, 40, 40, 40, 40, 50, 50), (3,), (150, 150)),
    "tiny": DeepMedicConfig((16, 16, 16, 16), (3,), (32,)),
}


@dataclass(frozen=True)
class _AxisPlan:
    """Where each pathway reads along one axis, in input (context) coordinates."""

    input: int  # context size
    output: int  # O
    normal_start: int  # first voxel of the normal segment (O + 2L voxels)
    sub_starts: tuple[int, ...]  # first voxel of each subsampled grid (step f)
    sub_outputs: tuple[int, ...]  # Os per factor
    sub_crops: tuple[int, ...]  # voxels cropped at the start after upsampling


def _axis_plan(output: int, layers: int, factors: Sequence[int]) -> _AxisPlan:
    """Geometry of one axis for ``output`` voxels.

    A subsampled pathway computes ``Os = ceil(O / f)`` outputs (one more if ``Os f - O`` is odd,
    so that the crop is symmetric), repeated ``f`` times and centre-cropped by
    ``c0 = (Os f - O) / 2``. Its sub-output ``k`` then covers normal outputs
    ``k f - c0 .. k f - c0 + f - 1`` and must be centred on them: its input grid starts at
    ``p0 = (f - 1) / 2 - c0 + L - f L`` relative to the normal segment (negative: more context).
    """
    normal = output + 2 * layers
    lows, highs, subs, crops = [0], [normal - 1], [], []
    for f in factors:
        os_ = math.ceil(output / f)
        if (os_ * f - output) % 2:
            os_ += 1
        c0 = (os_ * f - output) // 2
        p0 = (f - 1) // 2 - c0 + layers - f * layers
        lows.append(p0)
        highs.append(p0 + f * (os_ + 2 * layers - 1))
        subs.append((p0, os_))
        crops.append(c0)
    lo, hi = min(lows), max(highs)
    return _AxisPlan(hi - lo + 1, output, -lo, tuple(p0 - lo for p0, _ in subs),
                     tuple(os_ for _, os_ in subs), tuple(crops))


@functools.lru_cache(maxsize=256)
def _output_for(size: int, layers: int, factors: tuple[int, ...]) -> int:
    """The largest output whose context is exactly ``size`` (the context is not monotone in
    the output because of the parity rule of :func:`_axis_plan`)."""
    inputs = {o: _axis_plan(o, layers, factors).input for o in range(1, size + 1)}
    exact = [o for o, need in inputs.items() if need == size]
    if not exact:
        below = max((n for n in inputs.values() if n < size), default=None)
        above = min(n for n in inputs.values() if n > size)
        raise ValueError(f"DeepMedic: input size {size} gives no output; the nearest valid input "
                         f"sizes are {below} and {above} (input_size(output) gives the input "
                         "for an output size)")
    return max(exact)


def _repeat(y: torch.Tensor, f: int) -> torch.Tensor:
    """Upsample ``[N, C, d, h, w]`` by repeating every voxel ``f`` times along each axis."""
    n, c, d, h, w = y.shape
    y = y[:, :, :, None, :, None, :, None].expand(n, c, d, f, h, f, w, f)
    return y.reshape(n, c, d * f, h * f, w * f)


def _conv_stack(cin: int, features: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for cout in features:
        layers += [nn.Conv3d(cin, cout, 3), nn.BatchNorm3d(cout), nn.PReLU(cout)]
        cin = cout
    return nn.Sequential(*layers)


class DeepMedic(nn.Module):
    """DeepMedic-like multi-pathway CNN; ``forward(x [N, C_in, *input]) -> [N, C, *output]``.

    Example::

        >>> net = DeepMedic(4, 2, PRESETS["paper"])
        >>> net.input_size((21, 21, 21)), net.output_size((67, 67, 67))
        ((67, 67, 67), (21, 21, 21))
    """

    def __init__(self, in_channels: int, num_classes: int, config: DeepMedicConfig):
        super().__init__()
        if not config.features:
            raise ValueError("DeepMedic: expected at least one convolution per pathway")
        for f in config.factors:
            if f < 3 or f % 2 == 0:
                raise ValueError(f"DeepMedic: subsampling factors must be odd integers >= 3, "
                                 f"got {list(config.factors)}")
        self.config = config
        self.layers = len(config.features)
        self.normal = _conv_stack(in_channels, config.features)
        self.subsampled = nn.ModuleList(_conv_stack(in_channels, config.features)
                                        for _ in config.factors)
        width = config.features[-1] * (1 + len(config.factors))
        fc: list[nn.Module] = []
        for cout in config.fc:
            fc += [nn.Dropout3d(config.dropout) if config.dropout else nn.Identity(),
                   nn.Conv3d(width, cout, 1), nn.BatchNorm3d(cout), nn.PReLU(cout)]
            width = cout
        self.fc = nn.Sequential(*fc)
        self.classifier = nn.Conv3d(width, num_classes, 1)
        self.output_multiple = math.lcm(*config.factors) if config.factors else 1
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # He, fan-in (A8)
                nn.init.zeros_(module.bias)

    def input_size(self, output_size: Sequence[int]) -> tuple[int, ...]:
        """Input (context) size per axis needed for ``output_size`` output voxels."""
        if any(int(o) < 1 for o in output_size):
            raise ValueError(f"DeepMedic: output size must be positive, got {tuple(output_size)}")
        return tuple(_axis_plan(int(o), self.layers, self.config.factors).input
                     for o in output_size)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Largest output size per axis whose :meth:`input_size` is exactly ``input_size``;
        ``ValueError`` if there is none (the message names the nearest valid inputs)."""
        return tuple(_output_for(int(s), self.layers, self.config.factors) for s in input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"DeepMedic: expected input [N, C, D, H, W], got {tuple(x.shape)}")
        output = self.output_size(x.shape[2:])
        plans = [_axis_plan(o, self.layers, self.config.factors) for o in output]
        normal = x[(slice(None), slice(None)) + tuple(
            slice(p.normal_start, p.normal_start + o + 2 * self.layers)
            for p, o in zip(plans, output, strict=True))]
        features = [self.normal(normal)]
        for i, (f, pathway) in enumerate(zip(self.config.factors, self.subsampled, strict=True)):
            sub = x[(slice(None), slice(None)) + tuple(
                slice(p.sub_starts[i], p.sub_starts[i] + f * (p.sub_outputs[i] + 2 * self.layers)
                      - (f - 1), f) for p in plans)]
            up = _repeat(pathway(sub), f)
            features.append(up[(slice(None), slice(None)) + tuple(
                slice(p.sub_crops[i], p.sub_crops[i] + o)
                for p, o in zip(plans, output, strict=True))])
        return self.classifier(self.fc(torch.cat(features, dim=1)))
