"""The NeRF field (``implicit-volume``): a multiresolution hash-grid encoding and a small MLP.

The field maps a world point in the scene box ``[-radius, radius]^3`` to a density and an albedo,
like threestudio's ``implicit-volume`` (DreamFusion's NeRF with instant-ngp's encoding). Everything
is pure PyTorch so the same module runs on CPU and CUDA.

Hash-grid encoding (Müller et al., "Instant Neural Graphics Primitives", 2022): level ``l`` is a
grid of ``res_l = floor(base_resolution * per_level_scale**l)`` cells per axis over the unit cube;
its ``(res_l + 1)^3`` vertices either fit in the level's table (indexed densely) or are hashed into
``2**log2_hashmap_size`` entries with ``x * 1 xor y * 2654435761 xor z * 805459861``. A point's
feature at a level is the trilinear interpolation of its cell's 8 vertex features; the features of
all levels are concatenated. All levels and points share one gather.

CPU speed: the cost is dominated by the ``N x levels x 8`` random gathers (and the scatter-add in
the backward pass), so on CPU use fewer levels and a smaller table:
:meth:`ImplicitVolumeConfig.cpu_preset` (8 levels, 2^15 entries, finest resolution 256; 0.46M
table values) is 4x faster per sample than threestudio's defaults (16 levels, 2^19 entries,
finest 4096; 13.6M values, which also make every Adam step slow), and a 64x64 render cannot
resolve the finer levels anyway. Measured on the 2-core development CPU, 40k points, forward +
backward, one thread: 0.15 s vs 0.62 s.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text3d.core.bounds import bounded, check_choice
from text3d.core.errors import ConfigError

from .registry import GEOMETRIES

logger = logging.getLogger(__name__)

# instant-ngp's spatial-hash primes for x, y, z.
HASH_PRIMES = (1, 2654435761, 805459861)


@dataclass
class ImplicitVolumeConfig:
    """A density + albedo field on a hash grid (threestudio ``implicit-volume``)."""

    type: str = "implicit-volume"
    """Geometry type; ``implicit-volume``."""
    radius: float = bounded(1.0, lo=0, lo_open=True)
    """Half side of the scene box ``[-radius, radius]^3``, world units. Density is 0 outside."""
    n_levels: int = bounded(16, lo=1, hi=32)
    """Hash-grid levels L (CPU preset: 8)."""
    n_features_per_level: int = bounded(2, lo=1, hi=8)
    """Features per level F; the encoding has ``L * F`` channels."""
    log2_hashmap_size: int = bounded(19, lo=4, hi=30)
    """log2 of the entries per hashed level T (CPU preset: 15)."""
    base_resolution: int = bounded(16, lo=1)
    """Cells per axis of the coarsest level."""
    per_level_scale: float = bounded(1.447269237440378, lo=1)
    """Resolution growth between levels; the finest level has
    ``base_resolution * per_level_scale**(L-1)`` cells per axis (default: 4096; CPU preset: 256,
    i.e. ``(256 / 16) ** (1 / 7) = 1.4860``)."""
    mlp_hidden_dim: int = bounded(64, lo=1)
    """Width of the MLP's hidden layers."""
    mlp_hidden_layers: int = bounded(1, lo=0)
    """Number of hidden layers of the MLP (1 or 2 are typical)."""
    density_activation: str = "softplus"
    """``softplus`` or ``exp`` (threestudio's shifted truncated exp: ``exp(x - 1)`` whose gradient
    is computed with ``x`` clamped to 15)."""
    density_bias: str = "blob_magic3d"
    """Density offset added before the activation: ``blob_magic3d`` (``scale * (1 - r / std)``),
    ``blob_dreamfusion`` (``scale * exp(-r^2 / (2 std^2))``) or ``none``; ``r`` = distance to the origin."""
    density_blob_scale: float = bounded(10.0, lo=0)
    """Scale of the density blob."""
    density_blob_std: float = bounded(0.5, lo=0, lo_open=True)
    """Radius parameter of the density blob, world units."""
    normal_type: str = "finite_difference"
    """How normals ``-normalize(grad density)`` are computed: ``finite_difference`` (central
    differences, 6 extra density evaluations: ~7x the cost of a render without normals) or
    ``analytic`` (the exact gradient, ~1.5x; sharper, so noisier on fine hash levels). Both are
    differentiable in training."""
    finite_difference_eps: float = bounded(0.01, lo=0, lo_open=True)
    """Step of the central differences as a fraction of ``radius``."""
    seed: Optional[int] = bounded(None, lo=0)
    """Seed of the parameter initialisation; ``None`` = drawn from the caller's RNG state (a run
    seeds it with the top-level ``seed``)."""

    @classmethod
    def cpu_preset(cls, **overrides) -> "ImplicitVolumeConfig":
        """The recommended CPU settings: a smaller encoding (see the module docstring) and analytic
        normals (~1.5x the cost of a render without normals instead of ~7x)."""
        values = dict(n_levels=8, n_features_per_level=2, log2_hashmap_size=15, base_resolution=16,
                      per_level_scale=(256 / 16) ** (1 / 7), normal_type="analytic")
        values.update(overrides)
        return cls(**values)


