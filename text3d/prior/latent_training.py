"""Training the miniature Stable Diffusion (``text3d train-prior configs/train-latent-prior.yaml``).

Two stages, as Latent Diffusion trains them:

1. **The VAE** (``AutoencoderKL``) on plain and striped renders: MSE + L1 reconstruction of a
   posterior sample plus a small KL term (``vae.kl_weight``; LDM's f = 4 model uses 1e-6). Its
   ``scaling_factor`` is then set to ``1 / std`` of the latents of ``vae.scale_images`` training
   images (LDM's ``scale_by_std``), so the UNet sees unit-variance latents.
2. **The UNet and the text encoder** on those scaled latents (posterior samples of the frozen
   VAE), exactly the pixel prior's recipe otherwise: v-prediction, min-SNR weighting, AdamW with
   warm-up and cosine decay, an EMA of the weights, prompts dropped to ``""`` for classifier-free
   guidance.

Each stage keeps its state in the work folder (``vae/ckpts``, ``unet/ckpts``: safetensors + JSON,
written atomically every ``checkpoint_every`` iterations; :mod:`text3d.prior.train_state`) and the
fixed bank of views in ``bank.safetensors``; a stopped run started again with the same recipe
resumes where it stopped, bit-exactly (every batch is drawn from the checkpointed generator). The
finished prior is written to a temporary sibling of ``out_dir`` and renamed into place.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.device import resolve_device
from text3d.core.errors import ConfigError
from text3d.core.io import staged_folder
from text3d.core.paths import check_writable, claim_output
from text3d.core.schema import Schema
from .latent_data import PatternDataConfig, PatternDataset, held_out_striped
from .latent_model import LatentModelConfig, LatentPriorModules, build_latent_prior, check_latent_model_config, \
    encode_latents, is_latent_prior_folder, save_latent_prior
from .model import DEFAULT_SAMPLER
from .train_state import TrainState, run_steps
from .training import ProgressFn, TrainPriorConfig, _param_groups, check_train_config, diffusion_loss, \
    dropped_prompt_embeddings, held_out_pairs, learning_rate, unet_state

logger = logging.getLogger(__name__)

LATENT_SAMPLER = {**DEFAULT_SAMPLER, "latent": True}
"""The documented sampler of the latent prior (DDIM on latents, then the VAE decoder)."""


@dataclass
class VAEStageConfig:
    """Stage 1: the autoencoder."""

    iterations: int = bounded(3000, lo=0)
    """Optimisation steps of the VAE."""
    batch_size: int = bounded(32, lo=1)
    """Images per VAE step."""
    lr: float = bounded(5e-4, lo=0, lo_open=True)
    """Peak learning rate (AdamW)."""
    lr_min: float = bounded(1e-5, lo=0)
    """Learning rate at the end of the cosine decay."""
    warmup: int = bounded(100, lo=0)
    """Linear warm-up, iterations."""
    kl_weight: float = bounded(1e-6, lo=0)
    """Weight of the KL term (per-sample sum over latent elements)."""
    l1_weight: float = bounded(1.0, lo=0)
    """Weight of the L1 reconstruction term next to the MSE (sharper edges)."""
    grad_clip: float = bounded(1.0, lo=0)
    """Gradient-norm clipping; 0 = off."""
    scale_images: int = bounded(1024, lo=1)
    """Training images whose latent std sets the VAE's scaling factor."""


@dataclass
class TrainLatentPriorConfig(TrainPriorConfig):
    """Recipe of ``text3d train-prior`` for the latent prior (``type: latent``)."""

    type: str = "latent"
    """Selects this recipe (``pixel``, the default, trains the pixel-space prior)."""
    data: PatternDataConfig = field(default_factory=PatternDataConfig)
    """Training images and prompts (plain and striped)."""
    model: LatentModelConfig = field(default_factory=LatentModelConfig)
    """Architecture (VAE and latent UNet) and noise schedule."""
    vae: VAEStageConfig = field(default_factory=VAEStageConfig)
    """Stage 1."""


