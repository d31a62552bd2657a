"""Segmentation networks; each returns logits [N, C, *spatial]."""

from study.models.unet import UNet3D, build_model

__all__ = ["UNet3D", "build_model"]
