"""Variational Score Distillation (ProlificDreamer, Wang et al. NeurIPS 2023), as threestudio runs it.

SDS pulls every render towards the prior's mode; VSD compares the frozen prior with a second model
``phi`` that learns the distribution of the current renders:
``grad = w(t) (eps_pre(x_t; y) - eps_phi(x_t; y, camera))``, with ``eps_pre`` classifier-free guided
(``guidance_scale``, 7.5) and ``eps_phi = eps_phi(cam 0) + s_lora (eps_phi(cam) - eps_phi(cam 0))``.

``phi`` is a copy of the prior's UNet with low-rank adapters on every attention projection
(:mod:`.lora`, rank 4) and a camera class embedding: for Stable Diffusion a new one (the flattened
4x4 camera-to-world through a 16 -> time-embedding MLP, its last layer zero-initialised so that a fresh
``phi`` is the frozen UNet); a camera-conditioned prior (the shapes prior) keeps its own, trained with
the adapters. After every 3D step ``phi`` takes one AdamW step (lr 1e-4) on the detached renders: a
random timestep in ``[0, T)``, the camera dropped with probability 0.1, the prior's own prediction
target. Its weights and optimiser state live in the run's checkpoints, so a resumed run continues
bit-identically. ``t_max`` drops to 0.5 after 5 000 steps (threestudio).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.checkpoint import optimizer_from_flat, optimizer_to_flat
from text3d.core.schedules import LinearSchedule

from .lora import add_lora
from .priors import DiffusionPrior
from .registry import GUIDANCES
from .sds import ScoreDistillation, check_sds_config

CAMERA_FEATURES = 16
"""A camera as the VSD model sees it on Stable Diffusion: its flattened 4x4 camera-to-world matrix."""


@dataclass
class VSDConfig:
    """Variational Score Distillation."""

    type: str = "vsd"
    """Guidance type; selects this class."""
    guidance_scale: float = bounded(7.5, lo=0)
    """Classifier-free guidance scale of the frozen prior (diffusers convention; threestudio 7.5)."""
    guidance_scale_lora: float = bounded(1.0, lo=0)
    """``s_lora``: the camera guidance of ``phi`` (1 = its camera-conditioned prediction)."""
    lora_rank: int = bounded(4, lo=1, hi=256)
    """Rank of the adapters."""
    lora_lr: float = bounded(1e-4, lo=0, lo_open=True)
    """AdamW learning rate of ``phi`` (adapters and camera embedding)."""
    camera_dropout: float = bounded(0.1, lo=0, hi=1)
    """Probability of training ``phi`` on one sample without its camera (the ``cam 0`` branch)."""
    weighting: str = "sds"
    """``w(t)``: ``sds`` (1 - abar_t), ``uniform`` or ``fantasia3d``."""
    t_min: LinearSchedule = bounded(default_factory=lambda: LinearSchedule.constant(0.02), lo=0, hi=1)
    """Smallest timestep as a fraction of T."""
    t_max: LinearSchedule = bounded(default_factory=lambda: LinearSchedule(0.98, 0.5, 5000, 5001), lo=0, hi=1)
    """Largest timestep as a fraction of T (threestudio: 0.98, then 0.5 from step 5 000)."""
    grad_clip: Optional[float] = bounded(None, lo=0, lo_open=True)
    """Clamp each element of the gradient; ``None`` = no clipping."""
    batch_t: bool = True
    """A timestep per batch element (False: one for the batch)."""


class CameraEmbedding(nn.Module):
    """The VSD model's camera embedding on Stable Diffusion: 16 -> dim -> dim (last layer zeroed)."""

    def __init__(self, dim: int, generator: torch.Generator):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(CAMERA_FEATURES, dim), nn.Linear(dim, dim)
        with torch.no_grad():
            bound = CAMERA_FEATURES ** -0.5
            self.linear_1.weight.copy_((torch.rand(self.linear_1.weight.shape, generator=generator) * 2 - 1) * bound)
            self.linear_1.bias.zero_()
            self.linear_2.weight.zero_()
            self.linear_2.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x.to(self.linear_1.weight))))


