"""The embedded shapes prior (:mod:`text3d.prior.model`) as a frozen pixel-space prior.

``x_0`` is the render itself, resized to the prior's resolution (32 px) and mapped to [-1, 1]; the
camera of each render conditions the UNet through its class embedding, so a camera-aware prior
guides every view towards what the object looks like from there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
from torch import Tensor

from text3d.core.errors import ConfigError
from text3d.prior.model import BUILTIN_PRIOR_DIR, load_prior
from .registry import PRIORS
from text3d.prior.shapes import COLOUR_SYNONYMS, SHAPE_SYNONYMS, vocabulary

from .priors import CameraConditioned, DiffusionPrior, resize_square, resolve_dtype

logger = logging.getLogger(__name__)

BUILTIN = "builtin"
"""The ``prior.model`` value of the prior shipped with the package."""


@dataclass
class PixelPriorConfig:
    """The shapes prior trained by ``text3d train-prior`` (pixel space, camera-conditioned)."""

    type: str = "pixel"
    """Prior type; selects this class."""
    model: str = BUILTIN
    """``builtin`` (the prior shipped in the package) or a folder written by ``text3d train-prior``."""
    dtype: str = "float32"
    """Compute dtype: ``auto`` (float16 on CUDA, float32 on CPU), ``float32``, ``float16`` or ``bfloat16``."""


def prior_folder(model: str) -> Path:
    return BUILTIN_PRIOR_DIR if model == BUILTIN else Path(model).expanduser()


@PRIORS.register("pixel", PixelPriorConfig)
class PixelPrior(CameraConditioned, DiffusionPrior):
    """The embedded shapes prior behind the common prior interface.

    Args:
        cfg: the prior section of the config.
        device: where the modules are placed.

    Raises:
        ModelNotFoundError: the folder holds no trained prior (the message says how to train one).
    """

    latent_space = False
    kind = "pixel"

    def __init__(self, cfg: PixelPriorConfig, device: torch.device):
        dtype = resolve_dtype(cfg.dtype, device)
        self.cfg = cfg
        parts = load_prior(prior_folder(cfg.model), device, dtype)
        self.meta = parts.meta
        size = int(parts.unet.config.sample_size)
        super().__init__(unet=parts.unet, scheduler=parts.scheduler, text_encoder=parts.text_encoder,
                         tokenizer=parts.tokenizer, device=device, dtype=dtype, image_size=size, x0_size=size)
        logger.info("loaded the shapes prior %s (%s, %d px, %s, %s)", self.meta.get("version", "?"), self.device,
                    size, self.prediction_type, dtype)

    @staticmethod
    def check_config(cfg: PixelPriorConfig) -> None:
        """Reject a ``prior.model`` path that does not exist, before anything loads."""
        if cfg.model != BUILTIN and not prior_folder(cfg.model).is_dir():
            raise ConfigError(f"prior.model: folder {cfg.model!r} does not exist; use 'builtin' or a folder "
                              f"written by `text3d train-prior`")

    def _encode_text_uncached(self, prompts: List[str]) -> Tensor:
        self._warn_unknown_words(prompts)
        return super()._encode_text_uncached(prompts)

    def _warn_unknown_words(self, prompts: List[str]) -> None:
        """Warn once (per prior) when a prompt uses words the prior never saw in training."""
        known = set(vocabulary()) | set(SHAPE_SYNONYMS) | set(COLOUR_SYNONYMS)
        unknown = sorted({w for p in prompts for w in re.findall(r"[a-z]+", p.lower())
                          if w not in known and w.rstrip("s") not in known})
        if unknown and not getattr(self, "_warned_vocabulary", False):
            self._warned_vocabulary = True
            logger.warning("the shapes prior only knows its vocabulary; unknown words %s are guidance noise. "
                           "Known words: %s", ", ".join(unknown), ", ".join(vocabulary()))

    def encode_images(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Renders ``[B, 3, H, W]`` in [0, 1] -> ``x_0`` ``[B, 3, S, S]`` in [-1, 1] (resized, anti-aliased
        when shrinking; differentiable). ``generator`` is unused: the map is deterministic."""
        images = resize_square(images, self.image_size)
        return images.float() * 2 - 1

    def decode(self, x0: Tensor) -> Tensor:
        """``x_0`` in [-1, 1] -> images in [0, 1], float32."""
        return (x0.float() * 0.5 + 0.5).clamp(0, 1)
