"""Configs: per-component dataclasses (the schemas) and their validation into a :class:`Config`.

A config file has short top-level keys (``prompt``, ``seed``, ``steps``, ...) and one section per
component. A component section names its implementation with ``type``; the registry of that stage
gives the dataclass the section is validated against, so a typo, a wrong type or an unknown
``type`` fails here, before any model loads, with one line naming the key path and the valid
choices (:class:`text3d.errors.ConfigError`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import yaml

from . import registry
from .errors import ConfigError
from .bounds import bounded, check_bounds, check_value
from .device import resolve_device
from .schedules import LinearSchedule
# Reading files/overrides and typed merging live in their own modules; their public functions are
# re-exported here, where callers have always found them.
from .config_files import load_raw, parse_overrides, read_yaml_file  # noqa: F401
from .config_merge import merge_section, valid_keys_hint  # noqa: F401

# Lives with the prompt processor; imported here as the schema of the ``prompting`` section.
from text3d.guidance.prompts import PromptingConfig, check_prompting_config  # noqa: E402


PARAM_GROUPS = ("encoding", "network", "background", "means", "scales", "quats", "opacities", "sh0", "shN")
"""Optimiser parameter groups: the NeRF geometry's encoding and network, the background, and the
Gaussian geometry's means, scales, quats, opacities and SH colours (sh0: DC term, shN: the rest). A
group whose component has no parameters (a solid background, NeRF groups in a Gaussian run) is skipped."""


@dataclass
class OptimizerConfig:
    """Adam(W) with one learning rate per parameter group."""

    type: str = "adam"
    """``adam`` or ``adamw``."""
    lr: Dict[str, float] = bounded(default_factory=lambda: {"encoding": 0.01, "network": 0.01, "background": 0.001}, lo=0)
    """Learning rate per parameter group (groups: ``encoding``, ``network`` of the geometry,
    ``background``). A group missing here uses ``default_lr``."""
    default_lr: float = bounded(0.01, lo=0)
    """Learning rate of groups not named in ``lr``."""
    betas: List[float] = bounded(default_factory=lambda: [0.9, 0.99], lo=0, hi=1, hi_open=True)
    """Adam betas."""
    eps: float = bounded(1e-15, lo=0)
    """Adam epsilon (small, as instant-ngp and threestudio use for hash grids)."""
    weight_decay: float = bounded(0.0, lo=0)
    """Weight decay (decoupled for ``adamw``)."""


@dataclass
class LossConfig:
    """Weights of the loss terms; each is a number or a :class:`LinearSchedule`."""

    lambda_sds: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(1.0), lo=0)
    """Weight of the guidance (SDS) loss."""
    lambda_orient: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.0), lo=0)
    """DreamFusion orientation loss (normals facing away from the camera); needs normals."""
    lambda_sparsity: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.0), lo=0)
    """Mean of ``sqrt(opacity^2 + 0.01)`` over pixels: pushes empty space to be empty."""
    lambda_opaque: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.0), lo=0)
    """Binary entropy of the opacity: pushes pixels to be fully opaque or fully empty."""
    lambda_image: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(1.0), lo=0)
    """Weight of the image loss against the views of ``targets`` (used only when ``targets`` is set)."""


@dataclass
class TrainerConfig:
    """Run-loop settings: checkpoints, validation, final media."""

    checkpoint_every: int = bounded(1000, lo=0)
    """Save a checkpoint every N steps (and always at the end). 0 = only at the end."""
    keep_checkpoints: int = bounded(2, lo=1)
    """How many of the newest checkpoints to keep on disk (``last`` always points at the newest)."""
    val_every: int = bounded(200, lo=0)
    """Render validation views every N steps into ``validation/``. 0 = never."""
    val_views: int = bounded(4, lo=1, hi=64)
    """Number of validation views (evenly spaced in azimuth)."""
    val_resolution: int = bounded(128, lo=8, hi=4096)
    """Side of each validation image in pixels."""
    turntable_frames: int = bounded(60, lo=0, hi=3600)
    """Frames of the final turntable video. 0 = no turntable."""
    turntable_resolution: int = bounded(256, lo=8, hi=4096)
    """Side of each turntable frame in pixels."""
    turntable_fps: int = bounded(30, lo=1, hi=240)
    """Frames per second of the turntable video."""
    log_every: int = bounded(10, lo=0)
    """Log loss figures every N steps."""


EXPORT_FORMATS = ("glb", "obj", "ply")
"""Mesh formats of ``export.formats`` / ``text3d export --format``."""


@dataclass
class ExportConfig:
    """Mesh export (``RUN_DIR/export/``) at the end of a run; ``text3d export RUN_DIR`` uses the same
    settings with larger defaults (256 cells, 50k faces, 1024² texture). See ``text3d.export``."""

    enabled: bool = True
    """Export a mesh when the run finishes. A field with no surface yet logs a warning instead
    of failing the run."""
    formats: List[str] = field(default_factory=lambda: ["glb"])
    """Any of ``glb`` (textured PBR, one file), ``obj`` (+ ``.mtl`` + ``_albedo.png``), ``ply``
    (vertex colours)."""
    resolution: int = bounded(128, lo=8, hi=1024)
    """Density grid cells per axis over the scene box (marching cubes). Cost grows with the
    surface, ~resolution²; 128 is for quick previews, 256 for final assets."""
    level: Optional[float] = bounded(None, lo=0, lo_open=True)
    """Density iso-level of the surface; None = the density at which rays through the field
    become half opaque (median over grid lines). Lower = fatter, keeps faint parts."""
    faces: int = bounded(20000, lo=0)
    """Decimate to about this many triangles (quadric error); 0 = keep the marching-cubes mesh."""
    texture_size: int = bounded(512, lo=0, hi=8192)
    """Side of the baked albedo texture in pixels (UV unwrap + bake); 0 = no texture, vertex
    colours only."""
    smooth_iterations: int = bounded(10, lo=0, hi=1000)
    """Taubin smoothing rounds after decimation (volume-preserving); 0 = none. The default evens out
    the bumps under a training pixel that no render constrains (quickstart cylinder at 256³: area
    1.20x -> 1.10x the true one, volume unchanged)."""
    min_component_ratio: float = bounded(0.05, lo=0, hi=1)
    """Drop floaters: connected pieces with fewer faces than this fraction of the largest piece.
    1 = largest piece only, 0 = keep all."""
    size: float = bounded(1.0, lo=0)
    """Largest side of the exported object's bounding box, metres; 0 = keep world units."""
    pore_size: Optional[float] = bounded(None, lo=0.0)
    """Openings narrower than this (world units) are pores no training render could show: they are
    closed, and whatever no straight line of sight reaches behind them is filled (the surface is
    the solid a viewer sees, see ``text3d.export.carve``). None = for a NeRF two pixels of the run's
    finest training renders at its nearest camera, the finest opening a point-sampled render resolves
    (0.108 for the quickstart), for Gaussians one (0.027; their footprints are widened as rendered),
    without a run 1/20 (NeRF) or 1/40 (Gaussians) of the box side; 0 = no carving (the raw
    iso-surface, pores and hidden faces kept)."""


