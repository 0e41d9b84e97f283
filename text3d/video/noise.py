"""Noise for sequences of frames: i.i.d., shared, PYoCo mixed / progressive, and correspondence-guided.

Every sampler here returns unit-variance Gaussian noise ``[N, C, H, W]`` for ``N`` frames, which is
what a diffusion model expects. They differ in how the frames' noises are correlated:

- ``iid``: independent frames (the flickering baseline);
- ``shared``: one noise for every frame;
- ``mixed`` (PYoCo): ``eps^i = eps_shared + eps_ind^i`` with ``eps_shared ~ N(0, a^2/(1+a^2))`` and
  ``eps_ind ~ N(0, 1/(1+a^2))``: any two frames correlate by ``a^2/(1+a^2)``;
- ``progressive`` (PYoCo): ``eps^i = a/sqrt(1+a^2) eps^{i-1} + eps_ind^i``, ``eps_ind ~ N(0, 1/(1+a^2))``;
- ``warped`` (Kass & Pesare's coherent noise): where pixel ``x`` of frame ``i`` corresponds to
  ``x'`` in frame ``i-1``, ``eps^i(x) = a eps^{i-1}(x') + (1 - a) eps_ind^i(x)``, with
  ``eps^0 = sqrt((1-a)/(1+a)) eps_ind^0`` and disoccluded pixels ``sqrt((1-a)/(1+a)) eps_ind^i``.
  The recursion is stationary with variance ``(1-a)/(1+a)``; divided by its square root it reads
  ``eps^i(x) = a eps^{i-1}(x') + sqrt(1 - a^2) eps_ind^i(x)``, which is what is computed (the warp
  below needs unit-variance input), so corresponding pixels correlate by exactly ``a``.

Taking ``eps^{i-1}(x')`` at a non-integer ``x'`` is a resampling of white noise. Bilinear
interpolation shrinks the variance and correlates neighbours (kept only as a foil,
:func:`warp_bilinear`). Two warps keep the result white and standard normal:

- :func:`warp_nearest` copies the nearest source value; where ``n`` target pixels copied the same
  source value ``v`` each gets ``v/sqrt(n) + z - mean_group(z)`` with fresh ``z ~ N(0, 1)``
  (Go-with-the-Flow's "regaussianisation": the group's sum is kept, the values are independent);
- :func:`warp_integral` (after "How I Warped Your Noise" and its infinite-resolution sequel): each
  target pixel integrates the source's white-noise field over its footprint (sampled at ``k x k``
  points), conditioned on the source pixels, and divides by the square root of the footprint's
  area. Correlation with the source then follows the overlap area instead of jumping between 0 and
  1 under sub-pixel motion, and a zoom-out integrates every source pixel it covers.

Both are vectorised (``bincount`` / ``index_add_`` group sums, no loop over pixels); the first,
materialising implementations are kept in ``tests/reference/noise_warp.py`` as test references.

Correspondences are "pull" maps: for every pixel of the target frame, its continuous position
``(x, y)`` in the source frame, where pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)`` (its
centre is ``(j + 0.5, i + 0.5)``), and a validity mask (False = disoccluded or outside the source).
:func:`sum_pool_noise` and :func:`downsample_correspondence` bring noise and correspondences to a
coarser grid (Stable Diffusion latents are 8x smaller than the image): area sum over ``s x s`` pixels
divided by ``sqrt(s^2)`` keeps noise white and unit-variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError
from text3d.core.registry import Registry


@dataclass(frozen=True)
class Correspondence:
    """Where the pixels of one frame are in another frame.

    Attributes:
        coords: ``[H, W, 2]`` float, ``(x, y)`` continuous pixel coordinates in the other frame
            (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``).
        valid: ``[H, W]`` bool; False where the point is occluded in, or outside, the other frame.
    """

    coords: Tensor
    valid: Tensor

    @property
    def shape(self) -> Tuple[int, int]:
        return int(self.coords.shape[0]), int(self.coords.shape[1])


def identity_coords(height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[H, W, 2]`` pixel centres ``(j + 0.5, i + 0.5)``: the correspondence of a frame to itself."""
    i = torch.arange(height, dtype=dtype) + 0.5
    j = torch.arange(width, dtype=dtype) + 0.5
    return torch.stack([j.view(1, -1).expand(height, width), i.view(-1, 1).expand(height, width)], dim=-1)


