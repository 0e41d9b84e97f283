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
- :func:`warp_integral` (after "How I Warped Your Noise"): each source pixel is split into ``k x k``
  sub-pixels conditioned on it (``X/k + Z - blockmean(Z)``: their block sum is ``k X``), the target's
  sub-pixels pull their nearest source sub-pixel (with regaussianisation of duplicates) and each
  target pixel is the sum of its ``k^2`` sub-pixels divided by ``sqrt(k^2)``. Correlation with the
  source then follows the overlap area instead of jumping between 0 and 1 under sub-pixel motion.

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

from .bounds import bounded
from .errors import ConfigError
from .registry import Registry


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


def _nearest_source(coords: Tensor, valid: Tensor, h: int, w: int) -> Tuple[Tensor, Tensor]:
    """Which target pixels read a source pixel (``ok [H*W]``), and the flat index into the ``h x w``
    source of the pixel containing each of their positions (``[ok.sum()]``)."""
    x, y = coords[..., 0].reshape(-1), coords[..., 1].reshape(-1)
    # comparisons with NaN are False, so NaN / inf positions drop out here
    ok = valid.reshape(-1) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    flat = y.long() * w + x.long()  # truncation is floor where ok (non-negative); garbage elsewhere
    return flat[ok], ok


def warp_nearest(noise: Tensor, coords: Tensor, valid: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Pull unit white noise along a map by nearest neighbour, regaussianising duplicated values.

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
    idx, ok = _nearest_source(coords, valid, h, w)
    out = torch.empty(C, H * W, dtype=noise.dtype, device=noise.device)
    fresh = ~ok
    n_fresh = int(fresh.sum())
    if n_fresh:
        out[:, fresh] = _randn((C, n_fresh), generator, noise)
    if idx.numel():
        values = noise.reshape(C, -1)[:, idx]
        n = torch.bincount(idx, minlength=h * w)[idx]
        dup = n > 1  # a value copied once stays as it is (v/1 + z - z)
        if bool(dup.any()):
            d_idx, d_n = idx[dup], n[dup].to(noise.dtype)
            z = _randn((C, d_idx.numel()), generator, noise)
            group_sum = torch.zeros(C, h * w, dtype=noise.dtype, device=noise.device).index_add_(1, d_idx, z)
            values[:, dup] = values[:, dup] / d_n.sqrt() + (z - group_sum[:, d_idx] / d_n)
        out[:, ok] = values
    return out.view(C, H, W)


def upsample_conditional(noise: Tensor, k: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Split each pixel into ``k x k`` unit-variance sub-pixels whose block sum is ``k`` times the pixel.

    ``X/k + Z - blockmean(Z)`` with fresh ``Z ~ N(0, 1)``: the sub-pixels are i.i.d. N(0, 1) and
    ``sum(block) / k == X`` (Chang et al., conditional upsampling of white noise).

    Args:
        noise: ``[C, h, w]``.
    Returns:
        ``[C, k h, k w]``.
    """
    C, h, w = noise.shape
    z = _randn((C, h * k, w * k), generator, noise)
    block_mean = F.avg_pool2d(z[None], k)[0]
    blocks = z.view(C, h, k, w, k)
    blocks += (noise / k - block_mean)[:, :, None, :, None]
    return z


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
    grid = _extrapolate_pad(torch.nan_to_num(coords, nan=-1e9).permute(2, 0, 1))
    # align_corners=False samples at the sub-pixel centres (j + (a + 0.5)/k)
    fine = F.interpolate(grid[None], scale_factor=k, mode="bilinear", align_corners=False)[0]
    return fine[:, k:-k, k:-k].permute(1, 2, 0)


def warp_integral(noise: Tensor, coords: Tensor, valid: Tensor, k: int = 4,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Area-preserving warp of unit white noise: conditional upsampling by ``k``, nearest pull of the
    sub-pixels (regaussianised), area sum back to pixels.

    Args:
        noise: ``[C, h, w]`` source noise, i.i.d. N(0, 1).
        coords: ``[H, W, 2]`` source position of every target pixel centre; sub-pixel positions are
            interpolated bilinearly from it (so a zoom or a rotation changes each pixel's footprint).
        valid: ``[H, W]`` bool; invalid target pixels get fresh noise.
        k: sub-pixels per pixel side (1 = :func:`warp_nearest`).

    Returns:
        ``[C, H, W]`` i.i.d. N(0, 1) noise.
    """
    if k == 1:
        return warp_nearest(noise, coords, valid, generator)
    fine_src = upsample_conditional(noise, k, generator)
    fine_coords = subpixel_coords(coords, k) * k
    H, W = valid.shape
    fine_valid = valid[:, None, :, None].expand(H, k, W, k).reshape(H * k, W * k)
    fine = warp_nearest(fine_src, fine_coords, fine_valid, generator)
    return sum_pool_noise(fine, k)


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
