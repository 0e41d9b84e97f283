"""From a density grid to a clean triangle mesh: marching cubes, floaters, orientation, decimation.

Orientation convention: faces wind counter-clockwise seen from outside, so face normals point out
of the object and the signed volume is positive (what glTF, Blender and trimesh expect).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

from .grid import DensityGrid, EmptyDensityError
from .topology import Topology, topology

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


def decimate(surface: Surface, target_faces: int, aggressiveness: float = 7.0) -> Surface:
    """Quadric-error decimation (fast-simplification, its ``agg``: how fast the error threshold of a
    collapse rises each pass; 7 is its default) to about ``target_faces``; 0 = keep all."""
    if target_faces <= 0 or len(surface.faces) <= target_faces:
        return surface
    import fast_simplification

    reduction = 1.0 - target_faces / len(surface.faces)
    verts, faces = fast_simplification.simplify(surface.vertices.astype(np.float32), surface.faces.astype(np.int32),
                                                target_reduction=reduction, agg=aggressiveness)
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


def drop_double_faces(surface: Surface) -> Tuple[Surface, int]:
    """Quadric collapses leave fins: two faces on the same three vertices, wound opposite ways (a
    zero-volume flap whose edges each get a third and fourth face). Such a pair is removed (with a
    vertex only it used); of faces repeated with the same winding, one is kept.

    Returns:
        The surface and how many faces were removed.
    """
    f = surface.faces
    key = np.sort(f, axis=1)
    _, group, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    if (counts == 1).all():
        return surface, 0
    # a face's winding relative to its sorted key: +1 or -1 (even or odd permutation)
    rot = np.argmin(f, axis=1)
    ordered = np.stack([np.take_along_axis(f, ((rot + k) % 3)[:, None], 1)[:, 0] for k in range(3)], 1)
    sign = np.where(ordered[:, 1] < ordered[:, 2], 1, -1)
    net = np.zeros(len(counts), np.int64)
    np.add.at(net, group, sign)
    keep = counts[group] == 1
    # of a repeated key, keep one face per unit of net winding (0 for a fin pair, 1 for a duplicate)
    for g in np.flatnonzero((counts > 1) & (net != 0)):
        members = np.flatnonzero(group == g)
        keep[members[sign[members] == np.sign(net[g])][0]] = True
    removed = int((~keep).sum())
    return compact(surface.vertices, f[keep]), removed


DECIMATION_RETRY_FACTORS = (1.0, 1.5, 2.0, 3.0)
"""Face targets tried in turn (x the requested count) when a decimation tears the surface; if all
tear, the surface is kept undecimated."""

DECIMATION_AGGRESSIVENESS = (7.0, 8.0, 5.0)
"""Aggressiveness tried in turn at each face target before more faces are allowed. A tear is a
collapse that pinched two sheets together, and the order of the collapses decides it: the quickstart
NeRF `a blue cylinder` (seed 11, 102k faces carved at 256³) tore at 50k faces with 7 and 6 (and at
1.25x the faces with 7) but not with 5, 8 or 9 (0.15 s a try), so the budget is kept."""


def _not_torn(before: Topology, after: Topology) -> bool:
    """``after`` is as closed and manifold as ``before`` and in no more pieces. A handle closed by
    the decimation (a tunnel thinner than the new triangles: Euler characteristic +2) is not a tear."""
    if not before.closed_manifold:  # nothing to keep: only ask not to get worse
        return (after.non_manifold_edges <= before.non_manifold_edges
                and after.boundary_edges <= before.boundary_edges and after.pieces <= before.pieces)
    return after.closed_manifold and 0 < after.pieces <= before.pieces


def guarded_decimate(surface: Surface, target_faces: int) -> Tuple[Surface, Dict[str, Any]]:
    """:func:`decimate`, repaired (:func:`drop_double_faces`) and checked: the result must stay as
    closed and manifold as the input, in no more pieces (:func:`_not_torn`). A torn result is retried
    at another aggressiveness (:data:`DECIMATION_AGGRESSIVENESS`), then with more faces
    (:data:`DECIMATION_RETRY_FACTORS`); if every try tears, the input is returned.

    Returns:
        The surface and a description (target, faces, tries and their topology) for ``export.json``.
    """
    info: Dict[str, Any] = {"target_faces": int(target_faces), "tries": []}
    if target_faces <= 0 or len(surface.faces) <= target_faces:
        info["result"] = "not needed"
        return surface, info
    before = topology(surface.faces)
    for factor in DECIMATION_RETRY_FACTORS:
        target = int(round(target_faces * factor))
        if target >= len(surface.faces):
            break
        for agg in DECIMATION_AGGRESSIVENESS:
            out, removed = drop_double_faces(decimate(surface, target, agg))
            after = topology(out.faces)
            ok = _not_torn(before, after)
            info["tries"].append({"target": target, "aggressiveness": agg, "faces": after.faces,
                                  "pieces": after.pieces, "euler": after.euler,
                                  "non_manifold_edges": after.non_manifold_edges,
                                  "boundary_edges": after.boundary_edges, "fin_faces_removed": removed, "kept": ok})
            if ok:
                info["result"] = "decimated" if factor == 1.0 else f"decimated to {factor:g}x the target (fewer tore)"
                return out, info
            logger.debug("decimation to %d faces (aggressiveness %g) changed the topology (%s -> %s)", target, agg,
                         _brief(before), _brief(after))
        logger.warning("decimation to %d faces changed the topology (%s -> %s) at every aggressiveness; "
                       "trying more faces", target, _brief(before), _brief(after))
    logger.warning("every decimation tore the surface; keeping all %d faces", len(surface.faces))
    info["result"] = "kept undecimated (every try tore the surface)"
    return surface, info


def _brief(t: Topology) -> str:
    return (f"{t.pieces} pieces, Euler {t.euler}, {t.non_manifold_edges} non-manifold / "
            f"{t.boundary_edges} boundary edges")


def guarded_smooth(surface: Surface, iterations: int) -> Tuple[Surface, Dict[str, Any]]:
    """:func:`smooth`, checked: it moves vertices only, so the check is that every vertex stays
    finite and the surface still encloses a positive volume (faces outward); else the input is kept."""
    if iterations <= 0:
        return surface, {"iterations": 0, "result": "not needed"}
    out = smooth(surface, iterations)
    if np.isfinite(out.vertices).all() and out.signed_volume() > 0:
        return out, {"iterations": int(iterations), "result": "smoothed"}
    logger.warning("smoothing made the surface degenerate; keeping it unsmoothed")
    return surface, {"iterations": int(iterations), "result": "kept unsmoothed (smoothing degenerated)"}


def coarser(grid: DensityGrid) -> DensityGrid:
    """Every second node of ``grid`` (twice the spacing; the values and level unchanged)."""
    return DensityGrid(grid.values[::2, ::2, ::2].copy(), grid.origin, grid.spacing * 2, grid.level,
                       grid.level_source, grid.evaluated, grid.optical_scale)


MIN_COARSE_NODES = 9
"""The coarsest grid the decimation fallback goes down to (nodes per axis)."""


def decimate_within_budget(grid: DensityGrid, surface: Surface, faces: int,
                           min_component_ratio: float) -> Tuple[Surface, Dict[str, Any]]:
    """A guarded decimation of ``surface`` (marching cubes of ``grid``, floaters dropped) to ``faces``;
    where every decimation tears it (quadric collapses pinch handles into non-manifold edges),
    marching cubes of a coarser grid (every second node; its surface is closed and manifold) is
    decimated instead, until one fits the budget (a surface with fewer than the largest retry
    factor x ``faces`` is kept undecimated instead). The finest untorn surface is returned.

    Returns:
        The surface and a description for ``export.json``.
    """
    out, info = guarded_decimate(surface, faces)
    coarse = grid
    too_many = DECIMATION_RETRY_FACTORS[-1] * faces  # fewer than this: ship it undecimated rather than coarser
    while out is surface and len(surface.faces) > too_many > 0 and coarse.values.shape[0] // 2 >= MIN_COARSE_NODES:
        coarse = coarser(coarse)
        try:
            candidate = keep_large_components(marching_cubes(coarse), min_component_ratio)
        except EmptyDensityError:
            break
        out_c, tried = guarded_decimate(candidate, faces)
        info.setdefault("coarser_grids", []).append(
            {"spacing": coarse.spacing, "faces": len(candidate.faces), "result": tried["result"]})
        if out_c is not candidate or len(candidate.faces) <= faces:
            info["result"] = f"decimated from a {coarse.spacing / grid.spacing:g}x coarser grid (the fine surface tore)"
            return out_c, info
    return out, info


def extract_surface(grid: DensityGrid, faces: int = 0, min_component_ratio: float = 0.05,
                    smooth_iterations: int = 0) -> Surface:
    """Marching cubes, floater removal, decimation and smoothing of a density grid (no carving:
    see :func:`text3d.export.carve.carve_grid`); decimation and smoothing are guarded
    (:func:`decimate_within_budget`, :func:`guarded_smooth`).

    Args:
        grid: the density and its level (:func:`text3d.export.grid.sample_grid`).
        faces: target face count after decimation; 0 = no decimation.
        min_component_ratio: see :func:`keep_large_components`.
        smooth_iterations: Taubin smoothing rounds after decimation; 0 = none.
    """
    surface = keep_large_components(marching_cubes(grid), min_component_ratio)
    surface, _ = decimate_within_budget(grid, surface, faces, min_component_ratio)
    surface, _ = guarded_smooth(surface, smooth_iterations)
    return surface
