"""Differentiable renderers (installed as ``text3d.renderers``)."""

from .shading import (
    SHADING_MODES,
    DiffuseWithPointLight,
    DiffuseWithPointLightConfig,
    NoMaterial,
    NoMaterialConfig,
    lambertian,
)
from .volume import (
    OccupancyGrid,
    VolumeRenderer,
    VolumeRendererConfig,
    composite,
    orientation_loss,
    ray_box_intersect,
    stratified_samples,
)

__all__ = [
    "SHADING_MODES",
    "DiffuseWithPointLight",
    "DiffuseWithPointLightConfig",
    "NoMaterial",
    "NoMaterialConfig",
    "OccupancyGrid",
    "VolumeRenderer",
    "VolumeRendererConfig",
    "composite",
    "lambertian",
    "orientation_loss",
    "ray_box_intersect",
    "stratified_samples",
]
