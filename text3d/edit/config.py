"""The config of ``text3d edit``: a run config plus the ``edit:`` and ``refine:`` sections, loaded in
one pass over its layers.

Layers, lowest first: the source's scene sections (geometry, material, background, renderer,
cameras of the run or ``.ply`` being edited), the edit preset (with its ``base:`` presets), the
command line, and what the source itself says (its absolute path, its prompt when
``source_prompt`` is not given). The retype rule of :mod:`text3d.core.config_files` applies between
them: a preset or override that changes a scene section's ``type`` starts it afresh. ``source``,
``target_prompt`` and ``source_prompt`` are also top-level shorthands for ``edit.<key>``; the
edit's ``prompt`` is its ``target_prompt``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from text3d.core.bounds import bounded
from text3d.core.config_files import Layer, file_layers, literal_layer
from text3d.core.errors import ConfigError
from text3d.core.paths import check_writable
from text3d.core.schema import Plain, Schema, resolve_section
from text3d.guidance.registry import GUIDANCES
from text3d.run.config import RUN_SECTIONS, Config, TopLevel, check_resume_overrides, check_run_config
from text3d.scene.rundir import check_run_folder

from .refine import RefineConfig, check_refine_section
from .source import EditSource, open_source

logger = logging.getLogger(__name__)

SHORTHANDS = ("source", "target_prompt", "source_prompt")
"""Top-level keys that stand for ``edit.<key>`` on the command line."""

RENDERER_OF_GEOMETRY = {"implicit-volume": "nerf-volume", "gaussians": "gaussian-splatting"}
"""The renderer that draws each geometry type."""


@dataclass
class EditConfig:
    """What to edit (the ``edit:`` section of an edit's config)."""

    source: str = ""
    """The scene to edit: a run or edit folder (NeRF or Gaussians), or a 3DGS ``.ply`` from any tool."""
    target_prompt: str = ""
    """The prompt the edited scene should match (becomes the edit's ``prompt``)."""
    source_prompt: str = ""
    """The prompt describing the source; empty = the source run's prompt (required for a ``.ply``)."""
    hold_steps: int = bounded(10, lo=1)
    """Steps each training view is held (the frozen source renders and encodes it once); official PDS: 10."""
    orbit_distance: float = bounded(0.0, lo=0.0)
    """``.ply`` sources: camera distance from the bounds' centre; 0 = 6 bounding radii (quickstart framing)."""
    orbit_elevations: List[float] = field(default_factory=lambda: [-10.0, 60.0])
    """``.ply`` sources: elevation range of the orbit cameras, degrees."""
    keep_opacity: float = bounded(0.0, lo=0.0)
    """Weight of the opacity anchor: the squared difference of the edited and the frozen source's
    opacity, summed over each training view's pixels (the guidances' scale) and averaged over views. It keeps the source's geometry through a colour
    edit (no see-through surface, no floaters); 0 lets the geometry move (shape edits)."""
    smooth_colour: float = bounded(0.0, lo=0.0)
    """Weight of the colour smoothness term (:mod:`text3d.edit.smoothness`): the L1 colour difference of
    neighbouring points of the source's surface (NeRF: a jitter of ``smooth_radius``; Gaussians: the
    nearest source Gaussians). It keeps a colour edit one colour instead of speckle; 0 = off."""
    smooth_chroma: float = bounded(0.0, lo=0.0)
    """Weight of the chroma smoothness term (:mod:`text3d.edit.chroma`): the total variation of the
    chromaticity ``rgb / (r + g + b)`` between neighbouring object pixels of each training render
    (shading cancels). It keeps a colour edit one colour instead of patches; 0 = off."""
    recolour_hidden: bool = False
    """Gaussian scenes: before the edit, the Gaussians no training view of the source sees (inside the
    object, their colours never trained) take the colour of the nearest seen one
    (:mod:`text3d.edit.hidden`), so a shape edit that uncovers them shows no confetti."""
    smooth_radius: float = bounded(0.02, lo=0.0, lo_open=True)
    """NeRF scenes: standard deviation of the jitter between compared points, world units."""
    smooth_points: int = bounded(4096, lo=1)
    """Points (NeRF) or Gaussians drawn for the smoothness term each step."""
    metric_views: int = bounded(8, lo=1, hi=360)
    """Fixed views (evenly spaced in azimuth at the eval elevation) of the identity and target figures."""
    metric_resolution: int = bounded(64, lo=8, hi=1024)
    """Side of those views, pixels."""
    clip_model: Optional[str] = None
    """A CLIP model (hub id or ``CLIPModel`` folder) for Instruct-NeRF2NeRF's CLIP directional
    similarity in ``metrics.json``; ``null`` = not computed. Loaded before the edit starts."""


def check_edit_section(edit: EditConfig) -> None:
    """The target prompt is given, the orbit elevations are a range."""
    if not str(edit.target_prompt or "").strip():
        raise ConfigError('target_prompt: missing or empty; say what the scene should become, e.g. '
                          'target_prompt="a blue cube"')
    if len(edit.orbit_elevations) != 2 or edit.orbit_elevations[0] > edit.orbit_elevations[1]:
        raise ConfigError(f"edit.orbit_elevations: expected [low, high] degrees, got {list(edit.orbit_elevations)}")


@dataclass
class EditRunConfig(Config):
    """A resolved edit config: a run config (``prompt`` is the target prompt) with its edit sections."""

    edit: EditConfig
    refine: RefineConfig


def check_editing_guidance(guidance_type: str) -> None:
    """Raise :class:`ConfigError` unless ``guidance.type`` is an editing guidance (pds, dds, sds-edit)."""
    if not getattr(GUIDANCES.get(guidance_type).cls, "needs_source", False):
        raise ConfigError(f"guidance.type: {guidance_type!r} is not an editing guidance; use pds, dds or sds-edit")


def check_edit_config(cfg: EditRunConfig) -> None:
    check_run_config(cfg)
    check_editing_guidance(cfg.guidance.type)
    if cfg.steps < 1:
        raise ConfigError(f"steps: an edit needs at least 1 step (steps={cfg.steps} would write the source back "
                          "unchanged as an edit)")
    if cfg.edit.recolour_hidden and cfg.geometry.type != "gaussians":
        raise ConfigError(f"edit.recolour_hidden: recolours Gaussians, and the source is a {cfg.geometry.type} scene; "
                          "set edit.recolour_hidden=false")
    refine = cfg.refine
    if refine.enabled and refine.start_step >= cfg.steps:
        raise ConfigError(f"refine.start_step: {refine.start_step} leaves no refinement step before steps={cfg.steps}; "
                          f"set it below {cfg.steps} or refine.enabled=false")


def _build(top: TopLevel, sections: Dict[str, Any]) -> EditRunConfig:
    return EditRunConfig(**{**dataclasses.asdict(top), "prompt": sections["edit"].target_prompt}, **sections)


EDIT_SECTIONS = {**RUN_SECTIONS, "edit": Plain(EditConfig, check_edit_section),
                 "refine": Plain(RefineConfig, check_refine_section)}
EDIT_SCHEMA = Schema("edit", TopLevel, EDIT_SECTIONS, build=_build, check=check_edit_config,
                     shorthands={key: "edit" for key in SHORTHANDS})
"""What a ``text3d edit`` config may hold."""


def check_scene_types(raw: Dict[str, Any], source: EditSource) -> None:
    """The edit keeps the source's geometry type, and its renderer draws that geometry (checked on
    the preset and overrides, before the source's settings are merged in)."""
    want = source.scene["geometry"]["type"]
    geometry = (raw.get("geometry") or {}).get("type", want)
    if geometry != want:
        raise ConfigError(f"geometry.type: the source is a {want!r} scene; an edit cannot change it to {geometry!r}")
    renderer = (raw.get("renderer") or {}).get("type", source.scene["renderer"]["type"])
    if renderer != RENDERER_OF_GEOMETRY.get(want, renderer):
        raise ConfigError(f"renderer.type: {renderer!r} does not draw the source's {want!r} geometry; "
                          f"use {RENDERER_OF_GEOMETRY[want]!r}")


def load_edit_config(path: Optional[str | Path], overrides: Sequence[str] = ()) -> Tuple[EditRunConfig, EditSource]:
    """A new edit's typed config and its source (weights read, no prior loaded), from a preset and overrides."""
    return edit_config(EDIT_SCHEMA.layers(path, overrides))


def edit_config(layers: Sequence[Layer]) -> Tuple[EditRunConfig, EditSource]:
    """A new edit's typed config and its source from the layers of its preset and overrides.

    What the user gave is checked first (the edit section, the guidance), then the source is read,
    then every layer is merged and validated once.
    """
    raw = EDIT_SCHEMA.merge(layers)
    edit = resolve_section("edit", EDIT_SECTIONS["edit"], raw.get("edit"))
    check_editing_guidance((raw.get("guidance") or {}).get("type", "sds"))
    source = open_source(edit.source, edit.orbit_distance, edit.orbit_elevations)
    check_scene_types(raw, source)
    source_prompt = edit.source_prompt or source.prompt
    if not source_prompt:
        raise ConfigError(f'source_prompt: the source {source.path} has no prompt of its own; pass '
                          f'source_prompt="..." describing it')
    origin = f"the source {source.path}"
    facts = literal_layer({"edit": {"source": source.path, "source_prompt": source_prompt}}, origin)
    cfg = EDIT_SCHEMA.resolve(EDIT_SCHEMA.merge([literal_layer(source.scene, origin), *layers, facts]))
    if source_prompt.strip() == cfg.edit.target_prompt.strip():
        logger.warning("the target prompt equals the source prompt (%r): there is nothing to edit", source_prompt)
    check_writable(cfg.output_dir, "output_dir")  # before the prior loads
    return cfg, source


def load_edit_run_config(path: Optional[str | Path], overrides: Sequence[str] = ()
                         ) -> Tuple[EditRunConfig, Optional[EditSource]]:
    """The config an edit would use, validated (the source's weights read, no prior loaded, nothing
    written), and its source; with ``resume=DIR`` the config saved in ``DIR`` with ``overrides`` on
    top, and no source (the edit's checkpoints hold the frozen source)."""
    layers = EDIT_SCHEMA.layers(path, overrides)
    resume = EDIT_SCHEMA.merge(layers).get("resume")
    if resume:
        return load_saved_edit_config(Path(resume), overrides), None
    if path is None:
        raise ConfigError("a config file is needed (e.g. text3d edit configs/edit-quickstart.yaml source=RUN_DIR "
                          "target_prompt=\"a blue cube\"), or resume=<edit dir>")
    return edit_config(layers)


def load_saved_edit_config(edit_dir: Path, overrides: Sequence[str] = ()) -> EditRunConfig:
    """The config saved in an edit folder, with ``overrides`` (a resume)."""
    check_run_folder(edit_dir, "resume")
    if "edit" not in file_layers(edit_dir / "config.yaml", saved=True)[0].data:
        raise ConfigError(f"resume: {str(edit_dir)!r} is a run, not an edit; continue it with text3d run resume={edit_dir}")
    layers = EDIT_SCHEMA.layers(edit_dir / "config.yaml", overrides, saved=True)
    check_resume_overrides(EDIT_SCHEMA.lift_shorthands(layers[-1].data), "edit")
    return EDIT_SCHEMA.resolve(EDIT_SCHEMA.merge([*layers, literal_layer({"resume": str(edit_dir)}, "resume")]))


__all__ = ["EDIT_SCHEMA", "EditConfig", "EditRunConfig", "edit_config", "load_edit_config", "load_edit_run_config",
           "load_saved_edit_config"]
