"""The embedded shapes prior: its architecture, its folder on disk, and DDIM sampling.

The prior is a pixel-space diffusion model of 32x32 images of the primitives of
:mod:`text3d.prior.shapes`. Text reaches it the Stable Diffusion way, tokenizer -> ``CLIPTextModel`` ->
cross-attention of a diffusers ``UNet2DConditionModel``; the camera reaches it through the UNet's
class embedding (``class_embed_type="projection"``) as :func:`camera_features`.

The tokenizer is OpenAI CLIP's real BPE vocabulary (``text3d/data/clip_tokenizer``), so token ids
are CLIP's. The text encoder keeps the full 49408-row embedding table at a small hidden size (rows
of words the training prompts never use stay at their random initialisation).

A trained prior is a diffusers-style folder::

    model_index.json        component list (no pipeline class: load it with :func:`load_prior`)
    unet/                   UNet2DConditionModel (config.json + diffusion_pytorch_model.safetensors)
    text_encoder/           CLIPTextModel (config.json + model.safetensors)
    tokenizer/              vocab.json, merges.txt, tokenizer_config.json, LICENSE
    scheduler/              DDIMScheduler config (noise schedule, prediction type, spacing)
    text3d_prior.json       version, training recipe, held-out pairs, final loss, wall time
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Sequence

import torch
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError, ModelNotFoundError
from text3d.core.io import read_json_object
from text3d.core.quiet import no_transformers_progress_bars

if TYPE_CHECKING:
    from text3d.scene.cameras import Cameras

logger = logging.getLogger(__name__)

PRIOR_FORMAT_VERSION = 2
"""Version of the folder layout and of the conditioning (bumped when either changes).

Version 2: azimuth harmonics 1-4 and elevation harmonics 1-2 as camera features (version 1 had
only ``sin``/``cos`` of the azimuth and the elevation, too weak a signal for the pose of a cube)."""
META_FILE = "text3d_prior.json"
CLIP_TOKENIZER_DIR = Path(__file__).parent.parent / "data" / "clip_tokenizer"
"""OpenAI CLIP's BPE vocabulary, shipped as package data."""
BUILTIN_PRIOR_DIR = Path(__file__).parent.parent / "data" / "shapes_prior"
"""Where ``text3d train-prior`` puts the prior that ships with the package."""
AZIMUTH_HARMONICS = 4
"""Azimuth harmonics of the camera features: a cube repeats every 90 degrees, so ``4 * azimuth`` matters."""
ELEVATION_HARMONICS = 2
CAMERA_FEATURES = tuple(f"{fn}({k} * azimuth)" for k in range(1, AZIMUTH_HARMONICS + 1) for fn in ("sin", "cos")) \
    + tuple(f"{fn}({k} * elevation)" for k in range(1, ELEVATION_HARMONICS + 1) for fn in ("sin", "cos"))
"""The UNet's ``class_labels``, in order (azimuth 0 looks at the object's front from +x)."""


@dataclass
class PriorModelConfig:
    """Architecture and noise schedule of the shapes prior."""

    resolution: int = bounded(32, lo=8, hi=512)
    """Image side in pixels; SDS renders are resized to it."""
    unet_channels: List[int] = bounded(default_factory=lambda: [32, 64, 64], lo=1)
    """UNet channels per resolution level (each level after the first halves the resolution)."""
    cross_attention: List[bool] = field(default_factory=lambda: [False, False, True])
    """Per level: transformer block with self- and cross-attention (True) or ResNets only."""
    layers_per_block: int = bounded(1, lo=1)
    """ResNet layers per level on the way down (the up path has one more)."""
    attention_heads: int = bounded(4, lo=1)
    """Attention heads of the transformer blocks."""
    transformer_layers: int = bounded(1, lo=1)
    """Transformer blocks (self-, cross-attention, MLP) per attention layer (SD: 1). More give
    self-attention, and so shared attention, more of the network (docs/latent-prior.md)."""
    norm_groups: int = bounded(8, lo=1)
    """Group-norm groups (must divide every entry of ``unet_channels``)."""
    text_hidden_size: int = bounded(64, lo=1)
    """Width of the CLIP text encoder and of the cross-attention context."""
    text_layers: int = bounded(2, lo=1)
    """Transformer layers of the text encoder."""
    text_heads: int = bounded(4, lo=1)
    """Attention heads of the text encoder."""
    text_intermediate_size: int = bounded(256, lo=1)
    """MLP width of the text encoder."""
    num_train_timesteps: int = bounded(1000, lo=2)
    """``T``."""
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = "squaredcos_cap_v2"
    """Noise schedule: the cosine schedule of improved DDPM (suited to small images), or DDPM's linear one."""
    prediction_type: Literal["v_prediction", "epsilon"] = "v_prediction"
    """What the UNet predicts; v-prediction stays well-conditioned at both ends of the schedule."""


