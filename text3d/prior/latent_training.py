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
written atomically every ``checkpoint_every`` iterations) and the fixed bank of views in
``bank.safetensors``; a stopped run started again with the same recipe resumes where it stopped,
bit-exactly (every batch is drawn from the checkpointed generator). The finished prior is written
to a temporary sibling of ``out_dir`` and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.checkpoint import load_latest_checkpoint, optimizer_from_flat, optimizer_to_flat, save_checkpoint
from text3d.core.device import resolve_device
from text3d.core.errors import ConfigError
from text3d.core.io import staged_folder
from text3d.core.paths import check_writable, claim_output
from text3d.core.schema import Schema
from .latent_data import PatternDataConfig, PatternDataset, held_out_striped
from .latent_model import LatentModelConfig, LatentPriorModules, build_latent_prior, check_latent_model_config, \
    encode_latents, is_latent_prior_folder, save_latent_prior
from .model import DEFAULT_SAMPLER, encode_prompts
from .training import EMA, ProgressFn, TrainPriorConfig, _param_groups, check_train_config, diffusion_loss, \
    held_out_pairs, learning_rate

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
# One stage's resumable state
@dataclass
class _Stage:
    name: str
    modules: Dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    recipe: Dict[str, Any]
    ema: Optional[EMA] = None
    step: int = 0
    wall_time: float = 0.0
    smoothed_loss: float = float("nan")
    history: List[List[float]] = field(default_factory=list)

    def save(self, work_dir: Path) -> None:
        tensors = {f"{n}.{k}": v for n, m in self.modules.items() for k, v in m.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{i}": t for i, t in enumerate(self.ema.shadow)})
        optim_tensors, groups = optimizer_to_flat(self.optimizer)
        tensors.update(optim_tensors)
        tensors["rng.generator"] = self.generator.get_state()
        meta = {"recipe": self.recipe, "wall_time": self.wall_time, "smoothed_loss": self.smoothed_loss,
                "history": self.history, "ema_updates": self.ema.updates if self.ema else 0,
                "optimizer_param_groups": groups}
        save_checkpoint(work_dir / self.name / "ckpts", self.step, tensors, meta, keep=1)

    def load(self, work_dir: Path) -> bool:
        ckpt = load_latest_checkpoint(work_dir / self.name)
        if ckpt is None:
            return False
        if json.loads(json.dumps(self.recipe)) != ckpt.meta["recipe"]:
            raise ConfigError(f"{work_dir} holds a {self.name} stage of another recipe; delete it or pick another "
                              f"work folder (iterations, checkpoint_every, log_every, snapshot_every, num_threads and "
                              f"device may change on resume)")
        for name, module in self.modules.items():
            module.load_state_dict({k[len(name) + 1:]: v for k, v in ckpt.tensors.items() if k.startswith(name + ".")})
        optimizer_from_flat(self.optimizer, ckpt.tensors, ckpt.meta["optimizer_param_groups"])
        if self.ema is not None:
            self.ema.load_state_dict({"shadow": [ckpt.tensors[f"ema.{i}"] for i in range(len(self.ema.shadow))],
                                      "updates": ckpt.meta["ema_updates"]})
        self.generator.set_state(ckpt.tensors["rng.generator"])
        self.step, self.wall_time = int(ckpt.meta["step"]), float(ckpt.meta["wall_time"])
        self.smoothed_loss, self.history = float(ckpt.meta["smoothed_loss"]), list(ckpt.meta["history"])
        logger.info("resumed the %s stage from %s at iteration %d", self.name, ckpt.path, self.step)
        return True


_FREE_KEYS = ("iterations", "checkpoint_every", "log_every", "snapshot_every", "num_threads", "device")


def _vae_recipe(cfg: TrainLatentPriorConfig) -> Dict[str, Any]:
    vae = {k: v for k, v in dataclasses.asdict(cfg.vae).items() if k not in ("iterations", "scale_images")}
    return {"data": dataclasses.asdict(cfg.data), "model": dataclasses.asdict(cfg.model), "vae": vae, "seed": cfg.seed}


def _unet_recipe(cfg: TrainLatentPriorConfig) -> Dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _FREE_KEYS}


# --------------------------------------------------------------------------------------------
# Stage 1: the VAE
def vae_loss(vae: nn.Module, images: Tensor, generator: torch.Generator, stage: VAEStageConfig) -> Tensor:
    """Reconstruction (MSE + ``l1_weight`` L1) of a posterior sample plus ``kl_weight`` KL to N(0, I)."""
    posterior = vae.encode(images).latent_dist
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(images)
    error = vae.decode(z).sample - images
    return error.pow(2).mean() + stage.l1_weight * error.abs().mean() + stage.kl_weight * posterior.kl().mean()


def _new_vae_stage(cfg: TrainLatentPriorConfig, prior: LatentPriorModules) -> _Stage:
    prior.vae.train()
    optimizer = torch.optim.AdamW(_param_groups([prior.vae], 0.0), lr=cfg.vae.lr, betas=(0.5, 0.9))
    return _Stage("vae", {"vae": prior.vae}, optimizer, torch.Generator().manual_seed(cfg.seed + 11), _vae_recipe(cfg))


def _vae_step(stage: _Stage, cfg: TrainLatentPriorConfig, dataset: PatternDataset) -> float:
    batch = dataset.sample(cfg.vae.batch_size, stage.generator)
    loss = vae_loss(stage.modules["vae"], batch.images, stage.generator, cfg.vae)
    return _optimise(stage, loss, learning_rate(cfg.vae, stage.step), cfg.vae.grad_clip)


