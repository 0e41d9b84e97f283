"""Pixel correspondences between frames: from rendered depth and known cameras, or from optical flow.

Both give a :class:`~text3d.video.noise.Correspondence` from frame ``a`` into frame ``b``: for every pixel
of ``a`` its continuous position in ``b`` and whether it is visible there.

- :func:`depth_correspondence` re-projects each pixel's 3D point (z-depth, kornia's pinhole
  geometry) into the other camera, and keeps it where the other frame's depth at that position
  agrees (an occlusion test). Pixels with infinite depth (the background) are points at infinity:
  they move with the camera's rotation only, and are visible where the other frame sees
  background too.
- :func:`flow_correspondence` runs OpenCV's DIS optical flow (a classical method, nothing to
  download) in both directions and keeps the pixels that pass the forward-backward check
  ``|f + b(x + f)|^2 < 0.01 (|f|^2 + |b(x + f)|^2) + 0.5`` (Sundaram et al., as Go-with-the-Flow
  and Lai et al. use it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.core.errors import ConfigError, Text3DError
from .noise import Correspondence, identity_coords

if TYPE_CHECKING:
    from text3d.scene.cameras import Cameras

logger = logging.getLogger(__name__)

FLOW_PRESETS = ("ultrafast", "fast", "medium")
"""OpenCV DIS presets, fastest to most accurate."""


def z_depth(distance: Tensor, cameras: "Cameras") -> Tensor:
    """Distance along each pixel's unit ray ``[B, H, W]`` -> depth along the optical axis (inf stays inf)."""
    _, dirs = cameras.rays()
    forward = -cameras.c2w[:, :3, 2]
    cos = (dirs * forward[:, None, None, :]).sum(-1)
    return distance * cos


def _sample_nearest(image: Tensor, coords: Tensor) -> Tuple[Tensor, Tensor]:
    """Values of ``image [H, W]`` at the pixels containing ``coords [..., 2]``, and which lie inside."""
    H, W = image.shape
    col, row = torch.floor(coords[..., 0]), torch.floor(coords[..., 1])
    inside = torch.isfinite(col) & torch.isfinite(row) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    c = torch.nan_to_num(col, nan=0.0).clamp(0, W - 1).long()
    r = torch.nan_to_num(row, nan=0.0).clamp(0, H - 1).long()
    return image[r, c], inside


BACKGROUND_MODES = ("static", "infinity")
"""How background pixels (infinite depth) correspond: ``static`` = the same pixel (a uniform backdrop
looks the same wherever it is matched, and a fixed map keeps its noise still on screen);
``infinity`` = points at infinity, moving with the camera's rotation (a real environment)."""


def depth_correspondence(depth_a: Tensor, camera_a: "Cameras", depth_b: Tensor, camera_b: "Cameras",
                         rel_tol: float = 0.02, background: str = "infinity") -> Correspondence:
    """Where the pixels of frame ``a`` are in frame ``b``, from z-depth and cameras.

    Args:
        depth_a, depth_b: ``[H, W]`` z-depth (distance along the optical axis, world units), ``inf`` on
            background; the two frames may differ in size.
        camera_a, camera_b: one camera each (:class:`~text3d.scene.cameras.Cameras` of length 1).
        rel_tol: a re-projected point is visible in ``b`` where ``|z_b - depth_b| <= rel_tol * z_b``.
        background: see :data:`BACKGROUND_MODES`; either way a background pixel is kept only where
            ``b`` sees background there too.

    Returns:
        A correspondence ``[H_a, W_a]`` into ``b``'s pixel coordinates.
    """
    from kornia.geometry.camera.perspective import project_points, unproject_points
    from kornia.geometry.linalg import transform_points

    _check_depth(depth_a, "depth_a")
    _check_depth(depth_b, "depth_b")
    dt = torch.float64
    K_a, K_b = camera_a.intrinsics()[0].to(dt), camera_b.intrinsics()[0].to(dt)
    V_a, V_b = camera_a.viewmats()[0].to(dt), camera_b.viewmats()[0].to(dt)
    H, W = depth_a.shape
    uv = identity_coords(H, W, dt).reshape(-1, 2)
    z = depth_a.reshape(-1, 1).to(dt)
    finite = torch.isfinite(z[:, 0])
    rel = V_b @ torch.linalg.inv(V_a)  # camera a -> camera b (OpenCV)
    # surface points: unproject with their depth; background: directions (points at infinity)
    p_a = unproject_points(uv, torch.where(finite[:, None], z, torch.ones_like(z)), K_a)
    if background not in BACKGROUND_MODES:
        raise ConfigError(f"background: unknown mode {background!r}; valid: {', '.join(BACKGROUND_MODES)}")
    p_b = torch.where(finite[:, None], transform_points(rel[None], p_a[None])[0], p_a @ rel[:3, :3].T)
    if background == "static":  # the backdrop stays where it is on screen
        p_b = torch.where(finite[:, None], p_b, p_a)
    z_b = p_b[:, 2]
    in_front = z_b > 1e-9
    safe = torch.where(in_front[:, None], p_b, torch.ones_like(p_b))
    uv_b = project_points(safe, K_b)
    if background == "static":
        uv_b = torch.where(finite[:, None], uv_b, uv)
    at, inside = _sample_nearest(depth_b.to(dt), uv_b)
    background_ok = ~finite & ~torch.isfinite(at)  # the pixel it lands in shows background too
    surface_ok = torch.zeros_like(finite)
    # the 2x2 pixels around the point (its bilinear footprint): a slanted surface's depth changes
    # across one pixel, so one matching neighbour suffices; a hidden point matches none
    for dx in (-0.5, 0.5):
        for dy in (-0.5, 0.5):
            other, _ = _sample_nearest(depth_b.to(dt), uv_b + torch.tensor([dx, dy], dtype=dt))
            surface_ok |= finite & torch.isfinite(other) & ((z_b - other).abs() <= rel_tol * z_b.abs())
    valid = in_front & inside & (surface_ok | background_ok)
    coords = torch.where(in_front[:, None], uv_b, torch.full_like(uv_b, float("nan")))
    return Correspondence(coords.reshape(H, W, 2).float(), valid.reshape(H, W))


