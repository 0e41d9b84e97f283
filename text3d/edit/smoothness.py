"""Colour smoothness of an edit: nearby points of the source's surface keep similar colours.

Score distillation moves each surface point's colour by its own noisy gradient. A saturated primary
hides that noise (the colour sigmoid is flat there), but a colour with a channel half-way, such as
orange ``(1, 0.5, 0)``, shows it as speckle: measured on the 2D proxy of a colour edit (one
uniform colour, the same guidance) PDS reaches the palette's orange, while the NeRF edit of the
same pyramid ends at a hue 10 degrees off with a hue spread of 14 degrees, because the hash grid's
per-point noise reaches the colour through the shared MLP. This term penalises the colour
difference of neighbouring surface points (the texture smoothness of nvdiffrec, on the source's
surface), so the edit changes the colour of the object and not of each point. Each scene type
registers how it finds neighbours (:data:`SMOOTHNESS`, keyed by ``geometry.type``):

- ``implicit-volume``: points of the frozen source's surface (its renders' expected depth) and the
  same points moved by a Gaussian jitter of ``edit.smooth_radius``; the albedo difference (L1).
- ``gaussians``: each Gaussian and its ``NEIGHBOURS`` nearest source Gaussians; the difference
  of their base (DC) colours (L1).

Draws come from a generator seeded by the edit's seed and step, so a resumed edit continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from text3d.core.errors import ConfigError
from text3d.core.registry import Registry
from text3d.scene.cameras import turntable

SMOOTHNESS = Registry("colour smoothness")
"""The neighbour rule of each ``geometry.type``."""

NEIGHBOURS = 6
"""Nearest source Gaussians each Gaussian's colour is compared with."""


@dataclass
class SmoothnessSettings:
    """How the term draws its points (``edit.smooth_radius``, ``edit.smooth_points``) and the edit's seed;
    its weight, ``edit.smooth_colour``, is applied by the edit's loss."""

    radius: float
    points: int
    seed: int


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for ``step`` of an edit seeded ``seed`` (independent of the run's own draws)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1))


@torch.no_grad()
def surface_points(source: Any, cameras_cfg: Any, elevations: int = 4, azimuths: int = 8) -> Tensor:
    """``[P, 3]`` world points on the surface of a volume ``source`` system: the expected depth of
    each opaque pixel (opacity > 0.5) of ``elevations x azimuths`` views over the training cameras'
    elevation range, at their distance, field of view and resolution."""
    lo, hi = cameras_cfg.elevation_range
    points = []
    for k in range(elevations):
        elevation = lo + (hi - lo) * (k + 0.5) / elevations
        cams = turntable(azimuths, elevation, cameras_cfg.eval_distance, cameras_cfg.eval_fovy,
                         cameras_cfg.width, cameras_cfg.height).to(next(source.parameters()).device)
        out = source.render(cams, mode="albedo", train=False)
        opacity = out["opacity"][..., 0]
        origins, dirs = cams.rays()
        depth = out["depth"][..., 0] / opacity.clamp(min=1e-6)
        points.append((origins + dirs * depth[..., None])[opacity > 0.5])
    return torch.cat(points)


@SMOOTHNESS.register("implicit-volume", SmoothnessSettings)
class SurfaceJitter:
    """Albedo at source surface points against the albedo a jitter away (see the module docstring)."""

    def __init__(self, settings: SmoothnessSettings, source: Any, cameras_cfg: Any):
        self.settings = settings
        self.points = surface_points(source, cameras_cfg)

    def loss(self, geometry: Any, step: int) -> Tensor:
        """Mean over ``settings.points`` drawn points of the L1 albedo difference (summed over RGB)."""
        s = self.settings
        if len(self.points) == 0:
            return torch.zeros((), device=self.points.device)
        gen = step_generator(s.seed, step)
        x = self.points[torch.randint(len(self.points), (s.points,), generator=gen).to(self.points.device)]
        moved = x + torch.randn(x.shape, generator=gen).to(x) * s.radius
        return (geometry(x)["albedo"] - geometry(moved)["albedo"]).abs().sum(-1).mean()


def nearest_neighbours(points: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """``[N, k]`` indices of each point's ``k`` nearest other points (Euclidean)."""
    n = points.shape[0]
    k = min(k, n - 1)
    out = []
    for start in range(0, n, chunk):
        d = torch.cdist(points[start:start + chunk], points)
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = float("inf")
        out.append(d.topk(k, largest=False).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


@SMOOTHNESS.register("gaussians", SmoothnessSettings)
class NeighbourColours:
    """Base colour of drawn Gaussians against their nearest source Gaussians' (see the module docstring)."""

    def __init__(self, settings: SmoothnessSettings, source: Any, cameras_cfg: Any):
        self.settings = settings
        self.neighbours = nearest_neighbours(source.geometry.means.detach(), NEIGHBOURS)

    def loss(self, geometry: Any, step: int) -> Tensor:
        """Mean over ``settings.points`` drawn Gaussians and their neighbours of the L1 base-colour
        difference (summed over RGB; the DC term before clamping, so clamped colours still move)."""
        from text3d.renderers.gaussians import sh_dc_to_rgb

        n = geometry.num_gaussians
        if n != self.neighbours.shape[0]:  # densified or pruned: neighbours of the current means
            self.neighbours = nearest_neighbours(geometry.means.detach(), NEIGHBOURS)
        if n < 2:
            return torch.zeros((), device=geometry.means.device)
        gen = step_generator(self.settings.seed, step)
        idx = torch.randint(n, (min(self.settings.points, n),), generator=gen).to(geometry.means.device)
        colours = sh_dc_to_rgb(geometry.sh0[:, 0])
        return (colours[idx, None] - colours[self.neighbours[idx]]).abs().sum(-1).mean()


def build_smoothness(geometry_type: str, settings: SmoothnessSettings, source: Any, cameras_cfg: Any) -> Any:
    """The colour smoothness term of a scene of ``geometry_type`` around the frozen ``source`` system.

    Raises:
        ConfigError: no neighbour rule for ``geometry_type``.
    """
    if geometry_type not in SMOOTHNESS:
        raise ConfigError(f"edit.smooth_colour: no colour smoothness for geometry.type {geometry_type!r} (it has "
                          f"one for {', '.join(SMOOTHNESS.names())}); set edit.smooth_colour=0")
    return SMOOTHNESS.get(geometry_type).cls(settings, source, cameras_cfg)
