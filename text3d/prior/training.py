"""Training the embedded shapes prior from scratch (``text3d train-prior``).

Images come on the fly from the analytic renderer of :mod:`text3d.prior.shapes`: a random allowed
(shape, colour) pair, a random camera over the full azimuth circle and a range of elevations,
prompt ``"a <colour> <shape>"`` (sometimes with the DreamFusion view suffix, sometimes naming only
the shape or only the colour). Shading does not depend on the colour, so the dataset keeps a bank
of colour-free renders per shape (:func:`text3d.prior.shapes.render_shading`), colours them per sample and
re-renders a few bank views every step; the data stream is thus endless yet costs little.

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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.schema import Schema
from text3d.scene.cameras import orbit_cameras
from text3d.core.device import resolve_device
from text3d.core.errors import ConfigError
from text3d.core.io import staged_folder
from text3d.core.paths import check_writable, claim_output
from .model import DEFAULT_SAMPLER, PriorModelConfig, PriorModules, build_prior, camera_features, \
    check_model_config, encode_prompts, is_prior_folder, save_prior
from .shapes import COLOUR_NAMES, COLOURS, SHAPES, colourize, parse_prompt, prompt_for, render_shading, with_article
from .train_state import EMA, TrainState, resume_recipe, run_steps

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, Dict[str, float]], None]
"""``progress(step, total, metrics)``, called after every iteration (the CLI draws a bar with it)."""


@dataclass
class ShapesDataConfig:
    """What the prior is trained on."""

    shapes: List[str] = field(default_factory=lambda: list(SHAPES))
    """Shapes of :mod:`text3d.prior.shapes` to train on."""
    colours: List[str] = field(default_factory=lambda: list(COLOUR_NAMES))
    """Colour names of :mod:`text3d.prior.shapes` to train on."""
    held_out: List[str] = field(default_factory=lambda: ["blue cube", "yellow torus"])
    """``"<colour> <shape>"`` pairs never shown in training (to measure generalisation)."""
    azimuth_range: List[float] = field(default_factory=lambda: [-180.0, 180.0])
    """Camera azimuth range, degrees (uniform)."""
    elevation_range: List[float] = bounded(default_factory=lambda: [-10.0, 70.0], lo=-90, hi=90)
    """Camera elevation range, degrees (uniform); above 60 the view suffix is "overhead view"."""
    distance: float = bounded(3.0, lo=0, lo_open=True)
    """Camera distance from the origin (world units); the objects fill about two thirds of the frame."""
    fovy: float = bounded(32.0, lo=0, hi=180, lo_open=True, hi_open=True)
    """Vertical field of view, degrees."""
    supersample: int = bounded(2, lo=1, hi=8)
    """Anti-aliasing: rays per pixel side."""
    view_suffix_prob: float = bounded(0.5, lo=0, hi=1)
    """Probability that a prompt gets the view suffix of its camera (``", side view"``), as SDS prompts do."""
    partial_prompt_prob: float = bounded(0.1, lo=0, hi=1)
    """Probability of a prompt naming only the shape (``"a cube"``) or only the colour (``"an orange object"``)."""
    bank_views_per_shape: int = bounded(1024, lo=1)
    """Colour-free renders kept per shape; 0 renders every batch from scratch instead."""
    bank_refresh_per_step: int = bounded(8, lo=0)
    """Bank views replaced by fresh random views after every iteration (round-robin over shapes)."""


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


def held_out_pairs(data: ShapesDataConfig) -> List[Tuple[str, str]]:
    """``data.held_out`` as ``(shape, colour)`` pairs.

    Raises:
        ConfigError: an entry is not ``"<colour> <shape>"`` with a known shape and colour.
    """
    pairs = []
    for text in data.held_out:
        parsed = parse_prompt(text)
        if parsed is None or text.strip().lower() != f"{parsed[1]} {parsed[0]}":
            raise ConfigError(f"data.held_out: {text!r} is not '<colour> <shape>' (e.g. 'blue cube'); "
                              f"shapes: {', '.join(SHAPES)}; colours: {', '.join(COLOUR_NAMES)}")
        pairs.append(parsed)
    return pairs


# --------------------------------------------------------------------------------------------
# Prompts
def view_label(azimuth_deg: float, elevation_deg: float) -> str:
    """DreamFusion's view of a camera with text3d's default thresholds (``prompting`` section):
    overhead above 60 degrees elevation, else front within 45 degrees of azimuth 0, back within 45
    degrees of 180, side otherwise."""
    az = 180.0 - (180.0 - azimuth_deg) % 360.0  # wrapped to (-180, 180]
    if elevation_deg > 60.0:
        return "overhead"
    if abs(az) <= 45.0:
        return "front"
    return "back" if abs(az) >= 135.0 else "side"


def training_prompt(shape: str, colour: str, azimuth_deg: float, elevation_deg: float, u: Sequence[float],
                    data: ShapesDataConfig) -> str:
    """The prompt of one training image; ``u`` holds three uniform random numbers in [0, 1)."""
    if u[0] < data.partial_prompt_prob:
        return with_article(shape) if u[1] < 0.5 else with_article(f"{colour} object")
    prompt = prompt_for(shape, colour)
    if u[2] < data.view_suffix_prob:
        prompt += f", {view_label(azimuth_deg, elevation_deg)} view"
    return prompt


# --------------------------------------------------------------------------------------------
# Data
@dataclass
class TrainingBatch:
    images: Tensor
    """``[B, 3, R, R]`` in [-1, 1]."""
    prompts: List[str]
    camera: Tensor
    """``[B, 12]`` :func:`camera_features`."""
    shape_ids: Tensor
    """``[B]`` indices into :data:`text3d.prior.shapes.SHAPES`."""
    colour_ids: Tensor
    """``[B]`` indices into :data:`text3d.prior.shapes.COLOUR_NAMES`."""


def _uniform(lo_hi: Sequence[float], n: int, generator: torch.Generator) -> Tensor:
    return float(lo_hi[0]) + (float(lo_hi[1]) - float(lo_hi[0])) * torch.rand(n, generator=generator)


class ShapesDataset:
    """An endless stream of rendered primitives with prompts and camera features.

    Args:
        data: what to render.
        resolution: image side in pixels.
        generator: CPU generator for every random choice (bank cameras included).
        device: where renders and batches live.
    """

    def __init__(self, data: ShapesDataConfig, resolution: int, generator: torch.Generator,
                 device: torch.device | str = "cpu"):
        self.data, self.resolution, self.device = data, int(resolution), torch.device(device)
        held = set(held_out_pairs(data))
        self.pairs = torch.tensor([(SHAPES.index(s), COLOUR_NAMES.index(c)) for s in data.shapes
                                   for c in data.colours if (s, c) not in held], dtype=torch.long)
        self.palette = torch.tensor([COLOURS[c] for c in COLOUR_NAMES], dtype=torch.float32, device=self.device)
        self.shape_ids = [SHAPES.index(s) for s in data.shapes]
        self._refresh_cursor = 0
        n = data.bank_views_per_shape
        self.bank: Optional[Dict[str, Tensor]] = None
        if n > 0:
            views = [self.render_views(torch.full((n,), sid), generator) for sid in self.shape_ids]
            self.bank = {k: torch.stack([v[k] for v in views]) for k in views[0]}  # [S, n, ...]

    def render_views(self, shape_ids: Tensor, generator: torch.Generator) -> Dict[str, Tensor]:
        """Colour-free renders of the given shapes from fresh random cameras."""
        n, d, R = len(shape_ids), self.data, self.resolution
        az, el = _uniform(d.azimuth_range, n, generator), _uniform(d.elevation_range, n, generator)
        cams = orbit_cameras(az, el, torch.full((n,), d.distance), torch.full((n,), d.fovy), R, R).to(self.device)
        shading, coverage = render_shading(shape_ids, cams, d.supersample)
        return {"shading": shading.half(), "coverage": coverage.half(), "azimuth": az, "elevation": el}

    def refresh(self, generator: torch.Generator) -> None:
        """Replace ``bank_refresh_per_step`` bank views of the next shape (round-robin) by new views."""
        k = self.data.bank_refresh_per_step
        if self.bank is None or k <= 0:
            return
        n_views = self.bank["shading"].shape[1]
        slot = self._refresh_cursor % len(self.shape_ids)
        start = (self._refresh_cursor // len(self.shape_ids)) * k % n_views
        idx = (start + torch.arange(min(k, n_views))) % n_views
        fresh = self.render_views(torch.full((len(idx),), self.shape_ids[slot]), generator)
        for key, value in fresh.items():
            self.bank[key][slot, idx] = value
        self._refresh_cursor += 1

    def sample(self, batch_size: int, generator: torch.Generator) -> TrainingBatch:
        """A batch of random allowed (shape, colour) pairs, each from a random view."""
        pairs = self.pairs[torch.randint(len(self.pairs), (batch_size,), generator=generator)]
        shape_ids, colour_ids = pairs[:, 0], pairs[:, 1]
        if self.bank is None:
            views = self.render_views(shape_ids, generator)
        else:
            slot = torch.tensor([self.shape_ids.index(int(s)) for s in shape_ids])
            view = torch.randint(self.bank["shading"].shape[1], (batch_size,), generator=generator)
            views = {k: v[slot, view] for k, v in self.bank.items()}
        rgb = colourize(views["shading"].float(), views["coverage"].float(), self.palette[colour_ids.to(self.device)])
        u = torch.rand(batch_size, 3, generator=generator).tolist()
        prompts = [training_prompt(SHAPES[s], COLOUR_NAMES[c], float(a), float(e), uu, self.data)
                   for s, c, a, e, uu in zip(shape_ids.tolist(), colour_ids.tolist(), views["azimuth"].tolist(),
                                             views["elevation"].tolist(), u)]
        return TrainingBatch(images=rgb.permute(0, 3, 1, 2) * 2 - 1, prompts=prompts,
                             camera=camera_features(views["azimuth"], views["elevation"]).to(self.device),
                             shape_ids=shape_ids, colour_ids=colour_ids)


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
                              generator: torch.Generator) -> Tensor:
    """Text embeddings of ``prompts``, each replaced by the empty prompt with probability ``dropout``
    (classifier-free guidance training); each distinct prompt is encoded once."""
    drop = torch.rand(len(prompts), generator=generator) < dropout
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
