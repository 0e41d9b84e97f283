"""The config of ``text3d multiview``: short top-level keys (:class:`MultiviewTop`) and the sections
``prior`` (any registered prior), ``sampler``, ``attention`` and ``prompting``, validated by
:data:`MULTIVIEW_SCHEMA` before any model loads, like ``text3d run``'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError
from text3d.core.schema import Component, Plain, Schema
from text3d.guidance.attention import SharedAttentionConfig
from text3d.guidance.prompts import PromptingConfig, check_prompting_config
from text3d.guidance.registry import PRIORS

from .modes import MODES, NOISE_MODES, MultiviewSettings, SamplerConfig, build_mode, parse_grid


@dataclass
class MultiviewTop:
    """Short top-level keys of a multiview config."""

    name: str = "multiview"
    """Experiment name: outputs land in ``<output_dir>/<name>/<tag>@<timestamp>/``."""
    tag: str = ""
    """Output tag; empty = derived from the prompt."""
    prompt: str = ""
    """The text prompt (one object)."""
    negative_prompt: str = ""
    """Prompt of the unconditional half of classifier-free guidance."""
    views: int = bounded(4, lo=1, hi=64)
    """``N``, the number of views (cameras)."""
    mode: str = "shared"
    """``independent`` | ``shared`` (StyleAligned) | ``full`` (every view attends to all) | ``grid`` (tiled canvas)."""
    grid: str = "auto"
    """``mode=grid``: ``RxC`` with ``R * C = views`` (Zero123++: ``3x2``), or ``auto``."""
    noise: str = "independent"
    """``independent`` (each view its own noise) or ``shared`` (the views of a set draw the same initial and
    ancestral noise)."""
    reference_camera: float = bounded(0.0, lo=0.0, hi=1.0)
    """Fraction of the sampling steps, from the noisiest, in which every view is conditioned on its set's
    view 0 (camera / view prompt), then on its own; 0 = own camera throughout."""
    seed: int = bounded(0, lo=0, hi=2**63 - 1)
    """Seed of the noise."""
    resolution: Optional[int] = bounded(None, lo=1)
    """Image side in pixels; None = the prior's native size (32 for the embedded prior, 512 for SD 2.1-base)."""
    azimuths: List[float] = field(default_factory=list)
    """Camera azimuths in degrees (0 looks at the front from +x); empty = ``views`` evenly spaced from
    ``azimuth_start``."""
    azimuth_start: float = 0.0
    """Azimuth of the first evenly spaced view, degrees."""
    elevation: float = bounded(15.0, lo=-89.0, hi=89.0)
    """Camera elevation, degrees."""
    distance: float = bounded(3.0, lo=0.0, lo_open=True)
    """Camera distance from the origin, world units (recorded for reconstruction; the embedded prior was
    trained at 3)."""
    fovy: float = bounded(32.0, lo=1.0, hi=179.0)
    """Vertical field of view, degrees (recorded for reconstruction; the embedded prior was trained at 32)."""
    device: str = "auto"
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    output_dir: str = "outputs"
    """Root folder of outputs."""


PLAIN = {"sampler": SamplerConfig, "attention": SharedAttentionConfig, "prompting": PromptingConfig}
"""The fixed sections of a multiview config (besides the ``prior`` component)."""


@dataclass
class MultiviewConfig:
    """A resolved ``text3d multiview`` config: the top-level keys and one object per section."""

    top: MultiviewTop
    prior: Any
    sampler: SamplerConfig
    attention: SharedAttentionConfig
    prompting: PromptingConfig

    def __getattr__(self, name: str) -> Any:  # cfg.prompt, cfg.tag, ... (what new_run_dir reads)
        if name == "top":
            raise AttributeError(name)
        return getattr(self.top, name)

    def settings(self) -> MultiviewSettings:
        return MultiviewSettings(mode=self.top.mode, grid=self.top.grid, noise=self.top.noise,
                                 reference_camera=self.top.reference_camera, sampler=self.sampler, attention=self.attention)

    def to_dict(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self.top), **{k: dataclasses.asdict(getattr(self, k)) for k in ("prior", *PLAIN)}}


def check_multiview_config(cfg: MultiviewConfig) -> None:
    """A prompt, known mode and noise, one azimuth per view, a grid that holds the views."""
    top = cfg.top
    if not top.prompt.strip():
        raise ConfigError('prompt: empty; give one, e.g. prompt="a cube"')
    if top.mode not in MODES:
        raise ConfigError(f"mode: unknown mode {top.mode!r}; valid modes: {', '.join(MODES.names())}")
    if top.noise not in NOISE_MODES:
        raise ConfigError(f"noise: unknown value {top.noise!r}; valid: {', '.join(NOISE_MODES)}")
    if top.azimuths and len(top.azimuths) != top.views:
        raise ConfigError(f"azimuths: {len(top.azimuths)} given for views={top.views}; give one per view or none")
    if top.mode == "grid":
        parse_grid(top.grid, top.views)
    build_mode(cfg.settings()).check(top.views)


def _build(top: MultiviewTop, sections: Dict[str, Any]) -> MultiviewConfig:
    return MultiviewConfig(top=top, **sections)


MULTIVIEW_SCHEMA = Schema("multiview", MultiviewTop, {
    "prior": Component(PRIORS, "stable-diffusion"),
    "sampler": Plain(SamplerConfig),
    "attention": Plain(SharedAttentionConfig),
    "prompting": Plain(PromptingConfig, check_prompting_config),
}, build=_build, check=check_multiview_config)
"""What a ``text3d multiview`` config may hold."""


def resolve_multiview(raw: Dict[str, Any]) -> MultiviewConfig:
    """Validate a plain dict (YAML + overrides) into a :class:`MultiviewConfig`; no model loads.

    Raises:
        ConfigError: an unknown key, a wrong type, a value out of range, an unknown mode or noise,
            or a grid that does not hold ``views`` views.
    """
    return MULTIVIEW_SCHEMA.resolve(raw)


def load_multiview_config(path: Optional[str | Path], overrides: Sequence[str] = ()) -> MultiviewConfig:
    """Load a preset, apply ``key=value`` overrides and validate (no model loads)."""
    if path is None:
        raise ConfigError("a config file is needed, e.g. text3d multiview configs/multiview-quickstart.yaml prompt=\"a cube\"")
    return MULTIVIEW_SCHEMA.load(path, overrides)