def check_model_config(cfg: PriorModelConfig, key: str = "model") -> None:
    """Raise :class:`ConfigError` for architectures diffusers would reject later with an obscure error."""
    if len(cfg.cross_attention) != len(cfg.unet_channels):
        raise ConfigError(f"{key}.cross_attention: needs one entry per level of {key}.unet_channels "
                          f"({len(cfg.unet_channels)}), got {len(cfg.cross_attention)}")
    if cfg.resolution % 2 ** (len(cfg.unet_channels) - 1):
        raise ConfigError(f"{key}.resolution: {cfg.resolution} is not divisible by 2^(levels - 1)")
    bad = [c for c in cfg.unet_channels if c % cfg.norm_groups]
    if bad:
        raise ConfigError(f"{key}.norm_groups: {cfg.norm_groups} does not divide the channels {bad}")
    if cfg.text_hidden_size % cfg.text_heads or cfg.text_hidden_size % cfg.attention_heads:
        raise ConfigError(f"{key}.text_hidden_size: {cfg.text_hidden_size} must be divisible by text_heads "
                          f"({cfg.text_heads}) and attention_heads ({cfg.attention_heads})")


# --------------------------------------------------------------------------------------------
# Components
def camera_features(azimuth_deg: Tensor, elevation_deg: Tensor) -> Tensor:
    """``[B, 12]`` float32 camera conditioning, :data:`CAMERA_FEATURES` in order.

    Fourier features: the UNet's class embedding is a linear projection followed by an MLP, which
    learns a pose-dependent image far more easily from harmonics than from a raw angle.
    """
    az, el = torch.deg2rad(azimuth_deg.float()), torch.deg2rad(elevation_deg.float())
    feats = []
    for angle, harmonics in ((az, AZIMUTH_HARMONICS), (el, ELEVATION_HARMONICS)):
        for k in range(1, harmonics + 1):
            feats += [torch.sin(k * angle), torch.cos(k * angle)]
    return torch.stack(feats, dim=-1)


def load_clip_tokenizer(folder: Optional[Path] = None):
    """The CLIP BPE tokenizer (49408 tokens, ``model_max_length`` 77), by default the package's copy."""
    from transformers import CLIPTokenizer

    folder = Path(folder) if folder is not None else CLIP_TOKENIZER_DIR
    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        raise ModelNotFoundError(f"CLIP tokenizer files (vocab.json, merges.txt) missing in {folder}; "
                                 f"regenerate them with text3d/data/make_clip_tokenizer.py")
    # transformers 5 ignores vocab_file/merges_file passed to the constructor: load from the folder.
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def build_text_encoder(cfg: PriorModelConfig, tokenizer) -> nn.Module:
    """A small ``CLIPTextModel`` over the full CLIP vocabulary (random weights)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden_size,
        intermediate_size=cfg.text_intermediate_size,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=cfg.text_hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))


def build_unet(cfg: PriorModelConfig, sample_size: Optional[int] = None, channels: int = 3) -> nn.Module:
    """A ``UNet2DConditionModel`` with text cross-attention and camera class embedding (random weights):
    on ``channels`` x ``sample_size``² inputs, by default the pixel prior's RGB images at ``cfg.resolution``."""
    from diffusers import UNet2DConditionModel

    check_model_config(cfg)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.cross_attention))
    return UNet2DConditionModel(
        sample_size=sample_size or cfg.resolution,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=cfg.text_hidden_size,
        attention_head_dim=cfg.attention_heads,  # diffusers reads this as the number of heads
        transformer_layers_per_block=cfg.transformer_layers,
        norm_num_groups=cfg.norm_groups,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=len(CAMERA_FEATURES),
    )


def build_scheduler(cfg: PriorModelConfig):
    """The DDIM scheduler of the prior: training schedule plus the sampler's defaults.

    ``timestep_spacing="trailing"`` makes the first sampling step start at ``t = T - 1`` (pure
    noise); ``clip_sample`` keeps each step's ``x_0`` estimate inside the image range.
    """
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=True,
        clip_sample_range=1.0,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )


