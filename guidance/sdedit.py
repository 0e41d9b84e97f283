"""SDEdit with every random number given from outside: the initial noise and each ancestral step's.

SDEdit (Meng et al. 2022) noises an image to ``t_start = strength * T`` and denoises it with the
prior. With a stochastic sampler (DDIM with ``eta > 0``; ``eta = 1`` is the embedded prior's
documented ancestral sampler) fresh noise enters at every step, so a scheme that correlates the
noise of the frames of a video must also correlate these per-step noises: here they are an input,
``step_noise[k]`` for step ``k``, one ``[B, C, h, w]`` tensor each.

The steps are diffusers' ``DDIMScheduler.step`` (with ``variance_noise``), fed the guided epsilon,
so the maths is exactly the one the prior samples with (:func:`text3d.prior.model.sample`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .priors import DiffusionPrior

StepCallback = Callable[[int, int], None]


def sdedit_timesteps(prior: "DiffusionPrior", steps: int, strength: float) -> Tensor:
    """The timesteps SDEdit runs: the last ``round(steps * strength)`` (at least 1) of a ``steps``-step grid."""
    scheduler = _epsilon_scheduler(prior)
    scheduler.set_timesteps(steps)
    keep = max(1, min(steps, int(round(steps * strength))))
    return scheduler.timesteps[steps - keep:]


def _epsilon_scheduler(prior: "DiffusionPrior"):
    from diffusers import DDIMScheduler

    # The guided output handed to step() is an epsilon, whatever the UNet predicts.
    return DDIMScheduler.from_config(prior.scheduler.config, prediction_type="epsilon")


@torch.no_grad()
def sdedit(prior: "DiffusionPrior", x0: Tensor, cond: Tensor, uncond: Tensor, initial_noise: Tensor,
           step_noise: Sequence[Tensor], steps: int, strength: float, cfg_scale: float, eta: float = 1.0,
           cameras=None, batch_size: int = 16, on_step: Optional[StepCallback] = None,
           reference_cameras=None, reference_steps: int = 0) -> Tensor:
    """Denoise ``x0`` noised to ``strength * T`` with the given noises.

    Args:
        prior: a loaded prior (pixel or latent).
        x0: ``[B, C, h, w]`` clean inputs in the prior's space (:meth:`DiffusionPrior.encode_images`).
        cond, uncond: ``[1 or B, L, D]`` text embeddings.
        initial_noise: ``[B, C, h, w]`` unit noise of the forward jump to ``t_start``.
        step_noise: one ``[B, C, h, w]`` unit noise per step of :func:`sdedit_timesteps` (the last
            step's is unused when its sigma is 0).
        steps: steps of the full grid (``strength = 1`` runs all of them).
        strength: in (0, 1].
        cfg_scale: classifier-free guidance scale (diffusers convention).
        eta: DDIM stochasticity (1 = ancestral).
        cameras: ``B`` cameras for camera-conditioned priors.
        batch_size: frames per UNet call (each call evaluates ``2 x batch_size`` for guidance).
        on_step: ``(step, total)`` after each step.
        reference_cameras: ``B`` cameras used instead of ``cameras`` in the first ``reference_steps``
            (noisiest) steps (:mod:`text3d.guidance.reference_camera`); ``None`` = own cameras throughout.
        reference_steps: how many steps, from the first, use ``reference_cameras``.

    Returns:
        ``[B, C, h, w]`` float32 denoised ``x_0``.
    """
    scheduler = _epsilon_scheduler(prior)
    scheduler.set_timesteps(steps)
    timesteps = sdedit_timesteps(prior, steps, strength)
    if len(step_noise) < len(timesteps):
        raise ValueError(f"need {len(timesteps)} step noises, got {len(step_noise)}")
    x = prior.add_noise(x0.to(prior.device), initial_noise.to(prior.device), int(timesteps[0]))
    for k, t in enumerate(timesteps):
        cams = reference_cameras if reference_cameras is not None and k < reference_steps else cameras
        eps = _guided_eps(prior, x, int(t), cond, uncond, cfg_scale, cams, batch_size)
        x = scheduler.step(eps, t, x, eta=eta, variance_noise=step_noise[k].to(x)).prev_sample
        if on_step is not None:
            on_step(k + 1, len(timesteps))
    return x


def _guided_eps(prior: "DiffusionPrior", x: Tensor, t: int, cond: Tensor, uncond: Tensor, cfg_scale: float,
                cameras, batch_size: int) -> Tensor:
    out = []
    for i in range(0, x.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        c = cond[sl] if cond.shape[0] > 1 else cond
        u = uncond[sl] if uncond.shape[0] > 1 else uncond
        cams = cameras.index(sl) if cameras is not None else None
        out.append(prior.predict_noise_cfg(x[sl], t, c, u, cfg_scale, cameras=cams))
    return torch.cat(out)
