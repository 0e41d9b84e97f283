"""``text3d multiview``: its config, and one multi-view sample written to an output folder.

    text3d multiview configs/multiview-quickstart.yaml prompt="a cube" views=8 mode=shared seed=0

The config has the short keys of :class:`MultiviewTop` and the sections ``prior`` (any registered
prior), ``sampler``, ``attention`` and ``prompting``; it is validated before any model loads, like
``text3d run``'s. Outputs land in ``<output_dir>/<name>/<tag>@<timestamp>/``: ``view_00.png`` ...,
``grid.png`` (contact sheet), ``multiview.json`` (cameras in the convention of :mod:`text3d.cameras`,
prompts, mode, settings, timings) and ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import yaml

from text3d.guidance.attention import SharedAttentionConfig
from text3d.guidance.prompts import PromptingConfig, check_prompting_config

from .bounds import bounded, check_bounds
from .cameras import Cameras, orbit_cameras
from .config import component_type, load_raw, merge_section, valid_keys_hint
from .errors import ConfigError
from .multiview import MODES, NOISE_MODES, MultiviewSettings, SamplerConfig, build_mode, parse_grid
from .registry import PRIORS

logger = logging.getLogger(__name__)

MULTIVIEW_JSON = "multiview.json"
MULTIVIEW_FORMAT = 1


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


def resolve_multiview(raw: Dict[str, Any]) -> MultiviewConfig:
    """Validate a plain dict (YAML + overrides) into a :class:`MultiviewConfig`; no model loads.

    Raises:
        ConfigError: an unknown key, a wrong type, a value out of range, an unknown mode or noise,
            or a grid that does not hold ``views`` views.
    """
    import text3d.components  # noqa: F401  (fills the prior registry)

    top_keys = [f.name for f in dataclasses.fields(MultiviewTop)]
    sections = ["prior", *PLAIN]
    for key in raw:
        if key not in top_keys and key not in sections:
            raise ConfigError(f"unknown key '{key}'{valid_keys_hint(str(key), top_keys + sections)}")
    if "prompt" in raw and raw["prompt"] is None:  # `prompt=` on the command line
        raw = {**raw, "prompt": ""}
    top = merge_section("(top level)", MultiviewTop, {k: raw[k] for k in top_keys if k in raw})
    check_bounds(top, "")
    if not top.prompt.strip():
        raise ConfigError('prompt: empty; give one, e.g. prompt="a cube"')
    prior_raw = raw.get("prior") or {}
    ptype = component_type("prior", prior_raw)
    prior = merge_section("prior", PRIORS.config_class(ptype), {**prior_raw, "type": ptype})
    check = getattr(PRIORS.get(ptype).cls, "check_config", None)
    if check is not None:
        check(prior)
    parts = {name: merge_section(name, cls, raw.get(name)) for name, cls in PLAIN.items()}
    for name, obj in parts.items():
        check_bounds(obj, name)
    check_prompting_config(parts["prompting"])
    cfg = MultiviewConfig(top=top, prior=prior, **parts)
    _check_views(cfg)
    return cfg


def _check_views(cfg: MultiviewConfig) -> None:
    top = cfg.top
    if top.mode not in MODES:
        raise ConfigError(f"mode: unknown mode {top.mode!r}; valid modes: {', '.join(MODES.names())}")
    if top.noise not in NOISE_MODES:
        raise ConfigError(f"noise: unknown value {top.noise!r}; valid: {', '.join(NOISE_MODES)}")
    if top.azimuths and len(top.azimuths) != top.views:
        raise ConfigError(f"azimuths: {len(top.azimuths)} given for views={top.views}; give one per view or none")
    if top.mode == "grid":
        parse_grid(top.grid, top.views)
    build_mode(cfg.settings()).check(top.views)


def _local_model_configs(prior_cfg: Any) -> Optional[Dict[str, Any]]:
    """``unet`` (and ``vae``) config.json of a prior on disk, read without loading weights; None for hub ids."""
    import json

    folder = None
    if prior_cfg.type == "pixel":
        from text3d.guidance.pixel_prior import prior_folder

        folder = prior_folder(prior_cfg.model)
    elif Path(str(prior_cfg.model)).expanduser().is_dir():
        folder = Path(str(prior_cfg.model)).expanduser()
    try:
        out = {"unet": json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))}
        vae = folder / "vae" / "config.json"
        out["vae"] = json.loads(vae.read_text(encoding="utf-8")) if vae.is_file() else None
        return out
    except (TypeError, OSError, ValueError):
        return None


def _attention_levels(unet: Dict[str, Any]) -> List[str]:
    """``down.<i>`` / ``mid`` / ``up.<i>`` levels whose blocks have attention, from a UNet config."""
    levels = [f"down.{i}" for i, b in enumerate(unet.get("down_block_types", [])) if "Attn" in b]
    levels += ["mid"] if "Attn" in (unet.get("mid_block_type") or "") else []
    levels += [f"up.{i}" for i, b in enumerate(unet.get("up_block_types", [])) if "Attn" in b]
    return sorted(levels)


def check_model_early(cfg: MultiviewConfig) -> None:
    """Resolution and self-attention checks from a local model's configs, before any weights load."""
    from .multiview import check_resolution

    conf = _local_model_configs(cfg.prior)
    if conf is None:  # a hub id: checked once loaded
        return
    unet = conf["unet"]
    blocks = list(unet.get("down_block_types", [])) + list(unet.get("up_block_types", [])) + [unet.get("mid_block_type") or ""]
    if build_mode(cfg.settings()).needs_self_attention and not any("Attn" in b for b in blocks):
        raise ConfigError(f"prior.model: the UNet of {cfg.prior.model!r} has no self-attention (attn1) layers, so "
                          f"mode={cfg.top.mode} cannot share attention; valid modes for this model: independent")
    levels = _attention_levels(unet)
    unknown = [lv for lv in cfg.attention.layers.levels if lv not in levels]
    if unknown:
        raise ConfigError(f"attention.layers.levels: unknown level(s) {unknown}; this UNet's levels with "
                          f"self-attention: {', '.join(levels)}")
    vae_factor = 2 ** (len(conf["vae"]["block_out_channels"]) - 1) if conf["vae"] else 1
    native = int(unet.get("sample_size", 64)) * vae_factor
    step = vae_factor * 2 ** (len(unet.get("block_out_channels", [0])) - 1)
    check_resolution(int(cfg.top.resolution or native), native, conf["vae"] is not None, step)