def check_latent_train_config(cfg: TrainLatentPriorConfig) -> None:
    """Raise :class:`ConfigError` for a recipe that cannot run, before any work starts."""
    if cfg.type != "latent":
        raise ConfigError(f"type: expected 'latent' for this recipe, got {cfg.type!r}")
    check_latent_model_config(cfg.model)
    check_train_config(cfg)
    held_out_striped(cfg.data)
    if not 0.0 <= cfg.data.stripe_prob <= 1.0:
        raise ConfigError(f"data.stripe_prob: expected a probability in [0, 1], got {cfg.data.stripe_prob}")
    if cfg.data.stripe_prob > 0 and len(cfg.data.colours) < 2:
        raise ConfigError("data.colours: stripes need at least two colours (or set data.stripe_prob=0)")


# --------------------------------------------------------------------------------------------
# What a resumed stage must match: the UNet stage the whole recipe but train_state.RESUME_FREE_KEYS
# (train_state.resume_recipe), the VAE stage only what it depends on
def _vae_recipe(cfg: TrainLatentPriorConfig) -> Dict[str, Any]:
    vae = {k: v for k, v in dataclasses.asdict(cfg.vae).items() if k not in ("iterations", "scale_images")}
    return {"data": dataclasses.asdict(cfg.data), "model": dataclasses.asdict(cfg.model), "vae": vae, "seed": cfg.seed}


# --------------------------------------------------------------------------------------------
# Stage 1: the VAE
def vae_loss(vae: nn.Module, images: Tensor, generator: torch.Generator, stage: VAEStageConfig) -> Tensor:
    """Reconstruction (MSE + ``l1_weight`` L1) of a posterior sample plus ``kl_weight`` KL to N(0, I)."""
    posterior = vae.encode(images).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(images)
    error = vae.decode(z).sample - images
    return error.pow(2).mean() + stage.l1_weight * error.abs().mean() + stage.kl_weight * posterior.kl().mean()


def _new_vae_stage(cfg: TrainLatentPriorConfig, prior: LatentPriorModules) -> TrainState:
    prior.vae.train()
    optimizer = torch.optim.AdamW(_param_groups([prior.vae], 0.0), lr=cfg.vae.lr, betas=(0.5, 0.9))
    return TrainState("vae", {"vae": prior.vae}, optimizer, torch.Generator().manual_seed(cfg.seed + 11),
                      _vae_recipe(cfg))


def _vae_step(stage: TrainState, cfg: TrainLatentPriorConfig, dataset: PatternDataset) -> float:
    batch = dataset.sample(cfg.vae.batch_size, stage.generator)
    loss = vae_loss(stage.modules["vae"], batch.images, stage.generator, cfg.vae)
    return stage.optimise(loss, learning_rate(cfg.vae, stage.step), cfg.vae.grad_clip)


@torch.no_grad()
def latent_scale(vae: nn.Module, dataset: PatternDataset, n: int, seed: int, batch: int = 128) -> float:
    """``1 / std`` of the posterior-sample latents of ``n`` training images (LDM's ``scale_by_std``)."""
    gen = torch.Generator().manual_seed(seed)
    latents = [encode_latents(vae, dataset.sample(min(batch, n - i), gen).images, gen) for i in range(0, n, batch)]
    return float(1.0 / torch.cat(latents).flatten().std())


# --------------------------------------------------------------------------------------------
# Stage 2: the UNet
def _unet_step(stage: TrainState, cfg: TrainLatentPriorConfig, prior: LatentPriorModules,
               dataset: PatternDataset) -> float:
    batch = dataset.sample(cfg.batch_size, stage.generator)
    with torch.no_grad():
        x0 = encode_latents(prior.vae, batch.images.to(prior.device), stage.generator) * prior.scaling_factor
    emb = dropped_prompt_embeddings(prior, batch.prompts, cfg.cond_dropout, stage.generator)
    loss = diffusion_loss(prior, x0, emb, batch.camera.to(prior.device), stage.generator, cfg.min_snr_gamma,
                          cfg.autocast_bf16)
    return stage.optimise(loss, learning_rate(cfg, stage.step), cfg.grad_clip)


# --------------------------------------------------------------------------------------------
# The run
def _stage_report(stage: TrainState, progress: Optional[ProgressFn], offset: int,
                  grand_total: int) -> Optional[Callable[[Dict[str, Any]], None]]:
    """``progress`` for :func:`run_steps` on one stage: iterations counted over both stages, figures
    ``{"loss", "stage"}``."""
    if progress is None:
        return None
    return lambda figures: progress(offset + stage.step, grand_total, {**figures, "stage": stage.name})


