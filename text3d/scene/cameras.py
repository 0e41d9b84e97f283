"""Cameras: random training views, turntables, rays.

Conventions (the same as threestudio and DreamFusion, so their presets carry over):

- World space is right-handed and **z-up**; the object sits at the origin.
- A camera at azimuth ``az`` and elevation ``el`` (degrees) and distance ``d`` is at
  ``d * (cos el cos az, cos el sin az, sin el)``: azimuth 0 looks at the object's front from +x.
- ``c2w`` is camera-to-world in the **OpenGL** convention (x right, y up, the camera looks down -z).
  :meth:`Cameras.viewmats` gives world-to-camera matrices in the OpenCV convention that gsplat uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.core.errors import ConfigError
from .registry import CAMERAS
from text3d.core.bounds import bounded


@dataclass
class Cameras:
    """A batch of pinhole cameras with one resolution.

    Attributes:
        c2w: ``[B, 4, 4]`` camera-to-world, OpenGL convention.
        fovy: ``[B]`` vertical field of view, radians.
        width, height: image size in pixels.
        azimuth, elevation, distance: ``[B]`` spherical pose, degrees / degrees / world units.
        light_positions: ``[B, 3]`` point-light positions for shading, world units.
    """

    c2w: Tensor
    fovy: Tensor
    width: int
    height: int
    azimuth: Tensor
    elevation: Tensor
    distance: Tensor
    light_positions: Tensor

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device: torch.device | str) -> "Cameras":
        move = lambda t: t.to(device)  # noqa: E731
        return Cameras(move(self.c2w), move(self.fovy), self.width, self.height, move(self.azimuth),
                       move(self.elevation), move(self.distance), move(self.light_positions))

    def index(self, idx: slice | Tensor | List[int]) -> "Cameras":
        return Cameras(self.c2w[idx], self.fovy[idx], self.width, self.height, self.azimuth[idx],
                       self.elevation[idx], self.distance[idx], self.light_positions[idx])

    def focal(self) -> Tensor:
        """``[B]`` focal length in pixels."""
        return 0.5 * self.height / torch.tan(0.5 * self.fovy)

    def rays(self) -> Tuple[Tensor, Tensor]:
        """Ray origins and unit directions through pixel centres, each ``[B, H, W, 3]``."""
        B, H, W = len(self), self.height, self.width
        dev, dt = self.c2w.device, self.c2w.dtype
        j = torch.arange(W, device=dev, dtype=dt) + 0.5
        i = torch.arange(H, device=dev, dtype=dt) + 0.5
        f = self.focal().view(B, 1, 1)
        x = ((j.view(1, 1, W) - 0.5 * W) / f).expand(B, H, W)
        y = (-(i.view(1, H, 1) - 0.5 * H) / f).expand(B, H, W)
        dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [B, H, W, 3]
        dirs = torch.einsum("bij,bhwj->bhwi", self.c2w[:, :3, :3], dirs_cam)
        dirs = F.normalize(dirs, dim=-1)
        origins = self.c2w[:, None, None, :3, 3].expand_as(dirs)
        return origins, dirs

    def viewmats(self) -> Tensor:
        """``[B, 4, 4]`` world-to-camera matrices, OpenCV convention (x right, y down, z forward)."""
        flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], device=self.device, dtype=self.c2w.dtype))
        return torch.linalg.inv(self.c2w @ flip)

    def intrinsics(self) -> Tensor:
        """``[B, 3, 3]`` pinhole intrinsics in pixels (principal point at the image centre)."""
        K = torch.zeros(len(self), 3, 3, device=self.device, dtype=self.c2w.dtype)
        f = self.focal()
        K[:, 0, 0], K[:, 1, 1] = f, f
        K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = 0.5 * self.width, 0.5 * self.height, 1.0
        return K


def project_to_pixels(points: Tensor, viewmat: Tensor, K: Tensor) -> Tuple[Tensor, Tensor]:
    """World ``points [P, 3]`` seen by one camera (``viewmat [4, 4]``: world to camera, OpenCV, as
    :meth:`Cameras.viewmats`; ``K [3, 3]``: :meth:`Cameras.intrinsics`).

    Returns:
        Continuous pixel positions ``[P, 2]`` (x, y; pixel ``i`` spans ``[i, i + 1)``) and the camera-space
        depth ``z [P]`` (<= 0 behind the camera, where the positions mean nothing).
    """
    pc = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = pc[:, 2]
    safe = z.clamp(min=1e-6)
    return torch.stack([K[0, 0] * pc[:, 0] / safe + K[0, 2], K[1, 1] * pc[:, 1] / safe + K[1, 2]], -1), z


def spherical_to_position(azimuth_deg: Tensor, elevation_deg: Tensor, distance: Tensor) -> Tensor:
    """``[B, 3]`` z-up world positions of cameras on a sphere around the origin."""
    az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    return torch.stack([distance * torch.cos(el) * torch.cos(az),
                        distance * torch.cos(el) * torch.sin(az),
                        distance * torch.sin(el)], dim=-1)


def look_at(eye: Tensor, center: Tensor, up: Tensor) -> Tensor:
    """``[B, 4, 4]`` OpenGL camera-to-world matrices for cameras at ``eye`` looking at ``center``.

    Where ``up`` is parallel to the viewing direction (a camera straight above), a fallback up
    vector is used so the matrix stays a rotation.
    """
    forward = F.normalize(center - eye, dim=-1)
    right = torch.linalg.cross(forward, up, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    alt_up = torch.tensor([0.0, 1.0, 0.0], device=eye.device, dtype=eye.dtype).expand_as(up)
    right = torch.where(degenerate, torch.linalg.cross(forward, alt_up, dim=-1), right)
    right = F.normalize(right, dim=-1)
    true_up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.zeros(eye.shape[0], 4, 4, device=eye.device, dtype=eye.dtype)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = right, true_up, -forward
    c2w[:, :3, 3] = eye
    c2w[:, 3, 3] = 1.0
    return c2w


def orbit_cameras(azimuth_deg: Tensor, elevation_deg: Tensor, distance: Tensor, fovy_deg: Tensor,
                  width: int, height: int, light_positions: Optional[Tensor] = None) -> Cameras:
    """Cameras on a sphere looking at the origin, z up. All pose tensors are ``[B]``."""
    eye = spherical_to_position(azimuth_deg, elevation_deg, distance)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    c2w = look_at(eye, torch.zeros_like(eye), up)
    lights = eye.clone() if light_positions is None else light_positions
    return Cameras(c2w, torch.deg2rad(fovy_deg), width, height, azimuth_deg, elevation_deg, distance, lights)


def turntable(n_views: int, elevation_deg: float, distance: float, fovy_deg: float, width: int,
              height: int, azimuth_start_deg: float = 0.0, degrees_per_view: float = 0.0) -> Cameras:
    """``n_views`` cameras ``degrees_per_view`` apart in azimuth from ``azimuth_start_deg``; 0 = evenly
    spaced over a full circle (``[start, start + 360)``)."""
    step = degrees_per_view or 360.0 / n_views
    az = azimuth_start_deg + torch.arange(n_views, dtype=torch.float32) * step
    full = lambda v: torch.full((n_views,), float(v))  # noqa: E731
    return orbit_cameras(az, full(elevation_deg), full(distance), full(fovy_deg), width, height)


def cameras_json(cams: Cameras) -> List[Dict[str, Any]]:
    """One record per camera: spherical pose (degrees), field of view, size and the OpenGL camera-to-world matrix."""
    return [{"azimuth_deg": float(cams.azimuth[i]), "elevation_deg": float(cams.elevation[i]),
             "distance": float(cams.distance[i]), "fovy_deg": float(torch.rad2deg(cams.fovy[i])),
             "width": cams.width, "height": cams.height, "c2w": cams.c2w[i].tolist()} for i in range(len(cams))]


def cameras_from_json(records: List[Dict[str, Any]]) -> Cameras:
    """Cameras back from :func:`cameras_json` records (the poses are rebuilt from azimuth/elevation/distance)."""
    t = lambda key: torch.tensor([r[key] for r in records], dtype=torch.float32)  # noqa: E731
    return orbit_cameras(t("azimuth_deg"), t("elevation_deg"), t("distance"), t("fovy_deg"),
                         int(records[0]["width"]), int(records[0]["height"]))


@dataclass
class RandomCameraConfig:
    """Random training cameras around the object (threestudio's ``random-camera`` data module)."""

    type: str = "random"
    """Camera sampler type; ``random`` is the only one."""
    batch_size: int = bounded(1, lo=1, hi=1024)
    """Views rendered and guided per step."""
    width: int = bounded(64, lo=1, hi=8192)
    """Render width in pixels."""
    height: int = bounded(64, lo=1, hi=8192)
    """Render height in pixels."""
    resolution_milestones: List[int] = bounded(default_factory=list, lo=0)
    """Progressive resolution (DreamGaussian, threestudio): from step ``resolution_milestones[i]`` on,
    render ``resolutions[i]`` pixels square; before the first milestone, ``width x height``."""
    resolutions: List[int] = bounded(default_factory=list, lo=1, hi=8192)
    """Square render sizes that go with ``resolution_milestones`` (same length)."""
    elevation_range: List[float] = bounded(default_factory=lambda: [-10.0, 45.0], lo=-90, hi=90)
    """Elevation range, degrees, sampled uniformly."""
    azimuth_range: List[float] = field(default_factory=lambda: [-180.0, 180.0])
    """Azimuth range, degrees, sampled uniformly."""
    distance_range: List[float] = bounded(default_factory=lambda: [1.5, 2.0], lo=0, lo_open=True)
    """Camera distance from the origin, world units."""
    fovy_range: List[float] = bounded(default_factory=lambda: [40.0, 70.0], lo=0, hi=180, lo_open=True, hi_open=True)
    """Vertical field of view, degrees."""
    position_jitter: float = bounded(0.1, lo=0)
    """Std of Gaussian noise added to the camera position (threestudio ``camera_perturb``)."""
    center_jitter: float = bounded(0.2, lo=0)
    """Std of Gaussian noise added to the look-at point (``center_perturb``)."""
    up_jitter: float = bounded(0.02, lo=0)
    """Std of Gaussian noise added to the up vector (``up_perturb``)."""
    light_position_jitter: float = bounded(1.0, lo=0)
    """Std of the noise that moves the light direction away from the camera direction (DreamFusion)."""
    light_distance_range: List[float] = bounded(default_factory=lambda: [0.8, 1.5], lo=0, lo_open=True)
    """Distance of the point light from the origin."""
    eval_distance: float = bounded(2.0, lo=0, lo_open=True)
    """Camera distance for validation views and the turntable."""
    eval_fovy: float = bounded(45.0, lo=0, hi=180, lo_open=True, hi_open=True)
    """Field of view (degrees) for validation views and the turntable."""
    eval_elevation: float = bounded(15.0, lo=-90, hi=90)
    """Elevation (degrees) of validation views and the turntable."""


def finest_resolution(cameras_cfg: Any) -> int:
    """The largest render side a run's ``cameras`` config trains at: its ``height`` or any of its
    ``resolutions`` (raises AttributeError / TypeError / ValueError on a config that does not say)."""
    return max([int(cameras_cfg.height), *[int(r) for r in (getattr(cameras_cfg, "resolutions", None) or [])]])


def _uniform(lo_hi: List[float], n: int, generator: torch.Generator) -> Tensor:
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return lo + (hi - lo) * torch.rand(n, generator=generator)


@CAMERAS.register("random", RandomCameraConfig)
class RandomCameraSampler:
    """Draws random training cameras; every random number comes from the caller's generator."""

    def __init__(self, cfg: RandomCameraConfig):
        for key in ("elevation_range", "azimuth_range", "distance_range", "fovy_range", "light_distance_range"):
            value = getattr(cfg, key)
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(f"cameras.{key}: expected [low, high] with low <= high, got {list(value)}")
        milestones = list(cfg.resolution_milestones)
        if len(milestones) != len(cfg.resolutions) or milestones != sorted(milestones):
            raise ConfigError(f"cameras.resolution_milestones: expected increasing steps, one per entry of "
                              f"cameras.resolutions; got {milestones} and {list(cfg.resolutions)}")
        self.cfg = cfg

    def resolution(self, step: int) -> Tuple[int, int]:
        """``(width, height)`` of the training renders at ``step``."""
        width, height = self.cfg.width, self.cfg.height
        for milestone, size in zip(self.cfg.resolution_milestones, self.cfg.resolutions):
            if step >= milestone:
                width = height = int(size)
        return width, height

    def sample(self, generator: torch.Generator, batch_size: Optional[int] = None, step: int = 0) -> Cameras:
        """Random cameras on CPU (move them with :meth:`Cameras.to`), at the resolution of ``step``."""
        cfg, n = self.cfg, batch_size or self.cfg.batch_size
        width, height = self.resolution(step)
        el, az = _uniform(cfg.elevation_range, n, generator), _uniform(cfg.azimuth_range, n, generator)
        dist, fovy = _uniform(cfg.distance_range, n, generator), _uniform(cfg.fovy_range, n, generator)
        eye = spherical_to_position(az, el, dist)
        eye = eye + cfg.position_jitter * torch.randn(n, 3, generator=generator)
        center = cfg.center_jitter * torch.randn(n, 3, generator=generator)
        up = torch.tensor([0.0, 0.0, 1.0]) + cfg.up_jitter * torch.randn(n, 3, generator=generator)
        c2w = look_at(eye, center, F.normalize(up, dim=-1))
        light_dir = F.normalize(eye + cfg.light_position_jitter * torch.randn(n, 3, generator=generator), dim=-1)
        light = light_dir * _uniform(cfg.light_distance_range, n, generator)[:, None]
        return Cameras(c2w, torch.deg2rad(fovy), width, height, az, el, dist, light)

    def eval_cameras(self, n_views: int, width: Optional[int] = None, height: Optional[int] = None) -> Cameras:
        """Evenly spaced views at the evaluation distance / fov / elevation."""
        cfg = self.cfg
        return turntable(n_views, cfg.eval_elevation, cfg.eval_distance, cfg.eval_fovy,
                         width or cfg.width, height or cfg.height)