def check_export_config(cfg: ExportConfig, key: Callable[[str], str] = lambda name: f"export.{name}") -> None:
    """Raise :class:`ConfigError` for a bad export setting; ``key`` names the setting in the message
    (``export.faces`` in a config, ``--faces`` on the command line)."""
    for f in dataclasses.fields(cfg):
        check_value(key(f.name), getattr(cfg, f.name), f.metadata.get("bounds"))
    bad = [f for f in cfg.formats if f not in EXPORT_FORMATS]
    if bad or not cfg.formats:
        raise ConfigError(f"{key('formats')}: unknown or no format {bad or cfg.formats}; valid: {', '.join(EXPORT_FORMATS)}")
    if not 8 <= cfg.resolution <= 1024:
        raise ConfigError(f"{key('resolution')}: must be in [8, 1024] cells per axis, got {cfg.resolution}")
    if cfg.faces < 0 or 0 < cfg.faces < 4:
        raise ConfigError(f"{key('faces')}: must be 0 (no decimation) or >= 4, got {cfg.faces}")
    if cfg.texture_size != 0 and not 16 <= cfg.texture_size <= 8192:
        raise ConfigError(f"{key('texture_size')}: must be 0 (no texture) or in [16, 8192], got {cfg.texture_size}")
    if cfg.level is not None and not cfg.level > 0:
        raise ConfigError(f"{key('level')}: must be > 0 (a density), got {cfg.level}")
    if cfg.pore_size is not None and not cfg.pore_size >= 0:
        raise ConfigError(f"{key('pore_size')}: must be >= 0 world units (0 = no carving), got {cfg.pore_size}")
    for name in ("smooth_iterations", "min_component_ratio", "size"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{key(name)}: must be >= 0, got {getattr(cfg, name)}")


@dataclass
class TopLevel:
    """Short top-level keys, the common overrides."""

    name: str = "text3d"
    """Experiment name: runs land in ``<output_dir>/<name>/<tag>@<timestamp>/``."""
    tag: str = ""
    """Run tag; empty = derived from the prompt."""
    prompt: str = ""
    """The text prompt."""
    negative_prompt: str = ""
    """Negative prompt (the unconditional branch of classifier-free guidance)."""
    seed: int = bounded(0, lo=0, hi=2**63 - 1)
    """Seed of every random choice of the run (initialisation, cameras, timesteps, noise)."""
    steps: int = bounded(10000, lo=0)
    """Number of optimisation steps."""
    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    output_dir: str = "outputs"
    """Root folder of runs."""
    resume: Optional[str] = None
    """A run directory to continue from its last checkpoint."""
    targets: Optional[str] = None
    """A ``text3d multiview`` output folder: fit the scene to its views at their cameras (image loss,
    ``loss.lambda_image``), alone (``loss.lambda_sds: 0``) or with SDS."""


# Component sections: section name -> (registry, default type).
COMPONENT_SECTIONS: Dict[str, tuple] = {
    "prior": (registry.PRIORS, "stable-diffusion"),
    "guidance": (registry.GUIDANCES, "sds"),
    "geometry": (registry.GEOMETRIES, "implicit-volume"),
    "material": (registry.MATERIALS, "diffuse-with-point-light"),
    "background": (registry.BACKGROUNDS, "neural-environment"),
    "renderer": (registry.RENDERERS, "nerf-volume"),
    "cameras": (registry.CAMERAS, "random"),
}
# Sections with one fixed schema.
PLAIN_SECTIONS: Dict[str, type] = {
    "prompting": PromptingConfig,
    "optimizer": OptimizerConfig,
    "loss": LossConfig,
    "trainer": TrainerConfig,
    "export": ExportConfig,
}
SECTIONS = list(COMPONENT_SECTIONS) + list(PLAIN_SECTIONS)


@dataclass
class Config:
    """A fully resolved run config: the top-level keys plus one typed object per section."""

    name: str
    tag: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    device: str
    output_dir: str
    resume: Optional[str]
    targets: Optional[str]
    prior: Any
    guidance: Any
    geometry: Any
    material: Any
    background: Any
    renderer: Any
    cameras: Any
    prompting: PromptingConfig
    optimizer: OptimizerConfig
    loss: LossConfig
    trainer: TrainerConfig
    export: ExportConfig


def component_type(section: str, raw: Dict[str, Any]) -> str:
    """The registered type name of component section ``section`` (its ``type`` key or the default).

    Raises:
        ConfigError: an unknown type, naming the valid ones.
    """
    reg, default = COMPONENT_SECTIONS[section]
    t = raw.get("type", default) if isinstance(raw, dict) else default
    if t not in reg:
        raise ConfigError(f"{section}.type: unknown type {t!r}; valid choices: {', '.join(reg.names())}")
    return t


def check_is_section(name: str, raw: Any) -> None:
    """Raise :class:`ConfigError` when component section ``name`` was given a value (``material=no-material``)."""
    if isinstance(raw, dict):
        return
    example = raw if isinstance(raw, str) and re.fullmatch(r"[\w-]+", raw) else "..."
    raise ConfigError(f"{name}: a section of keys, not a value (got {raw!r}); set its keys, e.g. {name}.type={example}")


def resolve(raw: Dict[str, Any]) -> Config:
    """Validate a plain nested dict (YAML + overrides merged) into a :class:`Config`."""
    import text3d.components  # noqa: F401  (fills the registries)

    top_keys = [f.name for f in dataclasses.fields(TopLevel)]
    for key in raw:
        if key not in top_keys and key not in SECTIONS:
            raise ConfigError(f"unknown key '{key}'{valid_keys_hint(str(key), top_keys + SECTIONS)}")
    top = merge_section("", TopLevel, {k: raw[k] for k in top_keys if k in raw})
    check_bounds(top, "")
    resolve_device(top.device)  # an unknown or absent device fails here, before any output
    sections: Dict[str, Any] = {}
    for name in COMPONENT_SECTIONS:
        sec_raw = raw.get(name) or {}
        check_is_section(name, sec_raw)
        t = component_type(name, sec_raw)
        reg = COMPONENT_SECTIONS[name][0]
        sections[name] = merge_section(name, reg.config_class(t), {**sec_raw, "type": t})
        check_bounds(sections[name], name)  # ranges first: the component checks may assume finite numbers
        check = getattr(reg.get(t).cls, "check_config", None)
        if check is not None:
            check(sections[name])
    for name, cls in PLAIN_SECTIONS.items():
        sections[name] = merge_section(name, cls, raw.get(name))
        check_bounds(sections[name], name)
    check_prompting_config(sections["prompting"])
    check_export_config(sections["export"])
    unknown = sorted(set(sections["optimizer"].lr) - set(PARAM_GROUPS))
    if unknown:
        raise ConfigError(f"optimizer.lr: unknown parameter group(s) {unknown}; valid groups: {', '.join(PARAM_GROUPS)}")
    if sections["optimizer"].type not in ("adam", "adamw"):
        raise ConfigError(f"optimizer.type: unknown value {sections['optimizer'].type!r}; valid choices: adam, adamw")
    if top.targets:
        from .multiview_targets import check_targets_dir

        check_targets_dir(top.targets)
    return Config(**dataclasses.asdict(top), **sections)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML preset, apply overrides and validate everything (no model is loaded)."""
    return resolve(load_raw(path, overrides))


def to_dict(cfg: Config) -> Dict[str, Any]:
    """The resolved config as plain data (reloadable with :func:`resolve`)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
