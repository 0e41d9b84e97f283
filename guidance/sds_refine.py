"""SDS, then refinement against SDEdit targets (the image-space stage of DreamGaussian, Tang et al. 2024).

Until step ``refine_from`` this is :class:`~text3d.guidance.sds.SDSGuidance`. From then on each
render ``x`` is encoded, noised to ``refine_strength * T`` and denoised with the prior's own sampler
(:func:`~text3d.guidance.sdedit.sdedit`: ``refine_steps``-step DDIM grid, CFG ``refine_cfg``,
``eta = refine_eta``), decoded to an image ``y`` of the prior's size, and the render is pulled
toward it in pixel space:

    ``loss = lambda_refine * 0.5 * mean((resize(x) - sg(y))^2)``

(mean over the batch, channels and pixels). SDS's gradient reaches a pixel only through the VAE
encoder's Jacobian and is weak on where an edge lies; the target ``y`` is one of the prior's own
samples, as sharp as its training images, so a render fitted to it takes the prior's outline. With
renders supersampled to a whole multiple of the prior's size (``cameras.resolutions``), an edge pixel
is matched as a coverage, not as a single ray's hit or miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from text3d.core.bounds import bounded

from .priors import resize_square
from .registry import GUIDANCES
from .sdedit import sdedit, sdedit_timesteps
from .sds import SDSConfig, SDSGuidance, check_sds_config


@dataclass
class SDSRefineConfig(SDSConfig):
    """SDS, then the render fitted to SDEdit targets of itself."""

    type: str = "sds-refine"
    """Guidance type; selects this class."""
    refine_from: int = bounded(400, lo=0)
    """Training step from which SDEdit targets replace SDS."""
    refine_strength: float = bounded(0.3, lo=0, hi=1, lo_open=True)
    """How far each render is noised before the prior denoises it, as a fraction of T."""
    refine_steps: int = bounded(20, lo=1)
    """Steps of the full DDIM grid; the last ``round(refine_steps * refine_strength)`` of them run."""
    refine_cfg: float = bounded(2.0, lo=0)
    """Classifier-free guidance scale of the target's denoising (the prior's documented sampler: 2)."""
    refine_eta: float = bounded(1.0, lo=0, hi=1)
    """DDIM stochasticity of the target's denoising (1 = ancestral, the documented sampler)."""
    lambda_refine: float = bounded(1000.0, lo=0)
    """Weight of the mean squared pixel error to the target (against ``lambda_sds`` of the run)."""


@GUIDANCES.register("sds-refine", SDSRefineConfig)
class SDSRefineGuidance(SDSGuidance):
    """SDS until ``refine_from``, then the squared pixel error to SDEdit targets of the renders.

    Args:
        cfg: the guidance section of the config (:class:`SDSRefineConfig`).
        prior: a loaded prior (pixel or latent); the guidance never loads models itself.
    """

    check_config = staticmethod(check_sds_config)
    perp_neg = False

    def __call__(self, images: Tensor, cond: Tensor, uncond: Tensor, step: int, generator: torch.Generator,
                 cameras=None, t: Optional[Tensor] = None, noise: Optional[Tensor] = None,
                 perp_neg: Any = None) -> Dict[str, Tensor]:
        """SDS's evaluation before ``refine_from``; from then on :meth:`refine` (``t`` and ``noise`` unused)."""
        if step < self.cfg.refine_from:
            return super().__call__(images, cond, uncond, step, generator, cameras=cameras, t=t, noise=noise,
                                    perp_neg=perp_neg)
        if perp_neg is not None:
            raise ValueError(f"{type(self).__name__} does not take Perp-Neg's conditioning")
        return self.refine(images, cond, uncond, generator, cameras)

    @torch.no_grad()
    def target(self, images: Tensor, cond: Tensor, uncond: Tensor, generator: torch.Generator,
               cameras=None) -> Tensor:
        """``[B, 3, S, S]`` SDEdit targets of ``[B, 3, H, W]`` renders at the prior's size ``S``.

        Random draws, in this order, from ``generator``: the forward jump's noise, then one noise per
        denoising step (all drawn up front, on CPU)."""
        cfg, prior = self.cfg, self.prior
        x0 = prior.encode_images(images)
        n = len(sdedit_timesteps(prior, cfg.refine_steps, cfg.refine_strength))
        initial = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        steps = [torch.randn(x0.shape, generator=generator, dtype=torch.float32) for _ in range(n)]
        z = sdedit(prior, x0, cond, uncond, initial, steps, cfg.refine_steps, cfg.refine_strength, cfg.refine_cfg,
                   eta=cfg.refine_eta, cameras=cameras, batch_size=max(1, x0.shape[0]))
        return prior.decode(z)

    def refine(self, images: Tensor, cond: Tensor, uncond: Tensor, generator: torch.Generator,
               cameras=None) -> Dict[str, Tensor]:
        """``loss``: ``lambda_refine * 0.5 * mean((resize(x) - y)^2)`` for renders ``x`` ``[B, H, W, 3]``
        and their targets ``y``; ``target``: ``y`` (detached), ``grad_norm``: the mean per-sample L2
        norm of ``d loss / d resize(x)``."""
        x = images.permute(0, 3, 1, 2)
        y = self.target(x.detach(), cond, uncond, generator, cameras).to(x)
        small = resize_square(x, y.shape[-1])
        residual = small - y
        loss = self.cfg.lambda_refine * 0.5 * residual.pow(2).mean()
        grad = (self.cfg.lambda_refine / residual.numel()) * residual.detach()
        return dict(loss=loss, target=y, grad_norm=grad.flatten(1).norm(dim=1).mean())
