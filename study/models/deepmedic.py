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

**One packed input tensor.** As in DeepMedic, each pathway gets its own input at its own
resolution: the normal pathway the ``O + 2L`` segment, the pathway subsampled by ``f`` every
``f``-th image voxel on a grid of ``Os + 2L`` voxels centred on the output (23^3 and 21^3 for a
21^3 output; :func:`~study.models.presets.pathway_inputs`). The model takes them packed into
one tensor ``[N, (1 + F) C, O + 2L, ...]``: channels ``0..C-1`` the normal segment, then ``C``
channels per subsampled pathway, its grid zero-padded symmetrically to the normal side (23 ->
37: 7 voxels per side; 21 -> 37: 8). The input size therefore determines the output size
(``input - 2L``), and every batch regularizer (adversarial perturbation, mixup, flips) remains
a plain operation on one tensor: a flip of the packed tensor is the packing of the flipped
pathways (every block is centred), mixup is linear, and a perturbation of the packed tensor
perturbs each pathway's input separately. The sampler cuts the packed inputs straight from the
case (``37^3 + 23^3 + 21^3`` voxels per channel instead of the 105^3 neighbourhood they span);
:meth:`DeepMedic.pack` cuts them from a tensor (inference). The padding is never read.

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

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from study.models.presets import (
    DeepMedicConfig,
    context_margin,
    grid_offset,
    pathway_inputs,
    segment_output,
    subsampled_output,
)

BN_MOMENTUM = 2 / (60 + 1)  # DeepMedic averages the BN statistics of the last 60 batches
PRELU_INIT = 0.01  # DeepMedic's initial PReLU slope


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


