"""The edit matrix's mesh identity: exported meshes re-read by trimesh, taken back to the scene's world
frame, and compared as voxelised solids (benchmarks/eval_edit.py)."""

from __future__ import annotations

import json
from pathlib import Path


def world_mesh(path: Path):
    """A GLB re-read by trimesh, its vertices taken back to the scene's world frame with the inverse of
    the ``world_to_export`` matrix of the ``export.json`` beside it (each export is scaled and centred
    on its own, so two exports compare only in world coordinates); as written when there is none."""
    import numpy as np
    import trimesh

    mesh = trimesh.load(path, force="mesh")
    manifest = Path(path).parent / "export.json"
    frame = json.loads(manifest.read_text()).get("frame", {}) if manifest.is_file() else {}
    if "world_to_export" in frame:
        mesh.apply_transform(np.linalg.inv(np.asarray(frame["world_to_export"], dtype=np.float64)))
    return mesh


def mesh_voxel_iou(a: Path, b: Path, resolution: int = 64) -> float:
    """IoU of the solids two mesh files enclose in world coordinates (:func:`world_mesh`), voxelised
    on one ``resolution``^3 grid over both: each surface subdivided below half a voxel, the voxels it
    touches marked and the enclosed ones filled (``scipy.ndimage.binary_fill_holes``)."""
    import numpy as np
    import trimesh
    from scipy import ndimage

    meshes = [world_mesh(p) for p in (a, b)]
    lo = min(float(m.bounds[0].min()) for m in meshes) - 0.02
    hi = max(float(m.bounds[1].max()) for m in meshes) + 0.02
    pitch = (hi - lo) / resolution
    solids = []
    for m in meshes:
        vertices, _ = trimesh.remesh.subdivide_to_size(m.vertices, m.faces, max_edge=pitch / 2)
        cells = np.floor((vertices - lo) / pitch).astype(int).clip(0, resolution - 1)
        grid = np.zeros((resolution,) * 3, dtype=bool)
        grid[cells[:, 0], cells[:, 1], cells[:, 2]] = True
        solids.append(ndimage.binary_fill_holes(grid))
    union = (solids[0] | solids[1]).sum()
    return float((solids[0] & solids[1]).sum() / union) if union else 0.0
