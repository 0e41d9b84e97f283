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

3. **Optionally, the view-set stage** (``views.iterations > 0``): the UNet, from stage 2's EMA weights,
   on a share of batches that are sets of ``views.views`` views of one object with every
   self-attention layer reading across the set (StyleAligned: views 1.. attend to their own and view
   0's keys and values). Nothing in this world of flat-coloured shapes teaches self-attention to copy
   appearance from other tokens, so shared attention at sampling time has nothing to act through
   unless it is taught (docs/latent-prior.md, "Training the attention across views"). The processors
   come from the caller (``view_attention``): they belong to :mod:`text3d.guidance.attention`, a
   layer above this one.

Each stage keeps its state in the work folder (``vae/ckpts``, ``unet/ckpts``, ``views/ckpts``: safetensors + JSON,
written atomically every ``checkpoint_every`` iterations; :mod:`text3d.prior.train_state`) and the
fixed bank of views in ``bank.safetensors``; a stopped run started again with the same recipe
resumes where it stopped, bit-exactly (every batch is drawn from the checkpointed generator). The
finished prior is written to a temporary sibling of ``out_dir`` and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from contextlib import AbstractContextManager, nullcontext
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
from .latent_model import BUILTIN_LATENT_PRIOR_DIR, LatentModelConfig, LatentPriorModules, build_latent_prior, \
    check_latent_model_config, encode_latents, is_latent_prior_folder, load_latent_prior, save_latent_prior
from .model import DEFAULT_SAMPLER
from .train_state import EMA, TrainState, resume_recipe, run_steps
from .training import ProgressFn, TrainPriorConfig, _param_groups, check_train_config, diffusion_loss, \
    dropped_prompt_embeddings, held_out_pairs, learning_rate, unet_state

logger = logging.getLogger(__name__)

ViewAttention = Callable[[nn.Module, int], AbstractContextManager]
"""``(unet, views)`` -> a context in which every self-attention layer of ``unet`` reads across each
group of ``views`` consecutive batch items (StyleAligned: :func:`text3d.guidance.attention.shared_attention`)."""

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
class ViewSetStageConfig:
    """Stage 3 (optional): the UNet's self-attention taught to read across sets of views of one object."""

    iterations: int = bounded(0, lo=0)
    """Optimisation steps of this stage; 0 = no such stage (the prior is stage 2's)."""
    views: int = bounded(4, lo=2)
    """Views per set (the batch holds ``batch_size / views`` sets)."""
    set_share: float = bounded(0.75, lo=0, hi=1)
    """Share of the batches that are sets; the others are stage 2's plain batches."""
    lr: float = bounded(5e-4, lo=0, lo_open=True)
    """Peak learning rate (AdamW, no weight decay)."""
    lr_min: float = bounded(2e-5, lo=0)
    """Learning rate at the end of the cosine decay."""
    warmup: int = bounded(50, lo=0)
    """Linear warm-up, iterations."""
    ema_decay: float = bounded(0.999, lo=0, hi=1, hi_open=True)
    """EMA decay of the written UNet weights (ramped up from 0, as stage 2's)."""
    start_from: Optional[str] = None
    """A latent prior folder (or ``builtin``) trained by stages 1 and 2 of this same recipe: stage 3 starts
    from it instead of running them (stage 3 in a later sitting). ``null``: from this run's stage 2. A prior
    that has had stage 3 (the shipped one since it includes it) is refused."""


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
    views: ViewSetStageConfig = field(default_factory=ViewSetStageConfig)
    """Stage 3 (optional)."""


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
    if cfg.views.iterations > 0 and cfg.batch_size % cfg.views.views:
        raise ConfigError(f"views.views: {cfg.views.views} must divide batch_size ({cfg.batch_size}) into whole "
                          "sets; change one of them")


# --------------------------------------------------------------------------------------------
# What a resumed stage must match: the UNet stage the whole recipe but train_state.RESUME_FREE_KEYS
# (train_state.resume_recipe), the VAE stage only what it depends on
def _vae_recipe(cfg: TrainLatentPriorConfig) -> Dict[str, Any]:
    vae = {k: v for k, v in dataclasses.asdict(cfg.vae).items() if k not in ("iterations", "scale_images")}
    return {"data": dataclasses.asdict(cfg.data), "model": dataclasses.asdict(cfg.model), "vae": vae, "seed": cfg.seed}


def _unet_recipe(cfg: TrainLatentPriorConfig) -> Dict[str, Any]:
    return {k: v for k, v in resume_recipe(cfg).items() if k != "views"}


def _views_recipe(cfg: TrainLatentPriorConfig) -> Dict[str, Any]:
    views = {k: v for k, v in dataclasses.asdict(cfg.views).items() if k != "iterations"}
    return {**_unet_recipe(cfg), "views": views, "from_unet_iterations": cfg.iterations}


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
# Stage 3: the view sets
def _new_views_stage(cfg: TrainLatentPriorConfig, prior: LatentPriorModules) -> TrainState:
    prior.unet.train()
    optimizer = torch.optim.AdamW(prior.unet.parameters(), lr=cfg.views.lr, weight_decay=0.0)
    return TrainState("views", {"unet": prior.unet}, optimizer, torch.Generator().manual_seed(cfg.seed + 17),
                      _views_recipe(cfg), ema=EMA([prior.unet], cfg.views.ema_decay))


def _views_step(stage: TrainState, cfg: TrainLatentPriorConfig, prior: LatentPriorModules, dataset: PatternDataset,
                view_attention: ViewAttention) -> float:
    """One step on ``batch_size / views`` view sets (prompts dropped per set, attention across the set) or,
    with probability ``1 - set_share``, on a plain batch."""
    n = cfg.views.views
    is_set = torch.rand(1, generator=stage.generator).item() < cfg.views.set_share
    group = n if is_set else 1
    batch = dataset.sample(cfg.batch_size, stage.generator, views=group)
    with torch.no_grad():
        x0 = encode_latents(prior.vae, batch.images.to(prior.device), stage.generator) * prior.scaling_factor
    emb = dropped_prompt_embeddings(prior, batch.prompts, cfg.cond_dropout, stage.generator, group=group)
    with view_attention(prior.unet, n) if is_set else nullcontext():
        loss = diffusion_loss(prior, x0, emb, batch.camera.to(prior.device), stage.generator, cfg.min_snr_gamma,
                              cfg.autocast_bf16)
    return stage.optimise(loss, learning_rate(cfg.views, stage.step), cfg.grad_clip)


# --------------------------------------------------------------------------------------------
# The run
def _stage_report(stage: TrainState, progress: Optional[ProgressFn], offset: int,
                  grand_total: int) -> Optional[Callable[[Dict[str, Any]], None]]:
    """``progress`` for :func:`run_steps` on one stage: iterations counted over both stages, figures
    ``{"loss", "stage"}``."""
    if progress is None:
        return None
    return lambda figures: progress(offset + stage.step, grand_total, {**figures, "stage": stage.name})


def _meta(cfg: TrainLatentPriorConfig, prior: LatentPriorModules, stages: Dict[str, TrainState],
          before: Dict[str, Any]) -> Dict[str, Any]:
    """The folder's ``text3d_prior.json``: the recipe, each stage's iterations, loss and time (``before``:
    the meta of the prior stage 3 started from, when stages 1 and 2 ran in another sitting)."""
    per = lambda key, value: {**before.get(key, {}), **{n: value(st) for n, st in stages.items()}}  # noqa: E731
    iterations = per("iterations", lambda st: st.step)
    return {
        "version": f"latent-{cfg.model.resolution}px-" + "-".join(f"{n}{i}" for n, i in iterations.items())
                   + f"-seed{cfg.seed}",
        "recipe": dataclasses.asdict(cfg),
        "held_out": [f"{c} {s}" for s, c in held_out_pairs(cfg.data)],
        "held_out_striped": list(cfg.data.held_out_striped),
        "iterations": iterations,
        "final_loss": per("final_loss", lambda st: st.smoothed_loss),
        "loss_history": per("loss_history", lambda st: st.history),
        "wall_time_s": per("wall_time_s", lambda st: round(st.wall_time, 1)),
        "scaling_factor": prior.scaling_factor,
        "trained_on": f"{prior.device.type} ({platform.machine()}, torch {torch.__version__})",
        "sampler": dict(LATENT_SAMPLER),
    }


def _export(cfg: TrainLatentPriorConfig, prior: LatentPriorModules, stages: Dict[str, TrainState], out_dir: Path,
            before: Optional[Dict[str, Any]] = None) -> Path:
    """Write the prior, atomically: the last stage's modules with its EMA weights (earlier stages' modules
    hold theirs already), the others as they are."""
    last = list(stages.values())[-1]
    modules = list(last.modules.values())
    backup = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    if last.ema is not None:
        last.ema.copy_to(modules)
    meta = _meta(cfg, prior, stages, before or {})
    claim_output(out_dir, is_latent_prior_folder, replace=True, key=str(out_dir), what="prior")  # only ever our own
    try:
        with staged_folder(out_dir) as tmp:
            save_latent_prior(prior, tmp, meta)
    finally:
        for m, sd in zip(modules, backup):
            m.load_state_dict(sd)
    return out_dir


def _start_prior(cfg: TrainLatentPriorConfig, device: torch.device) -> LatentPriorModules:
    """The prior of ``views.start_from`` (stages 1 and 2 of this recipe, trained before), trainable."""
    folder = BUILTIN_LATENT_PRIOR_DIR if cfg.views.start_from == "builtin" else Path(cfg.views.start_from)
    prior = load_latent_prior(folder, device)
    recipe = prior.meta.get("recipe", {})
    for key in ("data", "model"):
        if recipe.get(key) != json.loads(json.dumps(dataclasses.asdict(getattr(cfg, key)))):
            raise ConfigError(f"views.start_from: {folder} was trained with another {key!r} section than this "
                              f"recipe's; start from a prior of this recipe or set views.start_from=null")
    if recipe.get("views", {}).get("iterations", 0) > 0:
        raise ConfigError(f"views.start_from: {folder} has had stage 3 (views) already; start from a prior that "
                          f"stages 1-2 wrote (views.iterations=0) or set views.start_from=null")
    # Weights read from safetensors keep the file's memory alignment, which changes MKL's sums at one thread;
    # copied into fresh memory they give the straight run's result bit for bit (test_latent_prior).
    for module in (prior.unet, prior.text_encoder, prior.vae):
        for param in module.parameters():
            param.data = param.data.clone()
    prior.unet.requires_grad_(True)
    return prior


def _train_stages_1_2(cfg: TrainLatentPriorConfig, prior: LatentPriorModules, dataset: PatternDataset, work_dir: Path,
                      report: Callable[[TrainState, int], Any]) -> Dict[str, TrainState]:
    every = {"log_every": cfg.log_every, "checkpoint_every": cfg.checkpoint_every}
    vae = _new_vae_stage(cfg, prior)
    vae.load(work_dir)
    run_steps(vae, cfg.vae.iterations, lambda: _vae_step(vae, cfg, dataset), work_dir, label=vae.name, **every,
              report=report(vae, 0))
    prior.vae.eval().requires_grad_(False)
    prior.vae.register_to_config(scaling_factor=latent_scale(prior.vae, dataset, cfg.vae.scale_images, cfg.seed + 13))
    logger.info("VAE latent std %.4f: scaling factor %.4f", 1 / prior.scaling_factor, prior.scaling_factor)
    unet = unet_state(cfg, prior, "unet")
    unet.recipe = _unet_recipe(cfg)
    unet.load(work_dir)
    stages = {"vae": vae, "unet": unet}
    run_steps(unet, cfg.iterations, lambda: _unet_step(unet, cfg, prior, dataset), work_dir, label=unet.name, **every,
              snapshot_every=cfg.snapshot_every, snapshot=lambda: _export(cfg, prior, stages, work_dir / "snapshot"),
              report=report(unet, cfg.vae.iterations))
    return stages


def train_latent_prior(cfg: TrainLatentPriorConfig, out_dir: Path | str, progress: Optional[ProgressFn] = None,
                       work_dir: Optional[Path | str] = None, replace: bool = False,
                       view_attention: Optional[ViewAttention] = None) -> Path:
    """Train the latent prior from scratch (or resume) and write it to ``out_dir``.

    Args and safeguards as :func:`text3d.prior.training.train_prior`; ``progress`` counts the VAE's
    iterations first, then the UNet's, then the view-set stage's. ``view_attention``: the processors of
    stage 3 (needed when ``views.iterations > 0``).
    """
    check_latent_train_config(cfg)
    if cfg.views.iterations > 0 and view_attention is None:
        raise ConfigError("views.iterations: the view-set stage needs view_attention "
                          "(text3d.guidance.attention.shared_attention); `text3d train-prior` passes it")
    out_dir = Path(out_dir)
    check_writable(out_dir, "--out")
    claim_output(out_dir, is_latent_prior_folder, replace=replace, key="--out", what="prior")
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    work_dir = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".train")
    check_writable(work_dir, "--work-dir")
    start = cfg.views.start_from is not None and cfg.views.iterations > 0
    prior = _start_prior(cfg, device) if start else build_latent_prior(cfg.model, seed=cfg.seed)
    prior.vae.to(device), prior.unet.to(device), prior.text_encoder.to(device)
    t0 = time.perf_counter()
    dataset = PatternDataset(cfg.data, cfg.model.resolution, cfg.seed + 7919, work_dir / "bank.safetensors")
    logger.info("latent prior training: %d plain and %d striped combinations, bank ready in %.1f s, %s",
                len(dataset.plain), len(dataset.striped), time.perf_counter() - t0, device)
    done = cfg.vae.iterations + cfg.iterations if not start else 0
    grand_total = done + cfg.views.iterations
    report = lambda stage, offset: _stage_report(stage, progress, offset, grand_total)  # noqa: E731
    stages = {} if start else _train_stages_1_2(cfg, prior, dataset, work_dir, report)
    if cfg.views.iterations > 0:
        if not start:
            stages["unet"].ema.copy_to(list(stages["unet"].modules.values()))  # stage 3 starts from the EMA weights
        views = _new_views_stage(cfg, prior)
        views.load(work_dir)
        stages["views"] = views
        run_steps(views, cfg.views.iterations, lambda: _views_step(views, cfg, prior, dataset, view_attention), work_dir,
                  label=views.name, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                  report=report(views, done))
    return _export(cfg, prior, stages, out_dir, prior.meta if start else None)


TRAIN_LATENT_PRIOR_SCHEMA = Schema("train-prior", TrainLatentPriorConfig, check=check_latent_train_config)
"""What a ``text3d train-prior`` recipe with ``type: latent`` may hold (every key has a default)."""
