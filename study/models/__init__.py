"""Segmentation networks; each returns logits [N, C, *output] for an input [N, C_in, *input].

Geometry without building a model (for study specs and plans):

* :func:`output_patch` — the output a training input patch gives: the U-Net the same patch,
  DeepMedic its normal-pathway segment minus 2 voxels per layer and side (37^3 -> 21^3);
* :func:`segment_sizes` — the normal-pathway segments a DeepMedic preset trains, validates and
  infers on (37^3, 17^3, 45^3; the U-Net has none: it uses the training patch).

A model instance states its own: ``input_size(output)`` is the input tensor a model needs for an
output patch (the U-Net: the same size; DeepMedic: the wider context of all its pathways) and
``output_size(input)`` the inverse, so that samplers and inference cut the right inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from study.models.deepmedic import PRESETS as DEEPMEDIC_PRESETS
from study.models.deepmedic import DeepMedic, segment_output
from study.models.outputs import OutputLoss, centre_crop, main_output
from study.models.unet import PRESETS as UNET_PRESETS
from study.models.unet import UNet3D, unet_widths

MODELS: dict[str, dict[str, Any]] = {"unet": UNET_PRESETS, "deepmedic": DEEPMEDIC_PRESETS}
"""Model name -> its presets (``model.name`` and ``model.preset`` of a trial config)."""

SEGMENT_KEYS = ("train_input", "validation_input", "inference_input")

__all__ = ["MODELS", "SEGMENT_KEYS", "DeepMedic", "OutputLoss", "UNet3D", "build_model",
           "centre_crop", "main_output", "output_patch", "segment_sizes", "unet_widths"]


def _check_preset(name: str, preset: str) -> None:
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r} (known: {', '.join(MODELS)})")
    if preset not in MODELS[name]:
        raise ValueError(f"model.preset: unknown preset {preset!r} for {name} "
                         f"(known: {', '.join(sorted(MODELS[name]))})")


def output_patch(name: str, preset: str, input_patch: Sequence[int]) -> tuple[int, int, int]:
    """The output patch the training input ``input_patch`` (3 sides) gives.

    U-Net: ``input_patch`` itself; its sides must be divisible by ``2 ** (stages - 1)`` of the
    preset. DeepMedic: ``input_patch`` is the normal-pathway segment and the output is
    ``input_patch - 2 L`` per side for ``L`` layers (001 §V-A: 37^3 -> 21^3); every side must
    exceed ``2 L``. A patch that does not fit is a ``ValueError`` naming the patch, the output
    it would give and what fits.

    >>> output_patch("deepmedic", "basic", (37, 37, 37))
    (21, 21, 21)
    """
    _check_preset(name, preset)
    patch = tuple(int(p) for p in input_patch)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"{name}/{preset}: expected 3 positive sides, got {list(input_patch)}")
    if name == "unet":
        divisor = 2 ** (len(UNET_PRESETS[preset]) - 1)
        if any(p % divisor for p in patch):
            lower = [max(divisor, p // divisor * divisor) for p in patch]
            upper = [-(-p // divisor) * divisor for p in patch]
            raise ValueError(f"{name}/{preset}: input patch {list(patch)} would give output "
                             f"{list(patch)}, but the U-Net needs sides divisible by {divisor} "
                             f"(2^(stages - 1)); nearest that fit: {lower} or {upper}")
        return patch
    layers = DEEPMEDIC_PRESETS[preset].layers
    output = tuple(segment_output(p, layers) for p in patch)
    if min(output) < 1:
        raise ValueError(f"{name}/{preset}: input segment {list(patch)} gives output "
                         f"{list(output)}: every side needs > {2 * layers} voxels (the "
                         f"{2 * layers + 1}^3 receptive field of {layers} layers; e.g. "
                         f"{2 * layers + 21} -> 21)")
    return output


def segment_sizes(name: str, preset: str) -> dict[str, tuple[int, int, int] | None]:
    """The preset's input segments, keys :data:`SEGMENT_KEYS`: ``train_input``,
    ``validation_input``, ``inference_input``. DeepMedic: its normal-pathway segments (the
    papers: 37^3, 17^3 and 45^3, i.e. outputs of 21^3, 1^3 and 29^3); the U-Net: ``None`` each
    (it trains on the study's patch and infers with a sliding window of that patch)."""
    _check_preset(name, preset)
    if name == "unet":
        return dict.fromkeys(SEGMENT_KEYS)
    return {key: (side,) * 3
            for key, side in zip(SEGMENT_KEYS, DEEPMEDIC_PRESETS[preset].segments, strict=True)}


def build_model(name: str, preset: str, in_channels: int, num_classes: int, *,
                deep_supervision: bool = False, base: int | None = None,
                stages: int | None = None) -> nn.Module:
    """The network a trial config names (``model.name``, ``model.preset``).

    U-Net options: ``deep_supervision``; ``base`` features and number of ``stages`` (either
    replaces the preset's by nnU-Net's rule, :func:`unet_widths`). DeepMedic has none: its
    preset fixes everything (001's "basic" and "default" settings). An option the model does
    not have is a ``ValueError``.
    """
    _check_preset(name, preset)
    if name == "unet":
        widths = UNET_PRESETS[preset]
        if base is not None or stages is not None:
            widths = unet_widths(base or widths[0], stages or len(widths))
        return UNet3D(in_channels, num_classes, widths, deep_supervision=deep_supervision)
    if deep_supervision or base is not None or stages is not None:
        raise ValueError("model: deep_supervision, base and stages are U-Net options; "
                         "a DeepMedic is fixed by its preset")
    return DeepMedic(in_channels, num_classes, DEEPMEDIC_PRESETS[preset])
