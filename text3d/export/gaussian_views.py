"""Views of 3D Gaussians for their mesh export: renders from all around, the colours back-projected
from them onto surface points, and the silhouette fill (the solid as the visual hull of the renders).
See :mod:`text3d.export.gaussians` for why each is needed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.scene.cameras import project_to_pixels
from .grid import DensityGrid

if TYPE_CHECKING:
    from .gaussians import GaussianCloud

VIEWS = 10
"""Views rendered for the colour bake (Fibonacci directions on a sphere: even coverage, top and bottom):
every outward normal is within ~50 degrees of one. A view costs ~0.2 s per 16k Gaussians on one core
whatever its size (projection and sorting dominate), so the count, not the size, is kept small."""
VIEW_FOVY_DEG = 40.0
DEPTH_TOLERANCE = 0.02
"""A point is seen by a view if it lies within this fraction of the object's size (+ 2 grid cells)
of the rendered expected depth."""
HULL_VIEWS = 64
"""Renders whose silhouettes bound the solid (:func:`silhouette_fill`): Fibonacci directions, so every
line through the object is within ~7 degrees of a view's (the error outside a convex part: < 1 %)."""
HULL_PRUNE_ALPHA = 0.05
"""A node some view shows less opaque than this is outside the hull for good (no later view is tested)."""
MIN_VIEW_ALPHA = 0.5
"""... and the pixel it projects to is at least this opaque."""
MIN_VIEW_COS = 0.1
"""... and its normal is less than ~84 degrees from the direction to the camera."""
POINT_CHUNK = 1 << 17


def fibonacci_directions(n: int) -> Tensor:
    """``[n, 3]`` unit vectors spread evenly over the sphere (golden-angle spiral, no exact poles)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = torch.sqrt(1 - z * z)
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], 1).float()


@dataclass
class Views:
    """Rendered views for back-projection: ``rgb`` [V,H,W,3] premultiplied, ``alpha`` [V,H,W,1],
    ``depth`` [V,H,W,1] expected depth, ``viewmats`` [V,4,4], ``Ks`` [V,3,3], ``campos`` [V,3]."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    viewmats: Tensor
    Ks: Tensor
    campos: Tensor


def render_views(cloud: GaussianCloud, centre: np.ndarray, radius: float, n_views: int, size: int) -> Views:
    """``n_views`` square renders of ``size`` pixels from all around, framing the sphere (``centre``, ``radius``)."""
    from text3d.scene.cameras import Cameras, look_at
    from text3d.renderers.gaussians import rasterize_gaussians

    fovy = math.radians(VIEW_FOVY_DEG)
    distance = radius / math.sin(fovy / 2) * 1.05
    c = torch.as_tensor(centre, dtype=torch.float32)
    eye = c + distance * fibonacci_directions(n_views)
    up = torch.tensor([0.0, 0.0, 1.0]).expand_as(eye)
    zeros = torch.zeros(n_views)
    cams = Cameras(look_at(eye, c.expand_as(eye), up), torch.full((n_views,), fovy), size, size, zeros, zeros,
                   torch.full((n_views,), distance), eye)
    viewmats, Ks = cams.viewmats(), cams.intrinsics()
    ok = cloud.usable()
    colors = cloud.colors[ok]
    rgb, alpha, depth = [], [], []
    with torch.no_grad():
        for v in range(n_views):  # one view at a time: bounded memory
            img, a, _ = rasterize_gaussians(cloud.means[ok], cloud.quats[ok], cloud.scales[ok], cloud.opacities[ok],
                                            colors, viewmats[v:v + 1], Ks[v:v + 1], size, size,
                                            near_plane=0.01 * distance, sh_degree=cloud.sh_degree,
                                            render_mode="RGB+ED", backend="torch", rasterize_mode=cloud.rasterize_mode)
            rgb.append(img[..., :3])
            depth.append(img[..., 3:])
            alpha.append(a)
    return Views(torch.cat(rgb), torch.cat(alpha), torch.cat(depth), viewmats, Ks, eye)


