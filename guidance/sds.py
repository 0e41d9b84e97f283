"""Score Distillation Sampling (DreamFusion, Poole et al., ICLR 2023).

For renders ``x = g(theta)`` with ``x_0 = encode(x)``, SDS follows
``grad_theta L = E_{t, eps}[ w(t) (eps_hat(x_t; y, t) - eps) d x_0 / d theta ]`` with no gradient
through the denoiser. It is applied through the surrogate
``loss = 0.5 * sum((x_0 - sg(x_0 - grad))^2) / B`` whose gradient with respect to ``x_0`` is
exactly ``grad / B`` (sum over elements, mean over the batch; learning rates depend on this).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from text3d.core.errors import ConfigError
from .registry import GUIDANCES
from text3d.core.schedules import LinearSchedule

from .priors import DiffusionPrior
from text3d.core.bounds import bounded

logger = logging.getLogger(__name__)

WEIGHTINGS: Dict[str, Callable[[Tensor], Tensor]] = {
    "sds": lambda abar: 1.0 - abar,
    "uniform": lambda abar: torch.ones_like(abar),
    "fantasia3d": lambda abar: abar.sqrt() * (1.0 - abar),
}
"""``w(t)`` as a function of ``abar_t``: DreamFusion's ``1 - abar``, constant 1, or Fantasia3D's
``sqrt(abar) (1 - abar)``."""


@dataclass
class SDSConfig:
    """Score Distillation Sampling guidance."""

    type: str = "sds"
    """Guidance type; selects this class."""
    guidance_scale: float = bounded(100.0, lo=0)
    """Classifier-free guidance scale ``s`` in the diffusers convention ``eps_u + s (eps_c - eps_u)``;
    threestudio's ``s'`` is ``s - 1`` here (its 100 is 101 here)."""
    weighting: str = "sds"
    """``w(t)``: ``sds`` (1 - abar_t), ``uniform`` (1) or ``fantasia3d`` (sqrt(abar_t) (1 - abar_t))."""
    t_min: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.02), lo=0, hi=1)
    """Smallest timestep as a fraction of T (a number or a schedule over training steps)."""
    t_max: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.98), lo=0, hi=1)
    """Largest timestep as a fraction of T (a number or a schedule; anneal it down for finer detail late)."""
    grad_clip: Optional[float] = bounded(None, lo=0, lo_open=True)
    """Clamp each element of the SDS gradient to [-grad_clip, grad_clip]; ``None`` = no clipping."""
    batch_t: bool = True
    """Draw a separate timestep per batch element (threestudio); False shares one t across the batch."""


def check_sds_config(cfg: SDSConfig, key: str = "guidance") -> None:
    """Raise :class:`ConfigError` for an unknown weighting, a bad t range or a non-positive clip."""
    if cfg.weighting not in WEIGHTINGS:
        raise ConfigError(f"{key}.weighting: unknown value {cfg.weighting!r}; valid choices: {', '.join(WEIGHTINGS)}")
    check_t_range(cfg, key)


def check_t_range(cfg: Any, key: str = "guidance") -> None:
    """Raise :class:`ConfigError` for a bad ``t_min`` / ``t_max`` range or a non-positive ``grad_clip``."""
    if cfg.grad_clip is not None and not cfg.grad_clip > 0:
        raise ConfigError(f"{key}.grad_clip: expected a positive number or null, got {cfg.grad_clip}")
    for name in ("t_min", "t_max"):
        sched = getattr(cfg, name)
        for value in (sched.start, sched.end):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key}.{name}: expected fractions of T in [0, 1], got {value}")
    # Both schedules are piecewise linear with kinks only at their own steps, so checking there suffices.
    steps = {0, cfg.t_min.start_step, cfg.t_min.end_step, cfg.t_max.start_step, cfg.t_max.end_step}
    for step in sorted(steps):
        lo, hi = cfg.t_min.value(step), cfg.t_max.value(step)
        if lo > hi:
            raise ConfigError(f"{key}.t_min: exceeds {key}.t_max at step {step} ({lo} > {hi})")


def distillation_loss(x0: Tensor, grad: Tensor, grad_clip: Optional[float] = None) -> tuple[Tensor, Tensor]:
    """The surrogate every score-distillation guidance applies its gradient through.

    Args:
        x0: ``[B, C, h, w]`` encoded renders, requiring grad.
        grad: ``[B, C, h, w]`` the distillation gradient (any graph is cut).
        grad_clip: clamp each element to ``[-grad_clip, grad_clip]``; ``None`` = no clipping.

    Returns:
        ``loss = 0.5 * sum((x0 - sg(x0 - grad))^2) / B`` (so ``d loss / d x0 = grad / B``) and the
        detached ``grad`` after ``nan_to_num`` and clipping.
    """
    grad = torch.nan_to_num(grad.detach())
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    target = (x0 - grad).detach()
    return 0.5 * (x0 - target).pow(2).sum() / x0.shape[0], grad


class ScoreDistillation:
    """What every score-distillation guidance shares: the timestep schedule, the noising of the
    encoded renders, the weighting ``w(t)`` and the surrogate loss. A subclass gives the direction
    (:meth:`direction`) that ``w(t)`` scales into the gradient of ``x_0``.

    Args:
        cfg: the guidance section of the config (``t_min``, ``t_max``, ``weighting``, ``grad_clip``,
            ``batch_t``).
        prior: a loaded prior; the guidance never loads models itself.
    """

    check_config = staticmethod(check_t_range)
    """Validates the guidance section (at config load, and again here on construction); subclasses
    name their own."""

    def __init__(self, cfg: Any, prior: DiffusionPrior):
        self.check_config(cfg)
        self.cfg, self.prior = cfg, prior
        self.weight_fn = WEIGHTINGS[getattr(cfg, "weighting", "sds")]

    def t_range(self, step: int) -> tuple[int, int]:
        """Inclusive integer timestep range ``[floor(t_min T), ceil(t_max T)]`` at ``step``, clipped to ``[0, T-1]``."""
        T = self.prior.num_train_timesteps
        lo = math.floor(self.cfg.t_min.value(step) * T + 1e-6)
        hi = math.ceil(self.cfg.t_max.value(step) * T - 1e-6)
        hi = min(max(hi, 0), T - 1)
        return min(max(lo, 0), hi), hi

    def sample_t(self, batch: int, step: int, generator: torch.Generator) -> Tensor:
        """``[batch]`` long timesteps on CPU, uniform on :meth:`t_range` (shared when ``batch_t`` is False)."""
        lo, hi = self.t_range(step)
        n = batch if self.cfg.batch_t else 1
        t = torch.randint(lo, hi + 1, (n,), generator=generator, dtype=torch.long)
        return t.expand(batch).clone()

    perp_neg = False
    """Whether the guidance takes Perp-Neg's conditioning (``prompting.perp_neg``)."""

    def direction(self, x_t: Tensor, t: Tensor, noise: Tensor, cond: Tensor, uncond: Tensor, step: int,
                  cameras: Any, perp_neg: Any = None) -> Tensor:
        """``[B, C, h, w]`` the direction ``w(t)`` scales into the gradient of ``x_0``."""
        raise NotImplementedError

    def guided_eps(self, x_t: Tensor, t: Tensor, cond: Tensor, uncond: Tensor, cameras: Any,
                   perp_neg: Any = None) -> Tensor:
        """The frozen prior's classifier-free guided noise at ``cfg.guidance_scale``: with Perp-Neg's
        conditioning when given (``cond`` is then unused), else ``eps(uncond) + s (eps(cond) - eps(uncond))``."""
        s = self.cfg.guidance_scale
        if perp_neg is not None:
            return self.prior.predict_noise_perp_neg(x_t, t, perp_neg.pos, perp_neg.negatives, perp_neg.weights,
                                                     uncond, s, cameras=cameras)
        return self.prior.predict_noise_cfg(x_t, t, cond, uncond, s, cameras=cameras)

    def __call__(self, images: Tensor, cond: Tensor, uncond: Tensor, step: int, generator: torch.Generator,
                 cameras=None, t: Optional[Tensor] = None, noise: Optional[Tensor] = None,
                 perp_neg: Any = None) -> Dict[str, Tensor]:
        """One evaluation.

        Random draws, in this order, all from ``generator`` (on CPU, then moved): the VAE
        posterior sample inside ``encode_images``, ``t``, ``eps``.

        Args:
            images: ``[B, H, W, 3]`` renders in ``[0, 1]``, requiring grad.
            cond, uncond: ``[B, L, D]`` text embeddings (see :class:`~text3d.guidance.prompts.PromptProcessor`;
                ``uncond`` is the negative prompt's, the empty prompt's without one).
            step: training step, for the annealed t range and schedules.
            generator: CPU generator.
            cameras: the ``B`` cameras of the renders, for camera-conditioned priors.
            t: ``[B]`` timesteps to use instead of a random draw (tests).
            noise: ``[B, C, h, w]`` noise to use instead of a random draw (tests).
            perp_neg: Perp-Neg's conditioning (:class:`~text3d.guidance.prompts.PerpNeg`) of the ``B``
                cameras, for a guidance that takes it; ``cond`` is then unused.

        Returns:
            ``loss``: scalar with ``d loss / d x_0 = grad / B``; ``grad``: ``[B, C, h, w]`` detached
            ``w(t) direction`` after ``nan_to_num`` and clipping; ``t``: ``[B]`` long;
            ``weights``: ``[B]`` ``w(t)``; ``grad_norm``: scalar, the mean per-sample L2 norm of ``grad``.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"{type(self).__name__} expects renders of shape [B, H, W, 3], got {tuple(images.shape)}")
        prior, B = self.prior, images.shape[0]
        x0 = prior.encode_images(images.permute(0, 3, 1, 2), generator)
        if t is None:
            t = self.sample_t(B, step, generator)
        t = t.to(device=prior.device, dtype=torch.long)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        noise = noise.to(device=x0.device, dtype=torch.float32)
        x_t = prior.add_noise(x0.detach(), noise, t)
        if perp_neg is not None and not self.perp_neg:
            raise ValueError(f"{type(self).__name__} does not take Perp-Neg's conditioning")
        direction = self.direction(x_t, t, noise, cond, uncond, step, cameras, perp_neg)
        weights = self.weight_fn(prior.alphas_cumprod[t])
        loss, grad = distillation_loss(x0, weights.view(-1, 1, 1, 1) * direction, self.cfg.grad_clip)
        out = dict(loss=loss, grad=grad, t=t, weights=weights, grad_norm=grad.flatten(1).norm(dim=1).mean())
        out.update(self.after_step(x0.detach(), cond, step, generator, cameras))
        return out

    def after_step(self, x0: Tensor, cond: Tensor, step: int, generator: torch.Generator,
                   cameras: Any) -> Dict[str, Tensor]:
        """A hook after the gradient is made (VSD trains its own model there); returns extra figures."""
        return {}


@GUIDANCES.register("sds", SDSConfig)
class SDSGuidance(ScoreDistillation):
    """Score Distillation Sampling on a frozen prior: the direction is ``eps_hat(x_t; y, t) - eps``.

    Args:
        cfg: the guidance section of the config.
        prior: a loaded prior; the guidance never loads models itself.
    """

    check_config = staticmethod(check_sds_config)
    perp_neg = True

    def direction(self, x_t: Tensor, t: Tensor, noise: Tensor, cond: Tensor, uncond: Tensor, step: int,
                  cameras: Any, perp_neg: Any = None) -> Tensor:
        return self.guided_eps(x_t, t, cond, uncond, cameras, perp_neg) - noise
