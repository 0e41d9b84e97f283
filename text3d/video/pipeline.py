"""``text3d video``: restyle the frames of one scene with SDEdit, the noise following correspondences.

Each frame is noised to ``strength * T`` and denoised with the prior (:mod:`text3d.guidance.sdedit`). With
i.i.d. noise every frame gets its own noise and the result flickers; with ``noise=warped`` the
initial noise AND the fresh noise of every ancestral step follow the correspondences between
consecutive frames (:mod:`text3d.video.noise`, :mod:`text3d.video.correspondence`), so one surface point gets
the same noise in every frame. The same frames are also restyled with i.i.d. noise at the same
seed, and both are measured:

- warp error (Lai et al. 2018): mean over consecutive pairs ``(t, t+1)`` of the mean, over the
  pixels of frame ``t`` visible in frame ``t+1``, of the squared RGB distance (sum over the three
  channels, values in [0, 1]) between frame ``t`` and frame ``t+1`` warped back (bilinear);
- colour flip rate: the share of frames whose object colour (hue vote of the object pixels,
  :func:`text3d.prior.evaluation.classify_colour`) differs from the previous frame's;
- seconds per frame of the guided pass (noise + sampling).

Outputs (``<output_dir>/<name>/<tag>@<time>/``, written into a hidden folder and renamed at the
end, so a failed or refused command leaves nothing): ``frames/``, ``video.mp4``, ``video.gif``,
``side_by_side.mp4`` (source | i.i.d. | guided), ``metrics.json``, ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from text3d.core.errors import ConfigError
from text3d.core.paths import check_writable, safe_component, stamped_dir
from text3d.guidance.reference_camera import reference_steps

from .config import VideoConfig, load_video_config, noise_settings  # noqa: F401  (load_video_config re-exported)
from .correspondence import sample_bilinear
from .noise import NOISES, Correspondence, NoiseSettings, downsample_correspondence, sum_pool_noise
from .source import Clip, open_clip

logger = logging.getLogger(__name__)

@contextmanager
def frame_attention(prior, cfg: VideoConfig, n_frames: int) -> Iterator[None]:
    """Keyframe self-attention (:class:`text3d.guidance.attention.KeyframeAttnProcessor`) on the prior's
    UNet while frames are denoised together (each CFG half of a call is one clip); nothing for ``none``."""
    if cfg.attention != "keyframe":
        yield
        return
    from text3d.guidance.attention import keyframe_attention

    installed = keyframe_attention(prior.unet, mode=cfg.keyframe, num_views=n_frames)
    try:
        yield
    finally:
        installed.remove()


# --------------------------------------------------------------------------------------------
# Noise on the prior's grid
def frame_noise(settings: NoiseSettings, clip: Clip, channels: int, grid: int, generator: torch.Generator) -> Tensor:
    """``[N, C, grid, grid]`` unit noise: sampled at the working resolution along the clip's backward
    correspondences, then area-summed (sum / sqrt(count)) to the prior's grid."""
    n, res = clip.frames.shape[0], clip.frames.shape[1]
    sampler = NOISES.build(settings)
    corr = clip.backward if sampler.needs_correspondences else None
    fine = sampler.sample(n, (channels, res, res), generator, corr)
    return sum_pool_noise(fine, res // grid)


def noise_schedule(settings: NoiseSettings, clip: Clip, channels: int, grid: int, n_steps: int,
                   seed: int) -> tuple[Tensor, List[Tensor]]:
    """The initial noise and one noise per sampler step, each ``[N, C, grid, grid]``, from one seed."""
    g = torch.Generator().manual_seed(seed)
    initial = frame_noise(settings, clip, channels, grid, g)
    return initial, [frame_noise(settings, clip, channels, grid, g) for _ in range(n_steps)]


# --------------------------------------------------------------------------------------------
# Metrics
def warp_error(frames: Tensor, forward: Sequence[Correspondence]) -> float:
    """Lai et al.'s warp error of ``frames [N, H, W, 3]`` in [0, 1] (see the module doc)."""
    errors = []
    for t, corr in enumerate(forward):
        ok = corr.valid & torch.isfinite(corr.coords).all(-1)
        if not ok.any():
            continue
        back = sample_bilinear(frames[t + 1], torch.nan_to_num(corr.coords, nan=0.0))
        errors.append(float((frames[t] - back).square().sum(-1)[ok].mean()))
    return sum(errors) / len(errors) if errors else float("nan")


def colour_flip_rate(frames: Tensor) -> tuple[float, List[str]]:
    """Share of frames (after the first) whose object colour differs from the previous frame's, and the colours."""
    from text3d.prior.evaluation import classify_colour, object_mask
    from text3d.prior.shapes import COLOUR_NAMES

    images = frames.permute(0, 3, 1, 2).float()
    labels = classify_colour(images, object_mask(images)).tolist()
    names = [COLOUR_NAMES[i] if i >= 0 else "none" for i in labels]
    flips = sum(a != b for a, b in zip(names, names[1:]))
    return flips / max(1, len(names) - 1), names


def metrics_for(frames: Tensor, clip: Clip) -> Dict[str, Any]:
    """Warp error and colour flips of generated frames ``[N, h, w, 3]``, with the clip's correspondences
    brought to the frames' resolution (a coarse pixel counts where all its fine pixels are visible)."""
    s = clip.frames.shape[1] // frames.shape[1]
    forward = [downsample_correspondence(c, s, min_valid=1.0) for c in clip.forward] if s > 1 else clip.forward
    flip, colours = colour_flip_rate(frames)
    return {"warp_error": warp_error(frames, forward), "colour_flip_rate": flip, "colours": colours}


# --------------------------------------------------------------------------------------------
# The command
def restyle(prior, clip: Clip, cfg: VideoConfig, kind: str, progress: Optional[Callable[[int, int], None]] = None
            ) -> tuple[Tensor, float]:
    """SDEdit every frame of ``clip`` with noise ``kind``; returns ``[N, h, w, 3]`` frames in [0, 1] and seconds."""
    from text3d.guidance.sdedit import sdedit, sdedit_timesteps

    t0 = time.perf_counter()
    images = clip.frames.permute(0, 3, 1, 2).to(prior.device)
    x0 = prior.encode_images(images, generator=torch.Generator().manual_seed(cfg.seed))
    C, grid = x0.shape[1], x0.shape[-1]
    n_steps = len(sdedit_timesteps(prior, cfg.steps, cfg.strength))
    initial, per_step = noise_schedule(noise_settings(cfg, kind), clip, C, grid, n_steps, cfg.seed)
    prompt = cfg.prompt or clip.prompt
    cond = prior.encode_text([prompt])
    uncond = prior.encode_text([cfg.negative_prompt])
    cameras = clip.cameras.to(prior.device)
    reference = cameras.index([reference_frame(cfg, x0.shape[0])] * x0.shape[0])
    with frame_attention(prior, cfg, x0.shape[0]):
        x = sdedit(prior, x0, cond, uncond, initial, per_step, cfg.steps, cfg.strength, cfg.cfg_scale, cfg.eta,
                   cameras=cameras, batch_size=cfg.batch_size, on_step=progress, reference_cameras=reference,
                   reference_steps=reference_steps(cfg.reference_camera, n_steps))
    out = prior.decode(x).permute(0, 2, 3, 1).cpu()
    return out, time.perf_counter() - t0


def reference_frame(cfg: VideoConfig, n_frames: int) -> int:
    """The frame whose camera ``reference_camera`` conditions on: the keyframe (frame 0, or the middle
    frame for ``attention: keyframe`` with ``keyframe: middle``): frame 0's first keyframe in
    :func:`text3d.guidance.attention.keyframe_indices`."""
    if cfg.attention != "keyframe":
        return 0
    from text3d.guidance.attention import keyframe_indices

    return int(keyframe_indices(n_frames, cfg.keyframe)[0, 0])


def output_dir_for(cfg: VideoConfig, prompt: str) -> Path:
    tag = safe_component(cfg.tag) if cfg.tag else safe_component(prompt, fallback="video")
    return stamped_dir(cfg.output_dir, cfg.name, tag, name_fallback="video")


def run_video(cfg: VideoConfig, prior=None, progress: Optional[Callable[[str, int, int], None]] = None) -> Path:
    """Load the source and the prior, restyle with the chosen noise (and i.i.d. for comparison), write outputs.

    Returns:
        The output folder.
    """
    from text3d.core.device import resolve_device
    from text3d.guidance.registry import PRIORS

    check_writable(cfg.output_dir, "output_dir")
    clip = open_clip(Path(cfg.source).expanduser(), cfg.frames, cfg.resolution, cfg.flow_preset, cfg.background,
                     cfg.degrees_per_frame)
    prompt = cfg.prompt or clip.prompt
    if not prompt.strip():
        raise ConfigError("prompt: empty; a video source needs prompt=\"...\" (a run source defaults to its own prompt)")
    if not cfg.prompt.strip():
        logger.info("prompt is empty: the frames are restyled toward the run's own prompt %r", prompt)
    if prior is None:
        from text3d.guidance.priors import no_transformers_progress_bars

        with no_transformers_progress_bars():
            prior = PRIORS.build(cfg.prior, resolve_device(cfg.device))
    grid = int(prior.x0_size)
    if cfg.resolution % grid or cfg.resolution < prior.image_size:
        raise ConfigError(f"resolution: {cfg.resolution} must be a multiple of the prior's grid ({grid}) and at "
                          f"least its image size ({prior.image_size})")
    step = (lambda label: (lambda k, n: progress(label, k, n))) if progress else (lambda label: None)  # noqa: E731
    guided, seconds = restyle(prior, clip, cfg, cfg.noise, step(cfg.noise))
    results: Dict[str, Any] = {cfg.noise: {**metrics_for(guided, clip), "seconds_per_frame": seconds / len(guided)}}
    iid = None
    if cfg.compare_iid and cfg.noise != "iid":
        iid, s_iid = restyle(prior, clip, cfg, "iid", step("iid"))
        results["iid"] = {**metrics_for(iid, clip), "seconds_per_frame": s_iid / len(iid)}
    metrics = summary(cfg, clip, prompt, results, guided)
    return write_outputs(cfg, output_dir_for(cfg, prompt), clip, guided, iid, metrics)


def summary(cfg: VideoConfig, clip: Clip, prompt: str, results: Dict[str, Any], guided: Tensor) -> Dict[str, Any]:
    source_frames = F.interpolate(clip.frames.permute(0, 3, 1, 2), size=guided.shape[1:3], mode="area")
    out = {"source": cfg.source, "source_kind": clip.kind, "prompt": prompt, "noise": cfg.noise, "alpha": cfg.alpha,
           "warp": cfg.warp, "strength": cfg.strength, "steps": cfg.steps, "eta": cfg.eta, "seed": cfg.seed,
           "frames": int(guided.shape[0]), "resolution": cfg.resolution, "frame_size": int(guided.shape[1]),
           "attention": cfg.attention, "degrees_per_frame": cfg.degrees_per_frame,
           "reference_camera": cfg.reference_camera, "results": results,
           "source_warp_error": metrics_for(source_frames.permute(0, 2, 3, 1), clip)["warp_error"],
           "seconds_per_frame": results[cfg.noise]["seconds_per_frame"]}
    if "iid" in results and cfg.noise != "iid":
        ours, base = results[cfg.noise]["warp_error"], results["iid"]["warp_error"]
        out["warp_error"], out["warp_error_iid"] = ours, base
        out["warp_error_ratio"] = ours / base if base > 0 else float("nan")
        # the source frames' own warp error (resampling, silhouettes) is a floor that no noise removes
        floor = out["source_warp_error"]
        out["warp_error_excess_ratio"] = (ours - floor) / (base - floor) if base > floor else float("nan")
        out["colour_flip_rate"], out["colour_flip_rate_iid"] = (results[cfg.noise]["colour_flip_rate"],
                                                                results["iid"]["colour_flip_rate"])
    return out


def write_outputs(cfg: VideoConfig, out_dir: Path, clip: Clip, guided: Tensor, iid: Optional[Tensor],
                  metrics: Dict[str, Any]) -> Path:
    """Everything into a hidden folder renamed to ``out_dir`` at the end."""
    from text3d.core.io import staged_folder, write_json, write_text
    from text3d.core.media import save_image, save_video

    res = cfg.resolution
    up = lambda f: F.interpolate(f.permute(0, 3, 1, 2), size=(res, res), mode="nearest").permute(0, 2, 3, 1)  # noqa: E731
    with staged_folder(out_dir) as tmp:
        for i, frame in enumerate(guided):
            save_image(tmp / "frames" / f"frame-{i:04d}.png", frame)
        big = up(guided)
        for ext in ("mp4", "gif"):
            save_video(tmp / f"video.{ext}", list(big), fps=cfg.fps)
        panels = [clip.frames] + ([up(iid)] if iid is not None else []) + [big]
        side = torch.cat(panels, dim=2)
        save_video(tmp / "side_by_side.mp4", list(side), fps=cfg.fps)
        write_json(tmp / "metrics.json", metrics)
        plain = dataclasses.asdict(cfg)
        write_text(tmp / "config.yaml", yaml.safe_dump(plain, sort_keys=False, default_flow_style=None))
    return out_dir
