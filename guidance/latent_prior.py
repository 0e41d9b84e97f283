"""The miniature Stable Diffusion (:mod:`text3d.prior.latent_model`) as a frozen latent-space prior.

It is loaded and driven by the Stable Diffusion code itself: the folder goes through
:func:`~text3d.guidance.stable_diffusion.load_sd_components`, renders are VAE-encoded and scaled by
:meth:`StableDiffusionPrior.encode_images`, latents decoded by :meth:`StableDiffusionPrior.decode`.
The only addition is the camera: like the pixel prior, each render's camera conditions the UNet
through its class embedding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from text3d.core.errors import ConfigError
from text3d.prior.latent_model import BUILTIN_LATENT_PRIOR_DIR, read_latent_meta

from .registry import PRIORS
from .priors import CameraConditioned
from .stable_diffusion import StableDiffusionPrior, StableDiffusionPriorConfig

logger = logging.getLogger(__name__)

BUILTIN = "builtin"
"""The ``prior.model`` value of the latent prior shipped with the package."""


@dataclass
class LatentPriorConfig:
    """The miniature Stable Diffusion trained by ``text3d train-prior configs/train-latent-prior.yaml``."""

    type: str = "latent"
    """Prior type; selects this class."""
    model: str = BUILTIN
    """``builtin`` (the latent prior shipped in the package) or a folder written by ``text3d train-prior``."""
    dtype: str = "float32"
    """Compute dtype: ``auto`` (float16 on CUDA, float32 on CPU), ``float32``, ``float16`` or ``bfloat16``."""


def latent_prior_folder(model: str) -> Path:
    return BUILTIN_LATENT_PRIOR_DIR if model == BUILTIN else Path(model).expanduser()


@PRIORS.register("latent", LatentPriorConfig)
class LatentPrior(CameraConditioned, StableDiffusionPrior):
    """The latent shapes prior behind the common prior interface, through the Stable Diffusion loader.

    Args:
        cfg: the prior section of the config.
        device: where the modules are placed.

    Raises:
        ModelNotFoundError: the folder holds no trained latent prior (the message says how to train one).
        ConfigError: the folder holds another kind of prior.
    """

    kind = "latent"

    @classmethod
    def check_config(cls, cfg) -> None:
        """Reject a ``prior.model`` path that does not exist, before anything loads."""
        if isinstance(cfg, StableDiffusionPriorConfig):  # the parent's own check, from its __init__
            return super().check_config(cfg)
        if cfg.model != BUILTIN and not latent_prior_folder(cfg.model).is_dir():
            raise ConfigError(f"prior.model: folder {cfg.model!r} does not exist; use 'builtin' or a folder "
                              f"written by `text3d train-prior configs/train-latent-prior.yaml`")

    def __init__(self, cfg: LatentPriorConfig, device: torch.device):
        folder = latent_prior_folder(cfg.model)
        self.meta = read_latent_meta(folder)
        sd_cfg = StableDiffusionPriorConfig(model=str(folder), dtype=cfg.dtype, local_files_only=True)
        super().__init__(sd_cfg, device)
        self.cfg = cfg
        logger.info("loaded the latent shapes prior %s (%d px -> %d^2 x %d latents)", self.meta.get("version", "?"),
                    self.image_size, self.x0_size, self.x0_channels)
