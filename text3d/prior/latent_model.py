"""The miniature Stable Diffusion: the embedded prior in latent space, laid out like SD.

Where the pixel prior (:mod:`text3d.prior.model`) denoises 32x32 images with attention only at
8x8, this prior is built like Stable Diffusion 1.x / 2.x at a miniature size:

- a diffusers ``AutoencoderKL`` (4 latent channels, downsampling factor ``f = 2^(levels - 1)``,
  4 by default: a 32x32 render is an 8x8x4 latent), its ``scaling_factor`` set from the std of the
  training latents (LDM's ``scale_by_std``) so scaled latents have unit variance;
- a ``UNet2DConditionModel`` on the latents with ``CrossAttnDownBlock2D`` (self- and
  cross-attention) at the highest latent resolutions and a plain ``DownBlock2D`` at the lowest, a
  cross-attention mid block and the mirror on the way up: SD's ``[CA, CA, CA, plain]`` at latent
  64/32/16/8 becomes ``[CA, CA, plain]`` at 8/4/2;
- the small CLIP text encoder and the camera class embedding of the pixel prior.

It is written as a diffusers folder with ``model_index.json`` naming a ``StableDiffusionPipeline``
(no safety checker), so the Stable Diffusion loader (:func:`text3d.guidance.stable_diffusion.load_sd_components`)
reads it like any SD checkpoint; ``text3d_prior.json`` next to it holds the recipe and the
camera features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional

import torch
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError, ModelNotFoundError
from text3d.core.io import read_json_object
from .model import CAMERA_FEATURES, META_FILE, PriorModelConfig, build_text_encoder, build_unet, \
    check_model_config, copy_tokenizer, denoise, load_clip_tokenizer

if TYPE_CHECKING:
    from text3d.scene.cameras import Cameras

LATENT_FORMAT_VERSION = 1
"""Version of the latent prior's folder layout and conditioning."""
BUILTIN_LATENT_PRIOR_DIR = Path(__file__).parent.parent / "data" / "latent_prior"
"""Where ``text3d train-prior configs/train-latent-prior.yaml`` puts the latent prior shipped with the package."""
LATENT_ENTRIES = frozenset({"unet", "vae", "text_encoder", "scheduler", "tokenizer", "model_index.json", META_FILE})
"""What :func:`save_latent_prior` writes into a folder, and nothing else."""


@dataclass
class VAEConfig:
    """The autoencoder of the latent prior (a diffusers ``AutoencoderKL``)."""

    channels: List[int] = bounded(default_factory=lambda: [32, 64, 64], lo=1)
    """Channels per level; each level after the first halves the resolution, so ``f = 2^(levels - 1)``."""
    latent_channels: int = bounded(4, lo=1)
    """Channels of the latent (SD: 4)."""
    layers_per_block: int = bounded(1, lo=1)
    """ResNet layers per level."""
    norm_groups: int = bounded(8, lo=1)
    """Group-norm groups (must divide every entry of ``channels``)."""


@dataclass
class LatentModelConfig(PriorModelConfig):
    """Architecture of the latent prior: the VAE, and the UNet on its latents (``resolution`` is the
    image side; the UNet's levels run at ``resolution / f``, halving per level)."""

    unet_channels: List[int] = bounded(default_factory=lambda: [64, 96, 128], lo=1)
    """UNet channels per latent resolution level."""
    cross_attention: List[bool] = field(default_factory=lambda: [True, True, False])
    """Per level: self- and cross-attention (``CrossAttnDownBlock2D``) or ResNets only; SD has
    attention at every level but the lowest."""
    prediction_type: Literal["v_prediction", "epsilon"] = "v_prediction"
    """What the UNet predicts (SD 2.x: v)."""
    vae: VAEConfig = field(default_factory=VAEConfig)
    """The autoencoder."""


def downsampling_factor(vae: VAEConfig) -> int:
    """``f``: image pixels per latent pixel along a side."""
    return 2 ** (len(vae.channels) - 1)


