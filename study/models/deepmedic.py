"""DeepMedic (Kamnitsas et al., MedIA 2017), the BraTS and ATLAS network of paper 001 §V-A.1/2,
in the configuration of the papers' DeepMedic code (v0.7: one normal and two subsampled
pathways).

Architecture (valid, i.e. unpadded, 3^3 convolutions in the pathways):

* a *normal* pathway of ``L = len(features)`` layers on a normal-resolution segment: ``O + 2L``
  voxels per side give ``O`` outputs (8 layers: 37^3 -> 21^3 in training, 17^3 -> 1^3 in
  validation, 45^3 -> 29^3 in inference);
* one pathway per subsampling factor ``f`` (3 and 5) with the same layer stack on the image
  subsampled by ``f`` (every ``f``-th voxel, no averaging, as DeepMedic's sampler does); its
  ``Os`` outputs are upsampled by repetition and cropped to ``O``;
* the pathways' features are concatenated and go through the FC layers: the first has a
  ``fc_kernel``^3 kernel on its input mirror-padded by ``(fc_kernel - 1) / 2`` voxels per side
  (as DeepMedic; for a 3^3 kernel: the edge voxel repeated), the others and the classifier
  1^3; a bias is added to the classifier's output, the logits ``[N, C, O, O, O]`` the
  objectives receive.

Every layer is DeepMedic's pre-activation block (He et al. 2016): BatchNorm (the first layer
of a pathway, on the image: a learnt bias instead, and no activation) -> ReLU or PReLU (slopes
initialised to 0.01) -> dropout -> convolution without bias. Dropout is DeepMedic's: training
multiplies by a Bernoulli mask without rescaling, evaluation by the keep probability. A
residual connection at (1-based) layer ``k`` adds the input of layer ``k - 1`` (the output of
layer ``k - 2``), centre-cropped to layer ``k``'s output and zero-padded in channels. Weights
are initialised with He's fan-in rule (variance 2 / fan-in), biases and BN shifts with 0;
BatchNorm's running averages use momentum ``2 / (60 + 1)``, the exponential average as old on
average as DeepMedic's mean over the last 60 batches.

Presets (001 §V-A.1/2; 000):

* ``basic`` (BraTS, "basic setting"): 8 layers [30, 30, 40, 40, 40, 40, 50, 50] per pathway,
  factors 3 and 5, FC 250 (3^3 kernel, mirror padding) + 250 + classifier, ReLU, no residual
  connections, no dropout, no L1/L2;
* ``default`` (ATLAS, "default setting"): the same with PReLU, residual connections at layers 4,
  6 and 8 of each pathway and at FC layer 2, dropout [0, 0.5, 0.5] on the inputs of the FC
  layers and the classifier, L1 = 1e-6 and L2 = 1e-4 on the convolution kernels;
* ``tiny`` (tests, CPU): the ``default`` structure with 4 layers of 16 (residual at layer 4),
  FC 32 + 32, segments 17^3 -> 9^3 (training), 9^3 -> 1^3, 25^3 -> 17^3.

Each preset states its normal-pathway segment sides for training, validation and inference
(:attr:`DeepMedicConfig.segments`; the papers: 37, 17 and 45).

**One input tensor.** The model takes a single tensor centred on the output that covers the
context of all pathways, and cuts each pathway's input out of it (:meth:`DeepMedic.forward`).
Every batch regularizer (adversarial perturbation, mixup, flips) is then a plain operation on
one tensor. Its size is ``output + 2 margin`` per axis, ``margin`` the most any pathway reads
beyond the output for any output size (:func:`context_margin`: 42 for the papers' presets), so
that the input size determines the output size: 105^3 for the 21^3 training output, of which
the normal pathway reads the central 37^3, the x3 pathway 23^3 and the x5 pathway 21^3
subsampled voxels, as in DeepMedic (the outer 2 voxels per side are read for other output
sizes only).

**Alignment of the subsampled pathways (differs from DeepMedic).** Ours centres every upsampled
block of ``f`` outputs on the subsampled output it repeats: ``Os = ceil(O / f)``, one more if
``Os f - O`` is odd, and the repeated outputs are cropped by ``(Os f - O) / 2`` at both ends.
DeepMedic repeats sub-output ``k`` over outputs ``k f .. k f + f - 1`` (crop at the end only), so
its sub-output sits on the first voxel of its block, ``(f - 1) / 2`` voxels off the block's
centre along every axis. Both read the same number of subsampled voxels whenever
``ceil(O / f) f - O`` is even (training 21^3: 23^3 and 21^3; validation 1^3: 17^3 and 17^3); for
inference tiles of 29^3 ours reads 27^3 and 23^3 instead of 26^3 and 22^3. The centred
alignment keeps each output's receptive field symmetric about it (so test-time flips map
outputs to outputs) at the cost of reading at most one subsampled voxel more per axis.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from study.models.presets import (
    DeepMedicConfig,
    context_margin,
    segment_output,
)

BN_MOMENTUM = 2 / (60 + 1)  # DeepMedic averages the BN statistics of the last 60 batches
PRELU_INIT = 0.01  # DeepMedic's initial PReLU slope


@dataclass(frozen=True)
class _AxisPlan:
    """Where each pathway reads along one axis, in input (context) coordinates."""

    normal_start: int  # first voxel of the normal segment (O + 2L voxels)
    sub_starts: tuple[int, ...]  # first voxel of each subsampled grid (step f)
    sub_outputs: tuple[int, ...]  # Os per factor
    sub_crops: tuple[int, ...]  # voxels cropped at the start after upsampling


@functools.lru_cache(maxsize=256)
def _axis_plan(output: int, layers: int, factors: tuple[int, ...]) -> _AxisPlan:
    """Geometry of one axis for ``output`` voxels in an input of ``output + 2 margin``.

    A subsampled pathway computes ``Os = ceil(O / f)`` outputs (one more if ``Os f - O`` is odd,
    so that the crop is symmetric), repeated ``f`` times and centre-cropped by
    ``c0 = (Os f - O) / 2``. Its sub-output ``k`` then covers normal outputs
    ``k f - c0 .. k f - c0 + f - 1`` and is centred on them: its grid (step ``f``, ``Os + 2L``
    voxels) starts ``f L - (f - 1) / 2 + c0`` voxels before the first output voxel.
    """
    margin = context_margin(layers, factors)
    starts, outputs, crops = [], [], []
    for f in factors:
        os_ = math.ceil(output / f)
        if (os_ * f - output) % 2:
            os_ += 1
        c0 = (os_ * f - output) // 2
        starts.append(margin - f * layers + (f - 1) // 2 - c0)
        outputs.append(os_)
        crops.append(c0)
    return _AxisPlan(margin - layers, tuple(starts), tuple(outputs), tuple(crops))


def _repeat(y: torch.Tensor, f: int) -> torch.Tensor:
    """Upsample ``[N, C, d, h, w]`` by repeating every voxel ``f`` times along each axis."""
    n, c, d, h, w = y.shape
    y = y[:, :, :, None, :, None, :, None].expand(n, c, d, f, h, f, w, f)
    return y.reshape(n, c, d * f, h * f, w * f)


class _Bias(nn.Module):
    """A learnt bias per channel (DeepMedic's first layer of a pathway, and its classifier)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, 1, 1, 1)


class DeepMedicDropout(nn.Module):
    """DeepMedic's dropout of rate ``p``: in training ``x * mask`` with ``mask ~ Bernoulli(1 - p)``
    per element, not rescaled; in evaluation ``x * (1 - p)`` (the expected mask)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x * (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Layer(nn.Module):
    """One pre-activation layer: [mirror pad] -> BN (first layer of a pathway: bias) ->
    activation (first layer of a pathway: none) -> dropout -> convolution without bias."""

    def __init__(self, cin: int, cout: int, kernel: int, activation: str, *, first: bool,
                 dropout: float = 0.0, mirror_pad: bool = False):
        super().__init__()
        self.pad = (kernel - 1) // 2 if mirror_pad else 0
        self.norm = _Bias(cin) if first else nn.BatchNorm3d(cin, momentum=BN_MOMENTUM)
        self.act: nn.Module
        if first:
            self.act = nn.Identity()
        else:
            self.act = nn.ReLU() if activation == "relu" else nn.PReLU(cin, init=PRELU_INIT)
        self.drop = DeepMedicDropout(dropout) if dropout else nn.Identity()
        self.conv = nn.Conv3d(cin, cout, kernel, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, [self.pad] * 6, mode="replicate")
        return self.conv(self.drop(self.act(self.norm(x))))


def _add_residual(earlier: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
    """``deeper`` plus the centre of ``earlier`` (as DeepMedic's residual connections:
    spatial centre crop, missing channels of ``earlier`` taken as 0, surplus ones dropped)."""
    index = tuple(slice((e - 1) // 2 - (d - 1) // 2, (e - 1) // 2 - (d - 1) // 2 + d)
                  for e, d in zip(earlier.shape[2:], deeper.shape[2:], strict=True))
    earlier = earlier[(slice(None), slice(None)) + index]
    shared = min(earlier.shape[1], deeper.shape[1])
    if shared == deeper.shape[1]:
        return deeper + earlier[:, :shared]
    return torch.cat([deeper[:, :shared] + earlier, deeper[:, shared:]], dim=1)


class _Stack(nn.Module):
    """Layers in sequence; at each 0-based index in ``residual`` the layer's output gets the
    input of the previous layer added (:func:`_add_residual`)."""

    def __init__(self, layers: Sequence[nn.Module], residual: Sequence[int] = ()):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.residual = frozenset(residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous = x
        for i, layer in enumerate(self.layers):
            out = layer(x)
            if i in self.residual:
                out = _add_residual(previous, out)
            previous, x = x, out
        return x


def _pathway(cin: int, config: DeepMedicConfig) -> _Stack:
    widths = [cin, *config.features]
    return _Stack([_Layer(a, b, 3, config.activation, first=i == 0)
                   for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False))],
                  [k - 1 for k in config.residual])


class DeepMedic(nn.Module):
    """DeepMedic multi-pathway CNN; ``forward(x [N, C_in, *input]) -> logits [N, C, *output]``,
    ``input`` the context :meth:`input_size` gives for ``output``.

    Example::

        >>> from study.models.presets import DEEPMEDIC_PRESETS
        >>> net = DeepMedic(4, 2, DEEPMEDIC_PRESETS["basic"])
        >>> net.input_size((21, 21, 21)), net.output_size((105, 105, 105))
        ((105, 105, 105), (21, 21, 21))
        >>> net.inference_output
        (29, 29, 29)
    """

    def __init__(self, in_channels: int, num_classes: int, config: DeepMedicConfig):
        super().__init__()
        self.config = config
        self.layers = config.layers
        self.normal = _pathway(in_channels, config)
        self.subsampled = nn.ModuleList(_pathway(in_channels, config) for _ in config.factors)
        widths = [config.features[-1] * (1 + len(config.factors)), *config.fc, num_classes]
        dropout = config.fc_dropout or (0.0,) * (len(widths) - 1)
        self.fc = _Stack([_Layer(a, b, config.fc_kernel if i == 0 else 1, config.activation,
                                 first=False, dropout=dropout[i], mirror_pad=i == 0)
                          for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False))],
                         [k - 1 for k in config.fc_residual])
        self.classifier_bias = _Bias(num_classes)
        self.margin = context_margin(self.layers, config.factors)
        self.output_multiple = math.lcm(*config.factors) if config.factors else 1
        side = segment_output(config.segments[2], self.layers)
        self.inference_output = (side,) * 3
        for module in self.modules():
            if isinstance(module, nn.Conv3d):  # DeepMedic's "fanIn" init: std sqrt(2 / fan-in)
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

    def regularised_parameters(self) -> list[torch.Tensor]:
        """The parameters DeepMedic's L1/L2 terms cover: the convolution kernels (FC layers and
        classifier included), not biases, BatchNorm or PReLU parameters."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv3d)]

    def input_size(self, output_size: Sequence[int]) -> tuple[int, ...]:
        """Input (context) size per axis for ``output_size`` output voxels: ``output + 2 margin``
        (:func:`context_margin`)."""
        if any(int(o) < 1 for o in output_size):
            raise ValueError(f"DeepMedic: output size must be positive, got {tuple(output_size)}")
        return tuple(int(o) + 2 * self.margin for o in output_size)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Output size per axis for an input of ``input_size``: ``input - 2 margin``."""
        output = tuple(int(s) - 2 * self.margin for s in input_size)
        if min(output) < 1:
            raise ValueError(f"DeepMedic: input size {tuple(input_size)} gives no output; every "
                             f"side needs > {2 * self.margin} voxels (input_size(output) gives "
                             "the input for an output size)")
        return output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"DeepMedic: expected input [N, C, D, H, W], got {tuple(x.shape)}")
        output = self.output_size(x.shape[2:])
        plans = [_axis_plan(o, self.layers, self.config.factors) for o in output]
        every = (slice(None), slice(None))
        normal = x[every + tuple(slice(p.normal_start, p.normal_start + o + 2 * self.layers)
                                 for p, o in zip(plans, output, strict=True))]
        features = [self.normal(normal)]
        for i, (f, pathway) in enumerate(zip(self.config.factors, self.subsampled, strict=True)):
            sub = x[every + tuple(
                slice(p.sub_starts[i], p.sub_starts[i] + f * (p.sub_outputs[i] + 2 * self.layers)
                      - (f - 1), f) for p in plans)]
            up = _repeat(pathway(sub), f)
            features.append(up[every + tuple(slice(p.sub_crops[i], p.sub_crops[i] + o)
                                             for p, o in zip(plans, output, strict=True))])
        return self.classifier_bias(self.fc(torch.cat(features, dim=1)))
