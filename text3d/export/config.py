"""The ``export`` settings: the ``export:`` section of a run config, and what ``text3d export`` takes
as ``key=value`` overrides (with larger defaults, :data:`EXPORT_COMMAND_DEFAULTS`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from text3d.core.bounds import bounded, check_value
from text3d.core.config_files import literal_layer
from text3d.core.errors import ConfigError
from text3d.core.schema import Schema


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


EXPORT_COMMAND_DEFAULTS = {"resolution": 256, "faces": 50000, "texture_size": 1024}
"""``text3d export``'s defaults where they differ from the ``export:`` section's (a final asset,
not a preview)."""


def load_export_command_config(flags: Dict[str, Any], overrides: Sequence[str] = ()) -> ExportConfig:
    """The settings of ``text3d export``: its defaults, then the options given (named ``--faces``, ...,
    in messages), then ``key=value`` overrides of the settings (named by key)."""
    options = {"formats": "--format", "smooth_iterations": "--smooth"}  # setting -> option
    given = ExportConfig(**{**EXPORT_COMMAND_DEFAULTS, **flags})
    check_export_config(given, key=lambda name: options.get(name, "--" + name.replace("_", "-")))
    return EXPORT_SCHEMA.load(None, overrides, below=[literal_layer(dataclasses.asdict(given), "the options")])


EXPORT_SCHEMA = Schema("export", ExportConfig, check=lambda cfg: check_export_config(cfg, key=lambda name: name))
"""The settings ``text3d export`` takes as ``key=value`` overrides (the fields of :class:`ExportConfig`)."""
