"""Segmentation networks; each returns logits [N, C, *output] for an input [N, C_in, *input].

Every model states its geometry: ``input_size(output_size)`` is the input a model needs for an
output patch (the U-Net: the same size; DeepMedic: the wider context of its pathways) and
``output_size(input_size)`` the inverse, so that samplers and inference can ask for the right
inputs. ``output_multiple`` is the step between output sizes that tile without seams.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from study.models.deepmedic import PRESETS as DEEPMEDIC_PRESETS
from study.models.deepmedic import DeepMedic
from study.models.outputs import OutputLoss, centre_crop, main_output
from study.models.unet import PRESETS as UNET_PRESETS
from study.models.unet import UNet3D, unet_widths

MODELS: dict[str, dict[str, Any]] = {"unet": UNET_PRESETS, "deepmedic": DEEPMEDIC_PRESETS}
"""Model name -> its presets (``model.name`` and ``model.preset`` of a trial config)."""

__all__ = ["MODELS", "DeepMedic", "OutputLoss", "UNet3D", "build_model", "centre_crop",
           "main_output", "patch_problem", "unet_widths"]


def patch_problem(name: str, preset: str, patch: tuple[int, ...]) -> str | None:
    """Why ``patch`` cannot be the output patch of the preset's model, or None if it can."""
    if name == "unet":
        divisor = 2 ** (len(UNET_PRESETS[preset]) - 1)
        if any(p % divisor for p in patch):
            return (f"the {name}/{preset} U-Net needs patch sides divisible by {divisor}, "
                    f"got {list(patch)}")
    return None


def build_model(name: str, preset: str, in_channels: int, num_classes: int, *,
                deep_supervision: bool = False, base: int | None = None,
                stages: int | None = None, dropout: float = 0.0) -> nn.Module:
    """The network a trial config names (``model.name``, ``model.preset``).

    U-Net options: ``deep_supervision``; ``base`` features and number of ``stages`` (either
    replaces the preset's by nnU-Net's rule, :func:`unet_widths`). DeepMedic option:
    ``dropout`` on the FC layers (001's BraTS setting: 0). An option the model does not have
    is a ``ValueError``.
    """
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r} (known: {', '.join(MODELS)})")
    if preset not in MODELS[name]:
        raise ValueError(f"model.preset: unknown preset {preset!r} for {name} "
                         f"(known: {', '.join(sorted(MODELS[name]))})")
    if name == "unet":
        if dropout:
            raise ValueError("model: the U-Net has no dropout option (nnU-Net uses none)")
        widths = UNET_PRESETS[preset]
        if base is not None or stages is not None:
            widths = unet_widths(base or widths[0], stages or len(widths))
        return UNet3D(in_channels, num_classes, widths, deep_supervision=deep_supervision)
    if deep_supervision or base is not None or stages is not None:
        raise ValueError("model: deep_supervision, base and stages are U-Net options; "
                         "DeepMedic's width is its preset")
    config = DEEPMEDIC_PRESETS[preset]
    if dropout:
        config = replace(config, dropout=float(dropout))
    return DeepMedic(in_channels, num_classes, config)
