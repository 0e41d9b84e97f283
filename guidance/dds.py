"""The editing baselines of PDS: Delta Denoising Score and plain SDS towards the target prompt.

DDS (Hertz et al., ICCV 2023): with one shared ``t`` and ``eps`` for both branches,
``grad = w(t) (eps_hat(x_t^tgt; y_tgt) - eps_hat(x_t^src; y_src))``: the source branch's score
cancels the part of the target score that is only noise-prediction error. SDS-edit is SDS towards
the target prompt from the source scene, with no source term at all (it drifts freely).
Both reuse :class:`~text3d.guidance.sds.SDSGuidance`'s timestep sampling, weighting and surrogate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from .registry import GUIDANCES

from .pds import encode_edit_pair, two_branch_eps
from .sds import SDSConfig, SDSGuidance, distillation_loss


@dataclass
class DDSConfig(SDSConfig):
    """Delta Denoising Score (editing guidance; used by ``text3d edit``)."""

    type: str = "dds"
    """Guidance type; selects this class."""
    guidance_scale: float = 7.5
    """CFG scale (diffusers convention), both branches; the DDS paper uses 7.5."""
    weighting: str = "uniform"
    """``w(t)``: ``uniform`` (DDS: none), ``sds`` or ``fantasia3d``."""


@GUIDANCES.register("dds", DDSConfig)
class DDSGuidance(SDSGuidance):
    """Delta Denoising Score: the difference of the two branches' guided noise at shared ``t``, ``eps``."""

    needs_source = True

    def __call__(self, images: Tensor, cond: Tensor, uncond: Tensor, step: int, generator: torch.Generator,
                 cameras: Any = None, *, source_x0: Tensor, source_cond: Tensor, t: Optional[Tensor] = None,
                 noise: Optional[Tensor] = None, **_: Any) -> Dict[str, Tensor]:
        """One DDS evaluation; draws ``t`` then ``eps`` from ``generator``. Arguments as
        :meth:`text3d.guidance.pds.PDSGuidance.__call__` (``t`` ``[B]`` instead of a grid index).

        Returns:
            ``loss``, ``grad`` ``[B, C, h, w]``, ``t``, ``weights``, ``grad_norm``.
        """
        prior = self.prior
        x0 = encode_edit_pair(prior, images, source_x0)
        B = x0.shape[0]
        if t is None:
            t = self.sample_t(B, step, generator)
        t = t.to(device=prior.device, dtype=torch.long)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        noise = noise.to(x0.device)
        with torch.no_grad():
            x_t_src = prior.add_noise(source_x0.detach().float(), noise, t)
            x_t_tgt = prior.add_noise(x0.detach(), noise, t)
            eps_src, eps_tgt = two_branch_eps(prior, x_t_src, x_t_tgt, t, source_cond, cond, uncond,
                                              self.cfg.guidance_scale, cameras)
        weights = self.weight_fn(prior.alphas_cumprod[t])
        loss, grad = distillation_loss(x0, weights.view(-1, 1, 1, 1) * (eps_tgt - eps_src), self.cfg.grad_clip)
        return dict(loss=loss, grad=grad, t=t, weights=weights, grad_norm=grad.flatten(1).norm(dim=1).mean())


@dataclass
class SDSEditConfig(SDSConfig):
    """Plain SDS towards the target prompt, starting from the source scene (editing baseline)."""

    type: str = "sds-edit"
    """Guidance type; selects this class."""


@GUIDANCES.register("sds-edit", SDSEditConfig)
class SDSEditGuidance(SDSGuidance):
    """SDS towards the target prompt; the source renders it is given are not used."""

    needs_source = True

    def __call__(self, images: Tensor, cond: Tensor, uncond: Tensor, step: int, generator: torch.Generator,
                 cameras: Any = None, *, source_x0: Optional[Tensor] = None, source_cond: Optional[Tensor] = None,
                 t: Optional[Tensor] = None, noise: Optional[Tensor] = None, **_: Any) -> Dict[str, Tensor]:
        """:meth:`SDSGuidance.__call__` with the editing signature (the source arguments are ignored)."""
        return super().__call__(images, cond, uncond, step, generator, cameras=cameras, t=t, noise=noise)