def latent_size(cfg: LatentModelConfig) -> int:
    return cfg.resolution // downsampling_factor(cfg.vae)


def check_latent_model_config(cfg: LatentModelConfig, key: str = "model") -> None:
    """Raise :class:`ConfigError` for architectures diffusers would reject later with an obscure error."""
    f = downsampling_factor(cfg.vae)
    if f not in (4, 8):
        raise ConfigError(f"{key}.vae.channels: {len(cfg.vae.channels)} levels give f = {f}; use 3 levels (f = 4) "
                          f"or 4 (f = 8)")
    if cfg.resolution % f:
        raise ConfigError(f"{key}.resolution: {cfg.resolution} is not divisible by the VAE's f = {f}")
    bad = [c for c in cfg.vae.channels if c % cfg.vae.norm_groups]
    if bad:
        raise ConfigError(f"{key}.vae.norm_groups: {cfg.vae.norm_groups} does not divide the channels {bad}")
    latent = PriorModelConfig(**{k: getattr(cfg, k) for k in PriorModelConfig.__dataclass_fields__})
    latent.resolution = latent_size(cfg)
    check_model_config(latent, key)


# --------------------------------------------------------------------------------------------
# Components
def build_vae(cfg: LatentModelConfig, scaling_factor: float = 1.0) -> nn.Module:
    """A randomly initialised ``AutoencoderKL`` (mid-block attention at the lowest resolution, as SD's)."""
    from diffusers import AutoencoderKL

    levels = len(cfg.vae.channels)
    return AutoencoderKL(
        sample_size=cfg.resolution,
        in_channels=3,
        out_channels=3,
        latent_channels=cfg.vae.latent_channels,
        block_out_channels=tuple(cfg.vae.channels),
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=cfg.vae.layers_per_block,
        norm_num_groups=cfg.vae.norm_groups,
        scaling_factor=float(scaling_factor),
    )


def build_latent_unet(cfg: LatentModelConfig) -> nn.Module:
    """The latent ``UNet2DConditionModel``: attention where SD has it, camera class embedding (random weights)."""
    check_latent_model_config(cfg)
    return build_unet(cfg, latent_size(cfg), cfg.vae.latent_channels)


def build_latent_scheduler(cfg: LatentModelConfig):
    """DDIM with the training schedule; no ``clip_sample`` (latents are not bounded like pixels)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction_type, clip_sample=False, set_alpha_to_one=True,
                         timestep_spacing="trailing")


@dataclass
class LatentPriorModules:
    """The parts of a latent prior (all on one device)."""

    vae: nn.Module
    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler: Any
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


def build_latent_prior(cfg: LatentModelConfig, seed: int = 0) -> LatentPriorModules:
    """A randomly initialised latent prior (weights from ``seed``; the global RNG is left untouched)."""
    check_latent_model_config(cfg)
    tokenizer = load_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = build_vae(cfg)
        text_encoder = build_text_encoder(cfg, tokenizer)
        unet = build_latent_unet(cfg)
    return LatentPriorModules(vae, unet, text_encoder, tokenizer, build_latent_scheduler(cfg))


def encode_latents(vae: nn.Module, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Unscaled VAE latents of images in [-1, 1]: the posterior mean, or a sample with ``generator``."""
    posterior = vae.encode(images).latent_dist
    if generator is None:
        return posterior.mean
    noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
    return posterior.mean + posterior.std * noise


# --------------------------------------------------------------------------------------------
# Folder on disk
def is_latent_prior_folder(folder: Path) -> bool:
    """True for a folder written by :func:`save_latent_prior` (its metadata file and nothing foreign)."""
    folder = Path(folder)
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return META_FILE in names and names <= LATENT_ENTRIES


MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_note": "text3d's miniature Stable Diffusion (latent shapes prior); loads with diffusers' StableDiffusionPipeline",
    "vae": ["diffusers", "AutoencoderKL"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "safety_checker": [None, None],
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
}


