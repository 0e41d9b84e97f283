"""Differentiable renderers (installed as ``text3d.renderers``)."""

from .gaussians import (
    eval_sh,
    project_gaussians,
    quat_scale_to_covar,
    rasterize_gaussians,
    rasterize_gaussians_dense,
)
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
    "eval_sh",
    "project_gaussians",
    "quat_scale_to_covar",
    "rasterize_gaussians",
    "rasterize_gaussians_dense",
    "lambertian",
    "orientation_loss",
    "ray_box_intersect",
    "stratified_samples",
]
