"""Posterior Distillation Sampling (Koo et al., CVPR 2024): edit a scene towards a target prompt
while keeping the source's identity.

Two branches share every random draw: the source renders ``x_0^src`` (the frozen original scene)
with the source prompt, and the current renders ``x_0^tgt`` with the target prompt. For
neighbouring timesteps ``t > t_prev`` of a DDIM-like grid and shared noises ``eps`` (at ``t``) and
``eps'`` (at ``t_prev``), each branch ``b`` gives

    x_t^b = add_noise(x_0^b, eps, t),   x0_hat^b = (x_t^b - sqrt(1 - abar_t) eps_hat^b) / sqrt(abar_t),
    mu^b  = c0 x0_hat^b + c1 x_t^b,     z^b = (add_noise(x_0^b, eps', t_prev) - mu^b) / sigma_t,

and the gradient on ``x_0^tgt`` is ``z^tgt - z^src``. The official code takes ``c0, c1, sigma_t``
from the DDPM posterior with the *single-step* ``alpha_t, beta_t`` of timestep ``t``
(``c0 = sqrt(abar_prev) beta_t / (1 - abar_t)``, ``c1 = sqrt(alpha_t) (1 - abar_prev) / (1 - abar_t)``,
``sigma_t^2 = (1 - abar_prev) beta_t / (1 - abar_t)``) although ``t_prev`` is ``gap`` grid steps
(2 training steps on the 500-step grid) away. Algebraically

    grad = psi(t) (x_0^tgt - x_0^src) + chi(t) (eps_hat^tgt - eps_hat^src),
    psi = (sqrt(abar_prev) - c0 - c1 sqrt(abar_t)) / sigma_t,   chi = c0 sqrt(1 - abar_t) / (sqrt(abar_t) sigma_t).

The identity-preserving term ``psi`` exists only because of that discretisation: with the exact
coefficients of the ``t -> t_prev`` transition (``coefficients: exact``) ``psi`` vanishes and PDS
is a re-weighted DDS. ``coefficients: official`` (the default) keeps the published behaviour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError
from .registry import GUIDANCES
from text3d.core.schedules import LinearSchedule

from .priors import DiffusionPrior
from .sds import WEIGHTINGS, distillation_loss

logger = logging.getLogger(__name__)

COEFFICIENTS = ("official", "exact")
"""``official``: single-step ``alpha_t, beta_t`` of ``t`` across the grid gap (PDS's code);
``exact``: the true ``t -> t_prev`` transition ``alpha = abar_t / abar_prev`` (``psi = 0``)."""


@dataclass
class PDSConfig:
    """Posterior Distillation Sampling (editing guidance; used by ``text3d edit``)."""

    type: str = "pds"
    """Guidance type; selects this class."""
    guidance_scale: float = bounded(100.0, lo=0.0)
    """CFG scale ``s`` (diffusers convention ``eps_u + s (eps_c - eps_u)``), both branches; official 100."""
    grid_steps: int = bounded(500, lo=2, hi=100000)
    """Steps of the DDIM-like grid over ``T`` (official 500: ``t`` and ``t_prev`` are ``T/500`` = 2
    training steps apart when ``gap`` is 1)."""
    gap: int = bounded(1, lo=1)
    """``t_prev = grid[i - gap]``: how many grid steps ``t_prev`` lies before ``t`` (official 1)."""
    coefficients: str = "official"
    """``official`` (single-step ``alpha_t, beta_t`` across the gap: the identity term ``psi``) or
    ``exact`` (the true two-point transition: ``psi = 0``, a re-weighted DDS)."""
    timesteps: str = "uniform"
    """``uniform``: grid index drawn uniformly in ``[int(N t_min), int(N t_max))`` every step (official);
    ``decreasing``: deterministic, ``t = t_decrease(step) T`` (DreamCatalyst: 0.9 -> 0.2 over the run)."""
    t_min: LinearSchedule = field(default_factory=lambda: LinearSchedule.constant(0.02))
    """Uniform sampling: lowest grid index as a fraction of the grid (official 0.02)."""
    t_max: LinearSchedule = field(default_factory=lambda: LinearSchedule.constant(0.98))
    """Uniform sampling: end (exclusive) of the grid index range as a fraction of the grid (official 0.98)."""
    t_decrease: LinearSchedule = field(
        default_factory=lambda: LinearSchedule(start=0.9, end=0.2, start_step=0, end_step=1000))
    """Decreasing timesteps: ``t / T`` over the run (set ``end_step`` to the edit's steps)."""
    weighting: str = "uniform"
    """Extra ``w(t)`` on the gradient: ``uniform`` (official: none), ``sds`` or ``fantasia3d``."""
    grad_clip: Optional[float] = None
    """Clamp each element of the gradient to [-grad_clip, grad_clip]; ``None`` = no clipping."""
    batch_t: bool = True
    """Draw a grid index per batch element; False shares one across the batch."""


def check_pds_config(cfg: PDSConfig, key: str = "guidance") -> None:
    """Raise :class:`ConfigError` for an unknown choice or an empty timestep range."""
    for name, valid in (("coefficients", COEFFICIENTS), ("timesteps", tuple(TIMESTEP_SAMPLERS)),
                        ("weighting", tuple(WEIGHTINGS))):
        if getattr(cfg, name) not in valid:
            raise ConfigError(f"{key}.{name}: unknown value {getattr(cfg, name)!r}; valid choices: {', '.join(valid)}")
    if cfg.grad_clip is not None and not cfg.grad_clip > 0:
        raise ConfigError(f"{key}.grad_clip: expected a positive number or null, got {cfg.grad_clip}")
    if cfg.gap >= cfg.grid_steps:
        raise ConfigError(f"{key}.gap: must be smaller than {key}.grid_steps ({cfg.grid_steps}), got {cfg.gap}")
    for name in ("t_min", "t_max", "t_decrease"):
        sched = getattr(cfg, name)
        for value in (sched.start, sched.end):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key}.{name}: expected fractions in [0, 1], got {value}")
    for step in sorted({0, cfg.t_min.start_step, cfg.t_min.end_step, cfg.t_max.start_step, cfg.t_max.end_step}):
        if int(cfg.grid_steps * cfg.t_min.value(step)) >= int(cfg.grid_steps * cfg.t_max.value(step)):
            raise ConfigError(f"{key}.t_min: the grid index range [int(N t_min), int(N t_max)) is empty at step "
                              f"{step}; lower t_min or raise t_max")


def timestep_grid(prior: DiffusionPrior, steps: int) -> Tensor:
    """The ascending DDIM grid of ``steps`` timesteps over ``T`` ("leading" spacing plus the
    scheduler's ``steps_offset``, as ``DDIMScheduler.set_timesteps`` makes it), ``[steps]`` long on CPU."""
    T = prior.num_train_timesteps
    if not 2 <= steps <= T:
        raise ConfigError(f"guidance.grid_steps: must be in [2, {T}] for a prior with T = {T}, got {steps}")
    offset = int(getattr(prior.scheduler.config, "steps_offset", 0) or 0)
    return (torch.arange(steps, dtype=torch.long) * (T // steps) + offset).clamp(max=T - 1)


def _uniform_index(guidance: "PDSGuidance", batch: int, step: int, generator: torch.Generator) -> Tensor:
    cfg, N = guidance.cfg, guidance.grid.numel()
    lo = max(int(N * cfg.t_min.value(step)), cfg.gap)
    hi = max(int(N * cfg.t_max.value(step)), lo + 1)
    n = batch if cfg.batch_t else 1
    return torch.randint(lo, hi, (n,), generator=generator, dtype=torch.long).expand(batch).clone()


def _decreasing_index(guidance: "PDSGuidance", batch: int, step: int, generator: torch.Generator) -> Tensor:
    cfg, N = guidance.cfg, guidance.grid.numel()
    T = guidance.prior.num_train_timesteps
    t = cfg.t_decrease.value(step) * T  # nearest grid point to the scheduled timestep
    index = int(torch.argmin((guidance.grid.float() - t).abs()))
    return torch.full((batch,), min(max(index, cfg.gap), N - 1), dtype=torch.long)


TIMESTEP_SAMPLERS: Dict[str, Callable[["PDSGuidance", int, int, torch.Generator], Tensor]] = {
    "uniform": _uniform_index,
    "decreasing": _decreasing_index,
}
"""How a step picks its grid index ``i`` (``t = grid[i]``): ``[batch]`` long on CPU."""


def encode_edit_pair(prior: DiffusionPrior, images: Tensor, source_x0: Tensor) -> Tensor:
    """``x_0^tgt`` of ``[B, H, W, 3]`` renders (deterministic encoding: the VAE mean, so the same
    scene gives the same ``x_0`` in both branches), checked against the source's ``[B, C, h, w]``."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"editing guidance expects renders of shape [B, H, W, 3], got {tuple(images.shape)}")
    x0 = prior.encode_images(images.permute(0, 3, 1, 2), None)
    if source_x0.shape != x0.shape:
        raise ValueError(f"source_x0: expected shape {tuple(x0.shape)} (the encoded source renders), "
                         f"got {tuple(source_x0.shape)}")
    return x0


def repeat_cameras(cameras: Any, times: int = 2) -> Any:
    """``cameras`` batched ``times`` over (both branches share the views), or ``None``."""
    if cameras is None:
        return None
    values = {f.name: getattr(cameras, f.name) for f in fields(cameras)}
    return type(cameras)(**{k: torch.cat([v] * times) if torch.is_tensor(v) else v for k, v in values.items()})


def two_branch_eps(prior: DiffusionPrior, x_t_src: Tensor, x_t_tgt: Tensor, t: Tensor, source_cond: Tensor,
                   cond: Tensor, uncond: Tensor, scale: float, cameras: Any) -> tuple[Tensor, Tensor]:
    """Guided noise of both branches from one batched prior call: ``(eps_hat^src, eps_hat^tgt)``."""
    B = x_t_src.shape[0]
    expand = lambda e: e.expand(B, -1, -1)  # noqa: E731
    eps = prior.predict_noise_cfg(torch.cat([x_t_src, x_t_tgt]), torch.cat([t, t]),
                                  torch.cat([expand(source_cond), expand(cond)]),
                                  torch.cat([expand(uncond), expand(uncond)]), scale,
                                  cameras=repeat_cameras(cameras))
    return eps[:B], eps[B:]


@GUIDANCES.register("pds", PDSConfig)
class PDSGuidance:
    """Posterior Distillation Sampling on a frozen prior.

    Args:
        cfg: the guidance section of the config.
        prior: a loaded prior; its own schedule tensors give every coefficient.
    """

    check_config = staticmethod(check_pds_config)
    needs_source = True
    """Editing guidances take the frozen source's encoded renders (``text3d edit`` gives them)."""

    def __init__(self, cfg: PDSConfig, prior: DiffusionPrior):
        check_pds_config(cfg)
        self.cfg, self.prior = cfg, prior
        self.grid = timestep_grid(prior, cfg.grid_steps)
        self.weight_fn = WEIGHTINGS[cfg.weighting]

    def sample_index(self, batch: int, step: int, generator: torch.Generator) -> Tensor:
        """``[batch]`` grid indices ``i >= gap`` (``t = grid[i]``, ``t_prev = grid[i - gap]``)."""
        return TIMESTEP_SAMPLERS[self.cfg.timesteps](self, batch, step, generator)

    def coefficients(self, t: Tensor, t_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(c0, c1, sigma_t)``, each ``[B, 1, 1, 1]`` float32, of the posterior mean ``c0 x0 + c1 x_t``."""
        p = self.prior
        abar_t, abar_prev = p.alphas_cumprod[t], p.alphas_cumprod[t_prev]
        if self.cfg.coefficients == "official":
            alpha_t, beta_t = p.alphas[t], p.betas[t]
        else:
            alpha_t = abar_t / abar_prev
            beta_t = 1.0 - alpha_t
        c0 = abar_prev.sqrt() * beta_t / (1 - abar_t)
        c1 = alpha_t.sqrt() * (1 - abar_prev) / (1 - abar_t)
        sigma = ((1 - abar_prev) * beta_t / (1 - abar_t)).sqrt()
        return tuple(v.view(-1, 1, 1, 1) for v in (c0, c1, sigma))  # type: ignore[return-value]

    def __call__(self, images: Tensor, cond: Tensor, uncond: Tensor, step: int, generator: torch.Generator,
                 cameras: Any = None, *, source_x0: Tensor, source_cond: Tensor, index: Optional[Tensor] = None,
                 noise: Optional[Tensor] = None, noise_prev: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """One PDS evaluation.

        Random draws, in this order, from ``generator`` (CPU): the grid index, ``eps``, ``eps'``.

        Args:
            images: ``[B, H, W, 3]`` current renders in ``[0, 1]``, requiring grad.
            cond, uncond: ``[B or 1, L, D]`` target-prompt and unconditional embeddings.
            step: edit step (timestep schedules).
            generator: CPU generator.
            cameras: the ``B`` cameras (camera-conditioned priors).
            source_x0: ``[B, C, h, w]`` encoded source renders from the same cameras (no grad).
            source_cond: ``[B or 1, L, D]`` source-prompt embeddings.
            index: ``[B]`` grid indices instead of a draw; noise, noise_prev: ``[B, C, h, w]`` (tests).

        Returns:
            ``loss`` (``d loss / d x_0^tgt = grad / B``), ``grad`` ``[B, C, h, w]``, ``t``, ``t_prev``
            ``[B]`` long, ``weights`` ``[B]``, ``grad_norm``.
        """
        prior = self.prior
        x0 = encode_edit_pair(prior, images, source_x0)
        B, src = x0.shape[0], source_x0.detach().float()
        if index is None:
            index = self.sample_index(B, step, generator)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        if noise_prev is None:
            noise_prev = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        t = self.grid[index].to(prior.device)
        t_prev = self.grid[index - self.cfg.gap].to(prior.device)
        noise, noise_prev = noise.to(x0.device), noise_prev.to(x0.device)
        z_src, z_tgt = self.posterior_z(torch.stack([src, x0.detach()]), t, t_prev, noise, noise_prev,
                                        source_cond, cond, uncond, cameras)
        weights = self.weight_fn(prior.alphas_cumprod[t])
        loss, grad = distillation_loss(x0, weights.view(-1, 1, 1, 1) * (z_tgt - z_src), self.cfg.grad_clip)
        return dict(loss=loss, grad=grad, t=t, t_prev=t_prev, weights=weights,
                    grad_norm=grad.flatten(1).norm(dim=1).mean())

    @torch.no_grad()
    def posterior_z(self, x0_pair: Tensor, t: Tensor, t_prev: Tensor, noise: Tensor, noise_prev: Tensor,
                    source_cond: Tensor, cond: Tensor, uncond: Tensor, cameras: Any) -> tuple[Tensor, Tensor]:
        """``(z^src, z^tgt)`` for ``x0_pair = stack([x_0^src, x_0^tgt])`` ``[2, B, C, h, w]``."""
        prior = self.prior
        x_t = [prior.add_noise(x, noise, t) for x in x0_pair]
        eps = two_branch_eps(prior, x_t[0], x_t[1], t, source_cond, cond, uncond, self.cfg.guidance_scale, cameras)
        c0, c1, sigma = self.coefficients(t, t_prev)
        z = []
        for x, xt, e in zip(x0_pair, x_t, eps):
            mu = c0 * prior.predict_x0(xt, e, t) + c1 * xt
            z.append((prior.add_noise(x, noise_prev, t_prev) - mu) / sigma)
        return z[0], z[1]
