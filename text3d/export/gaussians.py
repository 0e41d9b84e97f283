"""Mesh export of 3D Gaussians: their density splatted onto a grid, colours back-projected from views.

Density (DreamGaussian's): ``D(x) = sum_i o_i exp(-0.5 (x - mu_i)^T Sigma_i^-1 (x - mu_i))``, every
Gaussian cut at 3 standard deviations (Mahalanobis distance² 9). It is dimensionless: an opaque
Gaussian's ``D = 0.5`` ellipsoid projects onto exactly its half-opaque (``alpha = 0.5``) outline in
every view, since a Gaussian's marginal keeps the level sets of its quadratic form.

Splatting (:func:`splat_density`): each Gaussian touches only the grid nodes of its 3-sigma box.
The boxes are grouped by their (rounded-up) size, so a group of ``G`` Gaussians with boxes of
``X x Y x Z`` nodes is one dense ``[G, X, Y, Z]`` problem: the quadratic form is built by
broadcasting from per-axis terms and summed into the grid with one ``index_add_``. Groups are cut
into pieces of a bounded number of nodes (memory), no Python loop runs over Gaussians.

Iso-level, unless given: the grid's half-opacity level (:func:`text3d.export.grid.level_from_opacity`,
as for a NeRF) on ``D`` turned into an optical density: a ray through a Gaussian collects
``integral o exp(-m/2) dt = alpha sqrt(2 pi) t`` with ``t`` its thickness along the ray, so
``D / (sqrt(2 pi) t_ref)`` (``t_ref``: the opacity-weighted median thickness along the grid axes)
integrates to the rendered opacity. A lone opaque Gaussian gets level 0.5, its outline above;
a dense cloud gets half its inside density, where its edge is.

Footprints as trained (:meth:`GaussianCloud.as_rendered`): the rasteriser draws every Gaussian with
its 2D covariance widened by a low-pass of ``eps2d`` = :data:`RENDER_LOW_PASS` pixels² and its peak
opacity kept (3DGS's dilation, not Mip-Splatting's compensated one). SDS only ever saw those
widened footprints, at the training renders' pixel size: small Gaussians (the quickstart's are
~0.4 training pixels) look ~2.8x larger in area than their 3D density. A shell of them that every
training render shows closed is full of gaps in the raw density, which carving then reads as
visible tunnels (the quickstart's Gaussian torus: genus 2-5 instead of 1, volume 0.62x). Adding the
same low-pass in 3D (``eps2d x pixel²`` to every covariance, opacity kept) gives a density whose
projection is what the training renders drew (the marginal of ``Sigma + s² I`` is the projected
covariance ``+ s² I``): gaps the renders never showed are closed, visible holes (wider than the
footprints) stay. The pixel is half :attr:`~text3d.export.config.ExportConfig.pore_size` (which is two of a
run's finest training pixels, the width of the carving probe as for a NeRF; 0 = the raw Gaussians).

Silhouettes (:func:`~text3d.export.gaussian_views.silhouette_fill`): a Gaussian render is unlit (each Gaussian draws its own
colour, no shading shows depth), so a render cannot tell a pit or tunnel through a gap in the
front of a hollow shell (SDS leaves them hollow) from solid: the back wall shows through in the
same colour. Only the background showing tells empty space. So every node is raised to
``2 x level x`` the least alpha that :data:`HULL_VIEWS` renders at the training pixel show at it:
where all of them show it covered (alpha >= 0.5) it is solid, and the solid is the visual hull of
the renders, intersected with nothing a render could refute (the raise is continuous, so the hull's
surface falls between the grid nodes instead of on voxel steps). On the
quickstart's Gaussian runs the renders show no see-through pixel inside the outline (0-0.1 %,
64² views), yet carving from outside alone left genus 13-41 in the sphere, capsule and pyramid
(volume 0.44-0.77x); with the fill: the true genus, volume 0.93-1.28x. The visual hull of a torus
holds part of the saddle around its hole (an analytic torus shell: 1.22x the volume).

Enclosed cavities (the hollow inside of a shell of Gaussians, as SDS tends to make) are filled
before marching cubes: a DCC tool wants one closed outer surface, not a double wall.

Colour (:class:`ViewColors`): ``N`` views around the object are rendered with
:func:`text3d.renderers.rasterize_gaussians` (``RGB+ED``, black background so the colour divided
by the alpha has no background in it). A surface point takes, in each view, the bilinear colour
at its projection if the view sees it: facing the camera, the pixel mostly opaque, and the point
not deeper than the rendered expected depth plus a tolerance (not hidden by something in front; a
point in front of it, on the silhouettes' hull around a haze, is seen). The
views are averaged with weight ``cos^2`` of the angle between the normal and the view direction.
Points no view sees (deep folds) take the colour of the nearest Gaussian.
"""

