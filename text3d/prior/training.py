"""Training the embedded shapes prior from scratch (``text3d train-prior``).

Images come on the fly from the analytic renderer (:mod:`text3d.prior.pixel_data`: an endless,
cheap stream of rendered primitives with prompts and cameras).

Training is plain DDPM training of the UNet and the text encoder together: v-prediction on a
cosine schedule by default, min-SNR loss weighting, AdamW with warm-up and a cosine learning rate,
an EMA of the weights (the EMA is what gets saved), 10 % of prompts dropped to ``""`` for
classifier-free guidance (the camera is always kept), optional bf16 autocast.

A run keeps its state in a work folder (``ckpts/``: safetensors + JSON, written atomically every
``checkpoint_every`` iterations; :mod:`text3d.prior.train_state`) and resumes from it when started
again with the same recipe; the finished prior is written to a temporary sibling of ``out_dir`` and
renamed into place.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.schema import Schema
from text3d.core.device import resolve_device
from text3d.core.errors import ConfigError
from text3d.core.io import staged_folder
from text3d.core.paths import check_writable, claim_output
from .model import DEFAULT_SAMPLER, PriorModelConfig, PriorModules, build_prior, check_model_config, encode_prompts, \
    is_prior_folder, save_prior
from .pixel_data import ShapesDataConfig, ShapesDataset, held_out_pairs
from .shapes import COLOUR_NAMES, SHAPES
from .train_state import EMA, TrainState, resume_recipe, run_steps

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, Dict[str, float]], None]
"""``progress(step, total, metrics)``, called after every iteration (the CLI draws a bar with it)."""


@dataclass
class TrainPriorConfig:
    """Recipe of ``text3d train-prior``: data, model and optimisation."""

    data: ShapesDataConfig = field(default_factory=ShapesDataConfig)
    """Training images and prompts."""
    model: PriorModelConfig = field(default_factory=PriorModelConfig)
    """Architecture and noise schedule."""
    iterations: int = bounded(4500, lo=0)
    """Optimisation steps."""
    batch_size: int = bounded(64, lo=1)
    """Images per step."""
    lr: float = bounded(1e-3, lo=0, lo_open=True)
    """Peak learning rate (AdamW)."""
    lr_min: float = bounded(2e-5, lo=0)
    """Learning rate at the end of the cosine decay."""
    warmup: int = bounded(200, lo=0)
    """Linear learning-rate warm-up, iterations."""
    weight_decay: float = bounded(0.01, lo=0)
    """AdamW weight decay (not applied to biases, norms and embeddings)."""
    grad_clip: float = bounded(1.0, lo=0)
    """Gradient-norm clipping; 0 = off."""
    ema_decay: float = bounded(0.999, lo=0, hi=1, hi_open=True)
    """EMA decay of the saved weights (ramped up from 0 over the first iterations)."""
    cond_dropout: float = bounded(0.1, lo=0, hi=1)
    """Fraction of prompts replaced by ``""`` (classifier-free guidance); the camera is kept."""
    min_snr_gamma: float = bounded(5.0, lo=0)
    """Min-SNR loss weighting ``gamma`` (Hang et al. 2023); 0 = unweighted loss."""
    autocast_bf16: bool = False
    """bf16 autocast for the UNet forward pass. Off by default: on CPUs without native bf16
    (the 2-core development machine) it is ~10x slower than float32."""
    seed: int = bounded(0, lo=0, hi=2**63 - 1)
    """Seed of the weights, the data and the noise."""
    device: str = "auto"
    """``auto`` (CUDA if available), ``cpu`` or ``cuda``."""
    num_threads: int = bounded(0, lo=0)
    """CPU threads for torch; 0 = torch's default."""
    checkpoint_every: int = bounded(250, lo=1)
    """Write the resumable state every N iterations (and at the end)."""
    log_every: int = bounded(50, lo=1)
    """Log and record the smoothed loss every N iterations."""
    snapshot_every: int = bounded(1000, lo=0)
    """Also export the EMA prior to ``<work_dir>/snapshot`` every N iterations (to evaluate
    samples while training goes on); 0 = never."""


def check_train_config(cfg: TrainPriorConfig) -> None:
    """Raise :class:`ConfigError` for a recipe that cannot run, before any work starts."""
    check_model_config(cfg.model)
    data = cfg.data
    for key, names, valid in (("shapes", data.shapes, SHAPES), ("colours", data.colours, COLOUR_NAMES)):
        bad = [n for n in names if n not in valid]
        if bad or not names:
            raise ConfigError(f"data.{key}: unknown or empty {bad or names}; valid: {', '.join(valid)}")
    held = held_out_pairs(data)
    if len(held) >= len(data.shapes) * len(data.colours):
        raise ConfigError("data.held_out: holds out every pair; nothing is left to train on")
    for key in ("azimuth_range", "elevation_range"):
        lo_hi = getattr(data, key)
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise ConfigError(f"data.{key}: expected [low, high] with low <= high, got {list(lo_hi)}")
    for key in ("view_suffix_prob", "partial_prompt_prob"):
        if not 0.0 <= getattr(data, key) <= 1.0:
            raise ConfigError(f"data.{key}: expected a probability in [0, 1], got {getattr(data, key)}")
    if not 0.0 <= cfg.cond_dropout < 1.0:
        raise ConfigError(f"cond_dropout: expected a value in [0, 1), got {cfg.cond_dropout}")
    if cfg.iterations < 1 or cfg.batch_size < 1:
        raise ConfigError(f"iterations and batch_size must be >= 1, got {cfg.iterations} and {cfg.batch_size}")
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith("cuda"):
        raise ConfigError(f"device: expected auto, cpu or cuda[:N], got {cfg.device!r}")


