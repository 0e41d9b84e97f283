"""Mesh extraction and export: a trained field -> a clean, textured GLB / OBJ / PLY for DCC tools.

The chain, one module per stage::

    grid.py      density on a grid (coarse-to-fine), iso-level from the density   -> DensityGrid
    carve.py     the solid a viewer sees: pores narrower than a pixel closed      -> DensityGrid
    surface.py   marching cubes, floaters, outward faces, guarded decimation/smoothing -> Surface
    topology.py  pieces, Euler characteristic, genus, manifold / watertight       -> Topology
    visibility.py faces no view sees (hidden share; the atlas charts the others)  -> bool [F]
    texture.py   xatlas UV unwrap, albedo bake per texel, gutter fill             -> UVLayout, image
    writers.py   export frame (+Y up, metres, centred), GLB / OBJ+MTL+PNG / PLY    -> files
    pipeline.py  export_fields(density_fn, color_fn, bounds, settings, out_dir), export_grid, export_run_dir
    gaussians.py 3D Gaussians: density splatted on a grid, colours back-projected from rendered views

Any field plugs in through :func:`export_fields` with two callables on world points
(``[N, 3] -> [N]`` density, ``[N, 3] -> [N, 3]`` albedo); the NeRF uses :func:`nerf_fields`.
A representation with its own grid and colours (3D Gaussians) calls :func:`export_grid` with a
:class:`DensityGrid` and a surface colour callable (points + normals -> albedo).
"""

from .grid import DensityGrid, EmptyDensityError, sample_grid
from .pipeline import (ExportResult, export_any, export_fields, export_geometry, export_grid, export_run_dir,
                       nerf_fields, object_name)
from .surface import Surface, extract_surface

__all__ = ["DensityGrid", "EmptyDensityError", "ExportResult", "Surface", "export_any", "export_fields",
           "export_geometry", "export_grid", "export_run_dir", "extract_surface", "nerf_fields",
           "object_name", "sample_grid"]
