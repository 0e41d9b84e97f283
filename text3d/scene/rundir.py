"""Reading a finished or interrupted run folder: the scene its saved config describes and the
trained scene of its newest intact checkpoint. The one place that export, video, Gaussian
initialisation from a NeRF run and editing load a scene from. Only the scene sections of the saved
config are read (:data:`text3d.scene.config.SCENE_SCHEMA`), so nothing here needs the run's prior.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from text3d.core.checkpoint import Checkpoint, CorruptCheckpointError, load_latest_checkpoint
from text3d.core.errors import RunDirError
from text3d.core.folders import folder_kind
from text3d.core.writer import writer_of

from .config import SCENE_SCHEMA, SceneConfig
from .registry import GEOMETRIES

logger = logging.getLogger(__name__)

GEOMETRY_PREFIX = "system.geometry."


def check_run_folder(run_dir: str | Path, key: str = "") -> None:
    """Raise :class:`RunDirError` unless ``run_dir`` looks like a run or edit folder: another command's
    folder is named for what it is, a missing or empty ``config.yaml`` is said to be so."""
    run_dir, where = Path(run_dir), f"{key}: " if key else ""
    kind = folder_kind(run_dir)
    if kind is not None:
        raise RunDirError(f"{where}{str(run_dir)!r} is a {kind} folder, not a run; pass a folder that 'text3d run' "
                          "or 'text3d edit' printed on its last line")
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise RunDirError(f"{where}{str(run_dir)!r} is not a run directory (no config.yaml); pass the folder that "
                          "'text3d run' printed on its last line")
    if not saved.read_bytes().strip():
        raise RunDirError(f"{where}{saved} is empty: a run folder's config.yaml holds the config its checkpoints "
                          "were trained with, so this folder cannot be read; restore the file or start a new run")


def scene_config(run_dir: str | Path) -> SceneConfig:
    """The scene saved in ``run_dir/config.yaml`` (a run or edit folder): prompt and scene sections."""
    check_run_folder(run_dir)
    return SCENE_SCHEMA.load(Path(run_dir) / "config.yaml", saved=True)


def build_geometry(cfg: SceneConfig) -> nn.Module:
    """An untrained geometry of ``cfg``, ready to take a checkpoint's weights (a Gaussian geometry is
    built with one point: the checkpoint sets every Gaussian, so its init file is not read)."""
    geometry_cfg = cfg.geometry
    if geometry_cfg.type == "gaussians":
        geometry_cfg = dataclasses.replace(geometry_cfg, init="random", init_path=None, num_points=1)
    with torch.random.fork_rng(devices=[]):
        return GEOMETRIES.build(geometry_cfg)


def geometry_state(ckpt: Checkpoint) -> Dict[str, torch.Tensor]:
    return {k[len(GEOMETRY_PREFIX):]: v for k, v in ckpt.tensors.items() if k.startswith(GEOMETRY_PREFIX)}


def load_geometry(run_dir: str | Path) -> Tuple[nn.Module, Dict[str, Any]]:
    """The trained geometry of a run folder (its config + newest intact checkpoint), on CPU, with a
    description: a NeRF field, or a :class:`~text3d.scene.gaussians.GaussianModel` with the checkpoint's
    Gaussian count. Only the geometry is built: no prior or model weights are loaded.
    """
    cfg, ckpt, geometry = load_run_checkpoint(run_dir)
    source = {"run_dir": str(Path(run_dir).absolute()), "checkpoint": str(ckpt.path), "step": int(ckpt.meta["step"]),
              "prompt": cfg.prompt}
    pixel = edit_source_pixel(ckpt)
    if pixel:  # an edit folder: the finest pixel that supervised its source (its export keeps that detail)
        source["supervised_pixel"] = pixel
    source.update(edit_source_recentring(ckpt))
    return geometry, source


def edit_source_pixel(ckpt: Checkpoint) -> Optional[float]:
    """The finest pixel that supervised an edit's source, as the edit's checkpoint records it (None
    for a run's checkpoint)."""
    return (ckpt.meta.get("edit_source") or {}).get("supervised_pixel")


def edit_source_recentring(ckpt: Checkpoint) -> Dict[str, Any]:
    """``{"recentred_by": [x, y, z]}`` when the checkpoint is an edit (or an edit of an edit) of a ``.ply``,
    which is trained re-centred on the origin; ``{}`` otherwise."""
    moved = (ckpt.meta.get("edit_source") or {}).get("recentred_by")
    return {} if moved is None else {"recentred_by": list(moved)}


def source_frame_offset(info: Dict[str, Any]) -> Optional[torch.Tensor]:
    """``[3]`` translation from the re-centred frame a ``.ply`` is edited in back to the file's own
    (``info["recentred_by"]``, see :func:`text3d.edit.source.open_source`), or None."""
    moved = info.get("recentred_by")
    return None if moved is None else -torch.tensor(moved, dtype=torch.float32)


def load_run_checkpoint(run_dir: str | Path) -> Tuple[SceneConfig, Checkpoint, nn.Module]:
    """A run folder's scene config, its newest intact checkpoint whose geometry fits that config, and the
    geometry loaded from it (on CPU); editing reads the whole scene (background too) from the checkpoint.

    Raises:
        RunDirError: not a run folder, no checkpoint, or every checkpoint damaged.
    """
    run_dir = Path(run_dir)
    cfg = scene_config(run_dir)
    geometry = build_geometry(cfg)

    def fits(ckpt: Checkpoint) -> None:
        try:
            geometry.load_state_dict(geometry_state(ckpt))
        except RuntimeError as e:
            raise CorruptCheckpointError(f"checkpoint {ckpt.path} does not match the run's geometry config "
                                         f"({_first_line(e)})") from None

    ckpt = load_latest_checkpoint(run_dir, check=fits)
    writer = writer_of(run_dir)
    if ckpt is None and writer is not None:
        raise RunDirError(f"{str(run_dir)!r} is still training (process {writer}) and has saved no checkpoint yet; "
                          "try again after its first checkpoint (trainer.checkpoint_every) or when it finishes")
    if ckpt is None:
        raise RunDirError(f"{str(run_dir)!r} has no checkpoint (ckpts/) to load; let the run save one "
                          f"(text3d run resume={run_dir}) and try again")
    if writer is not None:
        logger.warning("%s is still training (process %d): using its checkpoint of step %d", run_dir, writer,
                       int(ckpt.meta["step"]))
    return cfg, ckpt, geometry


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return "; ".join(lines[:3])[:300] if lines else type(e).__name__


def load_system(run_dir: str | Path, checkpoint: Optional[Path] = None) -> Tuple[SceneConfig, nn.Module, Checkpoint]:
    """The trained scene of a run folder (geometry + material + background + renderer) on CPU, in eval
    mode, from its newest intact checkpoint or from ``checkpoint`` (a ``ckpts/step-*`` folder).

    Raises:
        RunDirError: not a run folder, no checkpoint, or the checkpoint does not fit the saved config.
    """
    from text3d.core.checkpoint import load_checkpoint

    from .system import NeRFSystem

    cfg = scene_config(run_dir)
    with torch.random.fork_rng(devices=[]):
        if cfg.geometry.type == "gaussians":  # the checkpoint sets every Gaussian: no init file read
            cfg = dataclasses.replace(cfg, geometry=dataclasses.replace(cfg.geometry, init="random",
                                                                        init_path=None, num_points=1))
        system = NeRFSystem(cfg)
    ckpt = load_checkpoint(checkpoint) if checkpoint is not None else load_latest_checkpoint(run_dir)
    if ckpt is None:
        raise RunDirError(f"source: {str(run_dir)!r} has no checkpoint (ckpts/) to render")
    try:  # module by module: a Gaussian geometry resizes itself to the checkpoint in its own load_state_dict
        for name, module in system.named_children():
            prefix = f"system.{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in ckpt.tensors.items() if k.startswith(prefix)})
    except RuntimeError as e:
        raise RunDirError(f"source: checkpoint {ckpt.path} does not fit the run's config "
                          f"({str(e).splitlines()[0][:200]})") from None
    system.eval()
    return cfg, system, ckpt
