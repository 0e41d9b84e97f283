"""NeRF volume rendering (``nerf-volume``): a pure-PyTorch path for CPU and a nerfacc path for CUDA.

Both paths integrate the same emission-absorption model along each ray::

    alpha_i = 1 - exp(-sigma_i delta_i),  T_i = exp(-sum_{j<i} sigma_j delta_j),  w_i = T_i alpha_i
    rgb = sum_i w_i c_i + (1 - sum_i w_i) * background,  opacity = sum_i w_i,  depth = sum_i w_i t_i

``depth`` is the expected distance *weighted by opacity* (not divided by it), so it is 0 where a
ray hits nothing; divide by ``opacity`` for the distance to the surface.

- **torch path** (any device, the CPU implementation): ray-box slab intersection, a fixed number of
  stratified samples between entry and exit, an :class:`OccupancyGrid` that masks samples in empty
  cells so the field only sees occupied samples (gather -> field -> scatter back), then dense
  ``[n_rays, n_samples]`` compositing (:func:`composite`).
- **nerfacc path** (CUDA tensors only): ``nerfacc.OccGridEstimator.sampling`` marches rays with a
  fixed step, skipping empty cells, and ``nerfacc.rendering`` composites the packed samples.

One occupancy grid serves both: :class:`OccupancyGrid` is updated from the caller's generator (so
runs are reproducible), and its cells are copied into the nerfacc estimator's buffers after each
update. nerfacc's own ``update_every_n_steps`` is not used because it draws from the global RNG.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

import nerfacc
import torch
from torch import Tensor, nn

from text3d.core.bounds import bounded, check_choice
from text3d.core.errors import ConfigError

from .registry import RENDERERS

if TYPE_CHECKING:
    from text3d.scene.cameras import Cameras

logger = logging.getLogger(__name__)


@dataclass
class VolumeRendererConfig:
    """NeRF volume renderer with an occupancy grid for empty-space skipping."""

    type: str = "nerf-volume"
    """Renderer type; ``nerf-volume``."""
    radius: float = bounded(1.0, lo=0, lo_open=True)
    """Half side of the scene box; must equal the geometry's ``radius``."""
    num_samples_per_ray: int = bounded(64, lo=1)
    """Samples per ray between box entry and exit (torch path)."""
    randomized: bool = True
    """Jitter the samples in training (stratified sampling); midpoints in evaluation."""
    backend: str = "auto"
    """``auto`` (nerfacc for CUDA tensors, torch otherwise), ``torch`` or ``nerfacc`` (CUDA only)."""
    occupancy_grid: bool = True
    """Skip samples in empty cells of an occupancy grid (updated by :meth:`VolumeRenderer.update_occupancy`)."""
    grid_resolution: int = bounded(32, lo=1)
    """Cells per axis of the occupancy grid."""
    grid_update_every: int = bounded(16, lo=1)
    """Update the grid every N training steps (nerfacc ``update_every_n_steps``)."""
    grid_warmup_steps: int = bounded(0, lo=0)
    """No sample is culled before this step (the grid is still updated). 0: cull from the first
    update on, as nerfacc does; with the blob initialisation the grid is right from step 0."""
    grid_ema_decay: float = bounded(0.95, lo=0, hi=1)
    """Per-update decay of a cell's occupancy: ``occ = max(occ * decay, new)``."""
    grid_dilation: int = bounded(0, lo=0)
    """Also mark the cells within this many cells of an occupied one as occupied. A cell is probed
    at one random point per update, so a thin piece of surface in a cell can be missed for several
    updates (a sharp sphere loses up to 0.4 opacity after the first update, 0.01 after 100) and
    the object cannot grow into culled cells; 1 removes that (the sharp sphere renders exactly
    after one update) for ~1.7x the field evaluations around a blob. 0 is nerfacc's behaviour."""
    occupancy_threshold: float = bounded(0.01, lo=0)
    """A cell is occupied when ``density * render_step_size`` exceeds this (or the mean over the
    grid, whichever is smaller, as nerfacc)."""
    render_step_size: Optional[float] = bounded(None, lo=0, lo_open=True)
    """Marching step of the nerfacc path and the step used to turn density into occupancy, world
    units. None: ``2 sqrt(3) radius / num_samples_per_ray``, so no ray gets more samples than on the
    torch path."""
    nerfacc_early_stop_eps: float = bounded(1e-4, lo=0, hi=1)
    """nerfacc path: stop marching a ray once its transmittance is below this."""
    nerfacc_alpha_threshold: float = bounded(0.0, lo=0, hi=1)
    """nerfacc path: drop samples whose alpha is below this."""
    eval_chunk_size: int = bounded(16384, lo=1)
    """Rays per chunk in evaluation (``train=False``), to bound memory."""
    return_normal: bool = False
    """Always return the composited normal (and the orientation loss), not only when the shading
    mode needs normals."""