# --------------------------------------------------------------------------------------------
# Loss and optimisation
def loss_weights(alphas_cumprod: Tensor, prediction_type: str, gamma: float) -> Tensor:
    """Per-sample weights of the MSE on the UNet's target for min-SNR-``gamma`` weighting.

    For epsilon, ``min(SNR, gamma) / SNR`` (Hang et al. 2023). For v, ``min(SNR + 1, gamma) / (SNR + 1)``:
    the v-loss equals an x0-loss weighted by ``SNR + 1``, which this clips at ``gamma``; unlike
    ``min(SNR, gamma) / (SNR + 1)`` it keeps full weight at the noisiest steps, where a schedule
    that ends at (almost) zero SNR must learn the image mean. ``gamma <= 0``: all ones.
    """
    if gamma <= 0:
        return torch.ones_like(alphas_cumprod)
    snr = alphas_cumprod / (1 - alphas_cumprod).clamp(min=1e-12)
    if prediction_type == "v_prediction":
        return (snr + 1).clamp(max=gamma) / (snr + 1)
    return snr.clamp(max=gamma) / snr.clamp(min=1e-12)


def diffusion_loss(prior: PriorModules, x0: Tensor, text: Tensor, camera: Tensor, generator: torch.Generator,
                   min_snr_gamma: float, autocast_bf16: bool = False) -> Tensor:
    """The weighted denoising loss of one batch (uniform timesteps, fresh Gaussian noise).

    Args:
        prior: the model being trained (its scheduler gives the schedule and the prediction type).
        x0: ``[B, 3, R, R]`` clean images in [-1, 1].
        text: ``[B, L, D]`` text embeddings; camera: ``[B, 12]`` camera features.
    """
    B, dev = x0.shape[0], x0.device
    sched = prior.scheduler
    t = torch.randint(sched.config.num_train_timesteps, (B,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(dev)
    abar = sched.alphas_cumprod[t].to(dev).view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    if sched.config.prediction_type == "v_prediction":
        target = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    else:
        target = noise
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast_bf16):
        out = prior.unet(x_t, t.to(dev), encoder_hidden_states=text, class_labels=camera).sample
    per_sample = (out.float() - target).pow(2).mean(dim=(1, 2, 3))
    return (loss_weights(abar.view(-1), sched.config.prediction_type, min_snr_gamma) * per_sample).mean()


def learning_rate(cfg: TrainPriorConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr_min`` at ``iterations``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.iterations - cfg.warmup))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * frac))


def _param_groups(modules: Sequence[nn.Module], weight_decay: float) -> List[Dict[str, Any]]:
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------------------------
# The training run
def unet_state(cfg: TrainPriorConfig, prior: Any, name: str = "") -> TrainState:
    """The training state of a prior's UNet and text encoder (AdamW, EMA, generator ``seed + 1``) named
    ``name``: ``""`` for the pixel prior (checkpoints in ``<work_dir>/ckpts``), ``"unet"`` for the latent
    prior's second stage. ``prior``: anything with ``unet`` and ``text_encoder``."""
    prior.unet.train()
    prior.text_encoder.train()
    modules = {"unet": prior.unet, "text_encoder": prior.text_encoder}
    optimizer = torch.optim.AdamW(_param_groups(list(modules.values()), cfg.weight_decay), lr=cfg.lr,
                                  betas=(0.9, 0.999))
    return TrainState(name, modules, optimizer, torch.Generator().manual_seed(cfg.seed + 1), resume_recipe(cfg),
                      ema=EMA(list(modules.values()), cfg.ema_decay))


