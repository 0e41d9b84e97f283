"""The config of a text-to-3D run: its schema (:data:`RUN_SCHEMA`) and typed :class:`Config`.

A config file has short top-level keys (``prompt``, ``seed``, ``steps``, ...) and one section per
component. A component section names its implementation with ``type``; the registry of that stage
gives the dataclass the section is validated against, so a typo, a wrong type or an unknown
``type`` fails here, before any model loads, with one line naming the key path and the valid
choices (:class:`text3d.core.errors.ConfigError`). Loading (files, ``base:`` presets, overrides,
the retype rule) is :meth:`text3d.core.schema.Schema.load`, the same for every command.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from text3d.core.bounds import bounded
from text3d.core.config_files import load_raw, parse_overrides  # noqa: F401  (re-exported: callers found them here)
from text3d.core.config_merge import merge_section  # noqa: F401  (re-exported)
from text3d.core.device import resolve_device
from text3d.core.errors import ConfigError
from text3d.core.schedules import LinearSchedule
from text3d.core.schema import Component, Plain, Schema, to_plain
from text3d.core.schema import to_yaml as _to_yaml
from text3d.export.config import EXPORT_FORMATS, ExportConfig, check_export_config  # noqa: F401  (re-exported)
from text3d.guidance.prompts import PromptingConfig, check_prompting_config
from text3d.guidance.registry import GUIDANCES, PRIORS
from text3d.scene.config import SCENE_SECTIONS

from .logs import LoggingConfig, check_logging_config


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
    lambda_gaussian_opacity: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.0), lo=0)
    """Binary entropy of each Gaussian's opacity, summed over the Gaussians (Gaussian scenes only): each
    one solid or gone, so faint Gaussians fall under ``geometry.prune_opacity`` and are pruned."""
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
    viewer: bool = False
    """Open the live viewer while the command trains (``text3d run/edit ... viewer=true`` or ``--viewer``):
    the scene from your camera, pause / resume, the loss curve; needs ``pip install -e ".[viewer]"``."""
    viewer_port: int = bounded(8080, lo=1, hi=65535)
    """Its port (a port in use moves to the next free one; the URL is printed)."""


RUN_SECTIONS = {
    "prior": Component(PRIORS, "stable-diffusion"),
    "guidance": Component(GUIDANCES, "sds"),
    **SCENE_SECTIONS,
    "prompting": Plain(PromptingConfig, check_prompting_config),
    "optimizer": Plain(OptimizerConfig),
    "loss": Plain(LossConfig),
    "trainer": Plain(TrainerConfig),
    "export": Plain(ExportConfig, check_export_config),
    "logging": Plain(LoggingConfig, check_logging_config),
}
"""The sections of a run config: components (picked by ``type``) and plain sections."""
SECTIONS = list(RUN_SECTIONS)


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
    viewer: bool
    viewer_port: int
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
    logging: LoggingConfig


def check_run_config(cfg: Config) -> None:
    """Checks across keys: the device exists, optimiser groups and type, the targets folder."""
    resolve_device(cfg.device)  # an unknown or absent device fails here, before any output
    unknown = sorted(set(cfg.optimizer.lr) - set(PARAM_GROUPS))
    if unknown:
        raise ConfigError(f"optimizer.lr: unknown parameter group(s) {unknown}; valid groups: {', '.join(PARAM_GROUPS)}")
    if cfg.optimizer.type not in ("adam", "adamw"):
        raise ConfigError(f"optimizer.type: unknown value {cfg.optimizer.type!r}; valid choices: adam, adamw")
    if cfg.targets:
        from .targets import check_targets_dir

        check_targets_dir(cfg.targets)
    if cfg.prompting.perp_neg and not getattr(GUIDANCES.get(cfg.guidance.type).cls, "perp_neg", False):
        takers = " and ".join(n for n in GUIDANCES.names() if getattr(GUIDANCES.get(n).cls, "perp_neg", False))
        raise ConfigError(f"prompting.perp_neg: guidance.type={cfg.guidance.type} does not use Perp-Neg ({takers} do); "
                          "set prompting.perp_neg=false")
    gaussian_term = cfg.loss.lambda_gaussian_opacity
    if (gaussian_term.start or gaussian_term.end) and cfg.geometry.type != "gaussians":
        raise ConfigError(f"loss.lambda_gaussian_opacity: weighs Gaussians' opacities, and geometry.type is "
                          f"{cfg.geometry.type}; set it to 0 or use geometry.type gaussians")
    if cfg.viewer and importlib.util.find_spec("viser") is None:
        raise ConfigError('viewer: the live viewer needs viser; pip install -e ".[viewer]", or set viewer=false')


RESUME_KEYS = ("steps", "device", "trainer", "export", "logging", "viewer", "viewer_port")
"""What a resume may change (run, edit and batch alike): how long it trains, on which device, and what
it writes on the way (``trainer.*``, ``logging.*``) and at the end (``export.*``). Everything else shaped the
checkpoint it continues from, so a new value would be recorded but not used."""


def check_resume_overrides(overrides: Dict[str, Any], what: str = "run") -> None:
    """Raise :class:`ConfigError` naming the keys of ``overrides`` (a nested mapping) that a resume may
    not change; ``resume`` itself is the resume."""
    bad = sorted(key for key in _dotted(overrides) if key.split(".")[0] not in (*RESUME_KEYS, "resume"))
    if bad:
        raise ConfigError(f"resume: {', '.join(bad)} cannot change on a resume (the {what} continues from "
                          f"checkpoints made with its saved value); a resume may change only steps, device, "
                          f"trainer.*, logging.* and export.* — start a new {what} to change the rest")


def _dotted(data: Dict[str, Any], prefix: str = "") -> List[str]:
    out: List[str] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        out += _dotted(value, f"{path}.") if isinstance(value, dict) and value else [path]
    return out


def _build(top: TopLevel, sections: Dict[str, Any]) -> Config:
    return Config(**dataclasses.asdict(top), **sections)


RUN_SCHEMA = Schema("run", TopLevel, RUN_SECTIONS, build=_build, check=check_run_config)
"""What a ``text3d run`` config may hold."""


def resolve(raw: Dict[str, Any]) -> Config:
    """Validate a plain nested dict (YAML + overrides merged) into a :class:`Config`."""
    return RUN_SCHEMA.resolve(raw)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML preset (its ``base:`` presets first), apply overrides and validate everything (no
    model is loaded)."""
    return RUN_SCHEMA.load(path, overrides)


def to_dict(cfg: Config) -> Dict[str, Any]:
    """The resolved config as plain data (reloadable with :func:`resolve`)."""
    return to_plain(cfg)


def to_yaml(cfg: Config) -> str:
    return _to_yaml(cfg)
