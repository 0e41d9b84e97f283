"""Outlines at the prior's resolution: does a run draw what its prior draws, and where do both miss?

Score distillation judges a scene only through the prior's eyes: renders box-filtered to the prior's
resolution (32 px for the shapes prior). Whatever is finer than that pixel no prior judgement
constrains. This module measures outlines at that resolution, for three sources alike, at the same
cameras:

- the prior's own samples (:func:`prior_views`),
- a trained run's renders (:func:`run_views`): rendered at the run's finest training resolution and
  box-filtered to the prior's, as training does (:func:`text3d.guidance.priors.resize_square`),
- the true shape (:func:`true_views`, the exact renderer of :mod:`text3d.prior.shapes`).

Each gives ``[B, 3, H, W]`` images in [0, 1]; their outlines are one mask rule
(:func:`text3d.prior.evaluation.object_mask`) for all three, so the rule's own bias cancels in a ratio.
Cameras sit at fixed azimuth offsets from a symmetry of the shape (every quarter turn for a square
pyramid or a cube, :func:`symmetric_cameras`): offset 0 is face-on, 45 corner-on, and every copy of a
view looks at an identical true outline.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor

from text3d.scene.cameras import Cameras, finest_resolution, orbit_cameras
from text3d.prior.evaluation import object_mask
from text3d.prior.shapes import render_shapes

QUARTER_TURNS = (0.0, 90.0, 180.0, 270.0)
"""Azimuths at which a shape with four-fold symmetry (cube, square pyramid) looks the same."""


def symmetric_cameras(offset: float, elevation: float, copies: int, resolution: int,
                      turns: Sequence[float] = QUARTER_TURNS, distance: float = 3.0,
                      fovy: float = 32.0) -> Cameras:
    """``copies * len(turns)`` cameras at azimuth ``offset + turn`` (degrees), all at ``elevation``."""
    az = torch.tensor([offset + t for t in turns] * copies, dtype=torch.float32)
    n = len(az)
    return orbit_cameras(az, torch.full((n,), float(elevation)), torch.full((n,), float(distance)),
                         torch.full((n,), float(fovy)), resolution, resolution)


def outline_stats(mask: Tensor) -> Dict[str, Tensor]:
    """Figures of ``[B, H, W]`` bool outlines: ``area`` (pixels), ``widest`` (the widest row, pixels),
    ``top`` / ``bottom`` (first and last covered row; NaN for an empty mask), all ``[B]``, and
    ``row_widths`` ``[H]`` (the mean width of each row)."""
    m = mask.bool()
    covered = m.any(dim=2)
    rows = torch.arange(m.shape[1], dtype=torch.float32).expand_as(covered)
    nan = torch.tensor(float("nan"))
    empty = ~covered.any(dim=1)
    top = torch.where(covered, rows, torch.tensor(float("inf"))).amin(dim=1)
    bottom = torch.where(covered, rows, torch.tensor(float("-inf"))).amax(dim=1)
    widths = m.float().sum(dim=2)
    return {"area": widths.sum(dim=1), "widest": widths.amax(dim=1),
            "top": torch.where(empty, nan, top), "bottom": torch.where(empty, nan, bottom),
            "row_widths": widths.mean(dim=0)}


def outlines(images: Tensor) -> Tensor:
    """``[B, H, W]`` bool outlines of ``[B, 3, H, W]`` images: the one mask rule for every source."""
    return object_mask(images)


def true_views(shape: str, colour: str, cameras: Cameras) -> Tensor:
    """The true ``shape`` rendered at ``cameras`` (4 x 4 sub-pixels)."""
    rgb, _ = render_shapes([shape] * len(cameras), [colour] * len(cameras), cameras.to("cpu"), supersample=4)
    return rgb.permute(0, 3, 1, 2)


def prior_views(prior: Any, prompt: str, cameras: Cameras, generator: torch.Generator, **sampler: Any) -> Tensor:
    """The prior's samples of ``prompt`` at ``cameras`` (DDIM, :func:`text3d.prior.model.sample`;
    ``sampler``: its steps / cfg_scale / eta)."""
    from text3d.prior.model import sample

    return sample(prior, [prompt] * len(cameras), cameras, generator=generator, **sampler).float().cpu().clamp(0, 1)


@torch.no_grad()
def run_views(run: Any, cameras: Cameras, render_resolution: Optional[int] = None) -> Tensor:
    """``run``'s renders as the prior saw them: rendered at ``render_resolution`` (by default the run's
    finest training resolution) from the same poses as ``cameras`` and resized to their resolution the
    way training resizes renders.

    ``run``: anything with a ``render_views(cameras, mode)`` of :class:`text3d.run.Run` (its views'
    ``rgb`` are composited on the run's background) and, without ``render_resolution``, a ``cfg``.
    """
    from text3d.guidance.priors import resize_square

    size = cameras.height
    res = render_resolution or finest_resolution(run.cfg.cameras)
    fine = dataclasses.replace(cameras, width=res, height=res)
    views = run.render_views(fine, mode="albedo")
    images = torch.stack([v["rgb"] for v in views]).permute(0, 3, 1, 2).float().clamp(0, 1)
    return resize_square(images, size)
