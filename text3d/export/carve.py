"""The solid a viewer sees: space carved by rays from all around, at the scale the run supervised.

A field trained from renders is only constrained where a render sees it. Inside, SDS leaves the
density porous: pores narrower than a supervised pixel never show in a render, so at the
iso-level the inside of a NeRF is a sponge of tunnels open to the outside (genus in the
thousands; three quarters of the marching-cubes faces hidden inside). Filling *enclosed*
cavities does not close them. What a viewer can tell apart is what rays from outside reach.

:func:`visible_solid` therefore carves: a cell is empty if a probe (a cube :math:`2r + 1` cells
wide, as wide as the narrowest opening a supervised render can show: for a NeRF two pixels,
:data:`~text3d.export.mesh.PORE_PIXELS`) can travel to it along a straight line from
outside the grid, in any of ``directions``, without touching the occupied cells (density at or
above the level). The solid is what no probe reaches. So

- a pore or tunnel narrower than the probe is closed, and a cavity behind it filled, whatever the
  interior values are (they are not constrained by any render);
- a hole seen through (a torus's) is carved, as every view through it sees the background;
- the outside surface is where the field puts it: carved cells touch occupied ones, and the
  surface between them is interpolated from the field's own values (only the pore caps sit where
  the probe stopped);
- floaters in free space stay occupied (they are seen) and are dropped later as small pieces;
- a ray also stops where it has become half opaque (:func:`sweep` with the optical depth of the
  cells, ``sigma x spacing``, the grid's :attr:`~text3d.export.grid.DensityGrid.optical_scale`):
  a haze below the level everywhere that a render still shows as solid (a Gaussian shell's
  overlapping tails) is not a line of sight. On a shell of 6,000 small Gaussians on a torus this
  takes genus 3 to 1 (Euler -5 -> 0), the area 1.22x -> 1.04x (``tests/test_export_topology.py``).

The probe sweep runs one direction at a time, slice by slice along its dominant axis: a slice's
reachable cells are the previous slice's, shifted by the ray's digital step (-1, 0 or 1 cells
per transverse axis, Bresenham), and free; cells entering from outside the grid are reachable.
Free space is the complement of the occupied cells dilated by the probe (a separable max filter),
and the carved space is the reachable set dilated back by it (a morphological opening of the free
space, restricted to what straight rays reach).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .grid import DensityGrid

logger = logging.getLogger(__name__)

DIRECTIONS = 64
"""Carving directions (a Fibonacci sphere: every direction within ~14 degrees of one). A hole seen
through only from a narrow cone of directions needs the cone to contain one: a torus's hole
(radius 0.21, tube 0.28 thick) is open over ~35 degrees around its axis."""


HALF_OPACITY_DEPTH = math.log(2.0)
"""Optical depth at which a ray is half opaque (where a render shows the surface)."""

REFINE_CELLS = 3
"""Fine cells the coarse sweep's reached set is grown by (see :func:`visible_solid`)."""


def fibonacci_sphere(n: int) -> np.ndarray:
    """``[n, 3]`` unit vectors spread evenly over the sphere (golden-angle spiral)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(np.maximum(1 - z * z, 0.0))
    phi = i * math.pi * (3 - math.sqrt(5))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def _window_or(mask: np.ndarray, width: int, axis: int) -> np.ndarray:
    """``out[i] = mask[i] | ... | mask[i + width - 1]`` along ``axis`` (past the end: False), by
    doubling: ``log2(width)`` shifted ORs instead of ``width``."""
    out = mask.copy()
    span = 1
    while span < width:
        step = min(span, width - span)
        src = [slice(None)] * mask.ndim
        dst = [slice(None)] * mask.ndim
        src[axis], dst[axis] = slice(step, None), slice(None, -step)
        out[tuple(dst)] |= out[tuple(src)]
        span += step
    return out


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by a cube of ``2 radius + 1`` cells (separable, outside the grid: False); a new array."""
    out = mask.copy()
    if radius <= 0:
        return out
    for axis in range(mask.ndim):
        pad = [(0, 0)] * mask.ndim
        pad[axis] = (radius, 0)  # out[i] = OR of the padded window starting at i - radius
        grown = _window_or(np.pad(out, pad), 2 * radius + 1, axis)
        take = [slice(None)] * mask.ndim
        take[axis] = slice(0, mask.shape[axis])
        out = grown[tuple(take)]
    return np.ascontiguousarray(out)


def _shift_into(dst: np.ndarray, src: np.ndarray, d1: int, d2: int, fill: Any = True) -> None:
    """``dst[i, j] = src[i - d1, j - d2]``, ``fill`` where that falls outside ``src`` (open space)."""
    n1, n2 = src.shape
    dst[...] = fill
    dst[max(d1, 0):n1 + min(d1, 0), max(d2, 0):n2 + min(d2, 0)] = \
        src[max(-d1, 0):n1 + min(-d1, 0), max(-d2, 0):n2 + min(-d2, 0)]