def load_multiview_config(path: Optional[str | Path], overrides: Sequence[str] = ()) -> MultiviewConfig:
    """Load a preset, apply ``key=value`` overrides and validate (no model loads)."""
    if path is None:
        raise ConfigError("a config file is needed, e.g. text3d multiview configs/multiview-quickstart.yaml prompt=\"a cube\"")
    return resolve_multiview(load_raw(path, overrides))


def multiview_cameras(top: MultiviewTop, resolution: int) -> Cameras:
    """The ``views`` cameras of a config (square images of ``resolution`` pixels)."""
    n = top.views
    if top.azimuths:
        az = torch.tensor(top.azimuths, dtype=torch.float32)
    else:
        az = top.azimuth_start + torch.arange(n, dtype=torch.float32) * (360.0 / n)
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return orbit_cameras(az, full(top.elevation), full(top.distance), full(top.fovy), resolution, resolution)


def cameras_json(cams: Cameras) -> List[Dict[str, Any]]:
    """One record per camera: spherical pose (degrees), field of view, size and the OpenGL camera-to-world matrix."""
    return [{"azimuth_deg": float(cams.azimuth[i]), "elevation_deg": float(cams.elevation[i]),
             "distance": float(cams.distance[i]), "fovy_deg": float(torch.rad2deg(cams.fovy[i])),
             "width": cams.width, "height": cams.height, "c2w": cams.c2w[i].tolist()} for i in range(len(cams))]


def cameras_from_json(records: List[Dict[str, Any]]) -> Cameras:
    """Cameras back from :func:`cameras_json` records (the poses are rebuilt from azimuth/elevation/distance)."""
    t = lambda key: torch.tensor([r[key] for r in records], dtype=torch.float32)  # noqa: E731
    return orbit_cameras(t("azimuth_deg"), t("elevation_deg"), t("distance"), t("fovy_deg"),
                         int(records[0]["width"]), int(records[0]["height"]))


def run_multiview(config_path: Optional[str | Path], overrides: Sequence[str] = (), prior: Any = None) -> Path:
    """Validate, load the prior, sample the views and write them; returns the output folder.

    Nothing is written unless sampling succeeds (a bad resolution or a UNet without self-attention
    stops before the folder exists).
    """
    from .device import resolve_device
    from .multiview import check_prior_supports, sample_multiview, view_prompts
    from .run import new_run_dir

    cfg = load_multiview_config(config_path, overrides)
    check_model_early(cfg)
    top, timings = cfg.top, {}
    t0 = time.perf_counter()
    device = resolve_device(top.device)
    prior = prior if prior is not None else PRIORS.build(cfg.prior, device)
    timings["load_s"] = time.perf_counter() - t0
    resolution = int(top.resolution or prior.image_size)
    check_prior_supports(prior, build_mode(cfg.settings()), resolution)
    cams = multiview_cameras(top, resolution)
    prompts = view_prompts(prior, top.prompt, cams, cfg.prompting, top.negative_prompt)
    t1 = time.perf_counter()
    images = sample_multiview(prior, prompts, cams, top.views, cfg.settings(), torch.Generator().manual_seed(top.seed),
                              top.negative_prompt, resolution)
    timings["sample_s"] = time.perf_counter() - t1
    out = new_run_dir(cfg)
    write_outputs(out, cfg, images, cams, prompts, timings)
    return out


def write_outputs(out: Path, cfg: MultiviewConfig, images: torch.Tensor, cams: Cameras, prompts: List[str],
                  timings: Dict[str, float]) -> None:
    """``view_XX.png``, ``grid.png``, ``config.yaml`` and ``multiview.json`` (written last) into ``out``."""
    from .io import write_json, write_text
    from .media import image_grid, save_image
    from .run import versions

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i, image in enumerate(images):
        names.append(f"view_{i:02d}.png")
        save_image(out / names[-1], image.permute(1, 2, 0))
    cols = parse_grid("auto", len(images))[1] if len(images) > 3 else len(images)
    save_image(out / "grid.png", image_grid([im.permute(1, 2, 0) for im in images], cols=cols))
    write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None))
    timings["save_s"] = time.perf_counter() - t0
    write_json(out / MULTIVIEW_JSON, {
        "format": MULTIVIEW_FORMAT, "prompt": cfg.top.prompt, "mode": cfg.top.mode, "views": cfg.top.views,
        "seed": cfg.top.seed, "images": names, "prompts": prompts,
        "camera_convention": "text3d.cameras: z-up world, azimuth 0 looks at the front from +x, c2w OpenGL",
        "cameras": cameras_json(cams), "settings": cfg.to_dict(),
        "timings": {k: round(v, 3) for k, v in timings.items()}, "versions": versions()})
