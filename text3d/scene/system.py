"""The scene as one module: geometry and background (the trained parts), with the material and the
renderer that draw them. A run trains one, an edit holds a trainable and a frozen one, and ``video``
renders one from a run folder.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn

from text3d.renderers.registry import MATERIALS, RENDERERS

from .registry import BACKGROUNDS, GEOMETRIES


class NeRFSystem(nn.Module):
    """The optimised scene: geometry + background, with the material and renderer that draw it.

    Args:
        cfg: any config with the scene sections ``geometry``, ``material``, ``background`` and
            ``renderer`` (a run's :class:`~text3d.run.config.Config` or a :class:`~text3d.scene.config.SceneConfig`).
    """

    def __init__(self, cfg: Any):
        super().__init__()
        self.geometry = GEOMETRIES.build(cfg.geometry)
        self.material = MATERIALS.build(cfg.material)
        self.background = BACKGROUNDS.build(cfg.background)
        self.renderer = RENDERERS.build(cfg.renderer)

    def parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        groups: Dict[str, List[nn.Parameter]] = {}
        for module in (self.geometry, self.background):
            for name, params in module.parameter_groups().items():
                groups.setdefault(name, []).extend(params)
        return groups

    def render(self, cameras, mode: str = "albedo", generator: Optional[torch.Generator] = None,
               train: bool = True) -> Dict[str, torch.Tensor]:
        return self.renderer(self.geometry, self.material, self.background, cameras, mode=mode,
                             generator=generator, train=train)