class _TruncExp(torch.autograd.Function):
    """``exp(x)`` whose gradient uses ``exp(min(x, 15))`` so a large density cannot blow up."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))  # differentiable, so analytic normals can train


def trunc_exp(x: Tensor) -> Tensor:
    """Exponential with a clamped gradient (instant-ngp / threestudio ``trunc_exp``)."""
    return _TruncExp.apply(x)


class _GatherRows(torch.autograd.Function):
    """``table[idx]`` with a scatter-add backward.

    PyTorch's own backward of advanced indexing (``index_put_`` with ``accumulate``) is ~5x slower
    on CPU than ``index_add``, and ``embedding``'s sorts; this is the hot spot of the encoding.
    """

    @staticmethod
    def forward(ctx, table: Tensor, idx: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx)
        ctx.n_rows = table.shape[0]
        return table.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        zeros = grad.new_zeros(ctx.n_rows, grad.shape[-1])
        return zeros.index_add(0, idx, grad), None


class HashGridEncoding(nn.Module):
    """Multiresolution hash-grid encoding of points in the unit cube.

    Args:
        n_levels: levels L.
        n_features: features per level F.
        log2_hashmap_size: log2 of the table size T of a hashed level.
        base_resolution: cells per axis of level 0.
        per_level_scale: resolution factor between levels.
        generator: draws the initial table, uniform in ``[-1e-4, 1e-4]`` (instant-ngp).

    Attributes:
        table: ``[rows, F]`` features of all levels, one block per level (dense levels first; each
            hashed block starts at a multiple of T so its offset can be merged into the hash).
        resolutions: ``[L]`` cells per axis of each level.
        n_dense: the first ``n_dense`` levels are indexed densely, the others hashed.
    """

    def __init__(self, n_levels: int, n_features: int, log2_hashmap_size: int, base_resolution: int,
                 per_level_scale: float, generator: torch.Generator):
        super().__init__()
        T = 2 ** log2_hashmap_size
        res = [int(math.floor(base_resolution * per_level_scale ** lvl + 1e-6)) for lvl in range(n_levels)]
        dense = [(r + 1) ** 3 <= T for r in res]
        offsets, mult, rows = [], [], 0
        for r, is_dense in zip(res, dense):
            if not is_dense:
                rows = -(-rows // T) * T
            offsets.append(rows)
            mult.append([1, r + 1, (r + 1) ** 2] if is_dense else [p % T for p in HASH_PRIMES])
            rows += (r + 1) ** 3 if is_dense else T
        self.n_levels, self.n_features, self.hashmap_size = n_levels, n_features, T
        self.n_dense = sum(dense)
        self.level_resolutions: List[int] = res
        self.table = nn.Parameter((torch.rand(rows, n_features, generator=generator) * 2 - 1) * 1e-4)
        self.register_buffer("resolutions", torch.tensor(res, dtype=torch.long), persistent=False)
        self.register_buffer("level_offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("axis_multipliers", torch.tensor(mult, dtype=torch.long), persistent=False)
        masks = [-1 if d else T - 1 for d in dense]  # -1: keep every bit
        self.register_buffer("axis_masks", torch.tensor(masks, dtype=torch.long), persistent=False)

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features

    def corner_indices(self, cell: Tensor) -> Tensor:
        """Table rows of the 8 vertices of each point's cell at each level.

        Args:
            cell: ``[L, N, 3]`` integer lower corner of the cell (level-major: the broadcasts
                below then run over contiguous memory, ~2x faster on CPU than point-major).

        Returns:
            ``[L, N, 8]`` row indices; vertex ``4 i + 2 j + k`` is at ``cell + (i, j, k)``.
        """
        L, N = cell.shape[:2]
        # Per-axis terms first ([L, N, 3, 2]); the modulo-T of the hash commutes with the products
        # and the xor, so masking each term keeps the products small.
        mult = self.axis_multipliers[:, None, :]
        c0 = cell * mult
        c = torch.stack([c0, c0 + mult], dim=-1) & self.axis_masks[:, None, None, None]
        c[:, :, 0] += self.level_offsets[:, None, None]  # a hashed offset is a multiple of T: + == xor
        x, y, z = c[:, :, 0, :, None, None], c[:, :, 1, None, :, None], c[:, :, 2, None, None, :]
        idx = torch.empty(L, N, 2, 2, 2, dtype=torch.long, device=cell.device)
        d = self.n_dense
        if d > 0:
            torch.add(x[:d] + y[:d], z[:d], out=idx[:d])
        if d < L:
            torch.bitwise_xor(x[d:] ^ y[d:], z[d:], out=idx[d:])
        return idx.view(L, N, 8)

    def forward(self, x: Tensor, with_jacobian: bool = False):
        """Encode points.

        Args:
            x: ``[N, 3]`` points in ``[0, 1]^3`` (values outside are clamped to the border cells).
            with_jacobian: also return the derivative of the features w.r.t. ``x``.

        Returns:
            ``[N, L * F]`` features, level-major, differentiable w.r.t. the table and ``x``; with
            ``with_jacobian`` a tuple ``(features, jacobian [N, L * F, 3])``, the jacobian computed
            in closed form (differentiable w.r.t. the table), far cheaper than double backward.
        """
        N, L, F = x.shape[0], self.n_levels, self.n_features
        res = self.resolutions.to(x.dtype)
        pos = x[None, :, :] * res[:, None, None]  # [L, N, 3]
        cell = pos.detach().floor().long()
        cell = torch.minimum(cell.clamp_min(0), (self.resolutions - 1)[:, None, None])
        frac = pos - cell.to(x.dtype)
        w = torch.stack([1 - frac, frac], dim=-1)  # [L, N, 3, 2]: weight of the lower / upper vertex
        weights = [_corner_weights(w)]  # each [L, N, 8]
        if with_jacobian:
            slope = torch.tensor([-1.0, 1.0], dtype=x.dtype, device=x.device).expand(L, N, 2)
            for axis in range(3):
                w_axis = [slope if a == axis else w[:, :, a].detach() for a in range(3)]
                weights.append(_corner_weights(torch.stack(w_axis, dim=2)) * res[:, None, None])
        idx = self.corner_indices(cell)
        feats = _GatherRows.apply(self.table, idx.view(-1)).view(L * N, 8, F)
        # a batched [1 or 4, 8] x [8, F] product per point and level
        mixed = torch.matmul(torch.stack(weights, dim=2).view(L * N, len(weights), 8), feats)
        mixed = mixed.view(L, N, len(weights), F).permute(1, 2, 0, 3)  # [N, 1 or 4, L, F]
        features = mixed[:, 0].reshape(N, L * F)
        if not with_jacobian:
            return features
        return features, mixed[:, 1:].reshape(N, 3, L * F).transpose(1, 2)


def _corner_weights(w: Tensor) -> Tensor:
    """``[L, N, 8]`` trilinear weights (vertex ``4 i + 2 j + k``) from per-axis ``w [L, N, 3, 2]``."""
    L, N = w.shape[:2]
    w_xy = w[:, :, 0, :, None] * w[:, :, 1, None, :]  # [L, N, 2, 2]
    return (w_xy.reshape(L, N, 4, 1) * w[:, :, 2, None, :]).reshape(L, N, 8)


def make_mlp(n_in: int, n_hidden: int, n_out: int, n_hidden_layers: int, generator: torch.Generator) -> nn.Sequential:
    """ReLU MLP with ``n_hidden_layers`` hidden layers, initialised from ``generator``.

    The initialisation matches PyTorch's default ``nn.Linear`` one (uniform in ``+-1/sqrt(fan_in)``)
    but draws from the given generator instead of the global RNG.
    """
    dims = [n_in] + [n_hidden] * n_hidden_layers + [n_out]
    layers: List[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        linear = nn.Linear(a, b)
        bound = 1.0 / math.sqrt(a)
        with torch.no_grad():
            linear.weight.copy_((torch.rand(b, a, generator=generator) * 2 - 1) * bound)
            linear.bias.copy_((torch.rand(b, generator=generator) * 2 - 1) * bound)
        layers.append(linear)
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _check_config(cfg: ImplicitVolumeConfig) -> None:
    check_choice("geometry.density_activation", cfg.density_activation, ("softplus", "exp"))
    check_choice("geometry.density_bias", cfg.density_bias, ("blob_magic3d", "blob_dreamfusion", "none"))
    check_choice("geometry.normal_type", cfg.normal_type, ("finite_difference", "analytic"))
    positive = {"radius": cfg.radius, "n_levels": cfg.n_levels, "n_features_per_level": cfg.n_features_per_level,
                "base_resolution": cfg.base_resolution, "mlp_hidden_dim": cfg.mlp_hidden_dim,
                "density_blob_std": cfg.density_blob_std, "finite_difference_eps": cfg.finite_difference_eps}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"geometry.{key}: must be > 0, got {value}")
    if not 4 <= cfg.log2_hashmap_size <= 26:
        raise ConfigError(f"geometry.log2_hashmap_size: must be in [4, 26], got {cfg.log2_hashmap_size}")
    if cfg.per_level_scale < 1.0:
        raise ConfigError(f"geometry.per_level_scale: must be >= 1, got {cfg.per_level_scale}")
    if cfg.mlp_hidden_layers < 1:
        raise ConfigError(f"geometry.mlp_hidden_layers: must be >= 1, got {cfg.mlp_hidden_layers}")


@GEOMETRIES.register("implicit-volume", ImplicitVolumeConfig)
class ImplicitVolume(nn.Module):
    """Density + albedo field in the box ``[-radius, radius]^3`` (see the module docstring)."""

    def __init__(self, cfg: ImplicitVolumeConfig):
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
        self.encoding = HashGridEncoding(cfg.n_levels, cfg.n_features_per_level, cfg.log2_hashmap_size,
                                         cfg.base_resolution, cfg.per_level_scale, gen)
        self.network = make_mlp(self.encoding.n_output_dims, cfg.mlp_hidden_dim, 4, cfg.mlp_hidden_layers, gen)

    @property
    def radius(self) -> float:
        return float(self.cfg.radius)

    def parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        """Parameters by optimiser group: ``encoding`` (the hash tables) and ``network`` (the MLP)."""
        return {"encoding": list(self.encoding.parameters()), "network": list(self.network.parameters())}

    def density_bias(self, points: Tensor) -> Tensor:
        """``[N]`` pre-activation density offset (the initial blob) at world ``points [N, 3]``."""
        cfg = self.cfg
        if cfg.density_bias == "none":
            return points.new_zeros(points.shape[0])
        r = points.norm(dim=-1)
        if cfg.density_bias == "blob_magic3d":
            return cfg.density_blob_scale * (1.0 - r / cfg.density_blob_std)
        return cfg.density_blob_scale * torch.exp(-0.5 * (r / cfg.density_blob_std) ** 2)

    def _activate(self, raw: Tensor) -> Tensor:
        if self.cfg.density_activation == "softplus":
            return F.softplus(raw)
        return trunc_exp(raw - 1.0)

    def _evaluate(self, points: Tensor) -> Dict[str, Tensor]:
        """Density ``[N]`` and albedo ``[N, 3]`` at world points ``[N, 3]``; 0 density outside the box."""
        r = self.cfg.radius
        inside = (points.abs() <= r).all(dim=-1)
        x = ((points + r) / (2 * r)).clamp(0.0, 1.0)
        raw = self.network(self.encoding(x))
        density = self._activate(raw[:, 0] + self.density_bias(points))
        density = torch.where(inside, density, torch.zeros_like(density))
        return {"density": density, "albedo": torch.sigmoid(raw[:, 1:4])}

    def density(self, points: Tensor) -> Tensor:
        """``[N]`` density at world ``points [N, 3]``."""
        return self._evaluate(points)["density"]

    def forward(self, points: Tensor, with_normal: bool = False) -> Dict[str, Tensor]:
        """Evaluate the field.

        Args:
            points: ``[N, 3]`` world points.
            with_normal: also return ``normal``.

        Returns:
            ``density [N]``, ``albedo [N, 3]`` in [0, 1], and ``normal [N, 3]`` (unit, pointing
            out of the object: ``-normalize(grad density)``) when ``with_normal``.
        """
        if not with_normal:
            return self._evaluate(points)
        if self.cfg.normal_type == "analytic":
            return self._evaluate_with_analytic_normal(points)
        out = self._evaluate(points)
        out["normal"] = self.finite_difference_normal(points)
        return out

    def finite_difference_normal(self, points: Tensor) -> Tensor:
        """``[N, 3]`` normals from central differences of the density (6 extra evaluations)."""
        eps = self.cfg.finite_difference_eps * self.cfg.radius
        offsets = torch.eye(3, device=points.device, dtype=points.dtype) * eps
        offsets = torch.cat([offsets, -offsets], dim=0)  # [6, 3]
        shifted = (points[None, :, :] + offsets[:, None, :]).reshape(-1, 3)
        d = self.density(shifted).view(6, -1)
        grad = (d[:3] - d[3:]).T / (2 * eps)  # [N, 3]
        return -F.normalize(grad, dim=-1)

    def _density_bias_gradient(self, points: Tensor) -> Tensor:
        """``[N, 3]`` gradient of :meth:`density_bias` w.r.t. the points."""
        cfg = self.cfg
        if cfg.density_bias == "none":
            return torch.zeros_like(points)
        if cfg.density_bias == "blob_magic3d":
            return -cfg.density_blob_scale / cfg.density_blob_std * F.normalize(points, dim=-1)
        return -self.density_bias(points)[:, None] * points / cfg.density_blob_std ** 2

    def _activation_slope(self, pre: Tensor) -> Tensor:
        if self.cfg.density_activation == "softplus":
            return torch.sigmoid(pre)
        return torch.exp((pre - 1.0).clamp(max=15.0))

    def _evaluate_with_analytic_normal(self, points: Tensor) -> Dict[str, Tensor]:
        """Exact density gradient: the encoding's jacobian in closed form, autograd only through the
        MLP (``create_graph`` when gradients are enabled, so normals train the field)."""
        r = self.cfg.radius
        train = torch.is_grad_enabled()
        inside = (points.abs() <= r).all(dim=-1)
        h, jac = self.encoding(((points + r) / (2 * r)).clamp(0.0, 1.0), with_jacobian=True)
        with torch.enable_grad():
            h_in = h if h.requires_grad else h.detach().requires_grad_(True)
            raw = self.network(h_in)
            (d_raw,) = torch.autograd.grad(raw[:, 0].sum(), h_in, create_graph=train)
        pre = raw[:, 0] + self.density_bias(points)
        slope = torch.where(inside, self._activation_slope(pre), torch.zeros_like(pre))
        grad = slope[:, None] * (torch.einsum("nk,nkd->nd", d_raw, jac) / (2 * r)
                                 + self._density_bias_gradient(points))
        density = torch.where(inside, self._activate(pre), torch.zeros_like(pre))
        out = {"density": density, "albedo": torch.sigmoid(raw[:, 1:4]), "normal": -F.normalize(grad, dim=-1)}
        if not train:
            out = {k: v.detach() for k, v in out.items()}
        return out
