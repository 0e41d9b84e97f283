"""Materials: how a sample's albedo and normal become the colour the renderer composites.

``diffuse-with-point-light`` is DreamFusion's shading: Lambertian under one point light plus an
ambient term, randomly switched between three modes during training so the geometry is judged
both with and without its texture. ``no-material`` returns the albedo. ``camera-light`` shades 3D
Gaussians the way the embedded shapes prior's images are lit: a directional light fixed to the
camera plus an ambient term, on each Gaussian's shortest axis as its normal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text3d.core.errors import ConfigError
from .registry import MATERIALS
from text3d.core.bounds import bounded

logger = logging.getLogger(__name__)

SHADING_MODES = ("albedo", "diffuse", "textureless")


def _check_mode(mode: str) -> None:
    if mode not in SHADING_MODES:
        raise ValueError(f"shading mode {mode!r} is unknown; valid modes: {', '.join(SHADING_MODES)}")


def lambertian(albedo: Tensor, normal: Tensor, points: Tensor, light_positions: Tensor,
               ambient: float, diffuse: float) -> Tensor:
    """``albedo * (ambient + diffuse * max(0, n . l))`` with ``l`` the unit vector from the point
    to the light.

    Args:
        albedo: ``[N, 3]``; normal: ``[N, 3]`` unit; points, light_positions: ``[N, 3]`` world.

    Returns:
        ``[N, 3]`` shaded colour.
    """
    to_light = F.normalize(light_positions - points, dim=-1)
    cos = (normal * to_light).sum(dim=-1, keepdim=True).clamp_min(0.0)
    return albedo * (ambient + diffuse * cos)


@dataclass
class DiffuseWithPointLightConfig:
    """DreamFusion's Lambertian shading with a point light and an ambient term."""

    type: str = "diffuse-with-point-light"
    """Material type; ``diffuse-with-point-light``."""
    ambient_light_color: float = bounded(0.1, lo=0, hi=1)
    """Ambient light intensity (grey)."""
    diffuse_light_color: float = bounded(0.9, lo=0, hi=1)
    """Point-light intensity (grey)."""
    ambient_only_steps: int = bounded(1000, lo=0)
    """Before this training step the mode is always ``albedo`` (no normals needed)."""
    albedo_ratio: float = bounded(0.2, lo=0, hi=1)
    """After ``ambient_only_steps``: probability of the ``albedo`` mode."""
    textureless_prob: float = bounded(0.5, lo=0, hi=1)
    """Otherwise: probability of ``textureless`` (white albedo) rather than ``diffuse``."""


@MATERIALS.register("diffuse-with-point-light", DiffuseWithPointLightConfig)
class DiffuseWithPointLight(nn.Module):
    """Shading modes: ``albedo`` (unlit), ``diffuse`` (lit albedo), ``textureless`` (lit white)."""

    def __init__(self, cfg: DiffuseWithPointLightConfig):
        super().__init__()
        for key in ("albedo_ratio", "textureless_prob"):
            value = getattr(cfg, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"material.{key}: must be in [0, 1], got {value}")
        self.cfg = cfg

    def choose_mode(self, step: int, generator: torch.Generator) -> str:
        """The shading mode of a training step.

        Before ``ambient_only_steps`` this is ``albedo`` and draws nothing; afterwards two uniform
        numbers are always drawn (so the generator advances the same way whatever the outcome).
        """
        if step < self.cfg.ambient_only_steps:
            return "albedo"
        u = torch.rand(2, generator=generator).tolist()
        if u[0] < self.cfg.albedo_ratio:
            return "albedo"
        return "textureless" if u[1] < self.cfg.textureless_prob else "diffuse"

    def needs_normal(self, mode: str) -> bool:
        _check_mode(mode)
        return mode != "albedo"

    def shade(self, albedo: Tensor, normal: Optional[Tensor], points: Tensor, light_positions: Tensor,
              mode: str) -> Tensor:
        """Colour of samples.

        Args:
            albedo: ``[N, 3]`` in [0, 1].
            normal: ``[N, 3]`` unit normals (needed unless ``mode == "albedo"``).
            points: ``[N, 3]`` world positions of the samples.
            light_positions: ``[N, 3]`` world position of the light of each sample's camera.
            mode: ``albedo``, ``diffuse`` or ``textureless``.

        Returns:
            ``[N, 3]`` colour.
        """
        _check_mode(mode)
        if mode == "albedo":
            return albedo
        if normal is None:
            raise ValueError(f"shading mode {mode!r} needs normals")
        base = torch.ones_like(albedo) if mode == "textureless" else albedo
        return lambertian(base, normal, points, light_positions, self.cfg.ambient_light_color,
                          self.cfg.diffuse_light_color)