def sweep(free: np.ndarray, direction: np.ndarray, depth: Optional[np.ndarray] = None) -> np.ndarray:
    """Cells of ``free [n0, n1, n2]`` reached by straight rays travelling along ``direction`` from
    outside the grid through free cells only (digital lines, see the module docstring).

    With ``depth`` (``[n0, n1, n2]`` optical depth across one cell, ``sigma x spacing``), a ray also
    stops where it has become half opaque (:data:`HALF_OPACITY_DEPTH` collected up to the middle of a
    cell): fog thinner than the level everywhere still hides what is behind it, as in a render.
    """
    d = np.asarray(direction, np.float64)
    axis = int(np.argmax(np.abs(d)))
    others = [a for a in range(3) if a != axis]
    view = np.moveaxis(free, axis, 0)
    tau = None if depth is None else np.moveaxis(depth, axis, 0)
    reach = np.zeros(view.shape, bool)
    if d[axis] < 0:  # travel towards lower indices: walk the slices backwards
        view, out = view[::-1], reach[::-1]
        tau = None if tau is None else tau[::-1]
    else:
        out = reach
    slope = d[others] / abs(d[axis])
    step = np.round(np.arange(view.shape[0] + 1)[:, None] * slope[None, :]).astype(np.int64)
    delta = step[1:] - step[:-1]
    if tau is None:
        _sweep_free(view, out, delta)
    else:
        _sweep_depth(view, tau, out, delta, float(np.linalg.norm(d) / abs(d[axis])))
    return np.moveaxis(reach, 0, axis)


def _sweep_free(view: np.ndarray, out: np.ndarray, delta: np.ndarray) -> None:
    """:func:`sweep` without opacity: slice ``k`` is reached where the shifted slice ``k - 1`` was and it is free."""
    state = np.ones(view.shape[1:], bool)
    shifted = np.empty_like(state)
    for k in range(view.shape[0]):
        _shift_into(shifted, state, int(delta[k, 0]), int(delta[k, 1]))
        np.logical_and(shifted, view[k], out=state)
        out[k] = state


def _sweep_depth(view: np.ndarray, depth: np.ndarray, out: np.ndarray, delta: np.ndarray, length: float) -> None:
    """:func:`sweep` with opacity: the state is the optical depth each ray has collected (inf: stopped);
    a slice step is ``length`` cells of path."""
    state = np.zeros(view.shape[1:], np.float32)
    shifted = np.empty_like(state)
    half = np.empty_like(state)
    for k in range(view.shape[0]):
        _shift_into(shifted, state, int(delta[k, 0]), int(delta[k, 1]), fill=0.0)
        np.multiply(depth[k], 0.5 * length, out=half)
        shifted += half  # depth at the middle of the cell
        np.logical_and(view[k], shifted < HALF_OPACITY_DEPTH, out=out[k])
        shifted += half  # depth past the cell
        np.copyto(state, np.float32(np.inf))
        np.copyto(state, shifted, where=out[k])


def reachable(free: np.ndarray, directions: int, depth: Optional[np.ndarray] = None) -> np.ndarray:
    """Cells of ``free`` that straight rays from outside reach in any of ``directions`` (see :func:`sweep`)."""
    reach = np.zeros_like(free)
    for d in fibonacci_sphere(directions):
        reach |= sweep(free, d, depth)
    return reach


