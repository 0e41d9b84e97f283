"""Multi-view sampling: one prompt, ``N`` cameras, one object.

Views of one object sampled independently are different objects (the embedded prior draws cubes
of four colours for ``"a cube"`` at eight azimuths). A mode decides how the ``N`` views of a set
see each other while they are denoised together:

- ``independent``: not at all (the baseline);
- ``shared``: StyleAligned shared self-attention, every view attends to view 0 of its set
  (:class:`text3d.guidance.attention.SharedAttnProcessor`);
- ``full``: every view attends to all views of its set (MVDream's layout);
- ``grid``: the views are tiled into one canvas (Zero123++), so ordinary self-attention spans them,
  and split back after every step.

Every mode runs the prior's own sampler (DDIM from the prior's scheduler config; the embedded
prior's documented sampler is 50 ancestral steps, CFG 2) with the same noise per view, so only the
attention differs between modes; ``independent`` on the embedded prior gives exactly
:func:`text3d.prior.model.sample`. Several sets can be sampled in one batch (``sets``): each set is
its own group in the attention processors.

Camera information reaches a camera-conditioned prior through its class labels and Stable
Diffusion through view-dependent prompts (``", front view"`` / ``", side view"`` / ...).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ContextManager, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from text3d.guidance.attention import (SharedAttentionConfig, full_attention, select_layers,
                                       shared_attention)
from text3d.guidance.prompts import PromptingConfig

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError
from text3d.core.registry import Registry
from text3d.guidance.reference_camera import reference_steps

if TYPE_CHECKING:
    from text3d.guidance.priors import DiffusionPrior

    from text3d.scene.cameras import Cameras

logger = logging.getLogger(__name__)

MODES = Registry("mode")
"""Multi-view modes by name: ``independent``, ``shared``, ``full``, ``grid``."""


@dataclass
class SamplerConfig:
    """The DDIM sampler (the prior's scheduler config: noise schedule, spacing, prediction type)."""

    steps: int = bounded(50, lo=1, hi=1000)
    """Denoising steps."""
    cfg_scale: float = bounded(2.0, lo=0.0)
    """Classifier-free guidance scale ``s`` (diffusers convention ``out_u + s (out_c - out_u)``)."""
    eta: float = bounded(1.0, lo=0.0, hi=1.0)
    """DDIM stochasticity: 1 = ancestral (the embedded prior's documented sampler), 0 = deterministic."""


@dataclass
class MultiviewSettings:
    """How the views of a set are sampled together (what :func:`sample_multiview` needs)."""

    mode: str = "shared"
    """``independent``, ``shared``, ``full`` or ``grid``."""
    grid: str = "auto"
    """``mode=grid``: ``RxC`` rows x columns with ``R * C = views`` (Zero123++: ``3x2``); ``auto`` = the
    most nearly square such grid with no more rows than columns."""
    noise: str = "independent"
    """``independent``: each view draws its own initial and ancestral noise; ``shared``: the views of a set
    use the same draws (the set's first view's), so the noise cannot pull the views apart."""
    reference_camera: float = bounded(0.0, lo=0.0, hi=1.0)
    """Fraction of the sampling steps, from the first (noisiest), in which every view is conditioned on
    its set's view 0 (camera label / view-dependent prompt); afterwards each view on its own. The noisy
    steps decide what the object is, the later ones how it looks from each camera; 0 = own camera throughout."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    attention: SharedAttentionConfig = field(default_factory=SharedAttentionConfig)


def parse_grid(grid: str, views: int) -> Tuple[int, int]:
    """``(rows, cols)`` of a grid spec for ``views`` views.

    Raises:
        ConfigError: the spec is not ``RxC`` / ``auto`` or does not hold exactly ``views`` views.
    """
    fits = [f"{r}x{views // r}" for r in range(1, views + 1) if views % r == 0]
    if grid == "auto":
        rows = max(r for r in range(1, int(math.isqrt(views)) + 1) if views % r == 0)
        return rows, views // rows
    parts = str(grid).lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"grid: {grid!r} is not ROWSxCOLS; valid grids for views={views}: auto, {', '.join(fits)}")
    rows, cols = int(parts[0]), int(parts[1])
    if rows * cols != views:
        raise ConfigError(f"grid: {grid} holds {rows * cols} views, not views={views}; valid grids for "
                          f"views={views}: auto, {', '.join(fits)}")
    return rows, cols


# --------------------------------------------------------------------------------------------
# Modes
class Mode:
    """How the ``N`` views of each set interact in the UNet.

    ``attention(unet, n)`` returns a context manager that installs (and removes) attention
    processors; ``denoise(fn, x, n)`` evaluates the UNet function ``fn`` on ``x [B, C, h, w]`` (the
    grid mode tiles first). ``needs_self_attention`` says whether the mode means anything on a UNet
    without self-attention layers.
    """

    needs_self_attention = True

    def __init__(self, settings: MultiviewSettings):
        self.settings = settings

    def check(self, views: int) -> None:
        """Raise :class:`ConfigError` for settings this mode cannot take with ``views`` views."""

    def attention(self, unet, n: int) -> ContextManager:
        return contextlib.nullcontext()

    def denoise(self, fn: Callable[[Tensor, Optional[slice]], Tensor], x: Tensor, n: int) -> Tensor:
        return fn(x, None)


@MODES.register("independent", MultiviewSettings)
class IndependentMode(Mode):
    """Each view on its own: ordinary sampling of ``N`` images."""

    needs_self_attention = False


@MODES.register("shared", MultiviewSettings)
class SharedMode(Mode):
    """StyleAligned shared attention to view 0 of each set."""

    def attention(self, unet, n: int) -> ContextManager:
        return shared_attention(unet, n, self.settings.attention)


@MODES.register("full", MultiviewSettings)
class FullMode(Mode):
    """Every view attends to all views of its set."""

    def attention(self, unet, n: int) -> ContextManager:
        return full_attention(unet, n, self.settings.attention.layers)


def tile(x: Tensor, rows: int, cols: int) -> Tensor:
    """``[S * R * C, ch, h, w]`` views -> ``[S, ch, R * h, C * w]`` canvases (view ``k`` at row ``k // C``)."""
    B, ch, h, w = x.shape
    return x.view(B // (rows * cols), rows, cols, ch, h, w).permute(0, 3, 1, 4, 2, 5).reshape(-1, ch, rows * h, cols * w)


def untile(canvas: Tensor, rows: int, cols: int) -> Tensor:
    """Inverse of :func:`tile`."""
    S, ch, H, W = canvas.shape
    h, w = H // rows, W // cols
    return canvas.view(S, ch, rows, h, cols, w).permute(0, 2, 4, 1, 3, 5).reshape(S * rows * cols, ch, h, w)


@MODES.register("grid", MultiviewSettings)
class GridMode(Mode):
    """The views of a set tiled into one canvas; the UNet sees one image per set.

    The canvas is conditioned with the first view's prompt and camera (one prompt and one class
    label per image): only priors trained on grids (Zero123++) know that tiles are other views.
    """

    def check(self, views: int) -> None:
        parse_grid(self.settings.grid, views)

    def denoise(self, fn: Callable[[Tensor, Optional[slice]], Tensor], x: Tensor, n: int) -> Tensor:
        rows, cols = parse_grid(self.settings.grid, n)
        first = slice(0, x.shape[0], n)  # view 0 of each set conditions its canvas
        return untile(fn(tile(x, rows, cols), first), rows, cols)


def build_mode(settings: MultiviewSettings) -> Mode:
    """The registered :class:`Mode` of ``settings.mode``.

    Raises:
        ConfigError: an unknown mode (naming the valid ones).
    """
    if settings.mode not in MODES:
        raise ConfigError(f"mode: unknown mode {settings.mode!r}; valid modes: {', '.join(MODES.names())}")
    return MODES.get(settings.mode).cls(settings)


# --------------------------------------------------------------------------------------------
# Sampling
def check_prior_supports(prior: "DiffusionPrior", mode: Mode, resolution: int) -> None:
    """Raise :class:`ConfigError` when the loaded prior cannot run ``mode`` at ``resolution`` pixels."""
    if mode.needs_self_attention:
        select_layers(prior.unet, mode.settings.attention.layers)
    levels = len(prior.unet.config.block_out_channels)
    check_resolution(resolution, int(prior.image_size), prior.latent_space,
                     (prior.image_size // prior.x0_size) * 2 ** (levels - 1))


def check_resolution(resolution: int, native: int, latent_space: bool, step: int) -> None:
    """Raise :class:`ConfigError` for an image side the prior cannot take.

    A pixel prior takes only the size it was trained at; a latent prior takes multiples of
    ``step`` (the VAE factor times the UNet's downsampling) up to 4096 pixels.
    """
    if not latent_space and resolution != native:
        raise ConfigError(f"resolution: {resolution} is not one the prior can take (it was trained at {native} px "
                          f"only); valid: {native}")
    if resolution % step or not step <= resolution <= 4096:
        raise ConfigError(f"resolution: {resolution} is not one the prior can take; valid: multiples of {step} "
                          f"in [{step}, 4096] (native {native})")


def _embed(prior: "DiffusionPrior", prompts: Sequence[str], negative_prompt: str) -> Tuple[Tensor, Tensor]:
    emb = prior.encode_text(list(prompts) + [negative_prompt])
    return emb[:-1], emb[-1:].expand(len(prompts), -1, -1)


@torch.no_grad()
def sample_multiview(prior: "DiffusionPrior", prompts: Sequence[str], cameras: "Cameras", views: int,
                     settings: MultiviewSettings = MultiviewSettings(), generator: Optional[torch.Generator] = None,
                     negative_prompt: str = "", resolution: Optional[int] = None,
                     progress: Optional[Callable[[int, int], None]] = None) -> Tensor:
    """Sample ``S`` sets of ``views`` views each, the views of a set denoised together.

    Args:
        prior: a loaded :class:`~text3d.guidance.priors.DiffusionPrior` (embedded prior or Stable Diffusion).
        prompts: ``S * views`` prompts, set-major (the prompt of each view; view-dependent or not).
        cameras: ``S * views`` cameras, set-major; camera-conditioned priors see them.
        views: ``N``, views per set.
        settings: mode, grid, sampler and shared-attention settings.
        generator: CPU generator of the initial noise and the ancestral noise.
        negative_prompt: prompt of the unconditional half.
        resolution: image side in pixels (default: the prior's native size).
        progress: told ``(step, steps)`` after each sampler step.

    Returns:
        ``[S * views, 3, R, R]`` float32 images in [0, 1] on the CPU.
    """
    from diffusers import DDIMScheduler

    B = len(prompts)
    if B % views or len(cameras) != B:
        raise ValueError(f"expected a multiple of views={views} prompts and as many cameras, got {B} and {len(cameras)}")
    mode = build_mode(settings)
    mode.check(views)
    resolution = int(resolution or prior.image_size)
    check_prior_supports(prior, mode, resolution)
    size = resolution // (prior.image_size // prior.x0_size)
    scheduler = DDIMScheduler.from_config(prior.scheduler.config)  # own copy: set_timesteps mutates it
    scheduler.set_timesteps(settings.sampler.steps)
    cond, uncond = _embed(prior, prompts, negative_prompt)
    labels = prior.camera_class_labels(cameras) if _camera_conditioned(prior) else None
    own = _guided_unet(prior, cond, uncond, labels, settings.sampler.cfg_scale)
    ref = torch.arange(B) // views * views  # each view's set reference (view 0)
    at_ref = _guided_unet(prior, cond[ref], uncond[ref], None if labels is None else labels[ref], settings.sampler.cfg_scale)
    switch = reference_steps(settings.reference_camera, len(scheduler.timesteps))
    draw = _noise_fn(settings.noise, (prior.x0_channels, size, size), B, views, generator, prior.device)
    x = draw()
    with mode.attention(prior.unet, views):
        for i, t in enumerate(scheduler.timesteps):
            fn = at_ref if i < switch else own
            out = mode.denoise(lambda z, sel: fn(z, t, sel), x, views)
            noise = draw() if settings.sampler.eta > 0 else None
            x = scheduler.step(out, t, x, eta=settings.sampler.eta, variance_noise=noise).prev_sample
            if progress is not None:
                progress(i + 1, len(scheduler.timesteps))
    return _decode(prior, x)


NOISE_MODES = ("independent", "shared")


def _noise_fn(kind: str, shape: Tuple[int, ...], batch: int, views: int, generator: Optional[torch.Generator],
              device: torch.device) -> Callable[[], Tensor]:
    """A function drawing ``[batch, *shape]`` standard normal noise, per view or one draw per set."""
    if kind not in NOISE_MODES:
        raise ConfigError(f"noise: unknown value {kind!r}; valid: {', '.join(NOISE_MODES)}")
    if kind == "independent":
        return lambda: torch.randn(batch, *shape, generator=generator).to(device)
    return lambda: torch.randn(batch // views, *shape, generator=generator).repeat_interleave(views, 0).to(device)


def _camera_conditioned(prior: "DiffusionPrior") -> bool:
    return getattr(prior.unet.config, "class_embed_type", None) is not None


def _guided_unet(prior: "DiffusionPrior", cond: Tensor, uncond: Tensor, labels: Optional[Tensor],
                 scale: float) -> Callable[[Tensor, Tensor, Optional[slice]], Tensor]:
    """``fn(x, t, sel)``: the CFG-guided raw UNet output for ``x``, conditioned on rows ``sel`` (all if None).

    The batch is ``[uncond; cond]`` (diffusers' CFG layout), so each CFG half holds whole sets.
    """
    def fn(x: Tensor, t: Tensor, sel: Optional[slice]) -> Tensor:
        c, u = (cond, uncond) if sel is None else (cond[sel], uncond[sel])
        lab = None if labels is None else (labels if sel is None else labels[sel])
        out = prior.unet(torch.cat([x, x]).to(prior.dtype), t.to(prior.device),
                         encoder_hidden_states=torch.cat([u, c]).to(prior.dtype),
                         class_labels=None if lab is None else torch.cat([lab, lab])).sample.float()
        out = out[:, : x.shape[1]]  # learned-variance models also output the variance
        out_u, out_c = out.chunk(2)
        return out_u + scale * (out_c - out_u)

    return fn


def _decode(prior: "DiffusionPrior", x: Tensor) -> Tensor:
    """Images in [0, 1] on the CPU (one view at a time through a VAE keeps memory bounded)."""
    if not prior.latent_space:
        return prior.decode(x).cpu()
    return torch.cat([prior.decode(x[i:i + 1]).cpu() for i in range(x.shape[0])])


def view_prompts(prior: "DiffusionPrior", prompt: str, cameras: "Cameras", prompting: PromptingConfig,
                 negative_prompt: str = "") -> List[str]:
    """The prompt of each camera: ``"<prompt>, side view"`` etc. when ``prompting.view_dependent``, else ``prompt``."""
    from text3d.guidance.prompts import PromptProcessor

    return PromptProcessor(prior, prompt, negative_prompt, prompting).prompts_for(cameras.elevation, cameras.azimuth)
