"""``text3d multiview``: one multi-view sample written to an output folder.

    text3d multiview configs/multiview-quickstart.yaml prompt="a cube" views=8 mode=shared seed=0

The config is :mod:`text3d.multiview.config`. Outputs land in ``<output_dir>/<name>/<tag>@<timestamp>/``: ``view_00.png`` ...,
``grid.png`` (contact sheet), ``multiview.json`` (cameras in the convention of :mod:`text3d.scene.cameras`,
prompts, mode, settings, timings) and ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from text3d.core.errors import ConfigError
from text3d.core.paths import check_writable
from text3d.core.schema import to_yaml
from text3d.guidance.registry import PRIORS
from text3d.run.targets import MULTIVIEW_FORMAT, MULTIVIEW_JSON
from text3d.scene.cameras import Cameras, cameras_json, orbit_cameras

from .config import MultiviewConfig, MultiviewTop, load_multiview_config
from .modes import build_mode, parse_grid

logger = logging.getLogger(__name__)


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
    from .modes import check_resolution

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


def multiview_cameras(top: MultiviewTop, resolution: int) -> Cameras:
    """The ``views`` cameras of a config (square images of ``resolution`` pixels)."""
    n = top.views
    if top.azimuths:
        az = torch.tensor(top.azimuths, dtype=torch.float32)
    else:
        az = top.azimuth_start + torch.arange(n, dtype=torch.float32) * (360.0 / n)
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return orbit_cameras(az, full(top.elevation), full(top.distance), full(top.fovy), resolution, resolution)


def run_multiview(config_path: Optional[str | Path], overrides: Sequence[str] = (), prior: Any = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """Validate, load the prior, sample the views and write them; returns the output folder.
    ``progress`` is told ``(step, steps)`` after each sampler step.

    Nothing is written unless sampling succeeds (a bad resolution or a UNet without self-attention
    stops before the folder exists).
    """
    from text3d.core.device import resolve_device
    from .modes import check_prior_supports, sample_multiview, view_prompts
    from text3d.run.trainer import new_run_dir

    cfg = load_multiview_config(config_path, overrides)
    check_model_early(cfg)
    check_writable(cfg.top.output_dir, "output_dir")  # before the prior loads
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
                              top.negative_prompt, resolution, progress=progress)
    timings["sample_s"] = time.perf_counter() - t1
    out = new_run_dir(cfg)
    write_outputs(out, cfg, images, cams, prompts, timings)
    return out


def write_outputs(out: Path, cfg: MultiviewConfig, images: torch.Tensor, cams: Cameras, prompts: List[str],
                  timings: Dict[str, float]) -> None:
    """``view_XX.png``, ``grid.png``, ``config.yaml`` and ``multiview.json`` into ``out``, all at once:
    they are written into a hidden folder beside it that becomes ``out`` when every file is there, so
    a Ctrl-C or a kill while saving leaves no folder (and the next command removes the hidden one)."""
    from text3d.core.io import staged_folder
    from text3d.core.media import image_grid, save_image

    t0 = time.perf_counter()
    with staged_folder(out) as tmp:
        names = []
        for i, image in enumerate(images):
            names.append(f"view_{i:02d}.png")
            save_image(tmp / names[-1], image.permute(1, 2, 0))
        cols = parse_grid("auto", len(images))[1] if len(images) > 3 else len(images)
        save_image(tmp / "grid.png", image_grid([im.permute(1, 2, 0) for im in images], cols=cols))
        (tmp / "config.yaml").write_text(to_yaml(cfg))
        timings["save_s"] = time.perf_counter() - t0
        (tmp / MULTIVIEW_JSON).write_text(json.dumps(_manifest(cfg, names, prompts, cams, timings), indent=2) + "\n")


def _manifest(cfg: MultiviewConfig, names: List[str], prompts: List[str], cams: Cameras,
              timings: Dict[str, float]) -> Dict[str, Any]:
    """The contents of ``multiview.json``."""
    from text3d.run.trainer import versions

    return {"format": MULTIVIEW_FORMAT, "prompt": cfg.top.prompt, "mode": cfg.top.mode, "views": cfg.top.views,
            "seed": cfg.top.seed, "images": names, "prompts": prompts,
            "camera_convention": "text3d.scene.cameras: z-up world, azimuth 0 looks at the front from +x, c2w OpenGL",
            "cameras": cameras_json(cams), "settings": cfg.to_dict(),
            "timings": {k: round(v, 3) for k, v in timings.items()}, "versions": versions()}