@GUIDANCES.register("vsd", VSDConfig)
class VSDGuidance(ScoreDistillation):
    """Variational Score Distillation (see the module docstring)."""

    check_config = staticmethod(check_sds_config)
    perp_neg = True

    def __init__(self, cfg: VSDConfig, prior: DiffusionPrior, seed: int = 0):
        super().__init__(cfg, prior)
        generator = torch.Generator().manual_seed(seed)
        self.phi = copy.deepcopy(prior.unet).float()
        params = add_lora(self.phi, cfg.lora_rank, generator)
        self.own_camera = getattr(self.phi, "class_embedding", None) is None
        if self.own_camera:  # Stable Diffusion: a camera embedding of its own
            self.phi.class_embedding = CameraEmbedding(self.phi.time_embedding.linear_2.out_features, generator)
        self.phi.class_embedding.requires_grad_(True)
        params += list(self.phi.class_embedding.parameters())
        self.optimizer = torch.optim.AdamW([{"params": params, "name": "vsd_phi"}], lr=cfg.lora_lr)

    # ------------------------------------------------------------------------------------------
    def camera_labels(self, cameras: Any, batch: int) -> Tensor:
        """``phi``'s class labels: the flattened camera-to-world (Stable Diffusion) or the prior's own."""
        if cameras is None and self.own_camera:
            return torch.zeros(batch, CAMERA_FEATURES, device=self.prior.device)
        if self.own_camera:
            return cameras.c2w.reshape(batch, CAMERA_FEATURES).to(self.prior.device).float()
        return self.prior.camera_class_labels(cameras).float()

    def phi_output(self, x_t: Tensor, t: Tensor, emb: Tensor, labels: Tensor) -> Tensor:
        """``phi``'s raw output (the prior's prediction type)."""
        return self.phi(x_t.float(), t, encoder_hidden_states=emb.float(), class_labels=labels).sample

    def phi_eps(self, x_t: Tensor, t: Tensor, cond: Tensor, cameras: Any) -> Tensor:
        """``eps_phi(cam 0) + s_lora (eps_phi(cam) - eps_phi(cam 0))`` from one batched call, no gradient."""
        B = x_t.shape[0]
        labels = self.camera_labels(cameras, B)
        with torch.no_grad():
            out = self.phi_output(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, cond]).expand(2 * B, -1, -1),
                                  torch.cat([torch.zeros_like(labels), labels]))
        eps0, eps_cam = self.prior._to_epsilon(out[:, :x_t.shape[1]].float(), torch.cat([x_t, x_t]).float(),
                                               torch.cat([t, t])).chunk(2)
        return eps0 + self.cfg.guidance_scale_lora * (eps_cam - eps0)

    def direction(self, x_t: Tensor, t: Tensor, noise: Tensor, cond: Tensor, uncond: Tensor, step: int,
                  cameras: Any, perp_neg: Any = None) -> Tensor:
        return self.guided_eps(x_t, t, cond, uncond, cameras, perp_neg) - self.phi_eps(x_t, t, cond, cameras)

    # ------------------------------------------------------------------------------------------
    def after_step(self, x0: Tensor, cond: Tensor, step: int, generator: torch.Generator,
                   cameras: Any) -> Dict[str, Tensor]:
        """One AdamW step of ``phi`` on the detached renders (its loss is returned as ``loss_phi``)."""
        B, prior = x0.shape[0], self.prior
        t = torch.randint(0, prior.num_train_timesteps, (B,), generator=generator).to(prior.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        keep = (torch.rand(B, generator=generator) >= self.cfg.camera_dropout).to(prior.device)
        labels = self.camera_labels(cameras, B)
        labels = labels * keep.view(-1, *([1] * (labels.ndim - 1))).to(labels)
        x_t = prior.add_noise(x0.float(), noise, t)
        with torch.enable_grad():
            out = self.phi_output(x_t, t, cond.detach().expand(B, -1, -1), labels)[:, :x0.shape[1]]
            loss = F.mse_loss(out.float(), self.target(x0.float(), noise, t))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return {"loss_phi": loss.detach()}

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the prior's UNet predicts: the noise, ``v`` or ``x_0``."""
        abar = self.prior.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        kind = self.prior.prediction_type
        if kind == "v_prediction":
            return abar.sqrt() * noise - (1 - abar).sqrt() * x0
        return x0 if kind == "sample" else noise

    # ------------------------------------------------------------------------------------------
    def state_tensors(self) -> Dict[str, Tensor]:
        """``phi``'s trainable weights and its optimiser's state, for the run's checkpoint."""
        tensors = {f"phi.{n}": p.detach().clone() for n, p in self.phi.named_parameters() if p.requires_grad}
        optim, _ = optimizer_to_flat(self.optimizer)
        tensors.update({f"phi_optim.{k}": v for k, v in optim.items()})
        return tensors

    def state_meta(self) -> Dict[str, Any]:
        return {"phi_optimizer_param_groups": optimizer_to_flat(self.optimizer)[1]}

    def load_state(self, tensors: Dict[str, Tensor], meta: Dict[str, Any]) -> None:
        """Restore :meth:`state_tensors` (a resumed run continues as an uninterrupted one)."""
        params = dict(self.phi.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                if name.startswith("phi."):
                    params[name[len("phi."):]].copy_(value)
        optim = {k[len("phi_optim."):]: v for k, v in tensors.items() if k.startswith("phi_optim.")}
        optimizer_from_flat(self.optimizer, optim, meta["phi_optimizer_param_groups"])
