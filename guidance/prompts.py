"""Prompt processing: view-dependent prompts and their cached embeddings.

DreamFusion's remedy for multi-faced (Janus) objects: append the camera's view to the prompt,
``"<prompt>, front view"`` / ``", side view"`` / ``", back view"`` by azimuth and
``", overhead view"`` above an elevation threshold (threestudio's defaults: 45 / 45 / 60 degrees).
Azimuth 0 looks at the object's front (see :mod:`text3d.scene.cameras`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from text3d.core.errors import ConfigError

from .priors import DiffusionPrior
from text3d.core.bounds import bounded

logger = logging.getLogger(__name__)

VIEWS = ("front", "side", "back", "overhead")
"""View labels, in the order of :meth:`PromptProcessor.view_indices`."""


@dataclass
class PromptingConfig:
    """How prompts are turned into per-view conditioning (config section ``prompting``)."""

    view_dependent: bool = True
    """Append ``, front view`` / ``, side view`` / ``, back view`` / ``, overhead view`` by camera pose."""
    front_threshold: float = bounded(45.0, lo=0, hi=180)
    """Degrees: ``|azimuth| <= front_threshold`` is a front view."""
    back_threshold: float = bounded(45.0, lo=0, hi=180)
    """Degrees: ``|azimuth| >= 180 - back_threshold`` is a back view; in between is a side view."""
    overhead_threshold: float = bounded(60.0, lo=0, hi=90)
    """Degrees: ``elevation > overhead_threshold`` is an overhead view (takes precedence over azimuth)."""
    perp_neg: bool = False
    """Perp-Neg (Armandpour et al. 2023, as threestudio): the positive prompt interpolates the view
    prompts by azimuth, and the other views are negative prompts whose guidance is made perpendicular
    to the positive one (:class:`PerpNeg`); 4 UNet evaluations per view instead of 2. Needs
    ``view_dependent``; used by the SDS guidance."""
    perp_neg_f_fs: List[float] = field(default_factory=lambda: [4.0, 0.5, -2.426])
    """``(a, b, c)`` of ``f(r) = a exp(-b r) + c``: the weight of the front negative between front and side
    (and, at ``1 - r``, of the side negative)."""
    perp_neg_f_sb: List[float] = field(default_factory=lambda: [1.0, 0.5, -0.606])
    """The weight of the side negative between side and back."""
    perp_neg_f_fsb: List[float] = field(default_factory=lambda: [1.0, 0.5, 0.967])
    """The weight of the front negative between side and back."""


def check_prompting_config(cfg: PromptingConfig, key: str = "prompting") -> None:
    """Raise :class:`ConfigError` for thresholds that leave views undefined or overlapping."""
    for name in ("front_threshold", "back_threshold"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 180.0:
            raise ConfigError(f"{key}.{name}: expected degrees in [0, 180], got {value}")
    if cfg.front_threshold + cfg.back_threshold > 180.0:
        raise ConfigError(f"{key}.front_threshold + {key}.back_threshold: must be <= 180 so front and back "
                          f"views do not overlap, got {cfg.front_threshold} + {cfg.back_threshold}")
    if not -90.0 <= cfg.overhead_threshold <= 90.0:
        raise ConfigError(f"{key}.overhead_threshold: expected degrees in [-90, 90], got {cfg.overhead_threshold}")
    if cfg.perp_neg and not cfg.view_dependent:
        raise ConfigError(f"{key}.perp_neg: needs view-dependent prompts (its negatives are the other views); "
                          f"set {key}.view_dependent=true or {key}.perp_neg=false")
    for name in ("perp_neg_f_fs", "perp_neg_f_sb", "perp_neg_f_fsb"):
        if len(getattr(cfg, name)) != 3:
            raise ConfigError(f"{key}.{name}: expected [a, b, c] of f(r) = a exp(-b r) + c, got {getattr(cfg, name)}")


@dataclass
class PerpNeg:
    """Perp-Neg's conditioning for ``B`` cameras: the positive embedding (the view prompts interpolated
    by azimuth), ``K = 2`` negative embeddings and their weights (0 for an overhead view)."""

    pos: Tensor
    """``[B, L, D]``."""
    negatives: Tensor
    """``[B, K, L, D]``."""
    weights: Tensor
    """``[B, K]``, float32 (negative numbers: the guidance moves away from those prompts)."""


def shifted_exp_decay(abc: List[float], r: Tensor) -> Tensor:
    """``f(r) = a exp(-b r) + c``."""
    a, b, c = abc
    return a * torch.exp(-b * r) + c


def wrap_azimuth(azimuth: Tensor) -> Tensor:
    """Azimuth in degrees wrapped to ``(-180, 180]``."""
    return 180.0 - torch.remainder(180.0 - azimuth, 360.0)


class PromptProcessor:
    """Embeddings of one prompt's view-dependent variants and of the negative prompt.

    All variants are embedded once at construction (the prior also caches by string, so another
    processor with the same prompt costs nothing); calls only index into them.

    Args:
        prior: the prior whose text encoder embeds the prompts.
        prompt: the text prompt.
        negative_prompt: prompt of the unconditional branch of classifier-free guidance;
            ``""`` is the true unconditional.
        cfg: prompting options; ``None`` uses the defaults of :class:`PromptingConfig`.
    """

    def __init__(self, prior: DiffusionPrior, prompt: str, negative_prompt: str = "",
                 cfg: Optional[PromptingConfig] = None):
        cfg = cfg if cfg is not None else PromptingConfig()
        check_prompting_config(cfg)
        self.prior, self.prompt, self.negative_prompt, self.cfg = prior, prompt, negative_prompt, cfg
        self.prompts: List[str] = [f"{prompt}, {v} view" for v in VIEWS] if cfg.view_dependent else [prompt]
        embeddings = prior.encode_text(self.prompts + [negative_prompt])
        self.cond_embeddings = embeddings[:-1]  # [V, L, D]
        self.uncond_embedding = embeddings[-1:]  # [1, L, D]

    def view_indices(self, elevation: Tensor, azimuth: Tensor) -> Tensor:
        """``[B]`` long indices into :data:`VIEWS` (all 0 without view-dependent prompting).

        Args:
            elevation, azimuth: ``[B]`` degrees; azimuth is wrapped to ``(-180, 180]``.
        """
        if elevation.shape != azimuth.shape or elevation.ndim != 1:
            raise ValueError(f"expected elevation and azimuth of shape [B], got {tuple(elevation.shape)} "
                             f"and {tuple(azimuth.shape)}")
        if not self.cfg.view_dependent:
            return torch.zeros(azimuth.shape, dtype=torch.long, device=azimuth.device)
        az = wrap_azimuth(azimuth.float()).abs()
        idx = torch.full(az.shape, VIEWS.index("side"), dtype=torch.long, device=az.device)
        idx[az <= self.cfg.front_threshold] = VIEWS.index("front")
        idx[az >= 180.0 - self.cfg.back_threshold] = VIEWS.index("back")
        idx[elevation.to(az.device) > self.cfg.overhead_threshold] = VIEWS.index("overhead")
        return idx

    def view_labels(self, elevation: Tensor, azimuth: Tensor) -> List[str]:
        """The view of each camera (``front`` / ``side`` / ``back`` / ``overhead``; ``none`` if not view-dependent)."""
        if not self.cfg.view_dependent:
            return ["none"] * azimuth.shape[0]
        return [VIEWS[i] for i in self.view_indices(elevation, azimuth).tolist()]

    def prompts_for(self, elevation: Tensor, azimuth: Tensor) -> List[str]:
        """The prompt string used for each camera."""
        return [self.prompts[i] for i in self.view_indices(elevation, azimuth).tolist()]

    def perp_neg(self, elevation: Tensor, azimuth: Tensor) -> PerpNeg:
        """Perp-Neg's conditioning for ``B`` cameras (degrees; threestudio's interpolation and weights).

        Front to side (``|azimuth| < 90``): ``r = 1 - |azimuth| / 90``, positive ``r front + (1 - r) side``,
        negatives front and side with weights ``-f_fs(r)``, ``-f_fs(1 - r)``. Side to back:
        ``r = 2 - |azimuth| / 90``, positive ``r side + (1 - r) back``, negatives side and front with
        weights ``-f_sb(r)``, ``-f_fsb(r)``. Overhead: its own prompt, weights 0.
        """
        e = self.cond_embeddings  # [front, side, back, overhead]
        az = wrap_azimuth(azimuth.float().to(e.device)).abs()
        front = az < 90.0
        r = torch.where(front, 1.0 - az / 90.0, 2.0 - az / 90.0).view(-1, 1, 1)
        pos = torch.where(front.view(-1, 1, 1), r * e[0] + (1 - r) * e[1], r * e[1] + (1 - r) * e[2])
        r = r.view(-1)
        cfg = self.cfg
        w = torch.where(front.view(-1, 1),
                        torch.stack([-shifted_exp_decay(cfg.perp_neg_f_fs, r), -shifted_exp_decay(cfg.perp_neg_f_fs, 1 - r)], 1),
                        torch.stack([-shifted_exp_decay(cfg.perp_neg_f_sb, r), -shifted_exp_decay(cfg.perp_neg_f_fsb, r)], 1))
        negatives = torch.where(front.view(-1, 1, 1, 1), torch.stack([e[0], e[1]])[None].expand(len(az), -1, -1, -1),
                                torch.stack([e[1], e[0]])[None].expand(len(az), -1, -1, -1))
        overhead = elevation.to(e.device) > cfg.overhead_threshold
        pos = torch.where(overhead.view(-1, 1, 1), e[3], pos)
        w = torch.where(overhead.view(-1, 1), torch.zeros_like(w), w)
        return PerpNeg(pos.to(e.dtype), negatives, w.float())

    def __call__(self, elevation: Tensor, azimuth: Tensor) -> Tuple[Tensor, Tensor]:
        """Conditioning for ``B`` cameras.

        Args:
            elevation, azimuth: ``[B]`` degrees (e.g. ``cameras.elevation``, ``cameras.azimuth``).

        Returns:
            ``(cond, uncond)``, each ``[B, L, D]`` on the prior's device, in its dtype.
        """
        idx = self.view_indices(elevation, azimuth).to(self.cond_embeddings.device)
        cond = self.cond_embeddings.index_select(0, idx)
        return cond, self.uncond_embedding.expand_as(cond)
