"""Interval Score Matching (LucidDreamer, Liang et al. CVPR 2024).

SDS compares the prior's noise prediction with the random noise it added; ISM replaces the random
noising by deterministic DDIM inversion and compares two predictions along the inverted path:

- ``x_s``: the encoded render ``x_0`` inverted by DDIM to ``s = t - delta_t`` with the empty prompt's
  noise, in at most ``xs_inv_steps`` steps of at least ``xs_delta_t``;
- ``x_t``: ``x_s`` inverted one more step, to ``t``;
- gradient ``lambda sqrt((1 - abar_t) / abar_t) [eps_hat(x_t, t; y, y_neg) - eps(x_s, s; 0)]``, with
  ``eps_hat`` classifier-free guided (the negative prompt as the unconditional branch).

Defaults are the official ones: ``t`` uniform in ``[20, 500 + 480 w]`` (``w`` the warm-up fraction,
1 500 steps), ``delta_t`` annealed 100 -> 80, ``lambda = 0.1``, 5 inversion steps of 200. The official
code's issues (#44, #45) ask whether the second term should be taken at ``(x_t, t)``; this follows
the paper and the shipped code (at ``(x_s, s)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError
from text3d.core.schedules import LinearSchedule

from .priors import DiffusionPrior
from .registry import GUIDANCES
from .sds import ScoreDistillation, check_t_range, distillation_loss

EpsFn = Callable[[Tensor, Tensor], Tensor]
"""``(x_a [B, C, h, w], a [B] long) -> eps [B, C, h, w]``."""


@dataclass
class ISMConfig:
    """Interval Score Matching."""

    type: str = "ism"
    """Guidance type; selects this class."""
    guidance_scale: float = bounded(7.5, lo=0)
    """Classifier-free guidance scale of ``eps_hat`` (diffusers convention; official 7.5)."""
    weight: float = bounded(0.1, lo=0, lo_open=True)
    """``lambda`` (0.1 in every official config)."""
    delta_t: LinearSchedule = bounded(default_factory=lambda: LinearSchedule(100.0, 80.0, 0, 1500), lo=1)
    """The interval ``t - s`` in timesteps (official: 100 annealed to 80 over the warm-up)."""
    xs_inv_steps: int = bounded(5, lo=1, hi=1000)
    """At most this many DDIM inversion steps from ``x_0`` to ``x_s``."""
    xs_delta_t: int = bounded(200, lo=1, hi=1000)
    """At least this many timesteps per inversion step."""
    t_min: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.02), lo=0, hi=1)
    """Smallest timestep as a fraction of T (official: 20)."""
    t_max: LinearSchedule = bounded(default_factory=lambda: LinearSchedule(0.5, 0.98, 0, 1500), lo=0, hi=1)
    """Largest timestep as a fraction of T (official: 500 + 480 w over a 1 500-step warm-up)."""
    grad_clip: Optional[float] = bounded(None, lo=0, lo_open=True)
    """Clamp each element of the gradient; ``None`` = no clipping."""
    batch_t: bool = True
    """A timestep per batch element (False: one for the batch)."""


def check_ism_config(cfg: ISMConfig, key: str = "guidance") -> None:
    check_t_range(cfg, key)
    if cfg.xs_inv_steps < 1:
        raise ConfigError(f"{key}.xs_inv_steps: ISM inverts x_0 to x_s in at least 1 DDIM step, got {cfg.xs_inv_steps}")
    if min(cfg.delta_t.start, cfg.delta_t.end) < 1:
        raise ConfigError(f"{key}.delta_t: the interval t - s must be at least 1 timestep, got {cfg.delta_t}")


def inversion_timesteps(s: int, steps: int, min_step: int) -> List[int]:
    """``[0, ..., s]``: at most ``steps`` DDIM inversion steps of at least ``min_step`` timesteps."""
    if s <= 0:
        return [0]
    stride = max(min_step, math.ceil(s / steps))
    return list(range(0, s, stride)) + [s]


def ddim_invert(eps_fn: EpsFn, x: Tensor, timesteps: Sequence[int] | Tensor, abar: Tensor) -> Tensor:
    """Deterministic DDIM from ``timesteps[0]`` up to ``timesteps[-1]``: each step predicts ``x_0`` from the
    current sample's noise and re-noises it with that same noise, ``x_b = sqrt(abar_b) x0_hat + sqrt(1 -
    abar_b) eps(x_a, a)``.

    Args:
        eps_fn: the noise of ``x_a`` at ``a`` (``[B]`` timesteps).
        x: ``[B, ...]`` samples at ``timesteps[0]``.
        timesteps: ``K + 1`` ints shared by the batch, or a ``[K + 1, B]`` long tensor, one path per
            sample (a step with ``a == b`` leaves a sample exactly where it is, so shorter paths are
            padded with their last timestep).
        abar: ``[T]`` cumulative alphas.
    """
    B = x.shape[0]
    ts = torch.as_tensor(timesteps, dtype=torch.long, device=x.device)
    ts = ts.view(-1, 1).expand(-1, B) if ts.ndim == 1 else ts
    view = (-1,) + (1,) * (x.ndim - 1)
    for a, b in zip(ts[:-1], ts[1:]):
        eps = eps_fn(x, a)
        abar_a, abar_b = abar[a].view(view), abar[b].view(view)
        x0_hat = (x - (1 - abar_a).sqrt() * eps) / abar_a.sqrt()
        x = abar_b.sqrt() * x0_hat + (1 - abar_b).sqrt() * eps
    return x


def padded_paths(ends: Tensor, steps: int, min_step: int) -> Tensor:
    """``[K + 1, B]`` inversion paths ``0 -> ends[i]`` (:func:`inversion_timesteps`), padded with their end."""
    paths = [inversion_timesteps(int(e), steps, min_step) for e in ends.tolist()]
    longest = max(len(p) for p in paths)
    return torch.tensor([p + [p[-1]] * (longest - len(p)) for p in paths], dtype=torch.long).T


@GUIDANCES.register("ism", ISMConfig)
class ISMGuidance(ScoreDistillation):
    """Interval Score Matching (see the module docstring)."""

    check_config = staticmethod(check_ism_config)

    def __init__(self, cfg: ISMConfig, prior: DiffusionPrior):
        super().__init__(cfg, prior)
        self.empty = prior.encode_text([""])

    def invert(self, x0: Tensor, t: Tensor, s: Tensor, cameras: Any) -> tuple[Tensor, Tensor]:
        """``(x_s, x_t)`` of each sample (its own ``s`` and ``t``), by DDIM inversion with the empty prompt,
        the whole batch in one UNet call per step."""
        abar, cfg = self.prior.alphas_cumprod.float(), self.cfg
        eps = lambda x, a: self.prior.predict_noise(x, a, self.empty, cameras=cameras)  # noqa: E731
        x_s = ddim_invert(eps, x0, padded_paths(s, cfg.xs_inv_steps, cfg.xs_delta_t).to(x0.device), abar)
        return x_s, ddim_invert(eps, x_s, torch.stack([s, t]), abar)

    def __call__(self, images: Tensor, cond: Tensor, uncond: Tensor, step: int, generator: torch.Generator,
                 cameras=None, t: Optional[Tensor] = None, noise: Optional[Tensor] = None,
                 perp_neg: Any = None) -> Dict[str, Tensor]:
        """One evaluation (``noise`` is unused: ISM's path is deterministic; the keys of the result are
        SDS's, ``weights`` being ``lambda sqrt((1 - abar_t) / abar_t)``)."""
        if perp_neg is not None:
            raise ValueError("ISMGuidance does not take Perp-Neg's conditioning")
        prior, B = self.prior, images.shape[0]
        x0 = prior.encode_images(images.permute(0, 3, 1, 2), generator)
        if t is None:
            t = self.sample_t(B, step, generator)
        t = t.to(device=prior.device, dtype=torch.long)
        s = (t - round(self.cfg.delta_t.value(step))).clamp_min(0)
        with torch.no_grad():
            x_s, x_t = self.invert(x0.detach().float(), t, s, cameras)
            eps_t = self.guided_eps(x_t, t, cond, uncond, cameras)
            eps_s = prior.predict_noise(x_s, s, self.empty, cameras=cameras)
        abar_t = prior.alphas_cumprod[t].float()
        weights = self.cfg.weight * ((1 - abar_t) / abar_t).sqrt()
        loss, grad = distillation_loss(x0, weights.view(-1, 1, 1, 1) * (eps_t - eps_s), self.cfg.grad_clip)
        return dict(loss=loss, grad=grad, t=t, s=s, weights=weights, grad_norm=grad.flatten(1).norm(dim=1).mean())