@dataclass
class PriorModules:
    """The loaded parts of a shapes prior (all on one device)."""

    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler: Any
    meta: Dict[str, Any] = field(default_factory=dict)
    """Contents of ``text3d_prior.json`` (empty for a freshly built model)."""

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype


def build_prior(cfg: PriorModelConfig, seed: int = 0) -> PriorModules:
    """A randomly initialised prior (weights from ``seed``; the global RNG is left untouched)."""
    tokenizer = load_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = build_text_encoder(cfg, tokenizer)
        unet = build_unet(cfg)
    return PriorModules(unet, text_encoder, tokenizer, build_scheduler(cfg))


def encode_prompts(prior: PriorModules, prompts: Sequence[str]) -> Tensor:
    """``[B, 77, D]`` text embeddings (the text encoder's last hidden state), gradients allowed."""
    tokens = prior.tokenizer(list(prompts), padding="max_length", max_length=prior.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
    return prior.text_encoder(tokens.input_ids.to(prior.device))[0]


# --------------------------------------------------------------------------------------------
# Folder on disk
PRIOR_ENTRIES = frozenset({"unet", "text_encoder", "scheduler", "tokenizer", "model_index.json", META_FILE})
"""What :func:`save_prior` writes into a prior folder, and nothing else."""


def is_prior_folder(folder: Path) -> bool:
    """True for a folder written by :func:`save_prior` (its metadata file and nothing foreign)."""
    folder = Path(folder)
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return META_FILE in names and names <= PRIOR_ENTRIES


def copy_tokenizer(folder: Path) -> None:
    """The package's CLIP tokenizer files into ``folder/tokenizer`` (every prior folder carries them)."""
    tok_dir = Path(folder) / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "LICENSE"):
        shutil.copyfile(CLIP_TOKENIZER_DIR / name, tok_dir / name)