def _export(cfg: TrainLatentPriorConfig, prior: LatentPriorModules, vae: TrainState, unet: TrainState,
            out_dir: Path) -> Path:
    """Write the VAE and the EMA UNet / text encoder as a latent prior folder, atomically."""
    modules = list(unet.modules.values())
    backup = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    unet.ema.copy_to(modules)
    meta = {
        "version": f"latent-{cfg.model.resolution}px-vae{vae.step}-unet{unet.step}-seed{cfg.seed}",
        "recipe": dataclasses.asdict(cfg),
        "held_out": [f"{c} {s}" for s, c in held_out_pairs(cfg.data)],
        "held_out_striped": list(cfg.data.held_out_striped),
        "iterations": {"vae": vae.step, "unet": unet.step},
        "final_loss": {"vae": vae.smoothed_loss, "unet": unet.smoothed_loss},
        "loss_history": {"vae": vae.history, "unet": unet.history},
        "wall_time_s": {"vae": round(vae.wall_time, 1), "unet": round(unet.wall_time, 1)},
        "scaling_factor": prior.scaling_factor,
        "trained_on": f"{prior.device.type} ({platform.machine()}, torch {torch.__version__})",
        "sampler": dict(LATENT_SAMPLER),
    }
    claim_output(out_dir, is_latent_prior_folder, replace=True, key=str(out_dir), what="prior")  # only ever our own
    try:
        with staged_folder(out_dir) as tmp:
            save_latent_prior(prior, tmp, meta)
    finally:
        for m, sd in zip(modules, backup):
            m.load_state_dict(sd)
    return out_dir


def train_latent_prior(cfg: TrainLatentPriorConfig, out_dir: Path | str, progress: Optional[ProgressFn] = None,
                       work_dir: Optional[Path | str] = None, replace: bool = False) -> Path:
    """Train the latent prior from scratch (or resume) and write it to ``out_dir``.

    Args and safeguards as :func:`text3d.prior.training.train_prior`; ``progress`` counts the VAE's
    iterations first, then the UNet's.
    """
    check_latent_train_config(cfg)
    out_dir = Path(out_dir)
    check_writable(out_dir, "--out")
    claim_output(out_dir, is_latent_prior_folder, replace=replace, key="--out", what="prior")
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    work_dir = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".train")
    check_writable(work_dir, "--work-dir")
    prior = build_latent_prior(cfg.model, seed=cfg.seed)
    prior.vae.to(device), prior.unet.to(device), prior.text_encoder.to(device)
    t0 = time.perf_counter()
    dataset = PatternDataset(cfg.data, cfg.model.resolution, cfg.seed + 7919, work_dir / "bank.safetensors")
    logger.info("latent prior training: %d plain and %d striped combinations, bank ready in %.1f s, %s",
                len(dataset.plain), len(dataset.striped), time.perf_counter() - t0, device)
    grand_total = cfg.vae.iterations + cfg.iterations
    every = {"log_every": cfg.log_every, "checkpoint_every": cfg.checkpoint_every}
    vae = _new_vae_stage(cfg, prior)
    vae.load(work_dir)
    run_steps(vae, cfg.vae.iterations, lambda: _vae_step(vae, cfg, dataset), work_dir, label=vae.name, **every,
              report=_stage_report(vae, progress, 0, grand_total))
    prior.vae.eval().requires_grad_(False)
    prior.vae.register_to_config(scaling_factor=latent_scale(prior.vae, dataset, cfg.vae.scale_images, cfg.seed + 13))
    logger.info("VAE latent std %.4f: scaling factor %.4f", 1 / prior.scaling_factor, prior.scaling_factor)
    unet = unet_state(cfg, prior, "unet")
    unet.load(work_dir)
    run_steps(unet, cfg.iterations, lambda: _unet_step(unet, cfg, prior, dataset), work_dir, label=unet.name, **every,
              snapshot_every=cfg.snapshot_every, snapshot=lambda: _export(cfg, prior, vae, unet, work_dir / "snapshot"),
              report=_stage_report(unet, progress, cfg.vae.iterations, grand_total))
    return _export(cfg, prior, vae, unet, out_dir)


TRAIN_LATENT_PRIOR_SCHEMA = Schema("train-prior", TrainLatentPriorConfig, check=check_latent_train_config)
"""What a ``text3d train-prior`` recipe with ``type: latent`` may hold (every key has a default)."""