from __future__ import annotations

import dataclasses

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.core.errors import Text3DError
from text3d.renderers.gaussians import sh_dc_to_rgb
from .grid import DensityGrid, EmptyDensityError, level_from_opacity
from .config import ExportConfig, check_export_config
from .mesh import DEFAULT_PORE_FRACTION, PORE_PIXELS, STEM, ExportResult, StageFn, StageTimings, export_grid, timed
# Views, colours and the silhouette fill live in gaussian_views; re-exported here, where callers found them.
from .gaussian_views import (DEPTH_TOLERANCE, HULL_VIEWS, VIEWS, ViewColors,  # noqa: F401
                             fibonacci_directions, render_views, silhouette_fill, view_size)

logger = logging.getLogger(__name__)

CUTOFF_SIGMA = 3.0
"""Each Gaussian is splatted within this many standard deviations (box per axis, ellipsoid inside)."""
GRID_FILTER_CELLS = 0.5
"""Each Gaussian is smoothed by an isotropic Gaussian of this many grid cells (standard deviation)
before splatting, so none is thinner than the grid can sample (see :meth:`GaussianCloud.smoothed`)."""
PIXEL_FILTER = 0.5
"""... and to at least this many training pixels (standard deviation): no render constrains the bumps of
single Gaussians finer than that, which a fine grid would otherwise draw as surface. Measured on the
quickstart's green torus: area 1.10x at 128³ and 1.17x at 256³ with the cell filter alone, 1.10x at
both with this (and the continuous silhouette fill); the sphere and capsule move by < 0.01."""
RENDER_LOW_PASS = 0.3
"""The rasteriser's low-pass, pixels² (``eps2d`` of :class:`text3d.renderers.splatting.GaussianRendererConfig`,
3DGS's value): added to every footprint at the training pixel size (see the module docstring)."""
MIN_OPACITY = 1.0 / 255.0
"""Fainter Gaussians are skipped (they cannot change a rendered pixel)."""
BOUNDS_QUANTILE = 0.001
"""The grid spans the 3-sigma boxes of the Gaussians between this quantile and 1 - it per axis,
so a few far floaters do not shrink the object to a corner of the grid (they are dropped anyway)."""
COARSE_SIGMA_CELLS = 3.0
"""A Gaussian is splatted on the coarsest grid (stride 1, 2, 4, ...) whose cells are at most this many
times smaller than its smallest standard deviation (trilinear error ~ 1 / (8 x this^2) of the peak)."""
SPLAT_BUDGET = 1 << 21
"""Gaussian-node pairs per splatting piece (a few float32 temporaries of this size)."""
BOX_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192,
             224, 256, 320, 384, 448, 512, 640, 768, 896, 1025)
"""Box sizes (nodes per axis) the boxes are rounded up to: groups stay few, padding < 25 % per axis."""