def dropped_prompt_embeddings(prior: Any, prompts: Sequence[str], dropout: float,
                              generator: torch.Generator, group: int = 1) -> Tensor:
    """Text embeddings of ``prompts``, each replaced by the empty prompt with probability ``dropout``
    (classifier-free guidance training); each distinct prompt is encoded once. ``group > 1``: each run of
    ``group`` consecutive prompts (a set of views of one object) is dropped or kept together."""
    drop = (torch.rand(len(prompts) // group, generator=generator) < dropout).repeat_interleave(group)
    kept = ["" if d else p for p, d in zip(prompts, drop.tolist())]
    unique = list(dict.fromkeys(kept))
    return encode_prompts(prior, unique)[torch.tensor([unique.index(p) for p in kept])]


def _train_step(state: TrainState, cfg: TrainPriorConfig, prior: PriorModules, dataset: ShapesDataset) -> float:
    batch = dataset.sample(cfg.batch_size, state.generator)
    emb = dropped_prompt_embeddings(prior, batch.prompts, cfg.cond_dropout, state.generator)
    loss = diffusion_loss(prior, batch.images, emb, batch.camera, state.generator, cfg.min_snr_gamma,
                          cfg.autocast_bf16)
    loss_value = state.optimise(loss, learning_rate(cfg, state.step), cfg.grad_clip)
    dataset.refresh(state.generator)
    return loss_value


def _export(cfg: TrainPriorConfig, prior: PriorModules, state: TrainState, out_dir: Path) -> Path:
    """Write the EMA weights as a prior folder, atomically: a temporary sibling renamed into place."""
    modules = list(state.modules.values())
    backup = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    state.ema.copy_to(modules)
    meta = {
        "version": f"{cfg.model.resolution}px-{state.step}it-seed{cfg.seed}",
        "recipe": dataclasses.asdict(cfg),
        "held_out": [f"{c} {s}" for s, c in held_out_pairs(cfg.data)],
        "iterations": state.step,
        "final_loss": state.smoothed_loss,
        "loss_history": state.history,
        "wall_time_s": round(state.wall_time, 1),
        "trained_on": f"{prior.device.type} ({platform.machine()}, torch {torch.__version__})",
        "sampler": dict(DEFAULT_SAMPLER),
    }
    out_dir = Path(out_dir)
    claim_output(out_dir, is_prior_folder, replace=True, key=str(out_dir), what="prior")  # only ever our own
    try:
        with staged_folder(out_dir) as tmp:
            save_prior(prior, tmp, meta)
    finally:
        for m, sd in zip(modules, backup):
            m.load_state_dict(sd)
    return out_dir


def train_prior(cfg: TrainPriorConfig, out_dir: Path | str, progress: Optional[ProgressFn] = None,
                work_dir: Optional[Path | str] = None, replace: bool = False) -> Path:
    """Train the shapes prior from scratch (or resume) and write it to ``out_dir``.

    Args:
        cfg: the recipe.
        out_dir: destination prior folder, written atomically at the end. It must be new, empty, or
            (with ``replace``) a prior folder written earlier; anything else is refused before
            training starts (:func:`text3d.core.paths.claim_output`).
        progress: called as ``progress(step, total, {"loss": ..., "lr": ...})`` after each iteration.
        work_dir: folder of the resumable state; default ``<out_dir>.train``. An existing state
            with the same recipe is resumed (``iterations`` may be raised to train longer).

    Returns:
        ``out_dir``.
    """
    check_train_config(cfg)
    out_dir = Path(out_dir)
    check_writable(out_dir, "--out")
    claim_output(out_dir, is_prior_folder, replace=replace, key="--out", what="prior")
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    work_dir = Path(work_dir) if work_dir is not None else out_dir.with_name(out_dir.name + ".train")
    check_writable(work_dir, "--work-dir")
    prior = build_prior(cfg.model, seed=cfg.seed)
    prior.unet.to(device), prior.text_encoder.to(device)
    state = unet_state(cfg, prior)
    resumed = state.load(work_dir)
    data_gen = torch.Generator().manual_seed(cfg.seed + 7919 * (state.step + 1))
    t0 = time.perf_counter()
    dataset = ShapesDataset(cfg.data, cfg.model.resolution, data_gen, device)
    logger.info("%s prior training: %d pairs (%d held out), bank ready in %.1f s, %s",
                "resuming" if resumed else "starting", len(dataset.pairs), len(cfg.data.held_out),
                time.perf_counter() - t0, device)
    state.wall_time += time.perf_counter() - t0
    run_steps(state, cfg.iterations, lambda: _train_step(state, cfg, prior, dataset), work_dir, label="prior",
              log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, snapshot_every=cfg.snapshot_every,
              snapshot=lambda: _export(cfg, prior, state, work_dir / "snapshot"),
              metrics=lambda: {"lr": learning_rate(cfg, state.step - 1)},
              report=None if progress is None else lambda figures: progress(state.step, cfg.iterations, figures))
    return _export(cfg, prior, state, out_dir)


TRAIN_PRIOR_SCHEMA = Schema("train-prior", TrainPriorConfig, check=check_train_config)
"""What a ``text3d train-prior`` recipe may hold (every key has a default)."""


def load_train_config(path: Optional[Path | str] = None, overrides: Sequence[str] = ()) -> TrainPriorConfig:
    """Read a ``train-prior`` YAML (or the defaults when ``path`` is None) with ``key.path=value`` overrides.

    Raises:
        ConfigError: unknown keys, wrong types or values, with the key path.
    """
    return TRAIN_PRIOR_SCHEMA.load(path, overrides)
