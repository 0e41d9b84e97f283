"""The config of ``text3d video``: flat top-level keys (:class:`VideoConfig`) and the ``prior`` section,
validated by :data:`VIDEO_SCHEMA` before any model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from text3d.core.bounds import bounded
from text3d.core.device import resolve_device
from text3d.core.errors import ConfigError
from text3d.core.schema import Component, Schema
from text3d.guidance.registry import PRIORS

from .correspondence import BACKGROUND_MODES, FLOW_PRESETS
from .noise import NoiseSettings, check_noise_settings
from .source import check_source


ATTENTION_MODES = ("none", "keyframe")


@dataclass
class VideoConfig:
    """Settings of ``text3d video`` (top-level keys; the prior is the ``prior`` section)."""

    source: str = ""
    """A run folder (its turntable is rendered with depth), a video file, or a folder of frames."""
    prompt: str = ""
    """Target prompt; empty = the run's own prompt (a video source needs one)."""
    negative_prompt: str = ""
    """Prompt of the unconditional branch of classifier-free guidance."""
    noise: str = "warped"
    """``iid``, ``shared``, ``mixed``, ``progressive`` or ``warped`` (see :mod:`text3d.video.noise`)."""
    alpha: float = bounded(0.9, lo=0.0, hi=1.0, hi_open=True)
    """Noise correlation in [0, 1): for ``warped``, between corresponding pixels of consecutive frames."""
    warp: str = "nearest"
    """``warped`` noise: ``nearest`` or ``integral`` (both white), ``bilinear`` (a foil). The warp runs at
    the working resolution and the noise is area-summed to the prior's grid, so ``nearest`` there is
    already an integral warp with ``k = resolution / prior grid`` at the prior's grid."""
    upsample: int = bounded(2, lo=1, hi=16)
    """``integral`` warp: sub-pixels per pixel side."""
    seed: int = bounded(0, lo=0, hi=2**63 - 1)
    """Seed of all noise (the i.i.d. comparison uses the same seed)."""
    strength: float = bounded(0.5, lo=0.0, hi=1.0, lo_open=True)
    """SDEdit strength in (0, 1]: frames are noised to ``strength * T``; 1 = generate from noise."""
    steps: int = bounded(50, lo=1, hi=1000)
    """Steps of the full sampling grid; SDEdit runs the last ``round(steps * strength)``."""
    cfg_scale: float = bounded(2.0, lo=0.0)
    """Classifier-free guidance scale (diffusers convention; 2 is the shapes prior's documented value)."""
    eta: float = bounded(1.0, lo=0.0, hi=1.0)
    """DDIM stochasticity: 1 = ancestral steps (the shapes prior's documented sampler), 0 = deterministic."""
    frames: int = bounded(24, lo=2, hi=2000)
    """Turntable frames of a run source; at most this many frames of a video."""
    degrees_per_frame: float = bounded(0.0, lo=0.0, hi=360.0)
    """Run sources: azimuth step of the turntable between consecutive frames, in degrees; 0 = one full
    turn over ``frames`` (``360 / frames``). A filmed video moves a few degrees per frame."""
    resolution: int = bounded(128, lo=8, hi=4096)
    """Working resolution: turntable renders / resized video frames (square), where correspondences are
    found; a multiple of the prior's grid (32 for the shapes prior's pixels, 64 latents for SD at 512)."""
    background: str = "static"
    """Run sources: how the backdrop corresponds between frames: ``static`` (same pixel: the uniform
    backdrop keeps its noise still on screen) or ``infinity`` (points at infinity turning with the camera)."""
    flow_preset: str = "medium"
    """Optical flow of video sources: DIS ``ultrafast``, ``fast`` or ``medium``."""
    attention: str = "none"
    """``none`` or ``keyframe``: every frame's self-attention attends to its keyframe(s) instead of itself
    (:class:`text3d.guidance.attention.KeyframeAttnProcessor`); needs ``batch_size >= frames``."""
    keyframe: str = "first"
    """With ``attention: keyframe``: ``first`` (Text2Video-Zero), ``first_previous`` (Pix2Video) or
    ``middle`` (FateZero)."""
    reference_camera: float = bounded(0.0, lo=0.0, hi=1.0)
    """Fraction of the SDEdit steps, from the noisiest, in which every frame is conditioned on the
    keyframe's camera (frame 0; the middle frame for ``attention: keyframe`` with ``keyframe: middle``),
    afterwards on its own (as ``reference_camera`` of ``text3d multiview``); 0 = own camera throughout.
    Only camera-conditioned priors (the shapes prior) see cameras."""
    compare_iid: bool = True
    """Also restyle with i.i.d. noise at the same seed (for the ratio of warp errors and the side-by-side)."""
    fps: int = bounded(12, lo=1, hi=240)
    """Frames per second of the videos."""
    batch_size: int = bounded(16, lo=1, hi=1024)
    """Frames per UNet call."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    output_dir: str = "outputs"
    """Root folder of outputs."""
    name: str = "video"
    """Experiment name: ``<output_dir>/<name>/<tag>@<time>/``."""
    tag: str = ""
    """Output tag; empty = derived from the prompt."""
    prior: Any = None
    """The prior section (``type: pixel`` or ``stable-diffusion``, as in run configs)."""


def _build(top: VideoConfig, sections: Dict[str, Any]) -> VideoConfig:
    return dataclasses.replace(top, **sections)


def check_video_config(cfg: VideoConfig) -> None:
    """Choices, the device and the source, checked before any model loads."""
    resolve_device(cfg.device)
    check_noise_settings(noise_settings(cfg), key="noise")
    if cfg.flow_preset not in FLOW_PRESETS:
        raise ConfigError(f"flow_preset: unknown preset {cfg.flow_preset!r}; valid: {', '.join(FLOW_PRESETS)}")
    if cfg.background not in BACKGROUND_MODES:
        raise ConfigError(f"background: unknown mode {cfg.background!r}; valid: {', '.join(BACKGROUND_MODES)}")
    if cfg.attention not in ATTENTION_MODES:
        raise ConfigError(f"attention: unknown mode {cfg.attention!r}; valid: {', '.join(ATTENTION_MODES)}")
    from text3d.guidance.attention import KEYFRAME_MODES  # the processor's own list (lazy: diffusers)

    if cfg.attention == "keyframe" and cfg.keyframe not in KEYFRAME_MODES:
        raise ConfigError(f"keyframe: unknown mode {cfg.keyframe!r}; valid: {', '.join(KEYFRAME_MODES)}")
    if cfg.attention == "keyframe" and cfg.batch_size < cfg.frames:
        raise ConfigError(f"attention=keyframe: every frame must be in one UNet call to see its keyframe; set "
                          f"batch_size >= frames (now batch_size={cfg.batch_size}, frames={cfg.frames})")
    check_source(cfg.source)


VIDEO_SCHEMA = Schema("video", VideoConfig, {"prior": Component(PRIORS, "pixel")}, build=_build,
                      check=check_video_config)
"""What a ``text3d video`` config may hold."""


def load_video_config(path: Optional[str | Path], overrides: Sequence[str] = ()) -> VideoConfig:
    """Read a video YAML with ``key=value`` overrides and validate everything (no model loads)."""
    return VIDEO_SCHEMA.load(path, overrides)


def noise_settings(cfg: VideoConfig, kind: Optional[str] = None) -> NoiseSettings:
    return NoiseSettings(type=kind or cfg.noise, alpha=cfg.alpha, warp=cfg.warp, upsample=cfg.upsample)
