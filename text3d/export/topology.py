"""What a triangle mesh is, topologically: pieces, Euler characteristic, genus, manifoldness.

The figures a technical artist checks before accepting an asset (and that ``export.json`` reports):

- ``pieces``: connected components through *shared edges* (two faces touching at one vertex only
  are separate pieces, as Blender's "loose parts" and trimesh's ``split`` count them);
- ``euler`` = ``V - E + F`` (vertices used by a face); a closed orientable surface of genus ``g``
  has ``2 - 2 g``, so one closed sphere-like piece has 2 and a torus 0;
- ``genus`` = ``(2 pieces - euler) / 2`` when the mesh is closed and manifold (else None);
- ``boundary_edges`` (one face) and ``non_manifold_edges`` (three or more faces);
- ``watertight``: every edge has exactly two faces and they run it in opposite directions
  (closed and consistently oriented).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class Topology:
    """Topological figures of a triangle mesh (see the module docstring)."""

    vertices: int
    edges: int
    faces: int
    pieces: int
    euler: int
    genus: Optional[int]
    boundary_edges: int
    non_manifold_edges: int
    watertight: bool

    @property
    def closed_manifold(self) -> bool:
        """One closed, consistently oriented 2-manifold (possibly in several pieces)."""
        return self.watertight and self.boundary_edges == 0 and self.non_manifold_edges == 0

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def edge_faces(faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges of ``faces [F, 3]`` and who uses them.

    Returns:
        ``edge_id [3F]`` (the edge of each face side: sides ``(0,1), (1,2), (2,0)`` of face 0, then
        face 1, ...), ``counts [E]`` faces per edge, and ``directed [3F, 2]`` the sides as written.
    """
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    undirected = np.sort(directed, axis=1)
    key = undirected[:, 0].astype(np.int64) * (int(faces.max(initial=0)) + 1) + undirected[:, 1]
    _, edge_id, counts = np.unique(key, return_inverse=True, return_counts=True)
    return edge_id.reshape(-1), counts, directed


def face_pieces(faces: np.ndarray) -> Tuple[int, np.ndarray]:
    """Connected pieces through shared edges: ``(count, label [F])``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return 0, np.zeros(0, np.int64)
    edge_id, _, _ = edge_faces(faces)
    face_of_side = np.repeat(np.arange(len(faces)), 3)
    # faces x edges incidence; two faces are joined when they share an edge
    n_edges = int(edge_id.max()) + 1
    nodes = len(faces) + n_edges
    graph = coo_matrix((np.ones(len(edge_id), np.int8), (face_of_side, len(faces) + edge_id)), shape=(nodes, nodes))
    _, labels = connected_components(graph, directed=False)
    _, face_label = np.unique(labels[:len(faces)], return_inverse=True)
    return int(face_label.max()) + 1, face_label.reshape(-1)


def is_watertight(faces: np.ndarray) -> bool:
    """Every edge is shared by exactly two faces, in opposite directions (closed and oriented)."""
    if len(faces) == 0:
        return False
    edge_id, counts, directed = edge_faces(faces)
    if not (counts == 2).all():
        return False
    forward = directed[:, 0] < directed[:, 1]
    return bool((np.bincount(edge_id, weights=forward, minlength=len(counts)) == 1).all())


def topology(faces: np.ndarray) -> Topology:
    """The :class:`Topology` of ``faces [F, 3]`` (vertex indices; unused vertices are not counted)."""
    faces = np.asarray(faces, np.int64)
    if len(faces) == 0:
        return Topology(0, 0, 0, 0, 0, None, 0, 0, False)
    _, counts, _ = edge_faces(faces)
    n_vertices = len(np.unique(faces))
    euler = n_vertices - len(counts) + len(faces)
    pieces, _ = face_pieces(faces)
    boundary, non_manifold = int((counts == 1).sum()), int((counts > 2).sum())
    watertight = is_watertight(faces)
    genus = (2 * pieces - euler) // 2 if watertight and non_manifold == 0 and (2 * pieces - euler) % 2 == 0 else None
    return Topology(n_vertices, len(counts), len(faces), pieces, int(euler), genus, boundary, non_manifold, watertight)


__all__ = ["Topology", "edge_faces", "face_pieces", "is_watertight", "topology"]
