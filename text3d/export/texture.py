"""UV unwrap (xatlas) and albedo baking: every texel gets the field's colour at its surface point.

The bake does not render views: each UV triangle is rasterised into the texture (texel centres,
barycentric coordinates), the texel's 3D point is the same barycentric mix of the triangle's
corners, and the colour field is queried there. Texels no triangle covers (chart gutters and the
space between charts) then take the colour of the nearest covered texel, so bilinear filtering
and mipmaps at chart seams never mix in a background colour.

UV convention: ``uv = (s, t)`` with ``t`` pointing *down* the image (glTF's: ``(0, 0)`` is the
top-left corner of the first image row). OBJ's ``vt`` points up; its writer flips ``t``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import numpy as np
from torch import Tensor

from .grid import evaluate_points
from .surface import Surface

logger = logging.getLogger(__name__)

ColorFn = Callable[[Tensor], Tensor]
"""``[N, 3]`` world points (float32, CPU) -> ``[N, 3]`` albedo in [0, 1] (sRGB-encoded, as rendered)."""

SurfaceColorFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``points [N, 3]`` on the surface and their outward normals ``[N, 3]`` (world, float64; normals
interpolated, not renormalised) -> ``[N, 3]`` albedo in [0, 1]. What the bake needs from any
representation: a field reads itself just inside (:func:`field_colors`), 3D Gaussians project the
points into rendered views (:mod:`text3d.export.gaussians`)."""

CHARTS_PER_MESH = 128
"""xatlas grows each chart until it costs too much, which takes ~12 s on a 50k-face marching
cubes sphere (it is superlinear in the chart size); capping a chart's area at 1/128 of the
surface gives ~2 s, ~200 charts and the same packing efficiency (~60 %). Its chart-refining
iterations are skipped too (``max_iterations = 0``): 6 s -> 2.5-3.5 s on the 50k-face bumpy
benchmark surface (1,000-1,500 charts, ~80 % packed either way); seams cost nothing here since
every texel is baked from the field, not projected from views."""

MAX_RASTER_CANDIDATES = 1 << 22
"""(triangle, texel) pairs tested per rasterisation chunk; bounds memory to ~200 MB."""


@dataclass
class UVLayout:
    """A surface cut along its chart seams.

    Attributes:
        vmapping: ``[V']`` index of each UV vertex's surface vertex (seam vertices repeat).
        faces: ``[F, 3]`` faces into the UV vertices (same order and winding as the surface's).
        uvs: ``[V', 2]`` float32 in [0, 1], ``t`` down (see the module docstring).
    """

    vmapping: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray


def unwrap(surface: Surface, texture_size: int, visible: Optional[np.ndarray] = None) -> UVLayout:
    """Charts and a packed atlas for ``surface`` with xatlas, sized for a ``texture_size``² image.

    Args:
        visible: ``[F]`` bool, the faces a viewer can see (:func:`text3d.export.visibility.visible_faces`);
            only they get atlas area. Hidden faces get UVs of zero area (all three corners on one
            covered texel): no texel is spent on them. None = every face.
    """
    if visible is None or visible.all() or not visible.any():
        return _unwrap_all(surface, texture_size)
    shown = np.flatnonzero(visible)
    hidden = np.flatnonzero(~visible)
    part = _unwrap_all(Surface(surface.vertices, surface.faces[shown]), texture_size)
    faces = np.empty((len(surface.faces), 3), np.int64)
    faces[shown] = part.faces
    extra = len(part.vmapping) + np.arange(3 * len(hidden)).reshape(-1, 3)
    faces[hidden] = extra
    vmapping = np.concatenate([part.vmapping, surface.faces[hidden].reshape(-1)])
    anchor = part.uvs[part.faces[0, 0]]  # a corner of a charted face: its texel is baked
    uvs = np.concatenate([part.uvs, np.repeat(anchor[None, :], 3 * len(hidden), axis=0)])
    return UVLayout(vmapping, faces, uvs.astype(np.float32))