def save_latent_prior(prior: LatentPriorModules, folder: Path, meta: Dict[str, Any]) -> Path:
    """Write the prior as a diffusers Stable Diffusion folder (safetensors + configs) with its metadata.

    Writes straight into ``folder``; callers that need atomicity write to a temporary folder and rename it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vae", "unet", "text_encoder"):
        getattr(prior, name).save_pretrained(folder / name, safe_serialization=True)
        _drop_load_path(folder / name / "config.json")
    prior.scheduler.save_pretrained(folder / "scheduler")
    copy_tokenizer(folder)
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2), encoding="utf-8")
    meta = {"format_version": LATENT_FORMAT_VERSION, "type": "latent", "camera_features": list(CAMERA_FEATURES),
            **meta}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return folder


def _drop_load_path(config: Path) -> None:
    """A module loaded from a folder keeps that folder in its config (``_name_or_path``); a written prior
    names no path of the machine that wrote it."""
    data = json.loads(config.read_text(encoding="utf-8"))
    if data.pop("_name_or_path", None) is not None:
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_latent_meta(folder: Path) -> Dict[str, Any]:
    """``text3d_prior.json`` of a latent prior folder.

    Raises:
        ModelNotFoundError: no latent prior in ``folder`` (the message says how to train one).
        ConfigError: a prior of another type or format version.
    """
    folder = Path(folder)
    if not (folder / META_FILE).is_file():
        raise ModelNotFoundError(f"no latent prior in {folder} (no {META_FILE}); train one with "
                                 f"`text3d train-prior configs/train-latent-prior.yaml`")
    meta = read_json_object(folder / META_FILE, ModelNotFoundError,
                            "restore the folder, or train a prior with `text3d train-prior configs/train-latent-prior.yaml`")
    if meta.get("type") != "latent" or meta.get("format_version") != LATENT_FORMAT_VERSION:
        raise ConfigError(f"{folder}: not a latent prior of format {LATENT_FORMAT_VERSION} (type {meta.get('type')!r}, "
                          f"format {meta.get('format_version')}); use prior.type: pixel for it, or retrain")
    return meta


# --------------------------------------------------------------------------------------------
# Sampling
@torch.no_grad()
def sample_latent(prior: LatentPriorModules, prompts: List[str], cameras: "Cameras", steps: int = 50,
                  cfg_scale: float = 2.0, generator: Optional[torch.Generator] = None, eta: float = 1.0,
                  negative_prompt: str = "", return_latents: bool = False) -> Tensor:
    """Draw images with DDIM on the latents and classifier-free guidance, then decode them.

    The documented sampler of the latent prior has the pixel prior's defaults (50 ancestral DDIM
    steps, trailing spacing, CFG 2 on the UNet's raw output, the camera conditioning both halves).

    Returns:
        ``[B, 3, R, R]`` float32 images in [0, 1] (or the ``[B, 4, r, r]`` scaled latents).
    """
    x = denoise(prior, prompts, cameras, int(prior.unet.config.in_channels), steps, cfg_scale, generator, eta,
                negative_prompt)
    if return_latents:
        return x
    return (prior.vae.decode(x / prior.scaling_factor).sample.float() * 0.5 + 0.5).clamp(0, 1)


def load_latent_prior(folder: Path | str, device: torch.device | str = "cpu") -> LatentPriorModules:
    """A latent prior folder as :class:`LatentPriorModules` (frozen, eval mode), for sampling and
    evaluation; scenes load it through the Stable Diffusion loader instead (``prior.type: latent``).

    Raises:
        ModelNotFoundError: no latent prior in ``folder``, or weights that cannot be read.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from text3d.core.quiet import no_transformers_progress_bars

    folder = Path(folder)
    meta = read_latent_meta(folder)
    try:
        with no_transformers_progress_bars():
            text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
        scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(folder, subfolder="scheduler"))
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelNotFoundError(f"cannot load the latent prior in {folder}: {' '.join(str(err).split())[:300]}") from err
    for module in (vae, unet, text_encoder):
        module.requires_grad_(False).eval().to(device)
    return LatentPriorModules(vae, unet, text_encoder, load_clip_tokenizer(folder / "tokenizer"), scheduler, meta)
