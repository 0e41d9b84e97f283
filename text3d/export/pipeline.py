"""What to export and where: a run folder (NeRF or Gaussians) or a 3DGS ``.ply`` into a claimed
output folder. The chain itself is :mod:`text3d.export.mesh` (fields and grids) and
:mod:`text3d.export.gaussians` (3D Gaussians).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

from torch import nn

from text3d.core.errors import RunDirError
from text3d.core.paths import check_writable, claim_output, safe_component
from text3d.scene.rundir import load_geometry, scene_config

from .config import EXPORT_FORMATS, ExportConfig, check_export_config
from .gaussians import GaussianCloud, export_gaussians, load_gaussian_ply
from .mesh import (MANIFEST_NAME, STEM, ExportResult, StageFn, export_fields, export_geometry, export_grid,  # noqa: F401
                   nerf_fields, settings_for_run)


def export_run_dir(run_dir: Path, settings: ExportConfig, out_dir: Optional[Path] = None,
                   progress: Optional[StageFn] = None) -> ExportResult:
    """Export a trained run (NeRF or Gaussians) into ``out_dir`` (default ``RUN_DIR/export``).

    ``run_dir`` may also be a 3DGS ``.ply`` file (default output: ``export/`` beside it). ``progress``
    is told the name of each stage as it starts.
    """
    check_export_config(settings)
    path = Path(run_dir)
    if path.suffix.lower() == ".ply" and not path.is_dir():
        if not path.is_file():
            raise RunDirError(f"{str(path)!r} does not exist; pass a run folder or a 3DGS .ply file")
        out = Path(out_dir) if out_dir is not None else path.parent / "export"
        claim_export_folder(out)
        cloud, source = load_gaussian_ply(path)
        return export_gaussians(cloud, settings, out, name=object_name(path.stem), source=source, progress=progress)
    if out_dir is not None:
        claim_export_folder(out_dir)
    geometry, source = load_geometry(path)
    settings = settings_for_run(settings, scene_config(path))
    out = Path(out_dir) if out_dir is not None else path / "export"
    return export_any(geometry, settings, out, name=object_name(source.get("prompt", "")), source=source,
                      progress=progress)


def is_export_folder(folder: Path) -> bool:
    """A folder holding one export set: ``export.json`` and the files it lists (nothing else)."""
    try:
        files = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
        listed = {name for names in files.values() for name in names}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return {p.name for p in Path(folder).iterdir()} <= listed | {MANIFEST_NAME}


def claim_export_folder(out_dir: Path, key: str = "--out") -> None:
    """An export may write into a new or empty folder or replace an earlier export set; any other
    folder, or a file, is refused before any work (nothing is touched)."""
    check_writable(out_dir, key)
    claim_output(out_dir, is_export_folder, replace=True, key=key, what="export")


def export_any(geometry: nn.Module, settings: ExportConfig, out_dir: Path, name: str = STEM,
               source: Optional[Dict[str, Any]] = None, progress: Optional[StageFn] = None) -> ExportResult:
    """Export a run's geometry, whichever it is: Gaussians (splatted density, colours from views) or a
    NeRF field (:func:`export_geometry`)."""
    if hasattr(geometry, "num_gaussians"):  # a scene's GaussianModel
        return export_gaussians(GaussianCloud.from_model(geometry), settings, out_dir, name=name, source=source,
                                progress=progress)
    return export_geometry(geometry, settings, out_dir, name=name, source=source, progress=progress)


def object_name(prompt: str) -> str:
    """Name of the object inside exported files: the prompt as a slug (``a_red_cube``), ``mesh`` without one."""
    return safe_component(prompt, fallback=STEM)


__all__ = ["EXPORT_FORMATS", "ExportResult", "export_any", "export_fields", "export_geometry", "export_grid",
           "export_run_dir", "nerf_fields", "object_name"]
