"""Backbones: timm DINOv3 ViTs by name, tiny test sizes, the iBOT masking wrapper, safe loading."""

from brainalign.models.backbone import (
    BACKBONES,
    BackboneOutput,
    DinoBackbone,
    create_backbone,
)
from brainalign.models.export import load_teacher_export, save_teacher_export

__all__ = [
    "BACKBONES",
    "BackboneOutput",
    "DinoBackbone",
    "create_backbone",
    "load_teacher_export",
    "save_teacher_export",
]
