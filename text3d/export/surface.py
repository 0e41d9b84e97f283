"""From a density grid to a clean triangle mesh: marching cubes, floaters, orientation, decimation.

Orientation convention: faces wind counter-clockwise seen from outside, so face normals point out
of the object and the signed volume is positive (what glTF, Blender and trimesh expect).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .grid import DensityGrid, EmptyDensityError

logger = logging.getLogger(__name__)


@dataclass
class Surface:
    """A triangle mesh in world units.

    Attributes:
        vertices: ``[V, 3]`` float32 world points.
        faces: ``[F, 3]`` int64 vertex indices, counter-clockwise seen from outside.
    """

    vertices: np.ndarray
    faces: np.ndarray

    def vertex_normals(self) -> np.ndarray:
        """``[V, 3]`` unit normals: area-weighted mean of the adjacent faces' normals (outward)."""
        return vertex_normals(self.vertices, self.faces)

    def signed_volume(self) -> float:
        """Enclosed volume (divergence theorem); positive when the faces point outward."""
        return signed_volume(self.vertices, self.faces)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    v = vertices.astype(np.float64)[faces]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    v = vertices.astype(np.float64)[faces]
    face_n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])  # length = 2 x area: area weighting
    normals = np.zeros((len(vertices), 3))
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-20, normals / np.maximum(length, 1e-20), np.array([0.0, 0.0, 1.0]))
    return normals.astype(np.float32)


def marching_cubes(grid: DensityGrid) -> Surface:
    """The ``grid.level`` iso-surface, closed at the grid boundary, faces pointing outward.

    The grid is padded with one layer of zero density (the field is empty outside its box), so a
    surface that reaches the boundary is capped instead of left open.
    """
    from skimage.measure import marching_cubes as skimage_mc

    padded = np.pad(grid.values, 1, mode="constant", constant_values=min(0.0, float(grid.values.min())))
    verts, faces, _, _ = skimage_mc(padded, level=grid.level, spacing=(grid.spacing,) * 3, allow_degenerate=False)
    if len(faces) == 0:
        raise EmptyDensityError(f"no surface at level {grid.level:.4g}: marching cubes found no triangle; "
                                "pass a lower --level or train more steps")
    verts = (verts - grid.spacing + grid.origin[None, :]).astype(np.float32)
    faces = faces.astype(np.int64)
    if signed_volume(verts, faces) < 0:  # skimage's winding depends on the gradient direction
        faces = faces[:, ::-1].copy()
    return Surface(verts, faces)


def compact(vertices: np.ndarray, faces: np.ndarray) -> Surface:
    """Drop the vertices no face uses and renumber."""
    used, inverse = np.unique(faces, return_inverse=True)
    return Surface(vertices[used], inverse.reshape(faces.shape).astype(np.int64))


def keep_large_components(surface: Surface, min_ratio: float) -> Surface:
    """Drop the floaters: connected pieces with fewer than ``min_ratio`` x the faces of the largest.

    ``min_ratio = 1`` keeps the largest piece only; ``0`` keeps everything. Pieces are connected
    through shared vertices (marching cubes welds them).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if min_ratio <= 0:
        return surface
    f, n = surface.faces, len(surface.vertices)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    n_comp, labels = connected_components(graph, directed=False)
    if n_comp == 1:
        return surface
    face_label = labels[f[:, 0]]
    counts = np.bincount(face_label, minlength=n_comp)
    keep = counts >= min_ratio * counts.max()
    logger.info("kept %d of %d connected pieces (%d of %d faces)", keep.sum(), n_comp, counts[keep].sum(), len(f))
    return compact(surface.vertices, f[keep[face_label]])


def decimate(surface: Surface, target_faces: int) -> Surface:
    """Quadric-error decimation (fast-simplification) to about ``target_faces``; 0 = keep all."""
    if target_faces <= 0 or len(surface.faces) <= target_faces:
        return surface
    import fast_simplification

    reduction = 1.0 - target_faces / len(surface.faces)
    verts, faces = fast_simplification.simplify(surface.vertices.astype(np.float32), surface.faces.astype(np.int32),
                                                target_reduction=reduction)
    out = compact(np.asarray(verts, np.float32), np.asarray(faces, np.int64))
    if out.signed_volume() < 0:
        out.faces = out.faces[:, ::-1].copy()
    return out


def smooth(surface: Surface, iterations: int) -> Surface:
    """Taubin smoothing (λ|μ, no shrinking) for ``iterations`` rounds; 0 = none."""
    if iterations <= 0:
        return surface
    import trimesh
    from trimesh.smoothing import filter_taubin

    mesh = trimesh.Trimesh(surface.vertices, surface.faces, process=False)
    filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=iterations)
    return Surface(np.asarray(mesh.vertices, np.float32), surface.faces)


def extract_surface(grid: DensityGrid, faces: int = 0, min_component_ratio: float = 0.05,
                    smooth_iterations: int = 0) -> Surface:
    """Marching cubes, floater removal, decimation and smoothing of a density grid.

    Args:
        grid: the density and its level (:func:`text3d.export.grid.sample_grid`).
        faces: target face count after decimation; 0 = no decimation.
        min_component_ratio: see :func:`keep_large_components`.
        smooth_iterations: Taubin smoothing rounds after decimation; 0 = none.
    """
    surface = keep_large_components(marching_cubes(grid), min_component_ratio)
    surface = decimate(surface, faces)
    return smooth(surface, smooth_iterations)
