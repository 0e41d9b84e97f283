"""The export chain, field -> files: density grid, surface, colours, UV bake, export frame, writers.

:func:`export_fields` is the entry point of any 3D representation: it needs only a density and a
colour callable on world points and the cube they live in (the NeRF passes its field, see
:func:`nerf_fields`); a representation with its own grid and colours (3D Gaussians,
:mod:`text3d.export.gaussians`) calls :func:`export_grid`. What to export and where (run folders,
``.ply`` files, the output folder) is :mod:`text3d.export.pipeline`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from text3d import __version__
from text3d.scene.cameras import finest_resolution
from text3d.core.io import staged_folder, write_json
from .config import EXPORT_FORMATS, ExportConfig, check_export_config  # noqa: F401  (EXPORT_FORMATS re-exported)
from .grid import DensityFn, DensityGrid, sample_grid
from .carve import carve_grid
from .surface import (Surface, decimate_within_budget, guarded_smooth, keep_large_components, marching_cubes,
                      signed_volume)
from .topology import is_watertight, topology
from .visibility import hidden_share, visible_faces
from .texture import ColorFn, SurfaceColorFn, bake_texture, field_colors, unwrap, vertex_colors
from .writers import WORLD_TO_EXPORT, WRITERS, ExportMesh

logger = logging.getLogger(__name__)

MANIFEST_NAME = "export.json"
STEM = "mesh"
COLOR_INSET_CELLS = 0.5
"""Colours are read this many grid cells inside the surface, where a NeRF's colour is trained
(its rendering weights peak just inside the iso-surface, not on it)."""


@dataclass
class ExportResult:
    """What an export wrote and found."""

    paths: List[Path]
    manifest: Path
    level: float
    level_source: str
    vertices: int
    faces: int
    timings: Dict[str, float] = field(default_factory=dict)
    pieces: Optional[int] = None
    """Connected pieces of the written mesh (``export.json``'s ``topology.pieces``)."""


StageFn = Callable[[str], None]
"""Told the name of each export stage as it starts (the CLI's progress bar)."""


class StageTimings(dict):
    """Seconds per export stage (a plain dict in ``export.json``), telling ``on_stage`` when one starts."""

    def __init__(self, on_stage: Optional[StageFn] = None):
        super().__init__()
        self.on_stage = on_stage


@contextmanager
def timed(timings: Dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds of the ``with`` block to ``timings[stage]``, telling a :class:`StageTimings` first."""
    on_stage = getattr(timings, "on_stage", None)
    if on_stage is not None:
        on_stage(stage)
    t0 = time.perf_counter()
    yield
    timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - t0, 4)


def _is_watertight(faces: np.ndarray) -> bool:
    """Every edge is shared by exactly two faces, in opposite directions (closed and oriented)."""
    return is_watertight(faces)


def export_frame(surface: Surface, size: float) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Vertices in the export frame (see :mod:`text3d.export.writers`): rotated to +Y up, bounding
    box centred on the origin, scaled so its largest side is ``size`` metres (``0``: world units).

    Returns:
        ``[V, 3]`` float32 vertices and the frame's description (with the 4x4 world -> export matrix).
    """
    lo, hi = surface.vertices.min(axis=0).astype(np.float64), surface.vertices.max(axis=0).astype(np.float64)
    centre = (lo + hi) / 2
    extent = float((hi - lo).max())
    scale = size / extent if size > 0 and extent > 0 else 1.0
    matrix = np.eye(4)
    matrix[:3, :3] = scale * WORLD_TO_EXPORT
    matrix[:3, 3] = -scale * WORLD_TO_EXPORT @ centre
    vertices = (surface.vertices.astype(np.float64) - centre) @ WORLD_TO_EXPORT.T * scale
    frame = {"up": "+Y", "front": "+Z", "units": "m", "scale": scale, "world_centre": centre.tolist(),
             "world_to_export": matrix.round(9).tolist()}
    return vertices.astype(np.float32), frame


DEFAULT_PORE_FRACTION = 1.0 / 40.0
"""The training pixel assumed without a run to read it from (see :attr:`ExportConfig.pore_size`): this
fraction of the density grid's side (0.05 world units on the NeRF's [-1, 1] box, about a quickstart pixel)."""

PORE_PIXELS = 2.0
"""Default pore size of a run, in its training pixels. A NeRF render point-samples one ray per pixel: it
resolves nothing narrower than two pixels (its Nyquist limit), so an opening narrower than that can
fall between the rays and is not constrained by any training render; it is closed. Measured on the
quickstart NeRF runs (256³): at one pixel the cube and pyramid keep a tunnel 1-1.7 pixels wide (Euler
0, and the pyramid 1.26x the area in sub-pixel dents); at two they have their true genus within 15 % of
the area, and the torus hole (about 8 pixels) stays open. 3D Gaussians take two as well (their
footprints are widened at one pixel, half the pore size: :mod:`text3d.export.gaussians`); with one, the
quickstart's flat Gaussian capsule (128² renders) kept tunnels through its flat discs at 256³ (Euler
−34, area 1.25x); with two it is whole at both settings and no other Gaussian row moved by more than
0.01."""


def pore_size_of(settings: ExportConfig, grid: DensityGrid) -> float:
    """The pore size to carve with: the setting, or :data:`PORE_PIXELS` x :data:`DEFAULT_PORE_FRACTION`
    of the grid's side."""
    if settings.pore_size is not None:
        return float(settings.pore_size)
    return PORE_PIXELS * DEFAULT_PORE_FRACTION * grid.spacing * (grid.values.shape[0] - 1)


def supervised_pixel(cameras: Any) -> Optional[float]:
    """World size of one pixel of a run's finest training renders at its nearest, narrowest camera
    (``2 d tan(fovy / 2) / height``), or None if the cameras config does not say. Detail smaller than
    this never showed in a render, so the field is not constrained there."""
    try:
        height = finest_resolution(cameras)
        distance = float(min(cameras.distance_range))
        fovy = math.radians(float(min(cameras.fovy_range)))
    except (AttributeError, TypeError, ValueError):
        return None
    if distance <= 0 or not 0 < fovy < math.pi or height <= 0:
        return None
    return 2.0 * distance * math.tan(fovy / 2) / height


def settings_for_run(settings: ExportConfig, cfg: Any, source_pixel: Optional[float] = None) -> ExportConfig:
    """``settings`` with an unset ``pore_size`` taken from the run's cameras: :data:`PORE_PIXELS` of its
    finest training pixel (:func:`supervised_pixel`), or of ``source_pixel`` when finer (an edit keeps
    the detail its source was trained to, at whatever resolution the edit itself renders)."""
    if settings.pore_size is not None:
        return settings
    pixels = [p for p in (supervised_pixel(getattr(cfg, "cameras", None)), source_pixel) if p]
    return dataclasses.replace(settings, pore_size=round(PORE_PIXELS * min(pixels), 6)) if pixels else settings


def _surface(grid: DensityGrid, settings: ExportConfig, timings: Dict[str, float]) -> Tuple[Surface, Dict[str, Any]]:
    """Carving, marching cubes, floaters, guarded decimation and smoothing; the surface and what
    each stage did (for ``export.json``)."""
    stages: Dict[str, Any] = {}
    with timed(timings, "carve"):
        grid, stages["carve"] = carve_grid(grid, pore_size_of(settings, grid))
    with timed(timings, "marching cubes + floaters"):
        raw = marching_cubes(grid)
        surface = keep_large_components(raw, settings.min_component_ratio)
        stages["marching_cubes"] = {"faces": len(raw.faces), "kept_faces": len(surface.faces)}
    with timed(timings, "decimation"):
        surface, stages["decimation"] = decimate_within_budget(grid, surface, settings.faces,
                                                               settings.min_component_ratio)
    with timed(timings, "smoothing"):
        surface, stages["smoothing"] = guarded_smooth(surface, settings.smooth_iterations)
    return surface, stages


def export_fields(density_fn: DensityFn, color_fn: ColorFn, bounds: Tuple[float, float], settings: ExportConfig,
                  out_dir: Path, name: str = STEM, source: Optional[Dict[str, Any]] = None,
                  grid: Optional[DensityGrid] = None, progress: Optional[StageFn] = None) -> ExportResult:
    """Extract, texture and write a mesh of a density + colour field.

    Args:
        density_fn: ``[N, 3]`` world points -> ``[N]`` density (see :mod:`text3d.export.grid`).
        color_fn: ``[N, 3]`` world points -> ``[N, 3]`` albedo in [0, 1].
        bounds: ``(lo, hi)``: the field lives in the cube ``[lo, hi]^3`` (world units).
        settings: resolution, level, faces, texture size, formats, ... (:class:`ExportConfig`).
        out_dir: folder of the files (created); ``export.json`` there lists them.
        name: object name inside the files.
        source: recorded in ``export.json`` (run folder, checkpoint, step).
        grid: a density grid computed already (``density_fn`` and ``bounds`` are then unused).
        progress: told the name of each stage as it starts.

    Raises:
        EmptyDensityError: no surface (nothing is written then).
    """
    check_export_config(settings)
    timings = StageTimings(progress)
    if grid is None:
        with timed(timings, "density grid"):
            grid = sample_grid(density_fn, bounds, settings.resolution, settings.level)
    colors = field_colors(color_fn, COLOR_INSET_CELLS * grid.spacing)
    return export_grid(grid, colors, settings, out_dir, name=name, source=source, timings=timings)


def export_grid(grid: DensityGrid, colors: SurfaceColorFn, settings: ExportConfig, out_dir: Path, name: str = STEM,
                source: Optional[Dict[str, Any]] = None, timings: Optional[Dict[str, float]] = None,
                colour_info: Optional[Dict[str, Any]] = None) -> ExportResult:
    """The chain after the density grid: surface, vertex colours, UV bake, export frame, files, manifest.

    Args:
        grid: the density and its iso-level (from :func:`sample_grid` or a splatting).
        colors: albedo at surface points given their normals (:data:`SurfaceColorFn`).
        timings: seconds of the stages done before (added to the manifest's; a :class:`StageTimings`
            keeps telling its callback).
        colour_info: how the colours were found, recorded in ``export.json`` (read after the bake,
            so ``colors`` may fill it in).
        Others as :func:`export_fields`.

    Raises:
        EmptyDensityError: no surface (nothing is written then).
    """
    check_export_config(settings)
    out_dir = Path(out_dir)
    timings = timings if timings is not None else StageTimings()
    logger.info("iso-level %.4g (%s); %d field evaluations", grid.level, grid.level_source, grid.evaluated)
    surface, stages = _surface(grid, settings, timings)
    with timed(timings, "hidden faces"):
        seen = visible_faces(surface.vertices, surface.faces)
        hidden = hidden_share(surface.vertices, surface.faces, seen=seen)
    with timed(timings, "vertex colours"):
        vcolors = vertex_colors(surface, colors)
    layout, texture, coverage = None, None, None
    if settings.texture_size:
        with timed(timings, "uv unwrap"):
            layout = unwrap(surface, settings.texture_size, visible=seen)
        with timed(timings, "texture bake"):
            texture, coverage = bake_texture(surface, layout, colors, settings.texture_size)
    vertices, frame = export_frame(surface, settings.size)
    normals = (surface.vertex_normals().astype(np.float64) @ WORLD_TO_EXPORT.T).astype(np.float32)
    mesh = ExportMesh(name, vertices, normals, surface.faces, vcolors, layout, texture)
    files: Dict[str, List[str]] = {}
    with staged_folder(out_dir) as staging:  # the whole set, export.json last, or the old set untouched
        with timed(timings, "write"):
            for fmt in dict.fromkeys(settings.formats):
                files[fmt] = [p.name for p in WRITERS[fmt](mesh, staging, STEM)]
        info = _manifest(settings, grid, surface, frame, files, texture, coverage, timings, source)
        info["topology"]["hidden"] = hidden
        info["stages"] = stages
        if colour_info is not None:
            info["colour"] = colour_info
        write_json(staging / MANIFEST_NAME, info)
    paths = [out_dir / name for names in files.values() for name in names]
    return ExportResult(paths, out_dir / MANIFEST_NAME, grid.level, grid.level_source, len(surface.vertices),
                        len(surface.faces), timings, pieces=info["topology"]["pieces"])


def _manifest(settings: ExportConfig, grid: DensityGrid, surface: Surface, frame: Dict[str, Any],
              files: Dict[str, List[str]], texture: Optional[np.ndarray], coverage: Optional[float],
              timings: Dict[str, float], source: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The content of ``export.json``: what was written, with which settings, and what was found."""
    v = surface.vertices.astype(np.float64)[surface.faces]
    area = float(0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum())
    return {
        "format_version": 1,
        "files": files,
        "settings": {k: val for k, val in dataclasses.asdict(settings).items() if k != "enabled"},
        "iso_level": grid.level,
        "iso_level_source": grid.level_source,
        "mesh": {"vertices": len(surface.vertices), "faces": len(surface.faces),
                 "watertight": is_watertight(surface.faces),
                 "world_volume": signed_volume(surface.vertices, surface.faces), "world_area": area,
                 "world_bounds": [v.min(axis=(0, 1)).tolist(), v.max(axis=(0, 1)).tolist()]},
        "topology": topology(surface.faces).as_dict(),
        "texture": None if texture is None else {"size": int(texture.shape[0]), "covered_fraction": coverage,
                                                 "charted_faces": "visible faces only (hidden ones get no texel)"},
        "frame": frame,
        "source": source or {},
        "timings_s": timings,
        "text3d_version": __version__,
    }


# ------------------------------------------------------------------------------------------ NeRF
def nerf_fields(geometry: nn.Module) -> Tuple[DensityFn, ColorFn, Tuple[float, float]]:
    """Density and albedo callables of an ``implicit-volume`` field, and its box."""
    device = next(geometry.parameters()).device

    def density(points: torch.Tensor) -> torch.Tensor:
        return geometry.density(points.to(device))

    def albedo(points: torch.Tensor) -> torch.Tensor:
        return geometry(points.to(device))["albedo"]

    r = float(geometry.radius)
    return density, albedo, (-r, r)


def export_geometry(geometry: nn.Module, settings: ExportConfig, out_dir: Path, name: str = STEM,
                    source: Optional[Dict[str, Any]] = None, progress: Optional[StageFn] = None) -> ExportResult:
    """Export a NeRF field (``geometry`` of a run) into ``out_dir``."""
    density, albedo, bounds = nerf_fields(geometry)
    was_training = geometry.training
    geometry.eval()
    try:
        return export_fields(density, albedo, bounds, settings, out_dir, name=name, source=source, progress=progress)
    finally:
        geometry.train(was_training)