# --------------------------------------------------------------------------------------------
# Warps of unit white noise along a pull map
def _randn(shape: Sequence[int], generator: Optional[torch.Generator], like: Tensor) -> Tensor:
    return torch.randn(*shape, generator=generator, dtype=like.dtype).to(like.device)


def warp_nearest(noise: Tensor, coords: Tensor, valid: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Pull unit white noise along a map by nearest neighbour, regaussianising duplicated values.

    Vectorised: one gather of the source values, ``bincount`` for how often each source pixel is
    read, and fresh draws only for disoccluded pixels and for duplicated copies (their group sums by
    ``index_add_``).

    Args:
        noise: ``[C, h, w]`` source noise, i.i.d. N(0, 1).
        coords: ``[H, W, 2]`` source position of every target pixel (see :class:`Correspondence`).
        valid: ``[H, W]`` bool; invalid target pixels (and those mapping outside the source) get fresh noise.
        generator: for the fresh values.

    Returns:
        ``[C, H, W]`` noise, i.i.d. N(0, 1) again; a target pixel whose source value was copied ``n``
        times correlates with it by ``1/sqrt(n)``.
    """
    C, h, w = noise.shape
    H, W = coords.shape[:2]
    x, y = coords[..., 0].reshape(-1), coords[..., 1].reshape(-1)
    # comparisons with NaN are False, so NaN / inf positions drop out here
    ok = valid.reshape(-1) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    # flat source index (truncation is floor for non-negative positions); targets without a source
    # are parked on an extra bin h*w and read pixel 0, then overwritten with fresh noise
    src = torch.where(ok, y.long() * w + x.long(), h * w)
    out = noise.reshape(C, h * w).index_select(1, src.clamp(max=h * w - 1))
    n = torch.bincount(src, minlength=h * w + 1).index_select(0, src)
    fresh = (~ok).nonzero().squeeze(1)
    if fresh.numel():
        out.index_copy_(1, fresh, _randn((C, fresh.numel()), generator, noise))
    dup = ((n > 1) & ok).nonzero().squeeze(1)  # a value copied once stays as it is (v/1 + z - z)
    if dup.numel():
        d_n = n.index_select(0, dup).to(noise.dtype)
        groups, group = torch.unique(src.index_select(0, dup), return_inverse=True)  # 1-D: no dim= needed
        z = _randn((C, dup.numel()), generator, noise)
        group_sum = torch.zeros(C, groups.numel(), dtype=noise.dtype, device=noise.device).index_add_(1, group, z)
        regauss = out.index_select(1, dup) / d_n.sqrt() + (z - group_sum.index_select(1, group) / d_n)
        out.index_copy_(1, dup, regauss)
    return out.view(C, H, W)


def sum_pool_noise(noise: Tensor, s: int) -> Tensor:
    """Area sum over ``s x s`` blocks divided by ``sqrt(s^2)``: white unit noise on an ``s``x coarser grid.

    Args:
        noise: ``[..., C, H, W]`` with ``H`` and ``W`` divisible by ``s``.
    """
    if s == 1:
        return noise
    lead = noise.shape[:-3]
    flat = noise.reshape(-1, *noise.shape[-3:])
    return (F.avg_pool2d(flat, s) * s).reshape(*lead, *flat.shape[1:2], noise.shape[-2] // s, noise.shape[-1] // s)


def _extrapolate_pad(x: Tensor) -> Tensor:
    """Pad ``[C, H, W]`` by one pixel on each side with linear extrapolation (``2 edge - next``)."""
    x = torch.cat([2 * x[:, :1] - x[:, 1:2], x, 2 * x[:, -1:] - x[:, -2:-1]], dim=1) if x.shape[1] > 1 \
        else torch.cat([x, x, x], dim=1)
    return torch.cat([2 * x[:, :, :1] - x[:, :, 1:2], x, 2 * x[:, :, -1:] - x[:, :, -2:-1]], dim=2) if x.shape[2] > 1 \
        else torch.cat([x, x, x], dim=2)


def subpixel_coords(coords: Tensor, k: int) -> Tensor:
    """``[kH, kW, 2]`` source positions of the ``k x k`` sub-pixel centres of every target pixel.

    Bilinear interpolation of the map between pixel centres, linear extrapolation over the outer
    half pixel (so an affine map stays exactly affine up to the borders).
    """
    return _subpixel_grid(coords, k).permute(1, 2, 0)


def _subpixel_grid(coords: Tensor, k: int) -> Tensor:
    """:func:`subpixel_coords` channels first, ``[2, kH, kW]`` contiguous."""
    grid = _extrapolate_pad(torch.nan_to_num(coords, nan=-1e9).permute(2, 0, 1))
    # align_corners=False samples at the sub-pixel centres (j + (a + 0.5)/k)
    fine = F.interpolate(grid[None], scale_factor=k, mode="bilinear", align_corners=False)[0]
    return fine[:, k:-k, k:-k].contiguous()


def warp_integral(noise: Tensor, coords: Tensor, valid: Tensor, k: int = 4,
                  generator: Optional[torch.Generator] = None, reach: int = 4) -> Tensor:
    """Area-preserving warp of unit white noise: each target pixel integrates the source's white-noise
    field over its footprint, conditioned on the source pixels (Chang et al.'s integral noise).

    The footprint of target pixel ``T`` is sampled at ``k x k`` sub-pixel positions (bilinear in the
    map, :func:`subpixel_coords`); ``n_pT`` of them fall into source pixel ``p``, and ``p``'s area is
    shared among the targets reading it in proportion: ``a_pT = n_pT / sum_T' n_pT'``. A white-noise
    field whose integral over ``p`` is ``X_p`` has, over the pieces of ``p``, the integrals
    ``a X_p + sqrt(a) xi_pT - a sum_T' sqrt(a_pT') xi_pT'`` (fresh ``xi ~ N(0, 1)``), which are exactly
    independent ``N(0, a)`` when ``X_p ~ N(0, 1)``; ``T`` sums its pieces and divides by
    ``sqrt(sum_p a_pT)``. So the output is exactly white and standard normal, correlates with each
    source pixel by the overlap area, and an identity or integer translation reproduces the source.
    It agrees with "upsample by ``k``, pull sub-pixels, sum" (``tests/reference/noise_warp.py``) under
    translations, rotations and magnification (a target inside a magnified source pixel gets
    ``sqrt(its area)`` of it, as regaussianised duplicates give); under a zoom-out that pull reads
    only ``k^2`` points of the larger footprint, whereas here the footprint's whole area counts.

    Vectorised: the pairs ``(p, T)`` are found by one ``bincount`` over a window of ``(2 r + 1)^2``
    source pixels around each target's centre (``r <= reach``; sub-pixels farther out, outside the
    source, or of invalid targets are dropped); random draws are one per pair and channel.

    Args:
        noise: ``[C, h, w]`` source noise, i.i.d. N(0, 1).
        coords: ``[H, W, 2]`` source position of every target pixel centre.
        valid: ``[H, W]`` bool; invalid target pixels (and those no sub-pixel of which lands in the
            source) get fresh noise.
        k: sub-pixel samples per pixel side (1 = :func:`warp_nearest`).
        reach: largest window radius in source pixels (a footprint up to ``2 reach`` pixels wide).

    Returns:
        ``[C, H, W]`` i.i.d. N(0, 1) noise.
    """
    if k == 1:
        return warp_nearest(noise, coords, valid, generator)
    C, h, w = noise.shape
    H, W = valid.shape
    p, t, area = _footprint_pairs(coords, valid, h, w, k, reach)
    out = torch.empty(C, H * W, dtype=noise.dtype, device=noise.device)
    total = torch.zeros(H * W, dtype=noise.dtype, device=noise.device).index_add_(0, t, area)
    fresh = (total <= 0).nonzero().squeeze(1)
    if fresh.numel():
        out.index_copy_(1, fresh, _randn((C, fresh.numel()), generator, noise))
    if not p.numel():
        return out.view(C, H, W)
    root = area.sqrt()
    xi = _randn((C, p.numel()), generator, noise) * root
    shared = torch.zeros(C, h * w, dtype=noise.dtype, device=noise.device).index_add_(1, p, xi)
    piece = (noise.reshape(C, h * w) - shared).index_select(1, p) * area + xi
    summed = torch.zeros(C, H * W, dtype=noise.dtype, device=noise.device).index_add_(1, t, piece)
    hit = (total > 0).nonzero().squeeze(1)
    out.index_copy_(1, hit, summed[:, hit] / total[hit].sqrt())
    return out.view(C, H, W)


def _footprint_pairs(coords: Tensor, valid: Tensor, h: int, w: int, k: int, reach: int
                     ) -> Tuple[Tensor, Tensor, Tensor]:
    """The (source pixel ``p``, target pixel ``T``) pairs of a footprint warp and ``p``'s area share ``a_pT``.

    Returns:
        ``p`` and ``T`` flat indices ``[P]`` (long) and ``a_pT`` ``[P]`` (float, summing to 1 over each ``p``).
    """
    H, W = valid.shape
    fine = _subpixel_grid(coords, k).view(2, H, k, W, k)
    centre = torch.nan_to_num(coords, nan=-1.0, posinf=-1.0, neginf=-1.0).floor().permute(2, 0, 1)
    cell = fine.floor()  # the source pixel of each sub-pixel
    d = cell - centre.reshape(2, H, 1, W, 1)  # relative to the centre's
    keep = valid.view(H, 1, W, 1) & (fine[0] >= 0) & (fine[0] < w) & (fine[1] >= 0) & (fine[1] < h)
    lo, hi = torch.where(keep, d, 0.0).aminmax() if keep.numel() else (torch.zeros(()), torch.zeros(()))
    seen = int(max(-float(lo), float(hi)))
    r = min(reach, seen)
    if r < seen:  # sub-pixels beyond the window are dropped
        keep &= (d.abs() <= r).all(0)
    K = 2 * r + 1
    index_type = torch.int32 if H * W * K * K < 2**31 - 1 else torch.long
    # key = T K^2 + (dy + r) K + (dx + r); the per-target part is summed on the [H, W] grid first
    base = torch.arange(0, H * W * K * K, K * K, device=coords.device, dtype=index_type).view(H, 1, W, 1)
    base = base + (r * K + r) - (centre[1] * K + centre[0]).to(index_type).view(H, 1, W, 1)
    key = torch.where(keep, (cell[1] * K + cell[0]).to(index_type) + base, H * W * K * K)
    key = key.reshape(-1)
    counts = torch.bincount(key, minlength=H * W * K * K + 1)[:-1]
    pair = counts.nonzero().squeeze(1)
    n = counts[pair].to(coords.dtype)
    t, off = pair // (K * K), pair % (K * K)
    cx, cy = centre[0].reshape(-1).long()[t], centre[1].reshape(-1).long()[t]
    p = (cy + off // K - r) * w + (cx + off % K - r)
    per_source = torch.zeros(h * w, dtype=n.dtype, device=n.device).index_add_(0, p, n)
    return p, t, n / per_source[p]


def warp_bilinear(noise: Tensor, coords: Tensor, valid: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Bilinear resampling of noise: NOT white (variance shrinks, neighbours correlate). A foil for tests."""
    C, h, w = noise.shape
    gx = coords[..., 0] / w * 2 - 1
    gy = coords[..., 1] / h * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None].to(noise.dtype)
    out = F.grid_sample(noise[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    fresh = _randn(out.shape, generator, noise)
    inside = valid & (coords[..., 0] >= 0) & (coords[..., 0] < w) & (coords[..., 1] >= 0) & (coords[..., 1] < h)
    return torch.where(inside[None], out, fresh)


WARPS = {"nearest": warp_nearest, "integral": warp_integral, "bilinear": warp_bilinear}
"""Warp name -> function ``(noise, coords, valid, generator) -> noise`` (integral takes ``k`` too)."""


def warp(name: str, noise: Tensor, corr: Correspondence, generator: Optional[torch.Generator] = None,
         k: int = 4) -> Tensor:
    """Pull ``noise`` along ``corr`` with the warp called ``name`` (see :data:`WARPS`)."""
    if name not in WARPS:
        raise ConfigError(f"warp: unknown warp {name!r}; valid: {', '.join(WARPS)}")
    if name == "integral":
        return warp_integral(noise, corr.coords, corr.valid, k, generator)
    return WARPS[name](noise, corr.coords, corr.valid, generator)


def downsample_correspondence(corr: Correspondence, s: int, min_valid: float = 0.5) -> Correspondence:
    """A correspondence on a grid ``s`` times coarser in both frames.

    A coarse pixel takes the mean source position of its valid fine pixels, divided by ``s``; it is
    valid where at least ``min_valid`` of its ``s x s`` fine pixels are.
    """
    if s == 1:
        return corr
    H, W = corr.shape
    if H % s or W % s:
        raise ValueError(f"correspondence of {H}x{W} pixels is not divisible by {s}")
    v = corr.valid.to(corr.coords.dtype)[None, None]
    c = torch.nan_to_num(corr.coords.permute(2, 0, 1)[None], nan=0.0) * v
    share = F.avg_pool2d(v, s)
    mean = F.avg_pool2d(c, s) / share.clamp(min=1e-12)
    return Correspondence((mean[0].permute(1, 2, 0)) / s, (share[0, 0] >= min_valid) & (share[0, 0] > 0))


# --------------------------------------------------------------------------------------------
# Sequence samplers
@dataclass
class NoiseSettings:
    """How the noise of consecutive frames is correlated (the ``noise`` keys of ``text3d video``)."""

    type: str = "warped"
    """``iid``, ``shared``, ``mixed`` (PYoCo), ``progressive`` (PYoCo) or ``warped`` (follows correspondences)."""
    alpha: float = bounded(0.9, lo=0.0, hi=1.0, hi_open=True)
    """Correlation parameter in [0, 1): ``warped``: correlation of corresponding pixels of consecutive
    frames; ``mixed`` / ``progressive``: PYoCo's ``alpha``."""
    warp: str = "integral"
    """``warped`` only: ``nearest``, ``integral`` or ``bilinear`` (not white: for comparison only)."""
    upsample: int = bounded(4, lo=1, hi=16)
    """``integral`` warp: sub-pixels per pixel side ``k``."""


NOISES = Registry("noise")


class NoiseSampler:
    """Base class: ``sample(n, shape, generator, correspondences) -> [n, *shape]`` unit Gaussian noise."""

    needs_correspondences = False

    def __init__(self, cfg: NoiseSettings):
        self.cfg = cfg

    def sample(self, n: int, shape: Tuple[int, int, int], generator: Optional[torch.Generator] = None,
               correspondences: Optional[Sequence[Correspondence]] = None) -> Tensor:
        raise NotImplementedError


@NOISES.register("iid", NoiseSettings)
class IIDNoise(NoiseSampler):
    """Independent noise per frame."""

    def sample(self, n, shape, generator=None, correspondences=None):
        return torch.randn(n, *shape, generator=generator)


@NOISES.register("shared", NoiseSettings)
class SharedNoise(NoiseSampler):
    """The same noise for every frame."""

    def sample(self, n, shape, generator=None, correspondences=None):
        return torch.randn(1, *shape, generator=generator).expand(n, *shape).clone()


@NOISES.register("mixed", NoiseSettings)
class MixedNoise(NoiseSampler):
    """PYoCo mixed noise: a shared part of variance ``a^2/(1+a^2)`` plus an independent part of ``1/(1+a^2)``."""

    def sample(self, n, shape, generator=None, correspondences=None):
        a2 = self.cfg.alpha ** 2
        shared = torch.randn(1, *shape, generator=generator) * math.sqrt(a2 / (1 + a2))
        return shared + torch.randn(n, *shape, generator=generator) * math.sqrt(1 / (1 + a2))


@NOISES.register("progressive", NoiseSettings)
class ProgressiveNoise(NoiseSampler):
    """PYoCo progressive noise: ``eps^i = a/sqrt(1+a^2) eps^{i-1} + eps_ind^i``, ``eps_ind ~ N(0, 1/(1+a^2))``."""

    def sample(self, n, shape, generator=None, correspondences=None):
        a = self.cfg.alpha
        ind = torch.randn(n, *shape, generator=generator)
        out = [ind[0]]
        for i in range(1, n):
            out.append(a / math.sqrt(1 + a * a) * out[-1] + ind[i] / math.sqrt(1 + a * a))
        return torch.stack(out)


@NOISES.register("warped", NoiseSettings)
class WarpedNoise(NoiseSampler):
    """Kass & Pesare's recursion along correspondences, normalised to unit variance (see the module doc).

    ``correspondences[i - 1]`` maps frame ``i`` into frame ``i - 1`` (``n - 1`` of them), on the
    noise's own grid.
    """

    needs_correspondences = True

    def sample(self, n, shape, generator=None, correspondences=None):
        if correspondences is None or len(correspondences) != n - 1:
            raise ValueError(f"warped noise of {n} frames needs {n - 1} correspondences, got "
                             f"{None if correspondences is None else len(correspondences)}")
        frames = [torch.randn(*shape, generator=generator)]
        for corr in correspondences:
            frames.append(coherent_step(frames[-1], corr, self.cfg.alpha, self.cfg.warp, generator, self.cfg.upsample))
        return torch.stack(frames)


def coherent_step(previous: Tensor, corr: Correspondence, alpha: float, warp_name: str = "integral",
                  generator: Optional[torch.Generator] = None, k: int = 4) -> Tensor:
    """One normalised step of the coherent-noise recursion.

    ``eps^i = alpha W(eps^{i-1}) + sqrt(1 - alpha^2) eps_ind`` where ``corr`` is valid, ``eps_ind``
    where it is not (disoccluded: independent of the past). With the brief's unnormalised recursion
    this is ``eps / sqrt((1-alpha)/(1+alpha))``.

    Args:
        previous: ``[C, h, w]`` unit noise of frame ``i-1``.
        corr: frame ``i`` -> frame ``i-1``, ``[H, W]``.
    Returns:
        ``[C, H, W]`` unit noise of frame ``i``.
    """
    carried = warp(warp_name, previous, corr, generator, k)
    fresh = torch.randn(carried.shape, generator=generator, dtype=previous.dtype).to(previous.device)
    mixed = alpha * carried + math.sqrt(1.0 - alpha * alpha) * fresh
    return torch.where(corr.valid[None], mixed, fresh)


def check_noise_settings(cfg: NoiseSettings, key: str = "noise") -> None:
    """Raise :class:`ConfigError` for an unknown noise type or warp."""
    NOISES.get(cfg.type)
    if cfg.warp not in WARPS:
        raise ConfigError(f"{key}.warp: unknown warp {cfg.warp!r}; valid: {', '.join(WARPS)}")
    if not 0.0 <= cfg.alpha < 1.0:
        raise ConfigError(f"{key}.alpha: must be in [0, 1), got {cfg.alpha}")
