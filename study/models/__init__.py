"""Segmentation networks; each returns logits [N, C, *output] for an input [N, C_in, *input].

Geometry without building a model (for study specs and plans):

* :func:`output_patch` — the output a training input patch gives: the U-Net the same patch,
  DeepMedic its normal-pathway segment minus 2 voxels per layer and side (37^3 -> 21^3);
* :func:`segment_sizes` — the normal-pathway segments a DeepMedic preset trains, validates and
  infers on (37^3, 17^3, 45^3; the U-Net has none: it uses the training patch).

A model instance states its own: ``input_size(output)`` is the input tensor a model needs for an
output patch (the U-Net: the same size; DeepMedic: its normal-pathway segment, which packs the
inputs of all its pathways, ``pathways(output)``) and ``output_size(input)`` the inverse, so
that samplers and inference cut the right inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from study.models.presets import (
    DEEPMEDIC_PRESETS,
    MODELS,
    SEGMENT_KEYS,
    UNET_PRESETS,
    check_preset,
    output_patch,
    segment_sizes,
    unet_widths,
)

if TYPE_CHECKING:
    from study.models.deepmedic import DeepMedic
    from study.models.unet import UNet3D

__all__ = ["MODELS", "SEGMENT_KEYS", "DeepMedic", "OutputLoss", "UNet3D", "build_model",
           "centre_crop", "main_output", "output_patch", "segment_sizes", "unet_widths"]

# The networks need torch; they are imported on first use, so that the geometry above serves
# study validation and planning without it.
_LAZY = {"DeepMedic": "study.models.deepmedic", "UNet3D": "study.models.unet",
         "OutputLoss": "study.models.outputs", "centre_crop": "study.models.outputs",
         "main_output": "study.models.outputs"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(name: str, preset: str, in_channels: int, num_classes: int, *,
                deep_supervision: bool = False, base: int | None = None,
                stages: int | None = None) -> UNet3D | DeepMedic:
    """The network a trial config names (``model.name``, ``model.preset``).

    U-Net options: ``deep_supervision``; ``base`` features and number of ``stages`` (either
    replaces the preset's by nnU-Net's rule, :func:`unet_widths`). DeepMedic has none: its
    preset fixes everything (001's "basic" and "default" settings). An option the model does
    not have is a ``ValueError``.
    """
    check_preset(name, preset)
    if name == "unet":
        from study.models.unet import UNet3D

        widths = UNET_PRESETS[preset]
        if base is not None or stages is not None:
            widths = unet_widths(base or widths[0], stages or len(widths))
        return UNet3D(in_channels, num_classes, widths, deep_supervision=deep_supervision)
    if deep_supervision or base is not None or stages is not None:
        raise ValueError("model: deep_supervision, base and stages are U-Net options; "
                         "a DeepMedic is fixed by its preset")
    from study.models.deepmedic import DeepMedic

    return DeepMedic(in_channels, num_classes, DEEPMEDIC_PRESETS[preset])
