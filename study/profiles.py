"""What each model costs on a GPU: the share of one GPU a trial asks Ray for, and the reference
training speed that ``study plan`` turns into GPU-hour estimates. Torch-free, so that planning
a study imports nothing heavy.

Shares by (model, preset): DeepMedic is launch-bound (10 segments of 37^3 use a small part of
a GPU; eight packed processes gave 1.9x the throughput of one), so four trials share a GPU; a
paper-size U-Net fills one. Ray packs fractions per GPU, with no memory isolation. Any preset
not listed (the tiny test presets) takes :data:`TINY_GPU_SHARE`.
"""

from __future__ import annotations

from dataclasses import dataclass

GPU_SHARE: dict[tuple[str, str], float] = {
    ("deepmedic", "basic"): 0.25,
    ("deepmedic", "default"): 0.25,
    ("unet", "paper"): 1.0,
}
TINY_GPU_SHARE = 0.125


def gpu_share(model: str, preset: str) -> float:
    """The share of one GPU a trial of ``model``/``preset`` asks for."""
    return GPU_SHARE.get((model, preset), TINY_GPU_SHARE)


@dataclass(frozen=True)
class Speed:
    """Training steps per second of one model on one whole GPU at a batch of ``voxels`` input
    voxels; other batch sizes scale inversely with their voxels."""

    steps_per_second: float
    voxels: int
    source: str


REFERENCE_SPEED: dict[str, Speed] = {
    # 10 segments of 37^3 normal-resolution input (the context tensor is larger); launch-bound
    "deepmedic": Speed(65.0, 10 * 37**3, "DeepMedic, 10 x 37^3, bf16, H100"),
    "unet": Speed(13.0, 2 * 128**3, "3D U-Net, 2 x 128^3, bf16 eager, H100"),
}
