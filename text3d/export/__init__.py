"""Mesh extraction and export: a trained field -> a clean, textured GLB / OBJ / PLY for DCC tools.

The chain, one module per stage::

    grid.py      density on a grid (coarse-to-fine), iso-level from the density   -> DensityGrid
    carve.py     the solid a viewer sees: pores narrower than a pixel closed      -> DensityGrid
    surface.py   marching cubes, floaters, outward faces, guarded decimation/smoothing -> Surface
    topology.py  pieces, Euler characteristic, genus, manifold / watertight       -> Topology
    visibility.py faces no view sees (hidden share; the atlas charts the others)  -> bool [F]
    texture.py   xatlas UV unwrap, albedo bake per texel, gutter fill             -> UVLayout, image
    writers.py   export frame (+Y up, metres, centred), GLB / OBJ+MTL+PNG / PLY    -> files
    mesh.py      the chain: export_fields(density_fn, color_fn, bounds, settings, out_dir), export_grid
    gaussians.py 3D Gaussians: density splatted on a grid, colours back-projected from rendered views
    pipeline.py  what and where: export_run_dir (run folder or .ply), export_any, the output folder
    config.py    the settings (the ``export:`` section; ``text3d export``'s key=value overrides)

Any field plugs in through :func:`export_fields` with two callables on world points
(``[N, 3] -> [N]`` density, ``[N, 3] -> [N, 3]`` albedo); the NeRF uses :func:`nerf_fields`.
A representation with its own grid and colours (3D Gaussians) calls :func:`export_grid` with a
:class:`DensityGrid` and a surface colour callable (points + normals -> albedo).

May import: ``text3d.core``, ``text3d.renderers``, ``text3d.scene`` (never ``run`` or the commands).
"""

from .grid import DensityGrid, EmptyDensityError, sample_grid
from .config import EXPORT_FORMATS, ExportConfig, check_export_config
from .mesh import ExportResult, export_fields, export_geometry, export_grid, nerf_fields
from .pipeline import export_any, export_run_dir, object_name
from .surface import Surface, extract_surface

__all__ = ["EXPORT_FORMATS", "ExportConfig", "check_export_config", "DensityGrid", "EmptyDensityError", "ExportResult", "Surface", "export_any", "export_fields",
           "export_geometry", "export_grid", "export_run_dir", "extract_surface", "nerf_fields",
           "object_name", "sample_grid"]