def _optimise(stage: _Stage, loss: Tensor, lr: float, grad_clip: float) -> float:
    for group in stage.optimizer.param_groups:
        group["lr"] = lr
    stage.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for g in stage.optimizer.param_groups for p in g["params"]], grad_clip)
    stage.optimizer.step()
    if stage.ema is not None:
        stage.ema.update()
    return loss.item()


@torch.no_grad()
def latent_scale(vae: nn.Module, dataset: PatternDataset, n: int, seed: int, batch: int = 128) -> float:
    """``1 / std`` of the posterior-sample latents of ``n`` training images (LDM's ``scale_by_std``)."""
    gen = torch.Generator().manual_seed(seed)
    latents = [encode_latents(vae, dataset.sample(min(batch, n - i), gen).images, gen) for i in range(0, n, batch)]
    return float(1.0 / torch.cat(latents).flatten().std())


# --------------------------------------------------------------------------------------------
# Stage 2: the UNet
def _new_unet_stage(cfg: TrainLatentPriorConfig, prior: LatentPriorModules) -> _Stage:
    prior.unet.train()
    prior.text_encoder.train()
    modules = {"unet": prior.unet, "text_encoder": prior.text_encoder}
    optimizer = torch.optim.AdamW(_param_groups(list(modules.values()), cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    return _Stage("unet", modules, optimizer, torch.Generator().manual_seed(cfg.seed + 1), _unet_recipe(cfg),
                  ema=EMA(list(modules.values()), cfg.ema_decay))


def _unet_step(stage: _Stage, cfg: TrainLatentPriorConfig, prior: LatentPriorModules, dataset: PatternDataset) -> float:
    batch = dataset.sample(cfg.batch_size, stage.generator)
    with torch.no_grad():
        x0 = encode_latents(prior.vae, batch.images.to(prior.device), stage.generator) * prior.scaling_factor
    drop = torch.rand(cfg.batch_size, generator=stage.generator) < cfg.cond_dropout
    prompts = ["" if d else p for p, d in zip(batch.prompts, drop.tolist())]
    unique = list(dict.fromkeys(prompts))
    emb = encode_prompts(prior, unique)[torch.tensor([unique.index(p) for p in prompts])]
    loss = diffusion_loss(prior, x0, emb, batch.camera.to(prior.device), stage.generator, cfg.min_snr_gamma,
                          cfg.autocast_bf16)
    return _optimise(stage, loss, learning_rate(cfg, stage.step), cfg.grad_clip)


# --------------------------------------------------------------------------------------------
# The run
def _run_stage(stage: _Stage, total: int, step_fn: Callable[[], float], work_dir: Path, cfg: TrainLatentPriorConfig,
               progress: Optional[ProgressFn], offset: int, grand_total: int,
               snapshot: Optional[Callable[[], None]] = None) -> None:
    """Iterate ``step_fn`` until ``stage.step == total``, checkpointing, logging and reporting progress."""
    while stage.step < total:
        t0 = time.perf_counter()
        loss = step_fn()
        stage.step += 1
        stage.wall_time += time.perf_counter() - t0
        stage.smoothed_loss = loss if math.isnan(stage.smoothed_loss) else 0.98 * stage.smoothed_loss + 0.02 * loss
        if stage.step % cfg.log_every == 0 or stage.step == total:
            stage.history.append([stage.step, round(stage.smoothed_loss, 6)])
            logger.info("%s iteration %d/%d loss %.5f (%.2f s/it)", stage.name, stage.step, total, stage.smoothed_loss,
                        stage.wall_time / max(stage.step, 1))
        if stage.step % cfg.checkpoint_every == 0 or stage.step == total:
            stage.save(work_dir)
        if snapshot is not None and cfg.snapshot_every > 0 and stage.step % cfg.snapshot_every == 0 and stage.step < total:
            snapshot()
        if progress is not None:
            progress(offset + stage.step, grand_total, {"loss": stage.smoothed_loss, "stage": stage.name})


def _export(cfg: TrainLatentPriorConfig, prior: LatentPriorModules, vae: _Stage, unet: _Stage, out_dir: Path) -> Path:
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
    vae = _new_vae_stage(cfg, prior)
    vae.load(work_dir)
    _run_stage(vae, cfg.vae.iterations, lambda: _vae_step(vae, cfg, dataset), work_dir, cfg, progress, 0, grand_total)
    prior.vae.eval().requires_grad_(False)
    prior.vae.register_to_config(scaling_factor=latent_scale(prior.vae, dataset, cfg.vae.scale_images, cfg.seed + 13))
    logger.info("VAE latent std %.4f: scaling factor %.4f", 1 / prior.scaling_factor, prior.scaling_factor)
    unet = _new_unet_stage(cfg, prior)
    unet.load(work_dir)
    _run_stage(unet, cfg.iterations, lambda: _unet_step(unet, cfg, prior, dataset), work_dir, cfg, progress,
               cfg.vae.iterations, grand_total, snapshot=lambda: _export(cfg, prior, vae, unet, work_dir / "snapshot"))
    return _export(cfg, prior, vae, unet, out_dir)


TRAIN_LATENT_PRIOR_SCHEMA = Schema("train-prior", TrainLatentPriorConfig, check=check_latent_train_config)
"""What a ``text3d train-prior`` recipe with ``type: latent`` may hold (every key has a default)."""