# ------------------------------------------------------------------------------------ functions
def ray_box_intersect(rays_o: Tensor, rays_d: Tensor, radius: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Slab intersection of rays with the box ``[-radius, radius]^3``.

    Args:
        rays_o, rays_d: ``[N, 3]`` origins and unit directions.

    Returns:
        ``near [N]`` (clamped to >= 0), ``far [N]`` and ``hit [N]`` (bool: ``far > near``).
    """
    tiny = 1e-12
    safe_d = torch.where(rays_d.abs() < tiny, torch.full_like(rays_d, tiny) * torch.sign(rays_d + tiny), rays_d)
    t0, t1 = (-radius - rays_o) / safe_d, (radius - rays_o) / safe_d
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, far, far > near


def stratified_samples(near: Tensor, far: Tensor, n_samples: int, jitter: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """``n_samples`` equal bins between ``near`` and ``far``, one sample per bin.

    Args:
        near, far: ``[R]``.
        jitter: ``[R, S]`` position inside each bin in [0, 1), or None for the bin midpoints.

    Returns:
        ``t [R, S]`` sample distances and ``delta [R, S]`` bin lengths.
    """
    u = 0.5 if jitter is None else jitter
    frac = (torch.arange(n_samples, device=near.device, dtype=near.dtype) + u) / n_samples
    length = (far - near)[:, None]
    t = near[:, None] + length * frac
    return t, (length / n_samples).expand_as(t)


def composite(sigmas: Tensor, rgbs: Tensor, t: Tensor, deltas: Tensor, background: Tensor) -> Dict[str, Tensor]:
    """Emission-absorption compositing of dense samples, front to back.

    Args:
        sigmas: ``[R, S]`` densities; rgbs: ``[R, S, 3]`` colours; t: ``[R, S]`` sample distances;
        deltas: ``[R, S]`` sample lengths; background: ``[R, 3]``.

    Returns:
        ``rgb [R, 3]``, ``opacity [R, 1]``, ``depth [R, 1]`` (opacity-weighted) and ``weights [R, S]``.
    """
    tau = sigmas * deltas
    alpha = 1.0 - torch.exp(-tau)
    tau_before = torch.cat([torch.zeros_like(tau[:, :1]), torch.cumsum(tau, dim=1)[:, :-1]], dim=1)
    weights = torch.exp(-tau_before) * alpha
    opacity = weights.sum(dim=1, keepdim=True)
    rgb = (weights[..., None] * rgbs).sum(dim=1) + (1.0 - opacity) * background
    depth = (weights * t).sum(dim=1, keepdim=True)
    return {"rgb": rgb, "opacity": opacity, "depth": depth, "weights": weights}


def _scatter_rows(values: Tensor, index: Tensor, n_rows: int) -> Tensor:
    """``[n_rows, ...]`` zeros with ``values [M, ...]`` at rows ``index [M]`` (differentiable)."""
    return values.new_zeros((n_rows,) + tuple(values.shape[1:])).index_copy(0, index, values)


# ------------------------------------------------------------------------------------ occupancy
class OccupancyGrid(nn.Module):
    """A ``resolution^3`` grid over ``[-radius, radius]^3`` of which cells hold matter.

    All state is in buffers (saved in ``state_dict``). Cell ``(i, j, k)`` (x, y, z) is flattened
    as ``i R^2 + j R + k``, nerfacc's layout, so the cells can be copied into its estimator.
    Until the first update with culling enabled (``active``), every cell counts as occupied.
    """

    def __init__(self, radius: float, resolution: int):
        super().__init__()
        self.radius, self.resolution = float(radius), int(resolution)
        R = self.resolution
        self.register_buffer("occupancy", torch.zeros(R ** 3))
        self.register_buffer("binary", torch.ones(R, R, R, dtype=torch.bool))
        self.register_buffer("active", torch.tensor(False))

    def cell_centres(self, jitter: Optional[Tensor] = None) -> Tensor:
        """``[R^3, 3]`` world points, one per cell (its centre, or ``jitter [R^3, 3]`` in [0, 1) inside it)."""
        R, dev = self.resolution, self.occupancy.device
        ar = torch.arange(R, device=dev, dtype=torch.float32)
        ijk = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), dim=-1).reshape(-1, 3)
        ijk = ijk + (0.5 if jitter is None else jitter)
        return ijk * (2 * self.radius / R) - self.radius

    def occupied(self, points: Tensor) -> Tensor:
        """Bool ``[...]``: ``points [..., 3]`` lie in the box and in an occupied cell."""
        R, r = self.resolution, self.radius
        inside = (points.abs() <= r).all(dim=-1)
        if not bool(self.active):
            return inside
        ijk = ((points + r) * (R / (2 * r))).floor().long().clamp(0, R - 1)
        flat = (ijk[..., 0] * R + ijk[..., 1]) * R + ijk[..., 2]
        return self.binary.view(-1)[flat] & inside

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], step_size: float, threshold: float,
               decay: float, generator: torch.Generator, dilation: int = 0, chunk: int = 65536) -> None:
        """Re-evaluate every cell at a random point inside it and refresh the occupancy (EMA of max).

        Args:
            density_fn: ``[M, 3] -> [M]`` density at world points.
            step_size: turns density into occupancy (``density * step_size`` ~ alpha).
            threshold: occupancy above which a cell is occupied (capped by the grid mean).
            decay: EMA decay of the old occupancy.
            generator: CPU generator for the jitter (``R^3 x 3`` numbers per update).
            dilation: grow the occupied cells by this many cells in every direction.
        """
        jitter = torch.rand(self.resolution ** 3, 3, generator=generator).to(self.occupancy.device)
        points = self.cell_centres(jitter)
        density = torch.cat([density_fn(p).float() for p in points.split(chunk)])
        self.occupancy.copy_(torch.maximum(self.occupancy * decay, density * step_size))
        cut = min(float(threshold), float(self.occupancy.mean()))
        binary = (self.occupancy > cut).view_as(self.binary)
        if dilation > 0:
            k = 2 * dilation + 1
            binary = nn.functional.max_pool3d(binary[None, None].float(), k, stride=1, padding=dilation)[0, 0] > 0
        self.binary.copy_(binary)


# ------------------------------------------------------------------------------------ renderer
def _check_config(cfg: VolumeRendererConfig) -> None:
    check_choice("renderer.backend", cfg.backend, ("auto", "torch", "nerfacc"))
    for key in ("radius", "num_samples_per_ray", "grid_resolution", "grid_update_every", "eval_chunk_size"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"renderer.{key}: must be > 0, got {getattr(cfg, key)}")
    if cfg.grid_dilation < 0:
        raise ConfigError(f"renderer.grid_dilation: must be >= 0, got {cfg.grid_dilation}")
    if cfg.render_step_size is not None and cfg.render_step_size <= 0:
        raise ConfigError(f"renderer.render_step_size: must be > 0 or null, got {cfg.render_step_size}")
    if not 0.0 <= cfg.grid_ema_decay <= 1.0:
        raise ConfigError(f"renderer.grid_ema_decay: must be in [0, 1], got {cfg.grid_ema_decay}")


@RENDERERS.register("nerf-volume", VolumeRendererConfig)
class VolumeRenderer(nn.Module):
    """Renders a field (``forward(points, with_normal) -> density, albedo[, normal]``) from cameras.

    Submodules: ``grid`` (:class:`OccupancyGrid`) and ``estimator`` (``nerfacc.OccGridEstimator``,
    a mirror of ``grid`` used on CUDA); both are in the ``state_dict``.
    """

    def __init__(self, cfg: VolumeRendererConfig):
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        r = float(cfg.radius)
        self.grid = OccupancyGrid(r, cfg.grid_resolution)
        self.estimator = nerfacc.OccGridEstimator(roi_aabb=[-r, -r, -r, r, r, r], resolution=cfg.grid_resolution,
                                                  levels=1)
        self.estimator.binaries.fill_(True)  # nothing is culled before the first update
        self._announced_backend = False

    @property
    def step_size(self) -> float:
        """Marching step (nerfacc path) and density-to-occupancy step, world units."""
        if self.cfg.render_step_size is not None:
            return float(self.cfg.render_step_size)
        return 2.0 * math.sqrt(3.0) * self.cfg.radius / self.cfg.num_samples_per_ray

    # -------------------------------------------------------------------------------- occupancy
    @torch.no_grad()
    def update_occupancy(self, field: nn.Module, step: int, generator: torch.Generator) -> None:
        """Call at every training step; updates the grid every ``grid_update_every`` steps.

        Draws ``grid_resolution^3 x 3`` numbers from ``generator`` at the steps that update.
        """
        cfg = self.cfg
        if not cfg.occupancy_grid or step % cfg.grid_update_every != 0:
            return
        self._check_radius(field)
        self.grid.update(field.density, self.step_size, cfg.occupancy_threshold, cfg.grid_ema_decay, generator,
                         dilation=cfg.grid_dilation)
        self.grid.active.fill_(step >= cfg.grid_warmup_steps)
        self.estimator.occs.copy_(self.grid.occupancy)
        if bool(self.grid.active):
            self.estimator.binaries.copy_(self.grid.binary[None])
        else:
            self.estimator.binaries.fill_(True)

    def _check_radius(self, field: nn.Module) -> None:
        field_radius = getattr(getattr(field, "cfg", None), "radius", None)
        if field_radius is not None and abs(float(field_radius) - self.cfg.radius) > 1e-9:
            raise ConfigError(f"renderer.radius: {self.cfg.radius} differs from geometry.radius {field_radius}; "
                              "set them equal")

    # -------------------------------------------------------------------------------- entry points
    def forward(self, field: nn.Module, material: nn.Module, background: nn.Module, cameras: Cameras,
                mode: str = "albedo", generator: Optional[torch.Generator] = None,
                train: bool = True) -> Dict[str, Tensor]:
        """Render a batch of cameras.

        Args:
            field, material, background: the scene components.
            cameras: ``B`` cameras of ``H x W`` pixels, on the device of the modules.
            mode: shading mode (see the material).
            generator: CPU generator for the sample jitter and the background (training).
            train: training render (jitter, random background); ``False`` renders in chunks of
                ``eval_chunk_size`` rays (call it under ``torch.no_grad()``).

        Returns:
            ``rgb [B, H, W, 3]``, ``opacity [B, H, W, 1]``, ``depth [B, H, W, 1]``; when normals are
            computed (the mode needs them or ``return_normal``) also ``normal [B, H, W, 3]``
            (opacity-weighted, 0 on empty pixels) and the scalar ``orient_loss``.
        """
        rays_o, rays_d = cameras.rays()
        B, H, W = rays_o.shape[:3]
        lights = cameras.light_positions[:, None, None, :].expand(B, H, W, 3)
        flat = [x.reshape(-1, 3) for x in (rays_o, rays_d, lights)]
        if train:
            out = self.render_rays(field, material, background, *flat, mode=mode, generator=generator, train=True)
        else:
            out = self._render_chunks(field, material, background, *flat, mode=mode)
        return {k: (v if v.dim() == 0 else v.view(B, H, W, -1)) for k, v in out.items()}

    def _render_chunks(self, field, material, background, rays_o, rays_d, lights, mode) -> Dict[str, Tensor]:
        n, size = rays_o.shape[0], self.cfg.eval_chunk_size
        parts = [self.render_rays(field, material, background, rays_o[s:s + size], rays_d[s:s + size],
                                  lights[s:s + size], mode=mode, generator=None, train=False)
                 for s in range(0, n, size)]
        out = {k: torch.cat([p[k] for p in parts]) for k, v in parts[0].items() if v.dim() > 0}
        if "orient_loss" in parts[0]:
            out["orient_loss"] = sum(p["orient_loss"] * p["rgb"].shape[0] for p in parts) / n
        return out

    def render_rays(self, field: nn.Module, material: nn.Module, background: nn.Module, rays_o: Tensor,
                    rays_d: Tensor, light_positions: Tensor, mode: str = "albedo",
                    generator: Optional[torch.Generator] = None, train: bool = True) -> Dict[str, Tensor]:
        """Render flat rays ``rays_o, rays_d, light_positions [N, 3]`` (unit directions).

        Returns the per-ray outputs of :meth:`forward` with shapes ``[N, C]``. Random numbers are
        drawn in this order: sample jitter (training with ``randomized``), then the background's.
        """
        self._check_radius(field)
        if train and self.cfg.randomized and generator is None:
            raise ValueError("VolumeRenderer: a training render with randomized=True needs a torch.Generator")
        need_normal = material.needs_normal(mode) or self.cfg.return_normal
        args = (field, material, background, rays_o, rays_d, light_positions, mode, need_normal, generator, train)
        if self._use_nerfacc(rays_o):
            return self._render_nerfacc(*args)
        return self._render_torch(*args)

    def _use_nerfacc(self, rays_o: Tensor) -> bool:
        backend = self.cfg.backend
        if backend == "nerfacc" and not rays_o.is_cuda:
            raise ConfigError("renderer.backend: 'nerfacc' needs CUDA tensors; use 'auto' or 'torch' on "
                              f"{rays_o.device.type}")
        use = backend == "nerfacc" or (backend == "auto" and rays_o.is_cuda)
        if not self._announced_backend:
            logger.info("nerf-volume: %s path on %s", "nerfacc" if use else "pure-PyTorch", rays_o.device)
            self._announced_backend = True
        return use

    # -------------------------------------------------------------------------------- torch path
    def _render_torch(self, field, material, background, rays_o, rays_d, lights, mode, need_normal,
                      generator, train) -> Dict[str, Tensor]:
        n_rays, S = rays_o.shape[0], self.cfg.num_samples_per_ray
        near, far, hit = ray_box_intersect(rays_o, rays_d, self.cfg.radius)
        ray_ids = hit.nonzero().squeeze(1)
        o, d, near, far = rays_o[ray_ids], rays_d[ray_ids], near[ray_ids], far[ray_ids]
        jitter = None
        if train and self.cfg.randomized:
            jitter = torch.rand(len(ray_ids), S, generator=generator).to(device=o.device, dtype=o.dtype)
        t, deltas = stratified_samples(near, far, S, jitter)
        bg = background(rays_d, train=train, generator=generator)
        points = o[:, None, :] + t[..., None] * d[:, None, :]  # [R, S, 3]
        sigmas, rgbs, normals = self._eval_samples(field, material, points, lights[ray_ids], mode, need_normal)
        comp = composite(sigmas, rgbs, t, deltas, bg[ray_ids])
        out = {"rgb": bg.index_copy(0, ray_ids, comp["rgb"]),
               "opacity": _scatter_rows(comp["opacity"], ray_ids, n_rays),
               "depth": _scatter_rows(comp["depth"], ray_ids, n_rays)}
        if normals is not None:
            w = comp["weights"]
            out["normal"] = _scatter_rows((w[..., None] * normals).sum(dim=1), ray_ids, n_rays)
            out["orient_loss"] = orientation_loss(w, normals, d).sum() / max(n_rays, 1)
        return out

    def _eval_samples(self, field, material, points, ray_lights, mode, need_normal):
        """Field + shading on the occupied samples of ``points [R, S, 3]`` only (lights ``[R, 3]``).

        Returns ``[R, S]`` densities, ``[R, S, 3]`` colours and normals (or None), zero on the
        culled samples.
        """
        R, S = points.shape[:2]
        flat_p = points.reshape(-1, 3)
        keep = self.grid.occupied(flat_p) if self.cfg.occupancy_grid else None
        idx = None if keep is None or bool(keep.all()) else keep.nonzero().squeeze(1)
        if idx is None:
            flat_l = ray_lights[:, None, :].expand(R, S, 3).reshape(-1, 3)
        else:
            flat_p, flat_l = flat_p[idx], ray_lights[idx // S]
        out = field(flat_p, with_normal=need_normal)
        rgb = material.shade(out["albedo"], out.get("normal"), flat_p, flat_l, mode)
        values = [out["density"], rgb] + ([out["normal"]] if need_normal else [])
        if idx is not None:
            values = [_scatter_rows(v, idx, R * S) for v in values]
        sigmas, rgbs = values[0].view(R, S), values[1].view(R, S, 3)
        return sigmas, rgbs, (values[2].view(R, S, 3) if need_normal else None)

    # -------------------------------------------------------------------------------- nerfacc path
    def _render_nerfacc(self, field, material, background, rays_o, rays_d, lights, mode, need_normal,
                        generator, train) -> Dict[str, Tensor]:
        n_rays = rays_o.shape[0]
        ray_ids, t_starts, t_ends = self._march_nerfacc(field, rays_o, rays_d, generator, train)
        bg = background(rays_d, train=train, generator=generator)
        saved: Dict[str, Tensor] = {}

        def rgb_sigma_fn(ts: Tensor, te: Tensor, ri: Tensor) -> Tuple[Tensor, Tensor]:
            p = rays_o[ri] + rays_d[ri] * ((ts + te) * 0.5)[:, None]
            out = field(p, with_normal=need_normal)
            if need_normal:
                saved["normal"] = out["normal"]
            return material.shade(out["albedo"], out.get("normal"), p, lights[ri], mode), out["density"]

        rgb, opacity, _, extras = nerfacc.rendering(t_starts, t_ends, ray_ids, n_rays=n_rays, rgb_sigma_fn=rgb_sigma_fn)
        w = extras["weights"]
        t_mid = ((t_starts + t_ends) * 0.5)[:, None]
        out = {"rgb": rgb + (1.0 - opacity) * bg, "opacity": opacity,
               "depth": nerfacc.accumulate_along_rays(w, t_mid, ray_ids, n_rays)}
        if need_normal:
            normals = saved.get("normal", rays_o.new_zeros(0, 3))
            out["normal"] = nerfacc.accumulate_along_rays(w, normals, ray_ids, n_rays)
            per_sample = w.detach() * (normals * rays_d[ray_ids]).sum(-1).clamp_min(0.0) ** 2
            out["orient_loss"] = per_sample.sum() / max(n_rays, 1)
        return out

    def _march_nerfacc(self, field, rays_o, rays_d, generator, train) -> Tuple[Tensor, Tensor, Tensor]:
        """Packed samples ``(ray_indices, t_starts, t_ends)`` from the estimator (no gradient)."""
        near, far, hit = ray_box_intersect(rays_o, rays_d, self.cfg.radius)
        far = torch.where(hit, far, near)
        step = self.step_size
        if train and self.cfg.randomized:
            if generator is None:
                raise ValueError("VolumeRenderer: a training render with randomized=True needs a torch.Generator")
            # Our own stratification (one random offset per ray) so the generator drives it.
            near = near + torch.rand(near.shape[0], generator=generator).to(near) * step

        def sigma_fn(ts: Tensor, te: Tensor, ri: Tensor) -> Tensor:
            return field.density(rays_o[ri] + rays_d[ri] * ((ts + te) * 0.5)[:, None])

        cfg = self.cfg
        return self.estimator.sampling(rays_o, rays_d, sigma_fn=sigma_fn, t_min=near, t_max=far,
                                       render_step_size=step, stratified=False,
                                       early_stop_eps=cfg.nerfacc_early_stop_eps,
                                       alpha_thre=cfg.nerfacc_alpha_threshold)


def orientation_loss(weights: Tensor, normals: Tensor, dirs: Tensor) -> Tensor:
    """DreamFusion's orientation penalty per ray: ``sum_i stopgrad(w_i) max(0, n_i . d)^2``.

    Args:
        weights: ``[R, S]``; normals: ``[R, S, 3]``; dirs: ``[R, 3]`` ray directions.

    Returns:
        ``[R]``; normals facing away from the camera (``n . d > 0``) are penalised.
    """
    facing_away = (normals * dirs[:, None, :]).sum(dim=-1).clamp_min(0.0)
    return (weights.detach() * facing_away ** 2).sum(dim=1)