def _unwrap_all(surface: Surface, texture_size: int) -> UVLayout:
    """:func:`unwrap` of every face."""
    import xatlas

    v = surface.vertices.astype(np.float32)
    f = surface.faces.astype(np.uint32)
    tri = v[surface.faces]
    area = float(0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())
    atlas = xatlas.Atlas()
    atlas.add_mesh(v, f)
    chart = xatlas.ChartOptions()
    chart.max_chart_area = area / CHARTS_PER_MESH
    chart.max_iterations = 0
    pack = xatlas.PackOptions()
    # one atlas of about texture_size texels a side (1.0-1.3x; the UVs are normalised to it), so
    # its padding is about as many texels of the final texture. 2 texels of padding between charts
    # keep bilinear filtering of one chart off its neighbours (the gutters are filled anyway);
    # 4 cost a fifth of the covered texels on the benchmark surface (46 % -> 37 %).
    pack.texels_per_unit = 0.75 * texture_size / max(area, 1e-12) ** 0.5
    pack.padding = 2
    atlas.generate(chart, pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas made {atlas.atlas_count} atlases; expected one")
    vmapping, faces, uvs = atlas[0]
    logger.debug("xatlas: %d charts, atlas %dx%d, utilisation %.2f", atlas.chart_count, atlas.width,
                 atlas.height, atlas.utilization)
    return UVLayout(vmapping.astype(np.int64), faces.astype(np.int64), uvs.astype(np.float32))


def _chunks(counts: np.ndarray, budget: int) -> Iterator[slice]:
    """Consecutive index ranges whose ``counts`` add up to at most ``budget`` (or one item)."""
    cum = np.cumsum(counts)
    start = 0
    while start < len(counts):
        base = cum[start - 1] if start else 0
        end = max(int(np.searchsorted(cum, base + budget, side="right")), start + 1)
        yield slice(start, end)
        start = end


def _texel_boxes(tri: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Inclusive ``[F, 2]`` first and last texel (column, row) whose centre can lie in each triangle."""
    lo = np.clip(np.ceil(tri.min(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    hi = np.clip(np.floor(tri.max(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    return lo, np.maximum(hi - lo + 1, 0)


def _barycentric(tri: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``[N, 3]`` barycentric coordinates of ``points [N, 2]`` in ``tri [N, 3, 2]`` (NaN if degenerate)."""
    e1, e2, d = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], points - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        b1 = np.where(np.abs(det) > 1e-12, (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det, np.nan)
        b2 = np.where(np.abs(det) > 1e-12, (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det, np.nan)
    return np.stack([1.0 - b1 - b2, b1, b2], axis=1)


def rasterize(uvs: np.ndarray, faces: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texels whose centre lies in a UV triangle (each triangle's bounding box, tested at once).

    Args:
        uvs: ``[V', 2]`` in [0, 1], ``t`` down. faces: ``[F, 3]``. size: texture side in texels.

    Returns:
        ``texel [N, 2]`` (row, column), each once, ``face [N]`` and ``bary [N, 3]`` barycentric
        coordinates.
    """
    tri_all = uvs[faces].astype(np.float64) * size  # [F, 3, 2] texel units, x = column, y = row
    lo_all, w_all = _texel_boxes(tri_all, size)
    out_texel, out_face, out_bary = [], [], []
    for part in _chunks(w_all[:, 0] * w_all[:, 1], MAX_RASTER_CANDIDATES):
        lo, w = lo_all[part], w_all[part]
        count = w[:, 0] * w[:, 1]
        f = np.repeat(np.arange(len(count)), count)  # candidate -> triangle of this chunk
        k = np.arange(len(f)) - np.repeat(np.cumsum(count) - count, count)
        col, row = lo[f, 0] + k % w[f, 0], lo[f, 1] + k // w[f, 0]
        bary = _barycentric(tri_all[part][f], np.stack([col + 0.5, row + 0.5], axis=1))
        inside = (bary >= -1e-9).all(axis=1)  # NaN (degenerate triangle) is never inside
        out_texel.append(np.stack([row, col], axis=1)[inside])
        out_face.append(f[inside] + part.start)
        out_bary.append(bary[inside])
    if not out_texel:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros((0, 3))
    texel = np.concatenate(out_texel)
    # a texel centre on a shared edge is inside both triangles: query it once
    _, first = np.unique(texel[:, 0] * size + texel[:, 1], return_index=True)
    return texel[first], np.concatenate(out_face)[first], np.concatenate(out_bary)[first]


def fill_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Give every uncovered texel the colour of the nearest covered one (an unlimited dilation)."""
    from scipy.ndimage import distance_transform_edt

    if covered.all() or not covered.any():
        return image
    _, (rows, cols) = distance_transform_edt(~covered, return_indices=True)
    return image[rows, cols]


def texel_samples(surface: Surface, layout: UVLayout, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The texels a UV triangle covers, with their surface points and interpolated vertex normals.

    Returns:
        ``texel [N, 2]`` (row, column), ``points [N, 3]`` float64 world points and ``normals [N, 3]``
        float64 barycentric mixes of the corners' unit normals (not renormalised).
    """
    texel, face, bary = rasterize(layout.uvs, layout.faces, size)
    corners = layout.vmapping[layout.faces[face]]  # [N, 3] surface vertex ids
    points = np.einsum("nk,nkd->nd", bary, surface.vertices[corners].astype(np.float64))
    normals = np.einsum("nk,nkd->nd", bary, surface.vertex_normals()[corners].astype(np.float64))
    return texel, points, normals


def bake_texture(surface: Surface, layout: UVLayout, colors: SurfaceColorFn, size: int) -> Tuple[np.ndarray, float]:
    """A ``[size, size, 3]`` uint8 albedo texture: ``colors`` at every covered texel's surface point,
    gutters filled from the nearest covered texel.

    Returns:
        The texture and the fraction of texels covered by a triangle (the rest are gutter fill).
    """
    texel, points, normals = texel_samples(surface, layout, size)
    colours = np.clip(colors(points, normals), 0.0, 1.0)
    image = np.zeros((size, size, 3), np.float32)
    covered = np.zeros((size, size), bool)
    image[texel[:, 0], texel[:, 1]] = colours
    covered[texel[:, 0], texel[:, 1]] = True
    image = fill_gutters(image, covered)
    return np.round(image * 255.0).astype(np.uint8), float(covered.mean())


def field_colors(color_fn: ColorFn, inset: float = 0.0) -> SurfaceColorFn:
    """A colour field as a :data:`SurfaceColorFn`: ``color_fn`` read ``inset`` world units inside the
    surface, along the normal (a NeRF's colour is trained where its density builds up, just inside
    the iso-surface)."""

    def colors(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        at = points - inset * normals if inset else points
        return evaluate_points(color_fn, at.astype(np.float32))

    return colors


def bake_albedo(surface: Surface, layout: UVLayout, color_fn: ColorFn, size: int,
                inset: float = 0.0) -> Tuple[np.ndarray, float]:
    """A ``[size, size, 3]`` uint8 albedo texture of ``surface`` from the colour field ``color_fn``.

    Args:
        inset: query each texel's point this far inside the surface (along the interpolated
            vertex normal), world units; see :func:`field_colors`.

    Returns:
        The texture and the fraction of texels covered by a triangle (the rest are gutter fill).
    """
    return bake_texture(surface, layout, field_colors(color_fn, inset), size)


def vertex_colors(surface: Surface, colors: SurfaceColorFn) -> np.ndarray:
    """``[V, 3]`` float32 albedo in [0, 1] at the vertices (given their unit normals)."""
    normals = surface.vertex_normals().astype(np.float64)
    return np.clip(colors(surface.vertices.astype(np.float64), normals), 0.0, 1.0).astype(np.float32)
