"""The Gaussians no view sees, given the colour of their nearest seen neighbour before a shape edit.

A run's SDS only ever shapes what its cameras see: the Gaussians inside an object, or behind others,
keep the random colours they were initialised with. A colour edit never shows them, but a shape edit
that removes part of the object does, as confetti. :func:`recolour_hidden` gives each hidden Gaussian
the colour (every SH coefficient) of the nearest Gaussian that the views do see.

A Gaussian's share of the views is its total compositing weight ``sum over pixels of T_i alpha_i``:
the render is linear in the colours, so it is the gradient of the summed render of unit colours with
respect to those colours (exact, one backward pass per view ring).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from text3d.renderers.gaussians import RasterizeMode, rasterize_gaussians
from text3d.scene.cameras import Cameras, turntable

MIN_WEIGHT = 0.5
"""A Gaussian is seen when its compositing weight over all the views adds up to half a pixel."""


def orbit_rings(elevation_range: Sequence[float], distance: float, fovy: float, rings: int = 5,
                per_ring: int = 12, resolution: int = 64) -> list[Cameras]:
    """``rings`` turntables of ``per_ring`` views, evenly spaced over ``elevation_range`` (degrees)."""
    lo, hi = float(elevation_range[0]), float(elevation_range[1])
    elevations = torch.linspace(lo, hi, rings).tolist() if rings > 1 else [(lo + hi) / 2]
    return [turntable(per_ring, e, distance, fovy, resolution, resolution) for e in elevations]


def compositing_weights(geometry, views: Sequence[Cameras], rasterize_mode: RasterizeMode = "classic") -> Tensor:
    """``[N]`` total compositing weight of each Gaussian over the ``views`` (pixels' worth of it), drawn as the
    scene's renderer draws them (``rasterize_mode``)."""
    means, quats = geometry.means.detach(), geometry.quats.detach()
    scales, opacities = geometry.scales().detach(), geometry.opacities().detach()
    total = torch.zeros(geometry.num_gaussians, device=means.device)
    for cams in views:
        cams = cams.to(means.device)
        unit = torch.ones(geometry.num_gaussians, 1, device=means.device, requires_grad=True)
        with torch.enable_grad():
            img, _, _ = rasterize_gaussians(means, quats, scales, opacities, unit, cams.viewmats(), cams.intrinsics(),
                                            cams.width, cams.height, rasterize_mode=rasterize_mode)
            if not img.requires_grad:  # no Gaussian in these views
                continue
            (weight,) = torch.autograd.grad(img.sum(), unit)
        total += weight[:, 0]
    return total


def recolour_hidden(geometry, views: Sequence[Cameras], min_weight: float = MIN_WEIGHT,
                    rasterize_mode: RasterizeMode = "classic") -> int:
    """Give every Gaussian the ``views`` do not see (weight under ``min_weight``) the SH colour of the
    nearest seen one; returns how many were recoloured (none when no Gaussian is seen)."""
    seen = compositing_weights(geometry, views, rasterize_mode) >= min_weight
    hidden = ~seen
    if not seen.any() or not hidden.any():
        return 0
    with torch.no_grad():
        nearest = torch.cdist(geometry.means[hidden], geometry.means[seen]).argmin(dim=1)
        for name in ("sh0", "shN"):
            values = getattr(geometry, name)
            if values.shape[1]:
                values[hidden] = values[seen][nearest]
    return int(hidden.sum())
