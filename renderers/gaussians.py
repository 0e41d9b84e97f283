"""3D Gaussian splatting: one rasterisation function, gsplat on CUDA, our own tile-sparse path elsewhere.

:func:`rasterize_gaussians` takes the arguments of ``gsplat.rasterization`` with the same meaning
(``means`` [N,3], ``quats`` [N,4] wxyz, linear ``scales`` [N,3], ``opacities`` [N] in [0,1],
``colors`` [N,D] or SH coefficients [N,K,3] with ``sh_degree``, world-to-camera ``viewmats``
[C,4,4] in OpenCV convention, ``Ks`` [C,3,3]) and returns ``(colors [C,H,W,D(+1)], alphas
[C,H,W,1], meta)``.

The CPU path reproduces gsplat's mathematics ("classic" 3DGS as in the CUDA kernels of gsplat 1.5):

- EWA projection: ``Sigma' = J W Sigma W^T J^T`` with the perspective Jacobian evaluated at the
  camera-space mean clamped to 1.3x the field of view, then a 0.3 px^2 low-pass (``eps2d``);
- an opacity-aware bounding box: ``extend = min(3.33, sqrt(2 ln(opacity / (1/255))))`` standard
  deviations per axis (pixels outside it cannot reach ``alpha >= 1/255``);
- per pixel (centre at ``(x + 0.5, y + 0.5)``) ``alpha = min(0.999, opacity * exp(-sigma))`` with
  ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy`` (conic ``a, b, c``); pairs with ``sigma < 0`` or
  ``alpha < 1/255`` are skipped; front-to-back compositing in depth order stops before the
  Gaussian that would bring the transmittance to ``<= 1e-4``;
- ``rasterize_mode="antialiased"`` (gsplat's, from Mip-Splatting): each opacity times
  ``sqrt(det(Sigma') / det(Sigma' + eps2d I))``, so the low-pass spreads a Gaussian without adding to
  its mass and a scene looks alike at every resolution ("classic" adds mass to Gaussians under a pixel).

How the CPU path stays fast with no Python loop over Gaussians: the image is cut into tiles of
``tile_size``^2 pixels and every Gaussian is listed, in depth order, in the tiles its pixel box
overlaps. Tiles are grouped by the (padded) length of their list, so a group of ``S`` tiles with
``K`` Gaussians each is one dense ``[S, K, P]`` problem: the transmittance is a cumulative sum of
``log(1 - alpha)`` along ``K`` and colours are a batched matrix product. Large groups are split
into pieces and, when gradients are needed and there is more than one piece, each piece is
recomputed in backward (activation checkpointing), so memory stays bounded. Gradients come from
autograd and are the exact derivatives of the forward maths, clamps included (as gsplat's
backward kernels).

:func:`rasterize_gaussians_dense` evaluates every Gaussian at every pixel: the slow reference the
benchmark compares against.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

logger = logging.getLogger(__name__)

ALPHA_THRESHOLD = 1.0 / 255.0
"""Pixel-Gaussian pairs with a smaller alpha are skipped (gsplat's ``ALPHA_THRESHOLD``)."""
ALPHA_MAX = 0.999
"""Alpha is clamped to this (so ``1 - alpha`` never vanishes)."""
TRANSMITTANCE_MIN = 1e-4
"""Compositing of a pixel stops before the Gaussian that would bring its transmittance to this or lower."""
EXTEND = 3.33
"""Largest half-width of a Gaussian's pixel box, in standard deviations per axis."""
RasterizeMode = Literal["classic", "antialiased"]
RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")
SH_C0 = 0.28209479177387814


def sh_dc_to_rgb(dc: Tensor) -> Tensor:
    """RGB of the SH DC coefficients ``[..., 3]``: the degree-0 term plus the +0.5 offset (unclamped)."""
    return SH_C0 * dc + 0.5


# --------------------------------------------------------------------------------------------
# Gaussians -> 2D
def quat_to_rotmat(quats: Tensor) -> Tensor:
    """``[..., 4]`` wxyz quaternions (any norm) -> ``[..., 3, 3]`` rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).view(*quats.shape[:-1], 3, 3)


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariances ``R S S^T R^T``: ``[N, 4]``, ``[N, 3]`` -> ``[N, 3, 3]``."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project_gaussians(means: Tensor, covars: Tensor, opacities: Tensor, viewmats: Tensor, Ks: Tensor,
                      width: int, height: int, eps2d: float = 0.3, near_plane: float = 0.01,
                      far_plane: float = 1e10, radius_clip: float = 0.0,
                      rasterize_mode: RasterizeMode = "classic") -> Dict[str, Tensor]:
    """EWA projection of ``N`` Gaussians into ``C`` pinhole cameras.

    Returns:
        ``means2d`` [C,N,2] pixels, ``conics`` [C,N,3] (upper triangle of the inverse 2D
        covariance), ``depths`` [C,N] camera z, ``radii`` [C,N,2] int32 pixel half-widths of the
        box (0 for culled Gaussians: behind the near plane, beyond the far plane, too faint, too
        small, off-screen or non-finite), ``opacities`` [C,N] (times the antialiasing compensation
        ``sqrt(det(Sigma') / det(Sigma' + eps2d I))`` in ``"antialiased"`` mode).
    """
    R, t = viewmats[:, None, :3, :3], viewmats[:, None, :3, 3]  # [C,1,3,3], [C,1,3]
    mc = (R @ means[None, :, :, None])[..., 0] + t  # [C,N,3]
    cov_c = R @ covars[None] @ R.transpose(-1, -2)  # [C,N,3,3]
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    x, y, z = mc.unbind(-1)
    zs = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))  # culled below; keeps maths finite
    lim_x = 0.3 * 0.5 * width / fx
    lim_y = 0.3 * 0.5 * height / fy
    tx = zs * torch.minimum(torch.maximum(x / zs, -(cx / fx + lim_x)), (width - cx) / fx + lim_x)
    ty = zs * torch.minimum(torch.maximum(y / zs, -(cy / fy + lim_y)), (height - cy) / fy + lim_y)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], -1).view(*zs.shape, 2, 3)
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    a, b, c = cov2d[..., 0, 0] + eps2d, 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    opacities = opacities.expand_as(z)
    if rasterize_mode == "antialiased":  # det(Sigma') / det(Sigma' + eps I)
        det_orig = det - eps2d * (a + c) + eps2d * eps2d
        opacities = opacities * torch.sqrt((det_orig / det.clamp(min=1e-10)).clamp(min=0.0))
    det_safe = det.clamp(min=1e-10)
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)

    with torch.no_grad():
        op = opacities.detach()
        extend = torch.sqrt(2.0 * torch.log(op.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=EXTEND)
        rx = torch.ceil(extend * a.detach().clamp(min=0).sqrt())
        ry = torch.ceil(extend * c.detach().clamp(min=0).sqrt())
        m2 = means2d.detach()
        finite = torch.isfinite(torch.cat([m2, conics.detach(), z[..., None], rx[..., None], ry[..., None]], -1)).all(-1)
        valid = (finite & (det > 0) & (z > near_plane) & (z < far_plane) & (op >= ALPHA_THRESHOLD)
                 & ((rx > radius_clip) | (ry > radius_clip))
                 & (m2[..., 0] + rx > 0) & (m2[..., 0] - rx < width) & (m2[..., 1] + ry > 0) & (m2[..., 1] - ry < height))
        radii = torch.where(valid[..., None], torch.stack([rx, ry], -1).nan_to_num(0.0), 0.0).to(torch.int32)
    return {"means2d": means2d, "conics": conics, "depths": z, "radii": radii, "opacities": opacities}


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Real spherical harmonics up to ``degree`` (0-3) at unit-normalised ``dirs`` [...,3]; coeffs [...,K,3].

    The basis and signs of the 3DGS reference implementation, so .ply files from other tools
    render the same. Returns ``[..., 3]`` (without the +0.5 offset).
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree: must be 0-3, got {degree}")
    if coeffs.shape[-2] < (degree + 1) ** 2:
        raise ValueError(f"colors: sh_degree {degree} needs {(degree + 1) ** 2} coefficients per Gaussian, "
                         f"got {coeffs.shape[-2]}")
    d = F.normalize(dirs, dim=-1)
    x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]
    out = SH_C0 * coeffs[..., 0, :]
    if degree >= 1:
        c1 = 0.4886025119029199
        out = out - c1 * y * coeffs[..., 1, :] + c1 * z * coeffs[..., 2, :] - c1 * x * coeffs[..., 3, :]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        c2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
        out = (out + c2[0] * xy * coeffs[..., 4, :] + c2[1] * yz * coeffs[..., 5, :]
               + c2[2] * (2 * zz - xx - yy) * coeffs[..., 6, :] + c2[3] * xz * coeffs[..., 7, :]
               + c2[4] * (xx - yy) * coeffs[..., 8, :])
    if degree >= 3:
        c3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
              -0.4570457994644658, 1.445305721320277, -0.5900435899266435)
        out = (out + c3[0] * y * (3 * xx - yy) * coeffs[..., 9, :] + c3[1] * xy * z * coeffs[..., 10, :]
               + c3[2] * y * (4 * zz - xx - yy) * coeffs[..., 11, :]
               + c3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[..., 12, :]
               + c3[4] * x * (4 * zz - xx - yy) * coeffs[..., 13, :] + c3[5] * z * (xx - yy) * coeffs[..., 14, :]
               + c3[6] * x * (xx - 3 * yy) * coeffs[..., 15, :])
    return out


# --------------------------------------------------------------------------------------------
# Input checks
def _check_inputs(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                  viewmats: Tensor, Ks: Tensor, width: int, height: int, sh_degree: Optional[int],
                  render_mode: str) -> None:
    N = means.shape[0] if means.dim() == 2 else -1
    checks = [("means", means, (N, 3)), ("quats", quats, (N, 4)), ("scales", scales, (N, 3)),
              ("opacities", opacities, (N,))]
    for name, value, shape in checks:
        if tuple(value.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {tuple(value.shape)}")
    C = viewmats.shape[0] if viewmats.dim() == 3 else -1
    if tuple(viewmats.shape) != (C, 4, 4) or tuple(Ks.shape) != (C, 3, 3):
        raise ValueError(f"viewmats/Ks: expected [C,4,4] and [C,3,3], got {tuple(viewmats.shape)} and {tuple(Ks.shape)}")
    if sh_degree is None:
        if colors.dim() not in (2, 3) or colors.shape[-2] != N or (colors.dim() == 3 and colors.shape[0] != C):
            raise ValueError(f"colors: expected [N,D] or [C,N,D] post-activation colours with N={N}, C={C}, "
                             f"got {tuple(colors.shape)} (pass sh_degree for SH coefficients [N,K,3])")
    elif colors.dim() != 3 or colors.shape[0] != N or colors.shape[-1] != 3:
        raise ValueError(f"colors: sh_degree={sh_degree} expects SH coefficients [N,K,3] with N={N}, "
                         f"got {tuple(colors.shape)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"width/height: must be positive, got {width}x{height}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode: {render_mode!r} is not one of {', '.join(RENDER_MODES)}")
    if N > 0 and bool((scales < 0).any()):
        raise ValueError(f"scales: {int((scales < 0).any(-1).sum())} Gaussians have negative scales; "
                         f"scales are linear standard deviations (>= 0): pass exp(log_scales)")


def _finite_rows(*tensors: Tensor) -> Tensor:
    """``[N]`` bool: every entry of row i of every tensor is finite."""
    ok = torch.ones(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
    for t in tensors:
        finite = torch.isfinite(t.detach())
        ok &= finite.flatten(1).all(-1) if t.dim() > 1 else finite
    return ok


# --------------------------------------------------------------------------------------------
# The rasteriser
def rasterize_gaussians(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int,
    near_plane: float = 0.01, far_plane: float = 1e10, radius_clip: float = 0.0, eps2d: float = 0.3,
    sh_degree: Optional[int] = None, backgrounds: Optional[Tensor] = None, render_mode: RenderMode = "RGB",
    backend: Literal["auto", "torch", "gsplat"] = "auto", tile_size: int = 8, max_pairs: int = 1 << 23,
    rasterize_mode: RasterizeMode = "classic",
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Render ``C`` images of ``N`` 3D Gaussians (arguments as ``gsplat.rasterization``).

    Args:
        means, quats, scales, opacities: ``[N,3]``, ``[N,4]`` (wxyz, normalised here), ``[N,3]``
            (linear, >= 0), ``[N]`` (in [0, 1]).
        colors: ``[N,D]`` or ``[C,N,D]`` colours, or ``[N,K,3]`` SH coefficients with ``sh_degree``
            (evaluated towards each camera, +0.5, clamped at 0 as in 3DGS).
        viewmats, Ks: ``[C,4,4]`` world-to-camera (OpenCV: x right, y down, z forward) and ``[C,3,3]``.
        width, height: image size in pixels.
        near_plane, far_plane, radius_clip, eps2d: culling and the low-pass, as gsplat.
        backgrounds: ``[C,D]`` (or ``[D]``) colour behind the Gaussians; default black.
        render_mode: ``"RGB"``, ``"D"`` (accumulated z), ``"ED"`` (expected z), ``"RGB+D"``, ``"RGB+ED"``.
        backend: ``"auto"`` = gsplat for CUDA tensors when it imports, our PyTorch path otherwise.
        tile_size, max_pairs: CPU path: tile side in pixels; Gaussian-pixel pairs per piece beyond which
            pieces are checkpointed (bounds memory).
        rasterize_mode: ``"classic"`` (3DGS) or ``"antialiased"`` (opacities compensated for the low-pass, as gsplat).

    Returns:
        ``colors`` [C,H,W,X], ``alphas`` [C,H,W,1] and ``meta`` with ``means2d`` [C,N,2] (call
        ``retain_grad()`` on it before ``backward`` for densification), ``radii`` [C,N,2], ``visible`` [C,N],
        ``depths``, ``conics``, ``opacities`` [C,N] (as drawn), ``width``, ``height``, ``n_cameras``, ``backend``.
        Non-finite Gaussians are not drawn (``meta["n_nonfinite"]`` counts them).

    Raises:
        ValueError: a shape that does not match, negative scales, an unknown render mode.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, render_mode)
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode: {rasterize_mode!r} is not one of {', '.join(RASTERIZE_MODES)}")
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda and _gsplat_available())
    if use_gsplat:
        return _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane,
                                 far_plane, radius_clip, eps2d, sh_degree, backgrounds, render_mode, rasterize_mode)
    if backend not in ("auto", "torch"):
        raise ValueError(f"backend: {backend!r} is not one of auto, torch, gsplat")
    per_gaussian_colors = colors.transpose(0, 1) if sh_degree is None and colors.dim() == 3 else colors
    finite = _finite_rows(means, quats, scales, opacities, per_gaussian_colors)
    n_nonfinite = int((~finite).sum())
    if n_nonfinite:  # zero them so no NaN reaches the maths; they are culled below
        keep = finite.view(-1, 1)
        means, quats, scales = (torch.where(keep, v, 0.0) for v in (means, quats, scales))
        opacities = torch.where(finite, opacities, 0.0)
    opacities = opacities.clamp(0.0, 1.0)
    proj = project_gaussians(means, quat_scale_to_covar(quats, scales), opacities, viewmats, Ks, width, height,
                             eps2d, near_plane, far_plane, radius_clip, rasterize_mode)
    C = viewmats.shape[0]
    feats = _gaussian_features(means, colors, viewmats, sh_degree, proj["radii"], C)
    feats = torch.where(torch.isfinite(feats), feats, 0.0)
    want_rgb, want_depth = render_mode in ("RGB", "RGB+D", "RGB+ED"), render_mode != "RGB"
    channels = ([feats] if want_rgb else []) + ([proj["depths"][..., None]] if want_depth else [])
    feats = torch.cat(channels, dim=-1)  # [C,N,X]
    image, alpha = _composite_tiles(proj, proj["opacities"], feats, width, height, tile_size, max_pairs)
    if render_mode in ("ED", "RGB+ED"):
        image = torch.cat([image[..., :-1], image[..., -1:] / alpha.clamp(min=1e-10)], dim=-1)
    if backgrounds is not None and want_rgb:
        bg = backgrounds.to(image).expand(C, -1)[:, None, None, :]
        D = bg.shape[-1]
        image = torch.cat([image[..., :D] + (1 - alpha) * bg, image[..., D:]], dim=-1)
    meta = {**proj, "visible": (proj["radii"] > 0).all(-1), "width": width,
            "height": height, "n_cameras": C,
            "tile_size": tile_size, "backend": "torch", "n_nonfinite": n_nonfinite}
    return image, alpha, meta


def _gaussian_features(means: Tensor, colors: Tensor, viewmats: Tensor, sh_degree: Optional[int], radii: Tensor,
                       C: int) -> Tensor:
    """``[C, N, D]`` per-camera colours (SH evaluated towards each camera centre)."""
    if sh_degree is None:
        return colors.expand(C, -1, -1) if colors.dim() == 2 else colors
    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C,3]
    dirs = means[None] - campos[:, None]
    rgb = eval_sh(sh_degree, dirs, colors[None].expand(C, -1, -1, -1))
    return torch.clamp_min(rgb + 0.5, 0.0)


def _tile_rows(radii: Tensor, means2d: Tensor, depths: Tensor, tiles_x: int, tiles_y: int, ts: int):
    """Rows of (camera, tile, Gaussian) overlaps sorted by (camera, tile, depth); all index tensors."""
    C, N = depths.shape
    vis = (radii > 0).all(-1)
    cam, gid = vis.nonzero(as_tuple=True)
    m, r = means2d.detach()[cam, gid], radii[cam, gid].to(means2d.dtype)
    x0 = torch.floor((m[:, 0] - r[:, 0]) / ts).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / ts).clamp(0, tiles_x).long()
    y0 = torch.floor((m[:, 1] - r[:, 1]) / ts).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / ts).clamp(0, tiles_y).long()
    bw, bh = x1 - x0, y1 - y0
    counts = bw * bh
    item = torch.repeat_interleave(torch.arange(len(cam), device=cam.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(item), device=cam.device) - start[item]
    tx, ty = x0[item] + local % bw[item], y0[item] + local // bw[item]
    tile = (cam[item] * tiles_y + ty) * tiles_x + tx  # global tile id over all cameras
    # sort by depth, then stably by tile: rows of a tile end up front to back
    order = torch.argsort(depths.detach()[cam[item], gid[item]], stable=True)
    order = order[torch.argsort(tile[order], stable=True)]
    return cam[item][order], gid[item][order], tile[order]


def _bucket_size(count: Tensor) -> Tensor:
    """Padded length of a tile's Gaussian list: the next of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (waste < 1.5x)."""
    c = count.clamp(min=1).double()
    p = torch.floor(torch.log2(c))
    lo = 2.0 ** p
    return torch.where(c <= lo, lo, torch.where(c <= 1.5 * lo, torch.floor(1.5 * lo), 2 * lo)).long()


def _composite_tiles(proj: Dict[str, Tensor], opacities: Tensor, feats: Tensor, width: int, height: int,
                     ts: int, max_pairs: int) -> Tuple[Tensor, Tensor]:
    """Front-to-back compositing per tile of ``opacities`` ``[C,N]`` and ``feats`` ``[C,N,X]``; returns
    ``[C,H,W,X]`` and ``[C,H,W,1]`` (no background).

    Tiles are grouped by their padded Gaussian count ``K`` (:func:`_bucket_size`); a group of ``S``
    tiles is one dense ``[S, K, P]`` problem: transmittance by a cumulative sum of ``log(1 - alpha)``
    along ``K``, colours by a batched matrix product. Groups whose pair count exceeds ``max_pairs``
    are split; when more than one piece is needed and gradients are on, each piece is checkpointed.
    """
    C, N, X = feats.shape
    tiles_x, tiles_y = -(-width // ts), -(-height // ts)
    dev, dt = feats.device, feats.dtype
    P = ts * ts
    cam, gid, tile = _tile_rows(proj["radii"], proj["means2d"], proj["depths"], tiles_x, tiles_y, ts)
    out = torch.zeros(C * tiles_x * tiles_y, P, X + 1, device=dev, dtype=dt)
    if len(tile):
        seg_tiles, seg, counts = torch.unique_consecutive(tile, return_inverse=True, return_counts=True)
        seg_first = torch.cumsum(counts, 0) - counts
        k = torch.arange(len(tile), device=dev) - seg_first[seg]
        size = _bucket_size(counts)
        # per-row attributes, plus a dummy row (opacity 0: never drawn) that padding points at
        R = len(tile)
        rows = {"m2": proj["means2d"][cam, gid], "con": proj["conics"][cam, gid], "op": opacities[cam, gid],
                "feats": feats[cam, gid]}
        rows = {key: torch.cat([v, torch.zeros_like(v[:1])]) for key, v in rows.items()}
        local = seg_tiles % (tiles_x * tiles_y)
        origins = torch.stack([(local % tiles_x) * ts, (local // tiles_x) * ts], -1).to(dt)
        pieces = []
        for K in torch.unique(size).tolist():
            segs = (size == K).nonzero()[:, 0]
            pos = torch.full((len(size),), -1, dtype=torch.long, device=dev)
            pos[segs] = torch.arange(len(segs), device=dev)
            idx = torch.full((len(segs), K), R, dtype=torch.long, device=dev)
            in_group = pos[seg] >= 0
            idx[pos[seg][in_group], k[in_group]] = torch.arange(R, device=dev)[in_group]
            step = max(1, max_pairs // (K * P))
            pieces += [(segs[i:i + step], idx[i:i + step]) for i in range(0, len(segs), step)]
        grads = torch.is_grad_enabled() and any(v.requires_grad for v in rows.values())
        use_ckpt = grads and sum(idx.numel() for _, idx in pieces) * P > max_pairs
        results = []
        for segs, idx in pieces:
            args = (rows["m2"][idx], rows["con"][idx], rows["op"][idx], rows["feats"][idx], origins[segs], ts)
            results.append(checkpoint(_composite_group, *args, use_reentrant=False) if use_ckpt
                           else _composite_group(*args))
        order = torch.cat([segs for segs, _ in pieces])
        out = out.index_put((seg_tiles[order],), torch.cat(results))
    out = out.view(C, tiles_y, tiles_x, ts, ts, X + 1).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(C, tiles_y * ts, tiles_x * ts, X + 1)[:, :height, :width]
    return out[..., :X], out[..., X:]


def _composite_group(m2: Tensor, con: Tensor, op: Tensor, feats: Tensor, origin: Tensor, ts: int) -> Tensor:
    """``S`` tiles with ``K`` depth-sorted Gaussians each (``m2`` [S,K,2], ``con`` [S,K,3], ``op`` [S,K],
    ``feats`` [S,K,X], tile ``origin`` [S,2]) -> ``[S, ts*ts, X+1]`` colour sums and alpha.

    ``sigma`` is built from per-column and per-row terms (``dx`` depends only on the pixel's column,
    ``dy`` only on its row), so only three operations run at full ``[S, K, ts, ts]`` size. Pixels of
    edge tiles that fall outside the image are computed and cropped later. ``sigma >= 0`` always
    holds here: the conic of a visible Gaussian is positive definite.
    """
    centres = torch.arange(ts, device=m2.device, dtype=m2.dtype) + 0.5
    dx = m2[..., 0:1] - (origin[:, None, 0:1] + centres)  # [S,K,ts] by column
    dy = m2[..., 1:2] - (origin[:, None, 1:2] + centres)  # [S,K,ts] by row
    col = 0.5 * con[..., 0:1] * dx * dx  # [S,K,ts]
    row = 0.5 * con[..., 2:3] * dy * dy
    sigma = (row[..., :, None] + col[..., None, :]) + (con[..., 1:2] * dy)[..., :, None] * dx[..., None, :]
    alpha = op[..., None] * torch.exp(-sigma.flatten(2))  # [S,K,P], P = ts*ts (row-major)
    alpha = torch.where(alpha >= ALPHA_THRESHOLD, alpha.clamp(max=ALPHA_MAX), 0.0)
    log1m = torch.log1p(-alpha)
    incl = torch.cumsum(log1m, dim=1)
    w = torch.where(incl > math.log(TRANSMITTANCE_MIN), alpha * torch.exp(incl - log1m), 0.0)  # [S,K,P]
    rgb = torch.bmm(w.transpose(1, 2), feats)  # [S,P,X]
    return torch.cat([rgb, w.sum(1)[..., None]], dim=-1)


# --------------------------------------------------------------------------------------------
# Dense reference (every Gaussian x every pixel)
def rasterize_gaussians_dense(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                              viewmats: Tensor, Ks: Tensor, width: int, height: int, near_plane: float = 0.01,
                              far_plane: float = 1e10, eps2d: float = 0.3, backgrounds: Optional[Tensor] = None,
                              pixel_chunk: int = 4096, rasterize_mode: RasterizeMode = "classic") -> Tuple[Tensor, Tensor]:
    """The slow reference: every visible Gaussian at every pixel, compositing by ``cumprod`` (``[N,D]`` colours).

    Same maths as the tile path, none of its sparsity; chunked over pixels to bound memory.
    """
    proj = project_gaussians(means, quat_scale_to_covar(quats, scales), opacities.clamp(0, 1), viewmats, Ks,
                             width, height, eps2d, near_plane, far_plane, rasterize_mode=rasterize_mode)
    C = viewmats.shape[0]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=means.dtype), torch.arange(width, dtype=means.dtype),
                            indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1) + 0.5  # [HW,2]
    images, alphas = [], []
    for ci in range(C):
        vis = (proj["radii"][ci] > 0).all(-1)
        order = torch.argsort(proj["depths"][ci].detach().masked_fill(~vis, float("inf")))
        order = order[vis[order]]
        m2, con = proj["means2d"][ci, order], proj["conics"][ci, order]
        op, col = proj["opacities"][ci, order], colors[order]
        rows_img, rows_a = [], []
        for s in range(0, pix.shape[0], pixel_chunk):
            d = m2[:, None, :] - pix[None, s:s + pixel_chunk]  # [G,P,2]
            sigma = 0.5 * (con[:, 0:1] * d[..., 0] ** 2 + con[:, 2:3] * d[..., 1] ** 2) + con[:, 1:2] * d[..., 0] * d[..., 1]
            alpha = torch.clamp(op[:, None] * torch.exp(-sigma), max=ALPHA_MAX)
            alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, 0.0)
            trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:1]), 1 - alpha], 0), 0)  # [G+1,P]
            keep = trans[1:] > TRANSMITTANCE_MIN
            w = torch.where(keep, alpha * trans[:-1], 0.0)
            rows_img.append(w.T @ col)
            rows_a.append(w.sum(0))
        img = torch.cat(rows_img).view(height, width, -1)
        a = torch.cat(rows_a).view(height, width, 1)
        if backgrounds is not None:
            img = img + (1 - a) * backgrounds.expand(C, -1)[ci]
        images.append(img)
        alphas.append(a)
    return torch.stack(images), torch.stack(alphas)


# --------------------------------------------------------------------------------------------
# gsplat
def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401  (imported for its CUDA extension check only)
    except Exception:  # pragma: no cover - gsplat is a dependency, but a broken CUDA install should not crash
        logger.warning("gsplat does not import; using the PyTorch rasteriser on CUDA")
        return False
    return True


def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
                      radius_clip, eps2d, sh_degree, backgrounds, render_mode, rasterize_mode="classic"):
    if not means.is_cuda:
        raise ValueError("backend: 'gsplat' needs CUDA tensors (gsplat 1.5 has no CPU rasteriser); use 'torch'")
    from gsplat import rasterization

    if backgrounds is not None:
        backgrounds = backgrounds.to(means).expand(viewmats.shape[0], -1)
    colors_out, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree, packed=False,
        backgrounds=backgrounds, render_mode=render_mode, rasterize_mode=rasterize_mode)
    meta["backend"] = "gsplat"
    meta["visible"] = (meta["radii"] > 0).all(-1)
    meta["n_nonfinite"] = 0
    return colors_out, alphas, meta
