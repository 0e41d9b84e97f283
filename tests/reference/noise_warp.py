"""The first, simpler implementations of the white-noise warps of :mod:`text3d.video.noise`, kept as references
(test and benchmark code only: the package does not ship them).

:func:`warp_nearest_pull` is the nearest warp with boolean-mask indexing; :func:`warp_integral_subpixel`
materialises the ``k``-times finer grid: conditional upsampling of the source (``X/k + Z - blockmean(Z)``,
``k^2`` fresh draws per source pixel), a nearest pull of the sub-pixels with regaussianised duplicates,
and the area sum back to pixels. The library's warps give the same statistics (tests compare them)
at a fraction of the cost (``benchmarks/bench_noise_warp.py`` prints the ratio).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.video.noise import _randn, subpixel_coords, sum_pool_noise


def _nearest_source(coords: Tensor, valid: Tensor, h: int, w: int) -> Tuple[Tensor, Tensor]:
    """Which target pixels read a source pixel (``ok [H*W]``), and the flat index into the ``h x w``
    source of the pixel containing each of their positions (``[ok.sum()]``)."""
    x, y = coords[..., 0].reshape(-1), coords[..., 1].reshape(-1)
    # comparisons with NaN are False, so NaN / inf positions drop out here
    ok = valid.reshape(-1) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    flat = y.long() * w + x.long()  # truncation is floor where ok (non-negative); garbage elsewhere
    return flat[ok], ok


def warp_nearest_pull(noise: Tensor, coords: Tensor, valid: Tensor,
                      generator: Optional[torch.Generator] = None) -> Tensor:
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



def warp_integral_subpixel(noise: Tensor, coords: Tensor, valid: Tensor, k: int = 4,
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
        return warp_nearest_pull(noise, coords, valid, generator)
    fine_src = upsample_conditional(noise, k, generator)
    fine_coords = subpixel_coords(coords, k) * k
    H, W = valid.shape
    fine_valid = valid[:, None, :, None].expand(H, k, W, k).reshape(H * k, W * k)
    fine = warp_nearest_pull(fine_src, fine_coords, fine_valid, generator)
    return sum_pool_noise(fine, k)


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
