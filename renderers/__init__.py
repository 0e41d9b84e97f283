"""Differentiable renderers (installed as ``text3d.renderers``): volume rendering of a NeRF field
(:mod:`.volume`: pure PyTorch, nerfacc on CUDA), 3D Gaussian splatting (:mod:`.gaussians`: the PyTorch
tile rasteriser and gsplat; :mod:`.splatting`: the renderer module) and materials (:mod:`.shading`).

Renderers take tensors and the scene's modules as arguments (gsplat / nerfacc style) and know no
scene class. Importing the package registers the renderers and materials in :mod:`.registry`.

May import: ``text3d.core`` only.
"""

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
from .splatting import GaussianRenderer, GaussianRendererConfig
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
    "GaussianRenderer",
    "GaussianRendererConfig",
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
