"""The ``gaussian-splatting`` renderer: draws a scene's 3D Gaussians over its background.

It takes the geometry as an argument and reads its tensors (``means``, ``quats``, ``scales()``,
``opacities()``, colours or SH), so it knows no scene class: any geometry with those members (the
scene's :class:`text3d.scene.gaussians.GaussianModel`) is drawn with :func:`rasterize_gaussians`
(gsplat on CUDA, the PyTorch tile rasteriser elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Literal, Optional

import torch
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError

from .gaussians import RasterizeMode, rasterize_gaussians
from .registry import RENDERERS
from .shading import NoMaterial

if TYPE_CHECKING:
    from text3d.scene.cameras import Cameras
    from text3d.scene.gaussians import GaussianModel


@dataclass
class GaussianRendererConfig:
    """Draws a :class:`GaussianModel` with :func:`text3d.renderers.rasterize_gaussians`."""

    type: str = "gaussian-splatting"
    """Renderer type; ``gaussian-splatting``."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    """``auto``: gsplat on CUDA, the PyTorch tile rasteriser elsewhere."""
    near_plane: float = bounded(0.01, lo=0, lo_open=True)
    """Gaussians closer to the camera than this are not drawn."""
    far_plane: float = bounded(100.0, lo=0, lo_open=True)
    """Gaussians farther than this are not drawn."""
    eps2d: float = bounded(0.3, lo=0)
    """Low-pass added to every 2D covariance, pixels^2 (3DGS: 0.3)."""
    rasterize_mode: RasterizeMode = "classic"
    """``classic`` (3DGS: the low-pass adds mass to Gaussians under a pixel, so a scene trained at one
    resolution swells at a lower one) or ``antialiased`` (gsplat's, from Mip-Splatting: opacities scaled by
    ``sqrt(det(S) / det(S + eps2d I))``, the same scene at every resolution)."""
    tile_size: int = bounded(8, lo=1, hi=64)
    """CPU path: tile side in pixels."""


@RENDERERS.register("gaussian-splatting", GaussianRendererConfig)
class GaussianRenderer(nn.Module):
    """Renders ``rgb``, ``opacity`` and expected ``depth`` of the Gaussians over the background, and the
    ``background`` behind each pixel."""

    def __init__(self, cfg: GaussianRendererConfig):
        super().__init__()
        self.cfg = cfg

    def update_occupancy(self, *args, **kwargs) -> None:
        """Nothing to maintain (the NeRF renderer's occupancy grid has no Gaussian counterpart)."""

    @staticmethod
    def _colors(field: "GaussianModel", material: nn.Module, cameras: Cameras, mode: str):
        """The Gaussians' own colours (or SH), or per-camera colours of a material that shades Gaussians."""
        shades = getattr(material, "gaussian_colors", None)
        if not isinstance(material, NoMaterial) and shades is None:
            raise ConfigError("material.type: the gaussian-splatting renderer draws the Gaussians' own colours or "
                              "shades them with camera-light; set material.type: no-material or camera-light")
        deg = field.cfg.sh_degree
        if shades is None or mode == "albedo":
            return (field.base_colors(), None) if deg == 0 else (field.sh(), deg)
        if deg != 0:
            raise ConfigError(f"material.type: camera-light shades view-independent colours; set geometry.sh_degree: 0 "
                              f"(got {deg})")
        return shades(field.base_colors(), field.normals(), field.means, cameras.c2w), None

    def forward(self, field: nn.Module, material: nn.Module, background: nn.Module, cameras: Cameras,
                mode: str = "albedo", generator: Optional[torch.Generator] = None,
                train: bool = True) -> Dict[str, Tensor]:
        if not hasattr(field, "num_gaussians"):
            raise ConfigError(f"renderer.type: gaussian-splatting draws geometry.type gaussians, "
                              f"not {type(field).__name__}")
        cfg = self.cfg
        colors, sh_degree = self._colors(field, material, cameras, mode)
        img, alpha, meta = rasterize_gaussians(
            field.means, field.quats, field.scales(), field.opacities(), colors, cameras.viewmats(),
            cameras.intrinsics(), cameras.width, cameras.height, near_plane=cfg.near_plane,
            far_plane=cfg.far_plane, eps2d=cfg.eps2d, sh_degree=sh_degree, render_mode="RGB+ED",
            backend=cfg.backend, tile_size=cfg.tile_size, rasterize_mode=cfg.rasterize_mode)
        if train and torch.is_grad_enabled() and meta["means2d"].requires_grad:
            meta["means2d"].retain_grad()
            field.track(meta)
        _, dirs = cameras.rays()
        bg = background(dirs, train=train, generator=generator)
        rgb = img[..., :3] + (1 - alpha) * bg
        return {"rgb": rgb, "opacity": alpha, "depth": img[..., 3:], "background": bg.expand_as(rgb)}
