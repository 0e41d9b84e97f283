"""What to export and where: a run folder (NeRF or Gaussians) or a 3DGS ``.ply`` into a claimed
output folder. The chain itself is :mod:`text3d.export.mesh` (fields and grids) and
:mod:`text3d.export.gaussians` (3D Gaussians).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

from torch import Tensor, nn

from text3d.core.errors import ConfigError, RunDirError
from text3d.core.paths import check_writable, claim_output, safe_component
from text3d.core.writer import hold_folder, refuse_if_in_use
from text3d.scene.rundir import load_geometry, scene_config, source_frame_offset

from .config import EXPORT_FORMATS, ExportConfig, check_export_config
from .gaussians import GaussianCloud, export_gaussians, load_gaussian_ply
from .mesh import (MANIFEST_NAME, STEM, ExportResult, StageFn, export_fields, export_geometry, export_grid,  # noqa: F401
                   nerf_fields, settings_for_run)


def export_run_dir(run_dir: Path, settings: ExportConfig, out_dir: Optional[Path] = None,
                   progress: Optional[StageFn] = None) -> ExportResult:
    """Export a trained run (NeRF or Gaussians) into ``out_dir`` (default ``RUN_DIR/export``).

    ``run_dir`` may also be a 3DGS ``.ply`` file (default output: ``export/`` beside it). ``progress``
    is told the name of each stage as it starts. The output folder must be new, empty, or an earlier
    export of the same source (:func:`claim_export_folder`); exporting into a run's own ``export/``
    makes this process the run folder's one writer, so a run still training is refused there.
    """
    check_export_config(settings)
    path = Path(run_dir)
    if path.suffix.lower() == ".ply" and not path.is_dir():
        if not path.is_file():
            raise RunDirError(f"{str(path)!r} does not exist; pass a run folder or a 3DGS .ply file")
        out = Path(out_dir) if out_dir is not None else path.parent / "export"
        claim_export_folder(out, path, key="--out" if out_dir is not None else "export")  # export/ may serve other .ply files
        cloud, source = load_gaussian_ply(path)
        return export_gaussians(cloud, settings, out, name=object_name(path.stem), source=source, progress=progress)
    out = Path(out_dir) if out_dir is not None else path / "export"
    own = out.absolute().parent == path.absolute()
    if own:
        refuse_if_in_use(path, "run folder")  # its export/ is written by the run when it finishes
    claim_export_folder(out, path, key="--out" if out_dir is not None else "export", own=own)
    geometry, source = load_geometry(path)
    scene = scene_config(path)
    settings = settings_for_run(settings, scene, source.get("supervised_pixel"))
    with hold_folder(path) if own else contextlib.nullcontext():
        return export_any(geometry, settings, out, name=object_name(source.get("prompt", "")), source=source,
                          progress=progress, offset=source_frame_offset(source), rasterize_mode=drawn_as(scene))


def drawn_as(cfg: Any) -> str:
    """How a scene's Gaussians are drawn (``renderer.rasterize_mode``; ``classic`` for a NeRF or an older run)."""
    return str(getattr(getattr(cfg, "renderer", None), "rasterize_mode", "classic"))


def is_export_folder(folder: Path) -> bool:
    """A folder holding one export set: ``export.json`` and the files it lists (nothing else)."""
    try:
        files = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
        listed = {name for names in files.values() for name in names}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return {p.name for p in Path(folder).iterdir()} <= listed | {MANIFEST_NAME}


def export_source(folder: Path) -> Optional[Path]:
    """The run folder or ``.ply`` an export folder was made from (its ``export.json``), or None."""
    try:
        source = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))["source"]
        return Path(source.get("run_dir") or source["ply"]).resolve()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def claim_export_folder(out_dir: Path, source: Path, key: str = "--out", own: bool = False) -> None:
    """An export may write into a new or empty folder, or replace an earlier export of the same
    ``source`` (any export set in the source's ``own`` export folder); an export of another run or
    file, any other folder, or a file, is refused before any work (nothing is touched)."""
    check_writable(out_dir, key)
    if not own and is_export_folder(out_dir) and export_source(out_dir) != Path(source).resolve():
        raise ConfigError(f"{key}: {str(out_dir)!r} holds the export of {str(export_source(out_dir))!r}, not of "
                          f"{str(source)!r}; it is left alone — pick a new folder")
    claim_output(out_dir, is_export_folder, replace=True, key=key, what="export")


def export_any(geometry: nn.Module, settings: ExportConfig, out_dir: Path, name: str = STEM,
               source: Optional[Dict[str, Any]] = None, progress: Optional[StageFn] = None,
               offset: Optional[Tensor] = None, rasterize_mode: str = "classic") -> ExportResult:
    """Export a run's geometry, whichever it is: Gaussians (splatted density, colours from views) or a
    NeRF field (:func:`export_geometry`). ``offset`` ``[3]`` moves Gaussians into the frame they are
    written in (an edited ``.ply``'s own, see :meth:`text3d.run.trainer.Run.world_offset`);
    ``rasterize_mode`` is how the scene's renderer draws them (:attr:`GaussianCloud.rasterize_mode`)."""
    if hasattr(geometry, "num_gaussians"):  # a scene's GaussianModel
        cloud = GaussianCloud.from_model(geometry, rasterize_mode)
        return export_gaussians(cloud if offset is None else cloud.translated(offset), settings, out_dir, name=name,
                                source=source, progress=progress)
    if offset is not None:
        raise ValueError("export_any: an offset moves Gaussians; a NeRF field is exported in its own frame")
    return export_geometry(geometry, settings, out_dir, name=name, source=source, progress=progress)


def object_name(prompt: str) -> str:
    """Name of the object inside exported files: the prompt as a slug (``a_red_cube``), ``mesh`` without one."""
    return safe_component(prompt, fallback=STEM)


__all__ = ["EXPORT_FORMATS", "ExportResult", "export_any", "export_fields", "export_geometry", "export_grid",
           "export_run_dir", "nerf_fields", "object_name"]
