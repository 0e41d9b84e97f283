"""Backgrounds: the colour a ray gets where the object does not cover it.

``solid`` is a fixed colour; ``neural-environment`` is a small MLP of the ray direction (threestudio's
``neural-environment-map-background``), learnt together with the object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from text3d.core.errors import ConfigError
from .geometry import make_mlp
from .registry import BACKGROUNDS
from text3d.core.bounds import bounded

logger = logging.getLogger(__name__)


@dataclass
class SolidBackgroundConfig:
    """A constant background colour."""

    type: str = "solid"
    """Background type; ``solid``."""
    color: List[float] = bounded(default_factory=lambda: [1.0, 1.0, 1.0], lo=0, hi=1)
    """RGB in [0, 1]."""


@BACKGROUNDS.register("solid", SolidBackgroundConfig)
class SolidBackground(nn.Module):
    """Every ray gets ``cfg.color``; nothing to learn."""

    def __init__(self, cfg: SolidBackgroundConfig):
        super().__init__()
        if len(cfg.color) != 3:
            raise ConfigError(f"background.color: expected 3 values (RGB), got {list(cfg.color)}")
        self.cfg = cfg

    def parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        return {}

    def forward(self, dirs: Tensor, train: bool = False, generator: Optional[torch.Generator] = None) -> Tensor:
        """``[..., 3]`` colour for unit ray directions ``dirs [..., 3]``."""
        color = torch.tensor([float(c) for c in self.cfg.color], device=dirs.device, dtype=dirs.dtype)
        return color.expand(dirs.shape)


@dataclass
class NeuralEnvironmentConfig:
    """An MLP from the ray direction to a colour (threestudio ``neural-environment-map-background``)."""

    type: str = "neural-environment"
    """Background type; ``neural-environment``."""
    hidden_dim: int = bounded(16, lo=1)
    """Width of the MLP's hidden layers."""
    hidden_layers: int = bounded(2, lo=0)
    """Number of hidden layers."""
    random_aug: bool = False
    """In training, sometimes replace the background by a random solid colour, so the object
    cannot hide in the background (threestudio ``random_aug``)."""
    random_aug_prob: float = bounded(0.5, lo=0, hi=1)
    """Probability of the random colour at a training step when ``random_aug`` is on."""
    seed: Optional[int] = bounded(None, lo=0)
    """Seed of the parameter initialisation; ``None`` = drawn from the caller's RNG state (a run
    seeds it with the top-level ``seed``)."""


def spherical_harmonics_deg3(dirs: Tensor) -> Tensor:
    """Real spherical harmonics of bands 0-2 (9 values) of unit directions ``[N, 3]`` -> ``[N, 9]``."""
    x, y, z = dirs.unbind(-1)
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x,
        1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
        0.31539156525252005 * (3 * z * z - 1), -1.0925484305920792 * x * z,
        0.5462742152960396 * (x * x - y * y),
    ], dim=-1)


@BACKGROUNDS.register("neural-environment", NeuralEnvironmentConfig)
class NeuralEnvironment(nn.Module):
    """``sigmoid(MLP(SH(d)))`` for unit ray directions ``d``."""

    def __init__(self, cfg: NeuralEnvironmentConfig):
        super().__init__()
        if not 0.0 <= cfg.random_aug_prob <= 1.0:
            raise ConfigError(f"background.random_aug_prob: must be in [0, 1], got {cfg.random_aug_prob}")
        if cfg.hidden_dim <= 0 or cfg.hidden_layers < 1:
            raise ConfigError(f"background.hidden_dim / hidden_layers: must be positive, got "
                              f"{cfg.hidden_dim} / {cfg.hidden_layers}")
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
        self.network = make_mlp(9, cfg.hidden_dim, 3, cfg.hidden_layers, gen)

    def parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        return {"background": list(self.network.parameters())}

    def forward(self, dirs: Tensor, train: bool = False, generator: Optional[torch.Generator] = None) -> Tensor:
        """Background colour of rays.

        Args:
            dirs: ``[..., 3]`` unit ray directions.
            train: training step (enables ``random_aug``).
            generator: CPU generator for ``random_aug``; 4 numbers are drawn at every training
                call when ``random_aug`` is on, whichever colour is used.

        Returns:
            ``[..., 3]`` RGB in [0, 1].
        """
        if train and self.cfg.random_aug:
            if generator is None:
                raise ValueError("NeuralEnvironment: random_aug in training needs a torch.Generator")
            u = torch.rand(4, generator=generator)
            if float(u[0]) < self.cfg.random_aug_prob:
                return u[1:].to(device=dirs.device, dtype=dirs.dtype).expand(dirs.shape)
        flat = dirs.reshape(-1, 3)
        rgb = torch.sigmoid(self.network(spherical_harmonics_deg3(flat)))
        return rgb.view(dirs.shape)
