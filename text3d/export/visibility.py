"""Which faces of a mesh a viewer can see: depth-buffered orthographic views from all around.

The check is independent of how the surface was made (it reads the triangles only), so it
measures what carving promises: the share of faces, and of area, that no view shows
(``export.json``'s ``hidden``). In each of ``views`` directions (a Fibonacci sphere) the mesh is
rasterised into a ``size``² depth buffer over its bounding sphere; a face is seen if it owns a
pixel (it is the nearest there), or, for a face smaller than a pixel that owns none, if it faces
the view and its centroid lies within a pixel's depth of the buffer there.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Tuple

import numpy as np

from .carve import fibonacci_sphere
from .texture import MAX_RASTER_CANDIDATES, _barycentric, _chunks, _texel_boxes

logger = logging.getLogger(__name__)

VIEWS = 14
"""Directions the mesh is looked at from (every direction within ~35 degrees of one)."""
VIEW_SIZE = 192
"""Depth-buffer side, pixels over the bounding sphere's diameter."""


def _basis(d: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to ``d`` and each other."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(helper, d)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def _nearest_owner(tri: np.ndarray, height: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Depth buffer (``height``: larger is nearer the viewer) of triangles ``tri [F, 3, 2]`` in pixel
    units: ``[size, size]`` nearest height (-inf where empty) and the owning face (-1 where empty)."""
    best = np.full(size * size, -np.inf)
    owner = np.full(size * size, -1, np.int64)
    lo_all, w_all = _texel_boxes(tri, size)
    for part in _chunks(w_all[:, 0] * w_all[:, 1], MAX_RASTER_CANDIDATES):
        lo, w = lo_all[part], w_all[part]
        count = w[:, 0] * w[:, 1]
        f = np.repeat(np.arange(len(count)), count)
        k = np.arange(len(f)) - np.repeat(np.cumsum(count) - count, count)
        col, row = lo[f, 0] + k % w[f, 0], lo[f, 1] + k // w[f, 0]
        bary = _barycentric(tri[part][f], np.stack([col + 0.5, row + 0.5], axis=1))
        inside = (bary >= -1e-9).all(axis=1)
        f, col, row, bary = f[inside] + part.start, col[inside], row[inside], bary[inside]
        z = np.einsum("nk,nk->n", bary, height[f])
        flat = row * size + col
        order = np.lexsort((z, flat))  # per pixel, the nearest last
        last = np.r_[flat[order][1:] != flat[order][:-1], True]
        pick = order[last]
        nearer = z[pick] > best[flat[pick]]
        best[flat[pick[nearer]]] = z[pick[nearer]]
        owner[flat[pick[nearer]]] = f[pick[nearer]]
    return best.reshape(size, size), owner.reshape(size, size)


def visible_faces(vertices: np.ndarray, faces: np.ndarray, views: int = VIEWS, size: int = VIEW_SIZE) -> np.ndarray:
    """``[F]`` bool: faces seen by at least one of ``views`` orthographic views (see the module docstring)."""
    v = vertices.astype(np.float64)
    centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
    radius = float(np.linalg.norm(v - centre, axis=1).max()) * 1.01 + 1e-12
    pixel = 2 * radius / size
    tri3 = v[faces]
    normals = np.cross(tri3[:, 1] - tri3[:, 0], tri3[:, 2] - tri3[:, 0])
    centroid = tri3.mean(axis=1)
    seen = np.zeros(len(faces), bool)
    for d in fibonacci_sphere(views):
        u, w = _basis(d)
        to_px = lambda p: np.stack([(p - centre) @ u, (p - centre) @ w], -1) / pixel + size / 2  # noqa: E731
        height = (tri3 - centre) @ d  # towards the viewer
        best, owner = _nearest_owner(to_px(tri3), height, size)
        seen[owner[owner >= 0]] = True
        c = np.clip(np.floor(to_px(centroid)).astype(np.int64), 0, size - 1)
        front = normals @ d > 0
        near = (centroid - centre) @ d >= best[c[:, 1], c[:, 0]] - 1.5 * pixel
        seen |= front & near & np.isfinite(best[c[:, 1], c[:, 0]])
    return seen


def hidden_share(vertices: np.ndarray, faces: np.ndarray, views: int = VIEWS, size: int = VIEW_SIZE,
                 seen: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Share of faces and of surface area that no view sees (:func:`visible_faces`, or ``seen`` if
    computed already), for ``export.json``."""
    if len(faces) == 0:
        return {"faces": 0.0, "area": 0.0, "views": views, "view_size": size}
    seen = visible_faces(vertices, faces, views, size) if seen is None else seen
    tri = vertices.astype(np.float64)[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return {"faces": round(float((~seen).mean()), 6), "area": round(float(area[~seen].sum() / max(area.sum(), 1e-30)), 6),
            "views": views, "view_size": size}


__all__ = ["VIEWS", "VIEW_SIZE", "hidden_share", "visible_faces"]