@dataclass
class NoMaterialConfig:
    """The albedo is the colour (no lighting)."""

    type: str = "no-material"
    """Material type; ``no-material``."""


@MATERIALS.register("no-material", NoMaterialConfig)
class NoMaterial(nn.Module):
    """Always the ``albedo`` mode; draws no random numbers."""

    def __init__(self, cfg: NoMaterialConfig):
        super().__init__()
        self.cfg = cfg

    def choose_mode(self, step: int, generator: Optional[torch.Generator] = None) -> str:
        return "albedo"

    def needs_normal(self, mode: str) -> bool:
        return False

    def shade(self, albedo: Tensor, normal: Optional[Tensor], points: Tensor, light_positions: Tensor,
              mode: str = "albedo") -> Tensor:
        """``albedo [N, 3]`` unchanged, whatever ``mode``."""
        return albedo


@dataclass
class CameraLightConfig:
    """A directional light fixed to the camera plus ambient light: the embedded shapes prior's world
    (its defaults are :data:`text3d.prior.shapes.LIGHT_DIR_CAMERA` and :data:`text3d.prior.shapes.AMBIENT`)."""

    type: str = "camera-light"
    """Material type; ``camera-light`` (3D Gaussians only)."""
    direction: List[float] = field(default_factory=lambda: [-0.4, 0.6, 1.0])
    """Direction towards the light in the camera frame (x right, y up, z towards the viewer)."""
    ambient: float = bounded(0.35, lo=0, hi=1)
    """Ambient share: colour = albedo * (ambient + (1 - ambient) * max(0, n . l))."""


@MATERIALS.register("camera-light", CameraLightConfig)
class CameraLight(nn.Module):
    """Lit (``diffuse``) in every training step, unlit (``albedo``) where a caller asks for the albedo
    (evaluation views, turntables). Draws no random numbers."""

    def __init__(self, cfg: CameraLightConfig):
        super().__init__()
        if len(cfg.direction) != 3 or not any(cfg.direction):
            raise ConfigError(f"material.direction: a non-zero [x, y, z] in the camera frame, got {cfg.direction}")
        self.cfg = cfg

    def choose_mode(self, step: int, generator: Optional[torch.Generator] = None) -> str:
        return "diffuse"

    def needs_normal(self, mode: str) -> bool:
        _check_mode(mode)
        return mode != "albedo"

    def shade(self, albedo: Tensor, normal: Optional[Tensor], points: Tensor, light_positions: Tensor,
              mode: str = "albedo") -> Tensor:
        if mode == "albedo":
            return albedo
        raise ConfigError("material.type: camera-light shades 3D Gaussians (renderer.type: gaussian-splatting); "
                          "a NeRF takes diffuse-with-point-light or no-material")

    def gaussian_colors(self, albedo: Tensor, normals: Tensor, means: Tensor, c2w: Tensor) -> Tensor:
        """``[C, N, 3]`` colours of ``N`` Gaussians (``albedo``, unit ``normals``, ``means`` ``[N, 3]``)
        seen by ``C`` cameras (``c2w`` ``[C, 4, 4]``): each normal is turned towards the camera."""
        light = F.normalize(torch.tensor(self.cfg.direction, dtype=albedo.dtype, device=albedo.device), dim=0)
        light_world = c2w[:, :3, :3] @ light  # [C, 3]
        to_camera = c2w[:, None, :3, 3] - means[None]  # [C, N, 3]
        n = normals[None] * torch.where((normals[None] * to_camera).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        cos = (n * light_world[:, None, :]).sum(-1, keepdim=True).clamp_min(0.0)
        return albedo[None] * (self.cfg.ambient + (1 - self.cfg.ambient) * cos)
