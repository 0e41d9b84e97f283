"""The scene an edit starts from: a text3d run folder (NeRF or Gaussians, from its saved config and
newest intact checkpoint; an edit folder too) or a standard 3DGS ``.ply`` written by any tool.

A source gives the config sections that describe its scene (geometry, material, background,
renderer, cameras) and the weights of that scene; the edit builds its trainable copy and its frozen
copy from them. A ``.ply`` is object-centred: it is moved so that the centre of its bounds is the
origin, and orbit cameras look at it from a distance that frames it the way the quickstart cameras
frame their objects (or from ``edit.orbit_distance``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from text3d.core.errors import ConfigError, RunDirError
from text3d.core.folders import folder_kind
from text3d.scene.config import SCENE_SECTIONS as _SCENE_SCHEMA_SECTIONS
from text3d.scene.rundir import edit_source_pixel, edit_source_recentring, load_run_checkpoint

logger = logging.getLogger(__name__)

SCENE_SECTIONS = tuple(_SCENE_SCHEMA_SECTIONS)
"""Config sections an edit takes from its source (the edit's preset may refine them)."""

FRAMING = 6.0
"""Auto orbit distance of a ``.ply`` source, in bounding radii: the quickstart views a 0.5-radius
object from distance 3 with a 32 degree field of view."""


@dataclass
class EditSource:
    """A loaded source scene.

    Attributes:
        kind: ``run`` (a text3d run or edit folder) or ``ply`` (a 3DGS file).
        path: the source as given, made absolute.
        prompt: the source run's prompt; ``None`` for a ``.ply``.
        scene: raw config sections (``SCENE_SECTIONS``) describing the scene.
        state: the scene's weights, keyed like ``NeRFSystem.state_dict()`` (``geometry.*``, ``background.*``).
        info: a description for ``metrics.json`` (checkpoint, step, re-centring offset, ...).
    """

    kind: str
    path: str
    prompt: Optional[str]
    scene: Dict[str, Any]
    state: Dict[str, Tensor]
    info: Dict[str, Any]


def open_source(source: str, orbit_distance: float = 0.0,
                orbit_elevations: Optional[List[float]] = None) -> EditSource:
    """Load ``source`` (a run folder or a 3DGS ``.ply``).

    Raises:
        ConfigError / RunDirError / PlyError: empty, missing, not a run or ``.ply``, no or damaged checkpoint.
    """
    if not source:
        raise ConfigError("source: missing; pass source=RUN_DIR (a folder 'text3d run' printed) or source=FILE.ply")
    path = Path(source).expanduser().absolute()
    kind = folder_kind(path)
    if kind is not None:
        raise RunDirError(f"source: {source!r} is a {kind} folder, not a run; pass a folder that 'text3d run' or "
                          "'text3d edit' printed, or a 3D Gaussian splatting .ply")
    if path.is_dir() and (path / "config.yaml").is_file():
        return _run_source(path)
    if path.is_file() and path.suffix.lower() == ".ply":
        return _ply_source(path, orbit_distance, orbit_elevations or [-10.0, 60.0])
    what = "does not exist" if not path.exists() else "is neither a text3d run directory (with config.yaml) nor a .ply file"
    raise RunDirError(f"source: {source!r} {what}; pass a folder that 'text3d run' or 'text3d edit' printed, "
                      "or a 3D Gaussian splatting .ply")


def _run_source(path: Path) -> EditSource:
    from text3d.export.mesh import supervised_pixel

    cfg, ckpt, _ = load_run_checkpoint(path)
    raw = dataclasses.asdict(cfg)
    scene = {name: raw[name] for name in SCENE_SECTIONS}
    if scene["geometry"]["type"] == "gaussians":  # the weights come from the checkpoint, not an init file
        scene["geometry"].update(init="random", init_path=None, num_points=1)
    state = {k[len("system."):]: v for k, v in ckpt.tensors.items() if k.startswith("system.")}
    info = {"kind": "run", "path": str(path), "checkpoint": str(ckpt.path), "step": int(ckpt.meta["step"]),
            **edit_source_recentring(ckpt)}  # an edit of a .ply's edit stays re-centred as its source
    pixels = [p for p in (supervised_pixel(cfg.cameras), edit_source_pixel(ckpt)) if p]
    if pixels:  # the finest pixel that supervised the scene, over its history (an edit's export keeps that detail)
        info["supervised_pixel"] = min(pixels)
    return EditSource("run", str(path), cfg.prompt, scene, state, info)


def ply_pixel(params: Dict[str, Tensor], degree: int) -> Optional[float]:
    """The training pixel ``text3d export FILE.ply`` assumes for a ``.ply`` (which does not record it,
    :func:`text3d.export.gaussians.assumed_pixel`). An edit's export keeps that detail, whatever
    resolution the edit renders at; None when no Gaussian is visible."""
    from text3d.export.gaussians import GaussianCloud, assumed_pixel, gaussian_bounds
    from text3d.export.grid import EmptyDensityError

    try:
        return assumed_pixel(*gaussian_bounds(GaussianCloud.from_params(params, degree)))
    except EmptyDensityError:
        return None


def _ply_source(path: Path, orbit_distance: float, elevations: List[float]) -> EditSource:
    from text3d.scene.gaussians import PARAM_NAMES, read_ply

    params, degree = read_ply(path)
    means = params["means"]
    if means.shape[0] == 0:
        raise RunDirError(f"source: {path} holds no Gaussians")
    centre = 0.5 * (torch.quantile(means, 0.01, dim=0) + torch.quantile(means, 0.99, dim=0))
    params["means"] = means - centre
    radius = float(torch.quantile(params["means"].norm(dim=1), 0.95).clamp(min=1e-6))
    distance = orbit_distance if orbit_distance > 0 else FRAMING * radius
    state = {f"geometry.{name}": params[name].contiguous() for name in PARAM_NAMES}
    n = means.shape[0]
    state.update({"geometry.grad_accum": torch.zeros(n), "geometry.grad_count": torch.zeros(n)})
    scene = {
        "geometry": {"type": "gaussians", "init": "random", "init_path": None, "num_points": 1, "sh_degree": degree,
                     "radius": radius},
        "material": {"type": "no-material"},
        "background": {"type": "solid", "color": [1.0, 1.0, 1.0]},
        "renderer": {"type": "gaussian-splatting"},
        "cameras": {"type": "random", "distance_range": [distance, distance], "eval_distance": distance,
                    "elevation_range": list(elevations), "fovy_range": [32.0, 32.0], "eval_fovy": 32.0,
                    "position_jitter": 0.0, "center_jitter": 0.0, "up_jitter": 0.0},
    }
    info = {"kind": "ply", "path": str(path), "gaussians": n, "sh_degree": degree,
            "recentred_by": [float(x) for x in -centre], "orbit_distance": distance}
    pixel = ply_pixel(params, degree)
    if pixel is not None:
        info["supervised_pixel"] = pixel
    logger.info("3DGS source %s: %d Gaussians, SH degree %d, bounding radius %.3g, orbit distance %.3g",
                path, n, degree, radius, distance)
    return EditSource("ply", str(path), None, scene, state, info)