def add_residual(earlier: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
    """DeepMedic's residual connection: ``deeper [N, C, *spatial]`` plus the centre of the
    larger ``earlier [N, C', *spatial']`` (spatial centre crop to ``deeper``'s size; with
    ``C' < C`` the missing channels of ``earlier`` taken as 0, with ``C' > C`` its surplus
    channels dropped)."""
    index = tuple(slice((e - 1) // 2 - (d - 1) // 2, (e - 1) // 2 - (d - 1) // 2 + d)
                  for e, d in zip(earlier.shape[2:], deeper.shape[2:], strict=True))
    earlier = earlier[(slice(None), slice(None)) + index]
    shared = min(earlier.shape[1], deeper.shape[1])
    if shared == deeper.shape[1]:
        return deeper + earlier[:, :shared]
    return torch.cat([deeper[:, :shared] + earlier, deeper[:, shared:]], dim=1)


class Stack(nn.Module):
    """Layers in sequence, a pathway or the FC layers of DeepMedic: at each 0-based index in
    ``residual`` the layer's output gets the input of the previous layer added
    (:func:`add_residual`; index 1: the stack's input), as the residual connection at
    1-based layer ``index + 1``."""

    def __init__(self, layers: Sequence[nn.Module], residual: Sequence[int] = ()):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.residual = frozenset(residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous = x
        for i, layer in enumerate(self.layers):
            out = layer(x)
            if i in self.residual:
                out = add_residual(previous, out)
            previous, x = x, out
        return x


def _pathway(cin: int, config: DeepMedicConfig) -> Stack:
    widths = [cin, *config.features]
    return Stack([_Layer(a, b, 3, config.activation, first=i == 0)
                  for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False))],
                 [k - 1 for k in config.residual])


class DeepMedic(nn.Module):
    """DeepMedic multi-pathway CNN; ``forward(x [N, (1 + F) C_in, *input]) -> logits
    [N, C, *output]``, ``x`` the packed pathway inputs (module docstring) of the ``input``
    :meth:`input_size` gives for ``output``: the normal-pathway segment.

    Example::

        >>> from study.models.presets import DEEPMEDIC_PRESETS
        >>> net = DeepMedic(4, 2, DEEPMEDIC_PRESETS["basic"])
        >>> net.input_size((21, 21, 21)), net.output_size((37, 37, 37)), net.packed_channels
        ((37, 37, 37), (21, 21, 21), 12)
        >>> net.inference_output, net.margin
        ((29, 29, 29), 42)
    """

    def __init__(self, in_channels: int, num_classes: int, config: DeepMedicConfig):
        super().__init__()
        self.config = config
        self.layers = config.layers
        self.in_channels = in_channels
        self.packed_channels = in_channels * (1 + len(config.factors))
        self.normal = _pathway(in_channels, config)
        self.subsampled = nn.ModuleList(_pathway(in_channels, config) for _ in config.factors)
        widths = [config.features[-1] * (1 + len(config.factors)), *config.fc, num_classes]
        dropout = config.fc_dropout or (0.0,) * (len(widths) - 1)
        self.fc = Stack([_Layer(a, b, config.fc_kernel if i == 0 else 1, config.activation,
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
        """Input size per axis for ``output_size`` output voxels: the normal-pathway segment
        ``output + 2L`` (the packed tensor's spatial size)."""
        if any(int(o) < 1 for o in output_size):
            raise ValueError(f"DeepMedic: output size must be positive, got {tuple(output_size)}")
        return tuple(int(o) + 2 * self.layers for o in output_size)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """Output size per axis for an input of ``input_size``: ``input - 2L``."""
        output = tuple(int(s) - 2 * self.layers for s in input_size)
        if min(output) < 1:
            raise ValueError(f"DeepMedic: input size {tuple(input_size)} gives no output; every "
                             f"side needs > {2 * self.layers} voxels (input_size(output) gives "
                             "the input for an output size)")
        return output

    def pathways(self, output_size: Sequence[int]) -> tuple[tuple[int, tuple[int, ...]], ...]:
        """``(stride, sides)`` of each pathway's input, in packing order, for ``output_size``
        (:func:`~study.models.presets.pathway_inputs`; 21^3: 37^3, 23^3 step 3, 21^3 step 5)."""
        self.input_size(output_size)  # validates
        return pathway_inputs(output_size, self.layers, self.config.factors)

    def pack(self, volume: torch.Tensor, centre: Sequence[int], output_size: Sequence[int]
             ) -> torch.Tensor:
        """The packed input ``[(1 + F) C, *input]`` for the ``output_size`` outputs centred on
        the voxel ``centre`` of ``volume [C, D, H, W]`` (``centre = start + size // 2``): each
        pathway's grid (:func:`~study.models.presets.grid_offset`) sliced from ``volume`` and
        zero-padded symmetrically to the input size, as the sampler cuts it from a case.

        Raises:
            ValueError: a grid leaves ``volume`` (pad it by :attr:`margin` first) or the
                channels are not ``in_channels``.
        """
        if volume.ndim != 4 or volume.shape[0] != self.in_channels:
            raise ValueError(f"DeepMedic.pack: expected a volume [{self.in_channels}, D, H, W], "
                             f"got {tuple(volume.shape)}")
        size = self.input_size(output_size)
        packed = volume.new_zeros((self.packed_channels, *size))
        for p, (stride, sides) in enumerate(self.pathways(output_size)):
            index = []
            for c, n, extent in zip(centre, sides, volume.shape[1:], strict=True):
                first = int(c) + grid_offset(n, stride)
                last = first + stride * (n - 1)
                if first < 0 or last >= extent:
                    raise ValueError(f"DeepMedic.pack: the x{stride} pathway's grid "
                                     f"{first}..{last} around centre {tuple(centre)} leaves the "
                                     f"volume {tuple(volume.shape[1:])}")
                index.append(slice(first, last + 1, stride))
            block = (slice(p * self.in_channels, (p + 1) * self.in_channels),)
            packed[block + _centred(size, sides)] = volume[(slice(None),) + tuple(index)]
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.packed_channels:
            raise ValueError(f"DeepMedic: expected packed pathway inputs [N, "
                             f"{self.packed_channels}, D, H, W] ({1 + len(self.config.factors)} "
                             f"pathways x {self.in_channels} channels), got {tuple(x.shape)}")
        output = self.output_size(x.shape[2:])
        c = self.in_channels
        features = [self.normal(x[:, :c])]
        pathways = self.pathways(output)[1:]
        for i, ((f, sides), pathway) in enumerate(zip(pathways, self.subsampled, strict=True)):
            sub = x[(slice(None), slice((i + 1) * c, (i + 2) * c)) + _centred(x.shape[2:], sides)]
            up = _repeat(pathway(sub), f)
            crops = [(subsampled_output(o, f) * f - o) // 2 for o in output]
            features.append(up[(slice(None), slice(None)) + tuple(
                slice(c0, c0 + o) for c0, o in zip(crops, output, strict=True))])
        return self.classifier_bias(self.fc(torch.cat(features, dim=1)))


def _centred(size: Sequence[int], sides: Sequence[int]) -> tuple[slice, ...]:
    """The block of ``sides`` centred in ``size`` (same parity per axis)."""
    return tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(size, sides, strict=True))