def save_prior(prior: PriorModules, folder: Path, meta: Dict[str, Any]) -> Path:
    """Write the prior as a diffusers-style folder (safetensors + configs) with its metadata.

    Writes straight into ``folder``; callers that need atomicity write to a temporary folder and
    rename it (see :func:`text3d.prior.training.train_prior`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prior.unet.save_pretrained(folder / "unet", safe_serialization=True)
    prior.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    prior.scheduler.save_pretrained(folder / "scheduler")
    copy_tokenizer(folder)
    index = {
        "_class_name": "Text3DShapesPrior",
        "_note": "a text3d pixel-space prior: load it with text3d.prior.model.load_prior",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    meta = {"format_version": PRIOR_FORMAT_VERSION, "camera_features": list(CAMERA_FEATURES), **meta}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return folder


def load_prior(folder: Optional[Path | str] = None, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> PriorModules:
    """Load a shapes prior folder (default: the one shipped in the package), frozen and in eval mode.

    Raises:
        ModelNotFoundError: the folder or its weights are missing (with the command that makes them).
        ConfigError: the folder is a prior of an incompatible format version.
    """
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder).expanduser() if folder is not None else BUILTIN_PRIOR_DIR
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ModelNotFoundError(
            f"no shapes prior in {folder} (no {META_FILE}); train one with "
            f"`text3d train-prior configs/train-prior.yaml` (about 35 min on 2 CPU cores)")
    meta = read_json_object(meta_path, ModelNotFoundError,
                            "restore the folder, or train a prior with `text3d train-prior configs/train-prior.yaml`")
    if meta.get("format_version") != PRIOR_FORMAT_VERSION:
        raise ConfigError(f"{folder}: shapes prior format {meta.get('format_version')} is not the supported "
                          f"{PRIOR_FORMAT_VERSION}; retrain it with `text3d train-prior`")
    try:
        with no_transformers_progress_bars():
            unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
            text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype)
        scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(folder, subfolder="scheduler"))
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelNotFoundError(f"cannot load the shapes prior in {folder}: {' '.join(str(err).split())[:300]}") from err
    tokenizer = load_clip_tokenizer(folder / "tokenizer")
    for module in (unet, text_encoder):
        module.requires_grad_(False).eval().to(device)
    return PriorModules(unet, text_encoder, tokenizer, scheduler, meta)


# --------------------------------------------------------------------------------------------
# Sampling
#: The documented sampler of the shapes prior (the defaults of :func:`sample`), recorded next to the weights.
DEFAULT_SAMPLER = {"type": "ddim", "steps": 50, "cfg_scale": 2.0, "eta": 1.0, "timestep_spacing": "trailing"}


@torch.no_grad()
def sample(prior: PriorModules | Path | str, prompts: Sequence[str], cameras: "Cameras",
           steps: int = DEFAULT_SAMPLER["steps"], cfg_scale: float = DEFAULT_SAMPLER["cfg_scale"],
           generator: Optional[torch.Generator] = None, eta: float = DEFAULT_SAMPLER["eta"],
           negative_prompt: str = "") -> Tensor:
    """Draw images from the prior with DDIM and classifier-free guidance.

    Guidance follows diffusers: ``out = out_u + s * (out_c - out_u)`` on the UNet's raw output
    (linear, so the same for epsilon or v); the camera conditions both halves.

    Args:
        prior: loaded :class:`PriorModules`, or a prior folder.
        prompts: ``B`` prompts, e.g. ``"a red cube"``.
        cameras: ``B`` cameras (:class:`~text3d.scene.cameras.Cameras`, or anything with ``azimuth`` and
            ``elevation`` ``[B]`` tensors in degrees); the prior sees only their direction.
        steps: DDIM steps ("trailing" spacing: the first step is at ``t = T - 1``).
        cfg_scale: guidance scale ``s``; 1 = no guidance.
        generator: CPU generator for the initial noise (and DDIM noise when ``eta > 0``).
        eta: DDIM stochasticity; 1 (default) = ancestral, DDPM-like steps; 0 = deterministic DDIM.
            Measured on the shapes prior (2400 it, 112 samples): deterministic DDIM drifts off the
            data (speckled, tinted backgrounds, bloated shapes: shape 39 %), ancestral steps correct
            the drift (shape 99 %, colour 100 %, clean backgrounds 88 %) at the same 50 steps, CFG 2.
        negative_prompt: prompt of the unconditional half (``""`` = unconditional, as trained).

    Returns:
        ``[B, 3, R, R]`` float32 images in [0, 1] on the prior's device.
    """
    prior = prior if isinstance(prior, PriorModules) else load_prior(prior)
    x = denoise(prior, prompts, cameras, 3, steps, cfg_scale, generator, eta, negative_prompt)
    return (x * 0.5 + 0.5).clamp(0, 1)


@torch.no_grad()
def denoise(prior: Any, prompts: Sequence[str], cameras: "Cameras", channels: int, steps: int, cfg_scale: float,
            generator: Optional[torch.Generator], eta: float, negative_prompt: str = "") -> Tensor:
    """The DDIM loop of the embedded priors, from pure noise to ``x_0`` in the UNet's space (pixels in
    [-1, 1], or scaled latents): classifier-free guidance on the raw output, the camera in both halves.

    Args:
        prior: anything with ``unet``, ``text_encoder``, ``tokenizer``, ``scheduler`` and ``device``
            (:class:`PriorModules`, :class:`text3d.prior.latent_model.LatentPriorModules`).
        channels: of ``x_0`` (3 for pixels, the VAE's latent channels).
        Others: as :func:`sample`.

    Returns:
        ``[B, C, r, r]`` float32 on the prior's device.
    """
    from diffusers import DDIMScheduler

    B, size = len(prompts), int(prior.unet.config.sample_size)
    if cameras.azimuth.shape != (B,) or cameras.elevation.shape != (B,):
        raise ValueError(f"expected {B} cameras (one per prompt), got azimuths {tuple(cameras.azimuth.shape)} "
                         f"and elevations {tuple(cameras.elevation.shape)}")
    scheduler = DDIMScheduler.from_config(prior.scheduler.config)  # own copy: set_timesteps mutates
    scheduler.set_timesteps(steps)
    dev, dt = prior.device, next(prior.unet.parameters()).dtype
    emb = encode_prompts(prior, [negative_prompt] * B + list(prompts)).to(dt)
    cams = camera_features(cameras.azimuth.cpu(), cameras.elevation.cpu()).to(dev, dt)
    cams = torch.cat([cams, cams])
    x = torch.randn(B, channels, size, size, generator=generator).to(dev)
    for t in scheduler.timesteps:
        out = prior.unet(torch.cat([x, x]).to(dt), t.to(dev), encoder_hidden_states=emb, class_labels=cams).sample
        out_u, out_c = out.float().chunk(2)
        guided = out_u + cfg_scale * (out_c - out_u)
        x = scheduler.step(guided, t, x, eta=eta, generator=generator).prev_sample
    return x
