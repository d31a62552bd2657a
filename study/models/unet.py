"""nnU-Net-like 3D U-Net (Isensee et al. 2021; the KiTS network of paper 001 §V).

Each resolution stage is 2 x (3^3 conv -> InstanceNorm(affine) -> LeakyReLU 0.01); stages after
the first downsample with a stride-2 first convolution; the decoder upsamples with stride-2
transposed convolutions and concatenates the skip connection; a 1^3 convolution gives the
logits ``[N, C, D, H, W]`` (what the objectives receive). Patch sides must be divisible by
``2 ** (stages - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

WIDTHS = {
    "tiny": (8, 16, 32),  # tests and the CPU demo
    "paper": (30, 60, 120, 240, 320, 320),  # the fork used in paper 001 (30 features, cap 320)
}


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
    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int]):
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
        self.divisor = 2 ** (len(widths) - 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, a=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"UNet3D: spatial shape {tuple(x.shape[2:])} must be divisible by "
                             f"{self.divisor}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for up, decode, skip in zip(self.up, self.decode, reversed(skips[:-1]), strict=True):
            x = decode(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def build_model(name: str, preset: str, in_channels: int, num_classes: int) -> nn.Module:
    """The network a trial config names (``model.name``, ``model.preset``)."""
    if name != "unet":
        raise ValueError(f"model.name: unknown model {name!r} (known: 'unet')")
    if preset not in WIDTHS:
        raise ValueError(f"model.preset: unknown preset {preset!r} (known: {sorted(WIDTHS)})")
    return UNet3D(in_channels, num_classes, WIDTHS[preset])
