"""The refinement stage of an edit, as the official PDS ``pds_refinement``: from ``refine.start_step``
the edit stops distilling and fits a set of cached training views photometrically, while every
``refine.every`` steps ``refine.count`` of those views (in a fixed cycle) are replaced by an SDEdit of
the current render of that view towards the target prompt.

The SDEdit is the official one: a ``sdedit_steps`` grid of the prior's own DDIM sampler, ``skip`` of
its steps skipped (drawn uniformly in ``[int(n skip_min), int(n skip_max)]``, official 0.8-0.9 of 20:
only the last 2-4 steps run, from small t), classifier-free guidance ``guidance_scale`` (official 15).
The official code SDEdits the PDS stage's render of the view (the refinement's dataset); text3d
SDEdits the view's current render, so later replacements start from the refined scene.

Determinism: the views' cameras come from one generator seeded by the run's seed; the SDEdit's
skip and noises from a generator seeded by ``(seed, step, slot)``; the cycle position is a function
of the step. Only the cached images change over the stage, and they are saved in each checkpoint
(``refine.images``), so an edit resumed mid-refinement ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError, RunDirError
from text3d.guidance.sdedit import sdedit

if TYPE_CHECKING:
    from text3d.scene.cameras import Cameras, RandomCameraSampler
    from text3d.guidance.priors import DiffusionPrior

logger = logging.getLogger(__name__)

LOSSES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l2": F.mse_loss,  # the official NeRF refinement (nerfacto's RGB MSE)
    "l1": F.l1_loss,   # the photometric term of the official Gaussian refinement (splatfacto)
}
"""Photometric losses between renders and cached views, mean over pixels and channels."""

PromptFn = Callable[[Tensor, Tensor], tuple]
"""``(elevation [B], azimuth [B]) -> (cond, uncond)`` text embeddings of the target prompt."""


@dataclass
class RefineConfig:
    """The refinement stage (the ``refine:`` section of an edit's config)."""

    enabled: bool = False
    """Run the refinement stage from ``start_step`` to ``steps`` (official PDS: a second stage)."""
    start_step: int = bounded(0, lo=0)
    """First step of the stage; the steps before it distil with the guidance. Must be below ``steps``."""
    views: int = bounded(16, lo=1, hi=4096)
    """Cached training views (random training cameras, fixed for the stage), rendered at its start."""
    every: int = bounded(10, lo=1)
    """Every this many steps cached views are replaced by SDEdits (official ``edit_rate``: 10)."""
    count: int = bounded(1, lo=1, hi=4096)
    """Views replaced each time, in a fixed cycle (official ``edit_count``: 1)."""
    sdedit_steps: int = bounded(20, lo=1, hi=1000)
    """Steps of the SDEdit's DDIM grid (official: 20)."""
    skip_min: float = bounded(0.8, lo=0.0, hi=1.0)
    """Lowest fraction of the grid skipped (official 0.8): at most ``n - int(n skip_min)`` steps run."""
    skip_max: float = bounded(0.9, lo=0.0, hi=1.0)
    """Highest fraction skipped (official 0.9): at least ``n - int(n skip_max)`` steps run (>= 1)."""
    guidance_scale: float = bounded(15.0, lo=0.0)
    """Classifier-free guidance scale of the SDEdit (diffusers convention; official 15)."""
    eta: float = bounded(0.0, lo=0.0, hi=1.0)
    """DDIM stochasticity of the SDEdit (official 0; the embedded prior's own sampler: 1)."""
    loss: str = "l2"
    """Photometric loss: ``l2`` (official NeRF refinement) or ``l1`` (official Gaussian one's photometric term)."""
    batch_size: int = bounded(1, lo=1, hi=4096)
    """Cached views fitted per step (drawn uniformly with the run's generator)."""


def check_refine_section(cfg: RefineConfig) -> None:
    """Raise :class:`ConfigError` for inconsistent ``refine`` settings (its start against the edit's
    ``steps`` is checked with the whole config)."""
    if cfg.loss not in LOSSES:
        raise ConfigError(f"refine.loss: unknown value {cfg.loss!r}; valid choices: {', '.join(LOSSES)}")
    if cfg.skip_min > cfg.skip_max:
        raise ConfigError(f"refine.skip_min: {cfg.skip_min} is above refine.skip_max ({cfg.skip_max}); swap them")
    if int(cfg.sdedit_steps * cfg.skip_max) >= cfg.sdedit_steps:
        raise ConfigError(f"refine.skip_max: skipping {int(cfg.sdedit_steps * cfg.skip_max)} of "
                          f"{cfg.sdedit_steps} SDEdit steps leaves none to run; lower it below 1")
    if cfg.batch_size > cfg.views:
        raise ConfigError(f"refine.batch_size: {cfg.batch_size} is more than the {cfg.views} cached views "
                          "(refine.views); lower it or cache more views")


class Refinement:
    """The cached views of the refinement stage and its two operations (replace, fit).

    Args:
        cfg: the ``refine`` section.
        prior: the edit's prior (SDEdit).
        sampler: the edit's training camera sampler (the cached views' cameras and resolution).
        seed: the edit's seed.
    """

    def __init__(self, cfg: RefineConfig, prior: "DiffusionPrior", sampler: "RandomCameraSampler", seed: int):
        self.cfg, self.prior, self.seed = cfg, prior, int(seed)
        gen = torch.Generator().manual_seed((self.seed * 7_919 + 17) % (2**63 - 1))
        self.cameras: "Cameras" = sampler.sample(gen, batch_size=cfg.views, step=cfg.start_step)
        self.images: Optional[Tensor] = None
        """``[views, H, W, 3]`` float32 in [0, 1] on CPU once the stage has started."""

    def active(self, step: int) -> bool:
        return self.cfg.enabled and step >= self.cfg.start_step

    @torch.no_grad()
    def start(self, render: Callable[["Cameras"], Tensor]) -> None:
        """Cache the current renders (``render(cams) -> [B, H, W, 3]``) of every view, one at a time."""
        self.images = torch.cat([render(self.cameras.index([i])).float().cpu() for i in range(self.cfg.views)])

    def slots(self, step: int) -> List[int]:
        """The views replaced at ``step`` (empty between replacements): the next ``count`` of the cycle."""
        k, r = divmod(step - self.cfg.start_step, self.cfg.every)
        if r != 0:
            return []
        return [(k * self.cfg.count + j) % self.cfg.views for j in range(self.cfg.count)]

    def _generator(self, step: int, j: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step * 4099 + j + 1) % (2**63 - 1))

    @torch.no_grad()
    def sdedit_view(self, image: Tensor, cond: Tensor, uncond: Tensor, cams: "Cameras",
                    generator: torch.Generator) -> Tensor:
        """SDEdit of one ``[1, H, W, 3]`` image towards the prompt of ``cond``; same shape back.

        ``skip`` is drawn first from ``generator``, then the initial noise, then one noise per step.
        """
        c, n, prior = self.cfg, self.cfg.sdedit_steps, self.prior
        skip = int(torch.randint(int(n * c.skip_min), int(n * c.skip_max) + 1, (1,), generator=generator))
        run = n - skip
        x0 = prior.encode_images(image.permute(0, 3, 1, 2).to(prior.device), None)
        shape = tuple(x0.shape)
        initial = torch.randn(shape, generator=generator)
        step_noise = [torch.randn(shape, generator=generator) for _ in range(run)]
        x = sdedit(prior, x0, cond, uncond, initial, step_noise, steps=n, strength=run / n,
                   cfg_scale=c.guidance_scale, eta=c.eta, cameras=cams)
        decoded = prior.decode(x).float().cpu()
        H, W = image.shape[1:3]
        if tuple(decoded.shape[-2:]) != (H, W):
            decoded = F.interpolate(decoded, (H, W), mode="bilinear", align_corners=False)
        return decoded.permute(0, 2, 3, 1).clamp(0, 1)

    @torch.no_grad()
    def replace(self, step: int, render: Callable[["Cameras"], Tensor], prompts: PromptFn, device) -> List[int]:
        """Replace the views of ``step`` (:meth:`slots`) by SDEdits of their current renders."""
        slots = self.slots(step)
        for j, i in enumerate(slots):
            cams = self.cameras.index([i]).to(device)
            cond, uncond = prompts(cams.elevation, cams.azimuth)
            self.images[i] = self.sdedit_view(render(cams).float(), cond, uncond, cams, self._generator(step, j))[0]
        return slots

    def loss(self, render: Callable[["Cameras"], Tensor], generator: torch.Generator, device) -> Tensor:
        """Photometric loss of ``batch_size`` cached views drawn with ``generator`` against their renders."""
        idx = torch.randint(0, self.cfg.views, (self.cfg.batch_size,), generator=generator)
        cams = self.cameras.index(idx).to(device)
        return LOSSES[self.cfg.loss](render(cams), self.images[idx].to(device))

    # ------------------------------------------------------------------------------- checkpoints
    def state_tensors(self) -> Dict[str, Tensor]:
        return {} if self.images is None else {"refine.images": self.images.clone()}

    def load(self, tensors: Dict[str, Tensor], path) -> None:
        images = tensors.get("refine.images")
        if images is not None and tuple(images.shape[:1] + images.shape[1:3]) != (
                self.cfg.views, self.cameras.height, self.cameras.width):
            raise RunDirError(f"checkpoint {path}: its {images.shape[0]} cached refinement views of "
                              f"{images.shape[2]}x{images.shape[1]} px do not fit refine.views={self.cfg.views} at "
                              f"{self.cameras.width}x{self.cameras.height}; drop the refine/cameras overrides")
        self.images = None if images is None else images.float().clone()


__all__ = ["LOSSES", "RefineConfig", "Refinement", "check_refine_section"]
