"""Score distillation without the noise residual: Classifier Score Distillation (CSD, Yu et al. 2023)
and Noise-Free Score Distillation (NFSD, Katzir et al. 2023).

Both write the direction from three noise predictions at the same ``(x_t, t)``, made in one batched
UNet call: ``eps(y)`` (the prompt), ``eps(0)`` (the empty prompt) and ``eps(y_neg)`` (the negative
prompt; the empty prompt's without one):

- CSD: ``c eps(y) + u eps(y_neg) + n eps(0)``; pure CSD is ``c = 1, n = -1`` (the classifier term
  ``eps(y) - eps(0)``, no ``- eps``); the official image-fidelity schedule anneals ``u`` 0 -> -1 and
  ``n`` -1 -> 0. ``normalize`` divides each sample's direction by its L2 norm.
- NFSD: ``delta_D + s delta_C`` with ``delta_C = eps(y) - eps(0)`` and ``delta_D = eps(0)`` for small
  timesteps (``t < t_small T``, 200 of 1000), else ``eps(0) - eps(y_neg)``.
The weighting ``w(t)``, the timestep schedule and the surrogate loss are SDS's
(:class:`~text3d.guidance.sds.ScoreDistillation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
from torch import Tensor

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError
from text3d.core.schedules import LinearSchedule

from .priors import DiffusionPrior
from .registry import GUIDANCES
from .sds import ScoreDistillation, check_sds_config


@dataclass
class CSDConfig:
    """Classifier Score Distillation."""

    type: str = "csd"
    """Guidance type; selects this class."""
    c: LinearSchedule = field(default_factory=lambda: LinearSchedule.constant(1.0))
    """Weight of ``eps(y)`` (a number or a schedule over training steps)."""
    u: LinearSchedule = field(default_factory=lambda: LinearSchedule.constant(0.0))
    """Weight of ``eps(y_neg)`` (official image-fidelity schedule: 0 -> -1 over 5k steps)."""
    n: LinearSchedule = field(default_factory=lambda: LinearSchedule.constant(-1.0))
    """Weight of ``eps(0)`` (official image-fidelity schedule: -1 -> 0 over 5k steps)."""
    normalize: bool = False
    """Divide each sample's direction by its L2 norm (the official annealed config does)."""
    weighting: str = "sds"
    """``w(t)``: ``sds`` (1 - abar_t), ``uniform`` or ``fantasia3d``."""
    t_min: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.02), lo=0, hi=1)
    """Smallest timestep as a fraction of T."""
    t_max: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.98), lo=0, hi=1)
    """Largest timestep as a fraction of T."""
    grad_clip: Optional[float] = bounded(None, lo=0, lo_open=True)
    """Clamp each element of the gradient; ``None`` = no clipping."""
    batch_t: bool = True
    """A timestep per batch element (False: one for the batch)."""


def check_csd_config(cfg: CSDConfig, key: str = "guidance") -> None:
    check_sds_config(cfg, key)
    steps = {0, *(getattr(cfg, w).start_step for w in "cun"), *(getattr(cfg, w).end_step for w in "cun")}
    if all(getattr(cfg, w).value(s) == 0 for w in "cun" for s in steps):
        raise ConfigError(f"{key}.c: c, u and n are all 0, so the guidance does nothing; pure CSD is c=1, n=-1")


@dataclass
class NFSDConfig:
    """Noise-Free Score Distillation."""

    type: str = "nfsd"
    """Guidance type; selects this class."""
    guidance_scale: float = bounded(7.5, lo=0)
    """``s``, the weight of the condition term ``delta_C = eps(y) - eps(0)`` (official: 7.5)."""
    t_small: float = bounded(0.2, lo=0, hi=1)
    """Below ``t_small T`` (200 of 1000) the domain term is ``eps(0)``; above, ``eps(0) - eps(y_neg)``."""
    weighting: str = "sds"
    """``w(t)``: ``sds`` (1 - abar_t), ``uniform`` or ``fantasia3d``."""
    t_min: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.02), lo=0, hi=1)
    """Smallest timestep as a fraction of T."""
    t_max: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.98), lo=0, hi=1)
    """Largest timestep as a fraction of T."""
    grad_clip: Optional[float] = bounded(None, lo=0, lo_open=True)
    """Clamp each element of the gradient; ``None`` = no clipping."""
    batch_t: bool = True
    """A timestep per batch element (False: one for the batch)."""


class _ThreePredictions(ScoreDistillation):
    """``eps(y), eps(0), eps(y_neg)`` at ``(x_t, t)`` in one UNet call."""

    def __init__(self, cfg: Any, prior: DiffusionPrior):
        super().__init__(cfg, prior)
        self.empty = prior.encode_text([""])

    def predictions(self, x_t: Tensor, t: Tensor, cond: Tensor, uncond: Tensor, cameras: Any) -> List[Tensor]:
        return self.prior.predict_noise_many(x_t, t, [cond, self.empty, uncond], cameras=cameras)


@GUIDANCES.register("csd", CSDConfig)
class CSDGuidance(_ThreePredictions):
    """Classifier Score Distillation (see the module docstring)."""

    check_config = staticmethod(check_csd_config)

    def direction(self, x_t: Tensor, t: Tensor, noise: Tensor, cond: Tensor, uncond: Tensor, step: int,
                  cameras: Any, perp_neg: Any = None) -> Tensor:
        eps_y, eps_0, eps_neg = self.predictions(x_t, t, cond, uncond, cameras)
        cfg = self.cfg
        d = cfg.c.value(step) * eps_y + cfg.u.value(step) * eps_neg + cfg.n.value(step) * eps_0
        if cfg.normalize:
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return d


@GUIDANCES.register("nfsd", NFSDConfig)
class NFSDGuidance(_ThreePredictions):
    """Noise-Free Score Distillation (see the module docstring)."""

    check_config = staticmethod(check_sds_config)

    def direction(self, x_t: Tensor, t: Tensor, noise: Tensor, cond: Tensor, uncond: Tensor, step: int,
                  cameras: Any, perp_neg: Any = None) -> Tensor:
        eps_y, eps_0, eps_neg = self.predictions(x_t, t, cond, uncond, cameras)
        small = (t < self.cfg.t_small * self.prior.num_train_timesteps).view(-1, 1, 1, 1)
        delta_d = torch.where(small, eps_0, eps_0 - eps_neg)
        return delta_d + self.cfg.guidance_scale * (eps_y - eps_0)