@dataclass
class GaussianCloud:
    """3D Gaussians in their activated form (as :func:`text3d.renderers.rasterize_gaussians` takes them).

    Attributes:
        means: ``[N, 3]`` world positions. quats: ``[N, 4]`` wxyz (any norm). scales: ``[N, 3]`` standard
            deviations (linear). opacities: ``[N]`` in [0, 1].
        colors: ``[N, 3]`` RGB, or ``[N, K, 3]`` SH coefficients with ``sh_degree``.
        sh_degree: None for RGB colours.
        rasterize_mode: how they were drawn in training (``renderer.rasterize_mode``; a ``.ply`` does not
            say, so ``classic``): the footprints and the renders of the export draw them the same way.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor
    sh_degree: Optional[int] = None
    rasterize_mode: str = "classic"

    @classmethod
    def from_params(cls, params: Dict[str, Tensor], sh_degree: int) -> "GaussianCloud":
        """From unconstrained parameters (a :class:`~text3d.scene.gaussians.GaussianModel`'s or a 3DGS .ply's)."""
        p = {k: v.detach().float().cpu() for k, v in params.items()}
        sh = torch.cat([p["sh0"], p["shN"]], dim=1)
        colors, degree = (sh, sh_degree) if sh_degree > 0 else (sh_dc_to_rgb(sh[:, 0]), None)
        return cls(p["means"], p["quats"], torch.exp(p["log_scales"]), torch.sigmoid(p["opacity_logits"]),
                   colors, degree)

    def translated(self, offset: Tensor) -> "GaussianCloud":
        """The same Gaussians moved by ``offset`` ``[3]``."""
        return dataclasses.replace(self, means=self.means + offset.to(self.means))

    @classmethod
    def from_model(cls, model: torch.nn.Module, rasterize_mode: str = "classic") -> "GaussianCloud":
        from text3d.scene.gaussians import model_params

        cloud = cls.from_params(model_params(model), model.cfg.sh_degree)
        return dataclasses.replace(cloud, rasterize_mode=rasterize_mode)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def base_colors(self) -> Tensor:
        """``[N, 3]`` view-independent colours in [0, 1] (the SH DC term)."""
        if self.sh_degree is None:
            return self.colors.clamp(0, 1)
        return sh_dc_to_rgb(self.colors[:, 0]).clamp(0, 1)

    def covariances(self) -> Tensor:
        from text3d.renderers.gaussians import quat_scale_to_covar

        return quat_scale_to_covar(self.quats, self.scales)

    def smoothed(self, sigma: float) -> "GaussianCloud":
        """Every Gaussian convolved with an isotropic one of standard deviation ``sigma``, its integral
        kept (scales ``sqrt(s^2 + sigma^2)``, opacity x the ratio of the volumes). A Gaussian thinner
        than a grid cell would fall between the nodes (a flat disc of a surface layer edge-on to the
        grid: holes); smoothed to about a cell it is sampled, and the optical depth across it, which
        sets the level, is unchanged (Mip-Splatting's 3D filter does the same for rendering)."""
        scales = torch.sqrt(self.scales ** 2 + sigma ** 2)
        opacities = self.opacities * (self.scales / scales).prod(1)
        return dataclasses.replace(self, scales=scales, opacities=opacities)

    def as_rendered(self, pixel: float, low_pass: Optional[float] = None) -> "GaussianCloud":
        """Every Gaussian widened as the rasteriser draws it at a pixel of ``pixel`` world units:
        ``low_pass`` (pixels², default :data:`RENDER_LOW_PASS`) ``x pixel²`` added to its covariance
        (isotropic, so to each scale²), peak opacity kept (see the module docstring) — or, for a cloud
        drawn ``antialiased``, its integral kept (:meth:`smoothed`, the rasteriser's compensation in 3D);
        ``pixel`` 0 returns the cloud unchanged."""
        low_pass = RENDER_LOW_PASS if low_pass is None else low_pass
        if pixel <= 0 or low_pass <= 0:
            return self
        if self.rasterize_mode == "antialiased":
            return self.smoothed(math.sqrt(low_pass) * pixel)
        return dataclasses.replace(self, scales=torch.sqrt(self.scales ** 2 + low_pass * pixel ** 2))

    def usable(self) -> Tensor:
        """``[N]`` bool: finite and at least :data:`MIN_OPACITY` opaque."""
        finite = torch.isfinite(torch.cat([self.means, self.quats, self.scales, self.opacities[:, None]], 1)).all(1)
        return finite & (self.opacities >= MIN_OPACITY) & (self.scales > 0).all(1)


# ------------------------------------------------------------------------------------------ density
def gaussian_bounds(cloud: GaussianCloud) -> Tuple[np.ndarray, np.ndarray]:
    """``(lo [3], hi [3])``: the box of the usable Gaussians' 3-sigma extents (see :data:`BOUNDS_QUANTILE`).

    Raises:
        EmptyDensityError: no Gaussian is finite and visible.
    """
    ok = cloud.usable()
    if not bool(ok.any()):
        raise EmptyDensityError(f"no surface: none of the {len(cloud)} Gaussians is finite and at least "
                                f"{MIN_OPACITY:.4f} opaque; train more steps (or check the .ply)")
    sd = cloud.covariances()[ok].diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt().double()
    mu = cloud.means[ok].double()
    q = BOUNDS_QUANTILE if int(ok.sum()) * BOUNDS_QUANTILE >= 1 else 0.0
    lo = torch.quantile(mu - CUTOFF_SIGMA * sd, q, dim=0) if q else (mu - CUTOFF_SIGMA * sd).min(0).values
    hi = torch.quantile(mu + CUTOFF_SIGMA * sd, 1 - q, dim=0) if q else (mu + CUTOFF_SIGMA * sd).max(0).values
    return lo.numpy(), hi.numpy()


def _box_size(width: Tensor) -> Tensor:
    """Each width rounded up to the next of :data:`BOX_SIZES`."""
    sizes = torch.tensor(BOX_SIZES)
    return sizes[torch.searchsorted(sizes, width.clamp(max=BOX_SIZES[-1]))]


def splat_density(cloud: GaussianCloud, origin: np.ndarray, spacing: float, n: int,
                  budget: int = SPLAT_BUDGET) -> Tuple[np.ndarray, int]:
    """``D`` (see the module docstring) at the ``n^3`` nodes ``origin + (i, j, k) * spacing``.

    A Gaussian whose smallest standard deviation spans at least :data:`COARSE_SIGMA_CELLS` cells of
    a grid with 2, 4, 8... times the spacing is splatted on that coarser grid (8, 64, 512... times
    fewer nodes), which is then trilinearly upsampled: it is smooth at that scale (at most ~1 %
    of its peak off). Only Gaussians small against the fine cells cost fine nodes.

    Returns:
        ``[n, n, n]`` float32 values (axis 0 is world x) and the number of Gaussian-node pairs evaluated.
    """
    ok = cloud.usable()
    means = cloud.means[ok].float()
    cov = cloud.covariances()[ok].double()
    prec = torch.linalg.inv(cov + 1e-12 * torch.eye(3, dtype=cov.dtype)).float()  # [G,3,3]
    sd = cov.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt().float()
    op = cloud.opacities[ok].float()
    smallest = cloud.scales[ok].float().min(1).values
    max_level = 0
    while (n - 1) % (2 ** (max_level + 1)) == 0 and (n - 1) // 2 ** (max_level + 1) >= 8:
        max_level += 1
    level = torch.floor(torch.log2((smallest / (COARSE_SIGMA_CELLS * spacing)).clamp(min=1.0))).long()
    level = level.clamp(max=max_level)
    total: Optional[Tensor] = None
    pairs = 0
    for lv in range(int(level.max()) if len(level) else 0, -1, -1):  # coarse to fine
        stride = 2 ** lv
        m = (n - 1) // stride + 1
        if total is not None:
            total = F.interpolate(total[None, None], size=(m, m, m), mode="trilinear", align_corners=True)[0, 0]
        pick = level == lv
        if not bool(pick.any()):
            continue
        values, count = _splat_grid(means[pick], prec[pick], sd[pick], op[pick], origin, spacing * stride, m, budget)
        total = values if total is None else total + values
        pairs += count
    if total is None:
        return np.zeros((n, n, n), np.float32), 0
    return total.numpy(), pairs


def _splat_grid(means: Tensor, prec: Tensor, sd: Tensor, op: Tensor, origin: np.ndarray, spacing: float, n: int,
                budget: int) -> Tuple[Tensor, int]:
    """Every Gaussian on its 3-sigma box of the ``n^3`` grid: ``[n, n, n]`` and the pairs evaluated."""
    org = torch.as_tensor(origin, dtype=torch.float32)
    lo = torch.ceil((means - CUTOFF_SIGMA * sd - org) / spacing).clamp(min=0)
    hi = torch.floor((means + CUTOFF_SIGMA * sd - org) / spacing).clamp(max=n - 1)
    inside = (lo <= hi).all(1)  # the box meets the grid
    lo, hi = lo.long(), hi.long()
    size = _box_size(hi - lo + 1)
    grid = torch.zeros(n ** 3)
    pairs = 0
    idx_in = inside.nonzero()[:, 0]
    keys = size[idx_in] @ torch.tensor([1 << 22, 1 << 11, 1])  # one key per box size
    order = torch.argsort(keys, stable=True)
    idx_sorted = idx_in[order]
    _, counts = torch.unique_consecutive(keys[order], return_counts=True)
    start = 0
    for count in counts.tolist():  # one dense problem per box size
        group = idx_sorted[start:start + count]
        start += count
        sx, sy, sz = size[group[0]].tolist()
        for g, x0, x1 in _pieces(len(group), sx, sy * sz, budget):
            gi = group[g]
            _splat_piece(grid, means[gi], prec[gi], op[gi], lo[gi], hi[gi], x0, x1, sy, sz, org, spacing, n)
            pairs += len(gi) * (x1 - x0) * sy * sz
    return grid.view(n, n, n), pairs


def _pieces(count: int, sx: int, slab: int, budget: int) -> Iterator[Tuple[slice, int, int]]:
    """(Gaussians, x-offset range) pieces of about ``budget`` pairs: many small boxes at once, or
    one huge box in x-slabs."""
    per_box = sx * slab
    if per_box <= budget:
        step = max(1, budget // per_box)
        for g0 in range(0, count, step):
            yield slice(g0, min(count, g0 + step)), 0, sx
    else:
        xs = max(1, budget // slab)
        for g0 in range(count):
            for x0 in range(0, sx, xs):
                yield slice(g0, g0 + 1), x0, min(sx, x0 + xs)


def _splat_piece(grid: Tensor, mu: Tensor, prec: Tensor, op: Tensor, lo: Tensor, hi: Tensor, x0: int, x1: int,
                 sy: int, sz: int, org: Tensor, spacing: float, n: int) -> None:
    """Add ``G`` Gaussians over their box nodes ``[x0, x1) x [0, sy) x [0, sz)`` (offsets from ``lo``)
    into the flat ``grid``. The quadratic form is summed from per-axis [G, X], [G, Y], [G, Z] terms
    broadcast to [G, X, Y, Z]; nodes past a Gaussian's own box (its size was rounded up) get +inf."""
    axes = []
    for a, (o0, o1) in enumerate(((x0, x1), (0, sy), (0, sz))):
        i = lo[:, a:a + 1] + torch.arange(o0, o1)  # [G, L] node index
        d = org[a] + i.float() * spacing - mu[:, a:a + 1]
        pad = torch.where(i > hi[:, a:a + 1], math.inf, 0.0)
        axes.append((i.clamp(max=n - 1).int(), d, pad))  # int32 flat indices: n^3 < 2^31 up to n = 1290
    (ix, dx, px), (iy, dy, py), (iz, dz, pz) = axes
    P = prec
    qx = P[:, 0, 0, None] * dx * dx + px  # [G,X]
    qy = P[:, 1, 1, None] * dy * dy + py  # [G,Y]
    qz = P[:, 2, 2, None] * dz * dz + pz  # [G,Z]
    qxy = qx[:, :, None] + qy[:, None, :] + 2 * P[:, 0, 1, None, None] * dx[:, :, None] * dy[:, None, :]  # [G,X,Y]
    cross = 2 * (P[:, 0, 2, None, None] * dx[:, :, None] + P[:, 1, 2, None, None] * dy[:, None, :])  # [G,X,Y]
    # full-size [G,X,Y,Z] passes are the cost: one allocation, the rest in place
    m = qxy[..., None] + qz[:, None, None, :]
    m.addcmul_(cross[..., None], dz[:, None, None, :])
    outside = m >= CUTOFF_SIGMA ** 2
    value = m.mul_(-0.5).exp_().masked_fill_(outside, 0.0).mul_(op[:, None, None, None])
    base = (ix[:, :, None] * n + iy[:, None, :]) * n  # [G,X,Y]
    flat = base[..., None] + iz[:, None, None, :]
    grid.index_add_(0, flat.reshape(-1), value.reshape(-1))


def fill_cavities(values: np.ndarray, level: float) -> int:
    """Raise enclosed below-level regions (not connected to the grid's boundary) above the level, in
    place; returns how many nodes were raised."""
    from scipy.ndimage import binary_fill_holes

    solid = values >= level
    filled = binary_fill_holes(solid)
    cavity = filled & ~solid
    count = int(cavity.sum())
    if count:
        values[cavity] = 2.0 * level
    return count


def line_thickness(cloud: GaussianCloud) -> float:
    """Opacity-weighted median over the usable Gaussians of their mean thickness along the grid axes
    (``1 / sqrt((Sigma^-1)_aa)``: a line's integral through a Gaussian is ``sqrt(2 pi)`` x it x the peak)."""
    ok = cloud.usable()
    prec = torch.linalg.inv(cloud.covariances()[ok].double() + 1e-12 * torch.eye(3, dtype=torch.float64))
    t = prec.diagonal(dim1=-2, dim2=-1).clamp(min=1e-30).rsqrt().mean(1)
    w = cloud.opacities[ok].double()
    order = torch.argsort(t)
    cum = torch.cumsum(w[order], 0)
    return float(t[order][torch.searchsorted(cum, 0.5 * cum[-1]).clamp(max=len(t) - 1)])


def gaussian_grid(cloud: GaussianCloud, resolution: int, level: Optional[float] = None,
                  timings: Optional[Dict[str, float]] = None, pixel: float = 0.0) -> DensityGrid:
    """The Gaussians' density on ``resolution + 1`` nodes per axis over a cube around them, its level
    (given, or from the half-opacity rule: see the module docstring) and its cavities filled. Each
    Gaussian is first smoothed (integral kept) to :data:`GRID_FILTER_CELLS` cells or
    :data:`PIXEL_FILTER` x ``pixel`` (the training pixel, world units), whichever is wider.

    Raises:
        EmptyDensityError: no usable Gaussian, no node reaches ``level``, or no line gets half opaque.
    """
    timings = timings if timings is not None else {}
    if resolution < 8:
        raise Text3DError(f"export resolution must be >= 8 cells per axis, got {resolution}")
    lo, hi = gaussian_bounds(cloud)
    side = float((hi - lo).max())
    spacing = side / (resolution - 2)  # one empty cell around the object on each side
    origin = ((lo + hi) / 2 - spacing * resolution / 2).astype(np.float32)
    smooth = cloud.smoothed(max(GRID_FILTER_CELLS * spacing, PIXEL_FILTER * pixel))
    with timed(timings, "density splat"):
        values, pairs = splat_density(smooth, origin, spacing, resolution + 1)
    peak = float(values.max())
    k = 1.0 / (math.sqrt(2 * math.pi) * line_thickness(smooth))
    if level is None:
        with timed(timings, "iso level"):
            stride = 4 if resolution >= 128 else 1
            found = level_from_opacity(values * k, spacing, stride)
        if found is None:
            raise EmptyDensityError(
                f"no surface: no line through the Gaussians gets half opaque (their density peaks at {peak:.3g}); "
                f"train more steps, or pass an explicit --level below {peak:.3g}")
        level, source = found / k, "auto"
    else:
        if not 0 < level < peak:
            raise EmptyDensityError(f"no surface at level {level:g}: the Gaussians' density on the grid peaks at "
                                    f"{peak:.3g}; pass a --level below that (lower keeps more), or train more steps")
        source = "given"
    with timed(timings, "cavity fill"):
        filled = fill_cavities(values, level)
    logger.info("Gaussian density: %d Gaussian-node pairs, level %.4g (%s), %d cavity nodes filled",
                pairs, level, source, filled)
    return DensityGrid(values, origin, spacing, float(level), source, pairs, k)


# ------------------------------------------------------------------------------------------ export
def export_gaussians(cloud: GaussianCloud, settings: ExportConfig, out_dir: Path, name: str = STEM,
                     source: Optional[Dict[str, Any]] = None, n_views: int = VIEWS,
                     progress: Optional[StageFn] = None) -> ExportResult:
    """Extract, texture and write a mesh of 3D Gaussians into ``out_dir`` (see the module docstring);
    ``progress`` is told the name of each stage as it starts.

    Raises:
        EmptyDensityError: no surface (nothing is written then).
    """
    check_export_config(settings)
    timings = StageTimings(progress)
    lo, hi = gaussian_bounds(cloud)
    pixel = footprint_pixel(settings, lo, hi)
    if settings.pore_size is None:  # carve with a probe of two pixels, as for a NeRF
        settings = dataclasses.replace(settings, pore_size=PORE_PIXELS * pixel)
    grid = gaussian_grid(cloud.as_rendered(pixel), settings.resolution, settings.level, timings, pixel)
    with timed(timings, "silhouette fill"):
        hull = silhouette_fill(grid, cloud, pixel, (lo, hi)) if pixel > 0 else {"views": 0, "filled_nodes": 0}
    centre, radius = (lo + hi) / 2, 0.5 * float(np.linalg.norm(hi - lo))
    with timed(timings, "render views"):
        views = render_views(cloud, centre, radius, n_views, view_size(settings.texture_size))
    tolerance = DEPTH_TOLERANCE * float((hi - lo).max()) + 2 * grid.spacing
    colors = ViewColors(cloud, views, tolerance)
    src = {**(source or {}), "num_gaussians": len(cloud),
           "footprint_low_pass": {"pixel": pixel, "eps2d_px2": RENDER_LOW_PASS, "rasterize_mode": cloud.rasterize_mode},
           "silhouette_fill": hull}
    return export_grid(grid, colors, settings, out_dir, name=name, source=src, timings=timings,
                       colour_info=colors.info)


def footprint_pixel(settings: ExportConfig, lo: np.ndarray, hi: np.ndarray) -> float:
    """The training pixel the footprints are widened at: the pore size (the carving probe, two of a
    run's finest training pixels) over :data:`~text3d.export.mesh.PORE_PIXELS`, or without one
    :data:`~text3d.export.mesh.DEFAULT_PORE_FRACTION` of the Gaussians' box side."""
    if settings.pore_size is not None:
        return float(settings.pore_size) / PORE_PIXELS
    return assumed_pixel(lo, hi)


def assumed_pixel(lo: np.ndarray, hi: np.ndarray) -> float:
    """The training pixel assumed for Gaussians that do not record theirs (a ``.ply``):
    :data:`~text3d.export.mesh.DEFAULT_PORE_FRACTION` of the side of their box ``(lo, hi)``."""
    return DEFAULT_PORE_FRACTION * float((hi - lo).max())


def load_gaussian_ply(path: Path) -> Tuple[GaussianCloud, Dict[str, Any]]:
    """A 3DGS ``.ply`` as a :class:`GaussianCloud`, with a description for ``export.json``."""
    from text3d.scene.gaussians import read_ply

    params, degree = read_ply(path)
    return GaussianCloud.from_params(params, degree), {"ply": str(path)}


__all__: List[str] = ["GaussianCloud", "export_gaussians", "fill_cavities", "gaussian_grid", "load_gaussian_ply",
                      "splat_density"]
