"""CLIP directional similarity (Instruct-NeRF2NeRF; Gal et al. StyleGAN-NADA): how well the change
between source and edited renders follows the change between the source and target prompts,

    mean over views of cos(E_I(edit_i) - E_I(src_i), E_T(y_tgt) - E_T(y_src)),

with CLIP's image and text encoders (projected embeddings, each normalised to unit length first).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.core.errors import ModelNotFoundError

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""CLIP's image normalisation (per RGB channel, on [0, 1] images)."""


class ClipScorer:
    """A frozen CLIP model (``transformers.CLIPModel`` + tokenizer) from a hub id or a folder.

    Raises:
        ModelNotFoundError: the model cannot be loaded (offline and not cached, or not a CLIP folder).
    """

    def __init__(self, model: str, device: torch.device | str = "cpu"):
        from transformers import CLIPModel, CLIPTokenizer

        local = Path(model).expanduser()
        source = str(local) if local.is_dir() else model
        try:
            self.model = CLIPModel.from_pretrained(source).to(device).eval().requires_grad_(False)
            self.tokenizer = CLIPTokenizer.from_pretrained(source)
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(f"edit.clip_model: cannot load CLIP model {model!r} ({str(e).splitlines()[0]}); "
                                     "give a local folder (CLIPModel.save_pretrained) or a cached hub id, or null") from None
        self.device = torch.device(device)
        self.size = int(self.model.config.vision_config.image_size)

    @torch.no_grad()
    def image_embeddings(self, images: Tensor) -> Tensor:
        """``[N, H, W, 3]`` images in [0, 1] -> ``[N, D]`` unit-length CLIP image embeddings."""
        x = images.permute(0, 3, 1, 2).float().to(self.device)
        x = F.interpolate(x, (self.size, self.size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        return F.normalize(_features(self.model.get_image_features(pixel_values=(x - mean) / std)), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> Tensor:
        """``N`` prompts -> ``[N, D]`` unit-length CLIP text embeddings."""
        tokens = self.tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        return F.normalize(_features(self.model.get_text_features(**tokens)), dim=-1)

    def directional_similarity(self, source: Tensor, edited: Tensor, source_prompt: str, target_prompt: str) -> float:
        """Mean over views of the cosine between the image change and the text change.

        Args:
            source, edited: ``[N, H, W, 3]`` renders in [0, 1] of the same ``N`` cameras.
        """
        d_image = self.image_embeddings(edited) - self.image_embeddings(source)
        text = self.text_embeddings([source_prompt, target_prompt])
        d_text = (text[1] - text[0])[None]
        return float(F.cosine_similarity(d_image, d_text, dim=-1, eps=1e-8).mean())


def _features(out) -> Tensor:
    """transformers 5 may return a model output instead of a tensor from ``get_*_features``."""
    if torch.is_tensor(out):
        return out
    return out.pooler_output if getattr(out, "pooler_output", None) is not None else out[0]