def _check_depth(depth: Tensor, name: str) -> None:
    if depth.dim() != 2:
        raise ValueError(f"{name}: expected [H, W] depth, got shape {tuple(depth.shape)}")
    if torch.isnan(depth).any():
        raise Text3DError(f"{name}: the depth map has {int(torch.isnan(depth).sum())} NaN pixels; "
                          "render it again (background must be inf, not NaN)")


# --------------------------------------------------------------------------------------------
# Optical flow
def _gray_u8(image: Tensor) -> np.ndarray:
    """``[H, W, 3]`` float in [0, 1] -> ``[H, W]`` uint8 luminance for OpenCV."""
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an [H, W, 3] image, got shape {tuple(image.shape)}")
    gray = image.float() @ torch.tensor([0.299, 0.587, 0.114])
    return (gray.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def dis_flow(image_a: Tensor, image_b: Tensor, preset: str = "medium") -> Tensor:
    """Optical flow from ``a`` to ``b`` with OpenCV's DIS: ``a(x) ~ b(x + flow(x))``.

    Args:
        image_a, image_b: ``[H, W, 3]`` float in [0, 1], same size.
        preset: one of :data:`FLOW_PRESETS`.

    Returns:
        ``[H, W, 2]`` float32 flow ``(dx, dy)`` in pixels.
    """
    cv2 = _cv2()
    if preset not in FLOW_PRESETS:
        raise ConfigError(f"flow_preset: unknown preset {preset!r}; valid: {', '.join(FLOW_PRESETS)}")
    if image_a.shape != image_b.shape:
        raise Text3DError(f"frames of mismatched sizes: {tuple(image_a.shape)} and {tuple(image_b.shape)}; "
                          "resize the video's frames to one size")
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
    flow = dis.calc(_gray_u8(image_a), _gray_u8(image_b), None)
    out = torch.from_numpy(np.ascontiguousarray(flow)).float()
    if not torch.isfinite(out).all():
        raise Text3DError("optical flow has NaN or infinite values; the frames may be blank or corrupt")
    return out


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ConfigError("optical flow needs OpenCV: pip install 'text3d[video]' (opencv-python-headless)") from None
    return cv2


def sample_bilinear(field: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of ``field [H, W, C]`` at continuous pixel positions ``coords [..., 2]`` (border clamped)."""
    H, W, C = field.shape
    gx = coords[..., 0] / W * 2 - 1
    gy = coords[..., 1] / H * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(1, -1, 1, 2).float()
    out = F.grid_sample(field.permute(2, 0, 1)[None].float(), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0, :, :, 0].T.reshape(*coords.shape[:-1], C)


def forward_backward_valid(forward: Tensor, backward: Tensor) -> Tensor:
    """``[H, W]`` bool: the forward-backward consistency check of a flow pair (True = not occluded).

    ``|f + b(x + f)|^2 < 0.01 (|f|^2 + |b(x + f)|^2) + 0.5``, with ``x + f`` inside the frame.
    """
    H, W, _ = forward.shape
    target = identity_coords(H, W) + forward
    b_at = sample_bilinear(backward, target)
    lhs = (forward + b_at).square().sum(-1)
    rhs = 0.01 * (forward.square().sum(-1) + b_at.square().sum(-1)) + 0.5
    inside = (target[..., 0] >= 0) & (target[..., 0] < W) & (target[..., 1] >= 0) & (target[..., 1] < H)
    return (lhs < rhs) & inside


def flow_correspondence(image_a: Tensor, image_b: Tensor, preset: str = "medium") -> Correspondence:
    """Where the pixels of ``a`` are in ``b``, by DIS optical flow with a forward-backward occlusion check."""
    forward = dis_flow(image_a, image_b, preset)
    backward = dis_flow(image_b, image_a, preset)
    H, W, _ = forward.shape
    return Correspondence(identity_coords(H, W) + forward, forward_backward_valid(forward, backward))