class ViewColors:
    """A :data:`~text3d.export.texture.SurfaceColorFn` from rendered views (see the module docstring).

    Attributes:
        info: how the colours were found (views, size, fraction of points seen), for ``export.json``.
    """

    def __init__(self, cloud: GaussianCloud, views: Views, depth_tolerance: float):
        from scipy.spatial import cKDTree

        self.views = views
        self.tolerance = depth_tolerance
        ok = cloud.usable()
        solid = ok & (cloud.opacities >= 0.1)
        pick = solid if bool(solid.any()) else ok
        self._tree = cKDTree(cloud.means[pick].double().numpy())
        self._fallback = cloud.base_colors()[pick].double().numpy()
        # premultiplied colour, alpha and alpha x depth: bilinear-sampled together, then divided
        self._stack = torch.cat([views.rgb, views.alpha, views.depth * views.alpha], -1).permute(0, 3, 1, 2)
        self.info: Dict[str, Any] = {"method": "back-projected views", "views": int(views.rgb.shape[0]),
                                     "view_size": int(views.rgb.shape[1]), "depth_tolerance": depth_tolerance,
                                     "points": 0, "points_seen": 0}

    def __call__(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        out = np.empty((len(points), 3))
        for s in range(0, len(points), POINT_CHUNK):
            out[s:s + POINT_CHUNK] = self._colours(points[s:s + POINT_CHUNK], normals[s:s + POINT_CHUNK])
        return out

    def _colours(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        p = torch.as_tensor(points, dtype=torch.float32)
        nrm = F.normalize(torch.as_tensor(normals, dtype=torch.float32), dim=-1)
        acc = torch.zeros(len(p), 3)
        wsum = torch.zeros(len(p))
        V, _, H, W = self._stack.shape
        for v in range(V):
            uv, z = project_to_pixels(p, self.views.viewmats[v], self.views.Ks[v])
            s = sample_pixels(self._stack[v], uv)  # [P, 5]
            alpha = s[:, 3].clamp(min=1e-8)
            cos = (nrm * F.normalize(self.views.campos[v] - p, dim=-1)).sum(-1)
            inside = (uv[:, 0] > 0) & (uv[:, 0] < W) & (uv[:, 1] > 0) & (uv[:, 1] < H)
            seen = (inside & (z > 0) & (s[:, 3] > MIN_VIEW_ALPHA) & (cos > MIN_VIEW_COS)
                    & (z - s[:, 4] / alpha < self.tolerance))  # not behind what the view shows
            weight = torch.where(seen, cos * cos, 0.0)
            acc += weight[:, None] * (s[:, :3] / alpha[:, None]).clamp(0, 1)
            wsum += weight
        seen_any = (wsum > 0).numpy()
        out = (acc / wsum.clamp(min=1e-12)[:, None]).double().numpy()
        if not seen_any.all():
            _, nearest = self._tree.query(points[~seen_any])
            out[~seen_any] = self._fallback[nearest]
        self.info["points"] += int(len(points))
        self.info["points_seen"] += int(seen_any.sum())
        return out


def view_size(texture_size: int) -> int:
    """Render size of the bake views: a quarter of the texture side, 128-512 (the object fills about
    half a view and each texel is seen by a few views; the Gaussians' colours vary on their own scale,
    coarser than the texels)."""
    return int(min(512, max(128, texture_size // 4)))


def silhouette_fill(grid: DensityGrid, cloud: GaussianCloud, pixel: float, bounds: Tuple[np.ndarray, np.ndarray],
                    n_views: int = HULL_VIEWS) -> Dict[str, Any]:
    """Raise, in place, ``grid`` to the visual hull of ``n_views`` renders of ``cloud`` (at ``pixel`` world
    units a pixel; ``bounds``: its ``(lo, hi)`` box, framed by the views): every node takes
    ``max(value, 2 x level x a)``, ``a`` the least alpha any view shows at it (bilinear). Inside the hull
    (every view covered, ``a >= 0.5``) a node is solid, the solid an unlit render cannot tell from what the
    Gaussians draw (see :mod:`text3d.export.gaussians`); outside it keeps its density. ``a`` is
    continuous, so marching cubes places the hull's surface between the nodes (a binary fill left voxel
    steps: +7 % area on the quickstart's green torus at 256³).

    The silhouettes say nothing finer than their pixel, so ``a`` is found on every ``s``-th node of
    the occupied nodes' box (``s`` the largest power of 2, at most 8, with ``s x spacing`` at most a
    pixel; the alpha between pixels is bilinear anyway) and trilinearly upsampled. (At most half a
    pixel, the earlier bound, tested every node of the quickstart's Gaussian sphere at 256³ with its
    128² renders: 22.6 s, against 3.3 s, for the same area and volume within 0.002.) Each view tests
    only the nodes no earlier view showed empty (``a`` below :data:`HULL_PRUNE_ALPHA`: the empty
    outside goes in the first few views).

    Returns:
        What it did, for ``export.json``: views, their size, the stride, nodes raised to the level.
    """
    occupied = grid.values >= grid.level
    if not occupied.any():
        return {"views": 0, "filled_nodes": 0}
    lo, hi = bounds
    centre, radius = (lo + hi) / 2, 0.5 * float(np.linalg.norm(hi - lo))
    fovy = math.radians(VIEW_FOVY_DEG)
    distance = radius / math.sin(fovy / 2) * 1.05
    size = int(min(512, max(16, math.ceil(2 * distance * math.tan(fovy / 2) / pixel))))
    views = render_views(cloud, centre, radius, n_views, size)
    stride = 1
    while stride < 8 and 2 * stride * grid.spacing <= pixel:
        stride *= 2
    box = [np.flatnonzero(occupied.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    lo_i = [max(int(b[0]) - stride, 0) for b in box]
    axes = [np.arange(lo_i[a], min(int(box[a][-1]) + 2 * stride, grid.values.shape[a] - 1) + 1, stride) for a in range(3)]
    idx = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    least = np.ones(len(idx), np.float32)
    keep = np.arange(len(idx))
    for v in range(n_views):
        if not len(keep):
            break
        points = torch.as_tensor(grid.origin + idx[keep] * grid.spacing, dtype=torch.float32)
        least[keep] = np.minimum(least[keep], view_alpha(views, v, points).numpy())
        keep = keep[least[keep] >= HULL_PRUNE_ALPHA]
    hull = _upsampled(least.reshape([len(a) for a in axes]), stride)
    region = grid.values[tuple(slice(lo_i[a], lo_i[a] + hull.shape[a]) for a in range(3))]
    raised = 2.0 * grid.level * hull[tuple(slice(0, region.shape[a]) for a in range(3))]
    filled = int(((region < grid.level) & (raised >= grid.level)).sum())
    np.maximum(region, raised, out=region)
    return {"views": n_views, "view_size": size, "stride": stride, "filled_nodes": filled}


def _upsampled(coarse: np.ndarray, stride: int) -> np.ndarray:
    """``coarse`` (values at every ``stride``-th node) trilinearly at every node in between."""
    if stride == 1:
        return coarse
    size = [(n - 1) * stride + 1 for n in coarse.shape]
    t = torch.from_numpy(coarse)[None, None]
    return F.interpolate(t, size=size, mode="trilinear", align_corners=True)[0, 0].numpy()


def view_alpha(views: Views, v: int, points: Tensor) -> Tensor:
    """``[P]``: the alpha of view ``v`` (bilinear) where the points project; 0 behind the camera or
    outside the image."""
    uv, z = project_to_pixels(points, views.viewmats[v], views.Ks[v])
    alpha = sample_pixels(views.alpha[v].permute(2, 0, 1), uv)[:, 0]
    return torch.where(z > 0, alpha, torch.zeros_like(z))


def sample_pixels(image: Tensor, uv: Tensor) -> Tensor:
    """``[P, C]`` bilinear samples of ``image [C, H, W]`` at continuous pixel positions ``uv [P, 2]``
    (as :func:`text3d.scene.cameras.project_to_pixels` gives them); 0 outside the image."""
    _, H, W = image.shape
    grid = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1)[None, :, None, :]
    return F.grid_sample(image[None], grid, mode="bilinear", align_corners=False)[0, :, :, 0].T