def _block_max(mask: np.ndarray, factor: int) -> np.ndarray:
    """``mask`` on a ``factor`` times coarser grid: a coarse cell is set if any fine cell of its block is."""
    n = [-(-s // factor) for s in mask.shape]
    out = np.zeros(n, bool)
    for a in range(factor):
        for b in range(factor):
            for c in range(factor):
                part = mask[a::factor, b::factor, c::factor]
                out[:part.shape[0], :part.shape[1], :part.shape[2]] |= part
    return out


def _block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """``values`` averaged over ``factor^3`` blocks (a partial block at the far end: over its cells)."""
    n = [-(-s // factor) for s in values.shape]
    total = np.zeros(n, np.float32)
    count = np.zeros(n, np.float32)
    for a in range(factor):
        for b in range(factor):
            for c in range(factor):
                part = values[a::factor, b::factor, c::factor]
                total[:part.shape[0], :part.shape[1], :part.shape[2]] += part
                count[:part.shape[0], :part.shape[1], :part.shape[2]] += 1
    return total / count


def _upsample(mask: np.ndarray, factor: int, shape: Tuple[int, ...]) -> np.ndarray:
    """Each coarse cell of ``mask`` repeated over its ``factor^3`` block, cropped to ``shape``."""
    up = mask.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
    return up[:shape[0], :shape[1], :shape[2]]


def visible_solid(occupied: np.ndarray, probe: int, directions: int = DIRECTIONS,
                  depth: Optional[np.ndarray] = None) -> Tuple[np.ndarray, int]:
    """The solid a viewer sees: cells no probe reaches (see the module docstring).

    With a probe of 2+ cells, the rays are swept on a grid twice as coarse (8x fewer cells), with a
    probe at least as wide; the reached set is then brought back to the fine grid (only where the
    fine probe fits) and grown there by :data:`REFINE_CELLS` cells, which the coarse rounding may
    have kept it short of the surface by. That growth cannot cross into a pore narrower than the
    probe (no cell of it is free) nor through a wall (walls are ``2 probe`` cells thicker in the
    free-space mask than ``REFINE_CELLS``).

    Args:
        occupied: ``[n0, n1, n2]`` bool, density at or above the iso-level.
        probe: half-width of the probe, cells (0 = a ray one cell wide).
        directions: number of carving directions (:func:`fibonacci_sphere`).
        depth: optional ``[n0, n1, n2]`` optical depth across a cell (``sigma x spacing``): rays also
            stop where they become half opaque (see :func:`sweep`).

    Returns:
        ``[n0, n1, n2]`` bool solid (a superset of ``occupied``) and how many cells it added.
    """
    box = _occupied_box(occupied, probe + REFINE_CELLS + 1)
    if box is None:
        return occupied.copy(), 0
    solid = occupied.copy()  # outside the box everything is reached: only the box is carved
    inner, _ = _carve(occupied[box], probe, directions, None if depth is None else depth[box])
    solid[box] = inner
    return solid, int(solid.sum() - occupied.sum())


def _occupied_box(occupied: np.ndarray, margin: int) -> Optional[Tuple[slice, ...]]:
    """Slices of the occupied cells' bounding box grown by ``margin`` cells (within the grid), or None."""
    if not occupied.any():
        return None
    box = []
    for axis in range(3):
        hit = np.flatnonzero(occupied.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + margin + 1, occupied.shape[axis])))
    return tuple(box)


def _carve(occupied: np.ndarray, probe: int, directions: int, depth: Optional[np.ndarray]) -> Tuple[np.ndarray, int]:
    """:func:`visible_solid` of a box that holds every occupied cell with a margin."""
    free = ~dilate(occupied, probe)
    if 2 * probe >= REFINE_CELLS:
        coarse_free = ~dilate(_block_max(occupied, 2), (probe + 1) // 2)
        coarse_depth = None if depth is None else 2 * _block_mean(depth, 2)  # cells twice as long
        reach = _upsample(reachable(coarse_free, directions, coarse_depth), 2, occupied.shape) & free
        reach = dilate(reach, REFINE_CELLS) & free
    else:
        reach = reachable(free, directions, depth)
    solid = ~dilate(reach, probe)
    solid |= occupied  # a probe never touches occupied cells; kept explicit against rounding
    added = int(solid.sum() - occupied.sum())
    return solid, added


def probe_cells(pore_size: float, spacing: float) -> int:
    """Probe half-width ``r`` in cells for pores up to ``pore_size`` wide (world units) on a grid of
    ``spacing``: the probe, ``2 r + 1`` cells, is at least as wide as the pore; ``r >= 1``."""
    return max(1, int(math.ceil(0.5 * (pore_size / spacing - 1) - 1e-9)))


def carve_grid(grid: DensityGrid, pore_size: float, directions: int = DIRECTIONS) -> Tuple[DensityGrid, Dict[str, Any]]:
    """``grid`` with its invisible pores filled: nodes of the :func:`visible_solid` below the level
    are raised to twice the level (the carved nodes and the field's own surface are untouched).

    Args:
        grid: density and level.
        pore_size: width of the widest opening to close, world units; 0 = return ``grid`` as is.
        directions: carving directions.

    Returns:
        The carved grid (a new one; ``grid`` is not changed) and a description for ``export.json``.
    """
    if pore_size <= 0:
        return grid, {"pore_size": 0.0, "probe_cells": 0, "directions": 0, "filled_nodes": 0}
    probe = probe_cells(pore_size, grid.spacing)
    occupied = grid.values >= grid.level
    depth = np.maximum(grid.values, 0.0) * np.float32(grid.optical_scale * grid.spacing)
    solid, _ = visible_solid(occupied, probe, directions, depth)
    fill = solid & ~occupied
    values = grid.values.copy()
    values[fill] = 2.0 * grid.level
    filled = int(fill.sum())
    logger.info("carving: probe %d cells (pore size %.4g), %d directions, %d hidden nodes filled (%.1f %% of the solid)",
                probe, pore_size, directions, filled, 100.0 * filled / max(int(solid.sum()), 1))
    info = {"pore_size": float(pore_size), "probe_cells": probe, "directions": directions, "filled_nodes": filled,
            "filled_fraction_of_solid": round(filled / max(int(solid.sum()), 1), 6)}
    return DensityGrid(values, grid.origin, grid.spacing, grid.level, grid.level_source, grid.evaluated), info


__all__ = ["DIRECTIONS", "carve_grid", "dilate", "fibonacci_sphere", "probe_cells", "sweep", "visible_solid"]
