"""nnU-Net-like 3D U-Net (Isensee et al. 2021; the KiTS network of paper 001 §V).

Each resolution stage is 2 x (3^3 conv -> InstanceNorm(affine) -> LeakyReLU 0.01); stages after
the first downsample with a stride-2 first convolution; the decoder upsamples with stride-2
transposed convolutions and concatenates the skip connection; a 1^3 convolution gives the
logits ``[N, C, D, H, W]`` (what the objectives receive). Patch sides must be divisible by
``2 ** (stages - 1)``; the output has the input's size.

Width and depth: ``widths`` lists the features per stage; :func:`unet_widths` builds nnU-Net's
rule (``base`` features doubled per stage, capped). Presets: ``paper`` — the fork of 001
(30 features, 6 stages, cap 320, no deep supervision); ``tiny`` — 8/16/32 (tests, CPU demo:
three stages, narrow enough to keep the CPU demo at a few minutes).

Deep supervision (nnU-Net; off in 001): with ``deep_supervision=True`` the network in training
mode returns a list of logits, full resolution first, then one per coarser decoder stage;
:class:`study.models.outputs.OutputLoss` weights them 1, 1/2, 1/4, ... (the coarsest 0,
normalised) against strided (nearest) downsampled targets. In eval mode it returns the
full-resolution logits only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1),
        nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1),
        nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class UNet3D(nn.Module):
    """``forward(x [N, C_in, *patch]) -> logits [N, C, *patch]`` (a list of logits per scale in
    training mode with deep supervision)."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int],
                 deep_supervision: bool = False):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths: expected at least 2 stages, got {list(widths)}")
        self.down = nn.ModuleList(
            _block(cin, cout, 1 if i == 0 else 2)
            for i, (cin, cout) in enumerate(zip([in_channels, *widths[:-1]], widths, strict=True))
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(len(widths) - 1))
        )
        self.decode = nn.ModuleList(
            _block(2 * widths[i], widths[i], 1) for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv3d(widths[0], num_classes, 1)
        self.deep_supervision = deep_supervision
        # one extra head per decoder stage below full resolution, coarse to fine
        self.aux_heads = nn.ModuleList(
            nn.Conv3d(widths[i], num_classes, 1) for i in reversed(range(1, len(widths) - 1))
        ) if deep_supervision else nn.ModuleList()
        self.divisor = 2 ** (len(widths) - 1)
        self.output_multiple = self.divisor
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, a=0.01)
                if module.bias is None:
                    raise ValueError(f"U-Net convolution {module} has no bias to initialise")
                nn.init.zeros_(module.bias)

    def _check(self, size: Sequence[int]) -> tuple[int, ...]:
        size = tuple(int(s) for s in size)
        if any(s < 1 or s % self.divisor for s in size):
            raise ValueError(f"UNet3D: spatial shape {size} must be positive multiples of "
                             f"{self.divisor} (2 ** (stages - 1))")
        return size

    def input_size(self, output_size: Sequence[int]) -> tuple[int, ...]:
        """The input for an output patch: the same size (padded convolutions)."""
        return self._check(output_size)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        return self._check(input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self._check(x.shape[2:])
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        supervised = self.deep_supervision and self.training
        aux = []
        stages = zip(self.up, self.decode, reversed(skips[:-1]), strict=True)
        for i, (up, decode, skip) in enumerate(stages):
            x = decode(torch.cat([up(x), skip], dim=1))
            if supervised and i < len(self.aux_heads):
                aux.append(self.aux_heads[i](x))
        logits = self.head(x)
        return [logits, *reversed(aux)] if supervised else logits
