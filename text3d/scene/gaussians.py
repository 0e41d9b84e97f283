"""3D Gaussians as a scene geometry: parameters, initialisation, densification (the ``.ply`` format: :mod:`text3d.scene.gaussian_ply`).

A :class:`GaussianModel` (geometry type ``gaussians``) holds the parameters in their unconstrained
form, as 3DGS and DreamGaussian do: ``means`` [N,3], ``log_scales`` [N,3], ``quats`` [N,4] (wxyz,
unnormalised), ``opacity_logits`` [N], ``sh0`` [N,1,3] and ``shN`` [N,K-1,3] (spherical-harmonic
colour coefficients; colour = SH(view) + 0.5). It is drawn by the ``gaussian-splatting`` renderer
(:class:`text3d.renderers.splatting.GaussianRenderer`), which calls
:func:`text3d.renderers.rasterize_gaussians`.

Densification follows 3DGS (and gsplat's default strategy): the screen-space gradient of each
visible Gaussian's 2D mean is accumulated over steps; every ``densify_every`` steps the Gaussians
whose mean gradient exceeds ``grad_threshold`` are cloned (small ones) or split in two (large ones,
scales / 1.6, new means drawn from the Gaussian), then faint (``prune_opacity``) and huge
(``prune_scale``) ones are removed; every ``opacity_reset_every`` steps opacities are clamped low.
The optimizer's Adam moments follow the surgery (kept rows keep theirs, new rows start at zero).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError
from text3d.renderers.gaussians import SH_C0, sh_dc_to_rgb  # one definition of the SH DC constant

# The 3DGS .ply format lives in its own module; re-exported here, where callers have found it.
from .gaussian_ply import PlyError, ply_properties, read_ply, write_ply  # noqa: F401
from .registry import GEOMETRIES

logger = logging.getLogger(__name__)

PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN")
GROUP_OF = {"means": "means", "log_scales": "scales", "quats": "quats", "opacity_logits": "opacities",
            "sh0": "sh0", "shN": "shN"}
"""Optimizer parameter group of each parameter (the names ``optimizer.lr`` uses)."""
GAUSSIAN_PARAM_GROUPS = tuple(dict.fromkeys(GROUP_OF.values()))


@dataclass
class GaussianGeometryConfig:
    """3D Gaussians (DreamGaussian defaults) and their densification schedule."""

    type: str = "gaussians"
    """Geometry type; ``gaussians``."""
    init: Literal["random", "ply", "point-cloud", "mesh", "nerf"] = "random"
    """Initialisation: ``random`` points in a ball; a 3DGS ``ply`` (e.g. another run's gaussians.ply);
    a ``point-cloud`` .ply (x, y, z, optional red/green/blue); points sampled on a ``mesh`` file;
    or points drawn where a ``nerf`` run's density is high. The last four read ``init_path``."""
    init_path: Optional[str] = None
    """File (ply / point cloud / mesh) or NeRF run folder for the non-random initialisations."""
    num_points: int = bounded(5000, lo=1)
    """Gaussians drawn at initialisation (``random``, ``mesh``, ``nerf``)."""
    radius: float = bounded(0.5, lo=0, lo_open=True)
    """Radius of the initial ball (``random``), world units."""
    init_scale: float = bounded(0.0, lo=0)
    """Initial scale (standard deviation) of every axis; 0 = the mean spacing of the initial points."""
    init_opacity: float = bounded(0.1, lo=0, hi=1, lo_open=True, hi_open=True)
    """Initial opacity of every Gaussian."""
    sh_degree: int = bounded(0, lo=0, hi=3)
    """Spherical-harmonic degree of the colours (0 = view-independent, as DreamGaussian)."""
    scene_extent: float = bounded(1.0, lo=0, lo_open=True)
    """Size of the scene (world units) that ``percent_dense`` and ``prune_scale`` are relative to."""
    densify_from: int = bounded(100, lo=0)
    """First step at which Gaussians are densified and pruned."""
    densify_until: int = bounded(3000, lo=0)
    """No densification at or after this step (pruning of faint Gaussians continues with it)."""
    densify_every: int = bounded(100, lo=1)
    """Steps between densifications."""
    grad_threshold: float = bounded(0.01, lo=0)
    """Mean screen-space gradient norm of the 2D mean (NDC units, as 3DGS) above which a Gaussian is
    cloned or split. SDS gradients are larger than photometric ones: DreamGaussian uses 0.01."""
    percent_dense: float = bounded(0.01, lo=0)
    """Gaussians with a largest scale up to ``percent_dense * scene_extent`` are cloned, larger ones split."""
    prune_opacity: float = bounded(0.01, lo=0, hi=1)
    """Gaussians fainter than this are removed at each densification."""
    prune_scale: float = bounded(0.5, lo=0, lo_open=True)
    """Gaussians with a largest scale above ``prune_scale * scene_extent`` are removed; 0 = never."""
    opacity_reset_every: int = bounded(0, lo=0)
    """Steps between opacity resets to ``2 * prune_opacity`` (3DGS: 3000); 0 = never."""
    opacity_reset_until: Optional[int] = bounded(None, lo=0)
    """No opacity reset at or after this step; ``None`` = ``densify_until`` (3DGS). A shape edit resets
    once (``opacity_reset_every: 50``, ``opacity_reset_until: 51``) yet keeps densifying and pruning after."""
    max_gaussians: int = bounded(100000, lo=1)
    """Densification stops adding Gaussians beyond this count."""
    flatten: float = bounded(1.0, lo=0, hi=1, lo_open=True)
    """Factor on each Gaussian's shortest axis: 1 = off; 0.1 draws flat, 2DGS-like surfels whose
    shortest axis is a normal. It applies wherever the Gaussians are drawn or exported, and
    ``gaussians.ply`` holds the flattened scales, so other tools see what was drawn."""
    project_colours: bool = False
    """After every step, bring each Gaussian's base colour back into [0, 1], the
    range it is drawn clamped to. A channel beyond it draws as 0 or 1 but gets no gradient through
    the clamp, so it can never move back (a red Gaussian's green cannot rise): edits of a source
    whose colours left the range need this to change colour at all."""
    seed: Optional[int] = bounded(None, lo=0)
    """Seed of the initialisation; ``None`` = drawn from the caller's RNG state (a run seeds it)."""


def _check_config(cfg: GaussianGeometryConfig) -> None:
    if cfg.init != "random" and not cfg.init_path:
        raise ConfigError(f"geometry.init_path: init '{cfg.init}' reads a file or run folder; set geometry.init_path")
    if not 0 <= cfg.sh_degree <= 3:
        raise ConfigError(f"geometry.sh_degree: must be 0-3, got {cfg.sh_degree}")
    for key in ("num_points", "densify_every", "max_gaussians"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"geometry.{key}: must be positive, got {getattr(cfg, key)}")
    if not 0 < cfg.init_opacity < 1:
        raise ConfigError(f"geometry.init_opacity: must be in (0, 1), got {cfg.init_opacity}")


# --------------------------------------------------------------------------------------------
# The model
@GEOMETRIES.register("gaussians", GaussianGeometryConfig)
class GaussianModel(nn.Module):
    """A set of 3D Gaussians whose count changes during training (see the module docstring)."""

    check_config = staticmethod(_check_config)

    def __init__(self, cfg: GaussianGeometryConfig):
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        generator = torch.Generator()
        generator.manual_seed(cfg.seed if cfg.seed is not None else int(torch.randint(0, 2**62, (1,))))
        params = initial_gaussians(cfg, generator)
        for name in PARAM_NAMES:
            setattr(self, name, nn.Parameter(params[name]))
        n = self.means.shape[0]
        self.register_buffer("grad_accum", torch.zeros(n))
        self.register_buffer("grad_count", torch.zeros(n))
        self._meta: Optional[Dict[str, Any]] = None

    # -------------------------------------------------------------------- activated parameters
    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    def scales(self) -> Tensor:
        """``[N, 3]`` standard deviations along the axes, the shortest times ``flatten``."""
        scales = torch.exp(self.log_scales)
        if self.cfg.flatten == 1.0 or scales.shape[0] == 0:
            return scales
        shortest = F.one_hot(scales.argmin(dim=-1), 3).bool()
        return torch.where(shortest, scales * self.cfg.flatten, scales)

    def normals(self) -> Tensor:
        """``[N, 3]`` unit world direction of each Gaussian's shortest axis (either sign): a flat
        Gaussian's normal."""
        from text3d.renderers.gaussians import quat_to_rotmat

        axes = quat_to_rotmat(self.quats)  # columns are the axes
        shortest = self.scales().argmin(dim=-1)
        return axes.gather(2, shortest[:, None, None].expand(-1, 3, 1))[..., 0]

    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    def sh(self) -> Tensor:
        """``[N, K, 3]`` SH coefficients."""
        return torch.cat([self.sh0, self.shN], dim=1)

    def base_colors(self) -> Tensor:
        """``[N, 3]`` view-independent colours (the DC term), in [0, 1]."""
        return sh_dc_to_rgb(self.sh0[:, 0]).clamp(0, 1)

    def parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        groups: Dict[str, List[nn.Parameter]] = {}
        for name in PARAM_NAMES:
            param = getattr(self, name)
            if param.numel() or name != "shN":
                groups.setdefault(GROUP_OF[name], []).append(param)
        return groups

    def density(self, points: Tensor, chunk: int = 4096) -> Tensor:
        """Opacity-weighted sum of the Gaussians at ``points [P, 3]`` -> ``[P]`` (for mesh extraction).

        Each Gaussian contributes ``opacity * exp(-0.5 d^T Sigma^-1 d)`` within 3 standard deviations.
        """
        from text3d.renderers.gaussians import quat_scale_to_covar

        with torch.no_grad():
            prec = torch.linalg.inv(quat_scale_to_covar(self.quats, self.scales().clamp(min=1e-6)))
            out = torch.zeros(points.shape[0], device=points.device)
            op, mu = self.opacities(), self.means
            for s in range(0, mu.shape[0], chunk):
                d = points[:, None, :] - mu[None, s:s + chunk]  # [P,G,3]
                m = torch.einsum("pgi,gij,pgj->pg", d, prec[s:s + chunk], d)
                out += (op[s:s + chunk] * torch.exp(-0.5 * m) * (m < 9)).sum(1)
            return out

    # -------------------------------------------------------------------- training hooks
    def track(self, meta: Dict[str, Any]) -> None:
        """Called by the renderer on a training render: keep the 2D means for the densification stats."""
        self._meta = meta

    @torch.no_grad()
    def after_backward(self) -> None:
        """Accumulate the screen-space gradient norms of the last training render (3DGS statistic)."""
        meta, self._meta = self._meta, None
        if meta is None or meta["means2d"].grad is None:
            return
        g = meta["means2d"].grad.clone()  # [C,N,2] pixels
        C = g.shape[0]
        g[..., 0] *= 0.5 * meta["width"] * C  # to NDC units, and undo the batch mean of the loss
        g[..., 1] *= 0.5 * meta["height"] * C
        visible = (meta["radii"] > 0).all(-1)
        self.grad_accum += (g.norm(dim=-1) * visible).sum(0)
        self.grad_count += visible.sum(0).to(self.grad_count.dtype)

    @torch.no_grad()
    def after_step(self, step: int, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
        """Densify / prune / reset opacities when the schedule says so (``step`` is the step just taken)."""
        cfg, s = self.cfg, step + 1
        if cfg.project_colours:
            self.project_colours()
        if cfg.densify_from <= s < cfg.densify_until and s % cfg.densify_every == 0:
            self.densify_and_prune(optimizer, generator)
        reset_until = cfg.densify_until if cfg.opacity_reset_until is None else cfg.opacity_reset_until
        if cfg.opacity_reset_every and s % cfg.opacity_reset_every == 0 and s < reset_until:
            self.reset_opacity(optimizer)

    @torch.no_grad()
    def project_colours(self) -> None:
        """Base colours (``sh0``) moved into the [0, 1] range they are drawn clamped to: the drawn
        colours stay as they are, and every channel gets a gradient again."""
        rgb = sh_dc_to_rgb(self.sh0).clamp(0, 1)
        self.sh0.copy_((rgb - 0.5) / SH_C0)

    @torch.no_grad()
    def densify_and_prune(self, optimizer: Optional[torch.optim.Optimizer], generator: torch.Generator) -> Dict[str, int]:
        cfg = self.cfg
        avg = self.grad_accum / self.grad_count.clamp(min=1)
        big_grad = avg > cfg.grad_threshold
        max_scale = self.scales().max(-1).values
        small = max_scale <= cfg.percent_dense * cfg.scene_extent
        room = max(0, cfg.max_gaussians - self.num_gaussians)
        candidates = big_grad.nonzero()[:, 0]
        if len(candidates) > room:  # keep the largest gradients
            candidates = candidates[avg[candidates].argsort(descending=True)[:room]]
        clone = candidates[small[candidates]]
        split = candidates[~small[candidates]]
        split = split[: max(0, room - len(clone))]
        params = {name: getattr(self, name).detach() for name in PARAM_NAMES}
        extra = {name: [p[clone]] for name, p in params.items()}
        if len(split):  # two new Gaussians drawn from each split one, smaller by 1.6
            from text3d.renderers.gaussians import quat_to_rotmat

            R = quat_to_rotmat(params["quats"][split])
            sc = self.scales()[split]
            for _ in range(2):
                z = torch.randn(len(split), 3, generator=generator).to(sc) * sc
                extra["means"].append(params["means"][split] + (R @ z[..., None])[..., 0])
                extra["log_scales"].append(params["log_scales"][split] - math.log(1.6))
                for name in ("quats", "opacity_logits", "sh0", "shN"):
                    extra[name].append(params[name][split])
        keep = torch.ones(self.num_gaussians, dtype=torch.bool, device=self.means.device)
        keep[split] = False
        prune = self.opacities() < cfg.prune_opacity
        if cfg.prune_scale > 0:
            prune |= max_scale > cfg.prune_scale * cfg.scene_extent
        n_new = len(clone) + 2 * len(split)
        keep_new = torch.ones(n_new, dtype=torch.bool, device=keep.device)
        if n_new:  # new Gaussians inherit the opacity / scale of their parent
            ex_op = torch.sigmoid(torch.cat(extra["opacity_logits"]))
            keep_new = ex_op >= cfg.prune_opacity
        keep &= ~prune
        if int(keep.sum()) + int(keep_new.sum()) == 0:
            logger.warning("densification would remove every Gaussian; keeping them")
            keep[:] = True
        new_values = {name: torch.cat(v)[keep_new] for name, v in extra.items()}
        before = self.num_gaussians
        self._replace(keep, new_values, optimizer)
        # total = before + cloned + split - pruned: a clone or split child too faint to keep counts as pruned
        stats = {"cloned": len(clone), "split": len(split),
                 "pruned": before + len(clone) + len(split) - self.num_gaussians, "total": self.num_gaussians}
        logger.info("densify: %(cloned)d cloned, %(split)d split, %(pruned)d pruned -> %(total)d Gaussians", stats)
        return stats

    @torch.no_grad()
    def reset_opacity(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        cap = torch.logit(torch.tensor(2 * self.cfg.prune_opacity))
        self.opacity_logits.data.clamp_(max=float(cap))
        if optimizer is not None:
            for key, value in optimizer.state.get(self.opacity_logits, {}).items():
                if torch.is_tensor(value) and value.shape == self.opacity_logits.shape:
                    value.zero_()

    def _replace(self, keep: Tensor, new_values: Dict[str, Tensor],
                 optimizer: Optional[torch.optim.Optimizer]) -> None:
        """Keep rows ``keep`` of every parameter, append ``new_values``; carry Adam's moments along."""
        for name in PARAM_NAMES:
            old = getattr(self, name)
            new = nn.Parameter(torch.cat([old.detach()[keep], new_values[name].to(old)]))
            if optimizer is not None:
                _swap_in_optimizer(optimizer, old, new, keep, new_values[name].shape[0])
            setattr(self, name, new)
        n = self.means.shape[0]
        self.grad_accum = torch.zeros(n, device=self.means.device)
        self.grad_count = torch.zeros(n, device=self.means.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints of densified runs hold other counts: take the checkpoint's shapes first."""
        for name in PARAM_NAMES:
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, nn.Parameter(torch.empty_like(state_dict[key], device=self.means.device)))
        for name in ("grad_accum", "grad_count"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.means.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _swap_in_optimizer(optimizer: torch.optim.Optimizer, old: Tensor, new: Tensor, keep: Tensor, n_new: int) -> None:
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
                state = optimizer.state.pop(old, None)
                if state:
                    for key, value in state.items():
                        if torch.is_tensor(value) and value.shape == old.shape:
                            state[key] = torch.cat([value[keep], value.new_zeros((n_new,) + value.shape[1:])])
                    optimizer.state[new] = state
                return


# --------------------------------------------------------------------------------------------
# Initialisation
def _mean_spacing(n: int, radius: float) -> float:
    """Mean nearest-neighbour distance of ``n`` uniform points in a ball (0.554 (V/n)^(1/3))."""
    return 0.554 * (4.0 / 3.0 * math.pi * radius**3 / max(n, 1)) ** (1.0 / 3.0)


def _from_points(points: Tensor, colors: Tensor, cfg: GaussianGeometryConfig, scale: float) -> Dict[str, Tensor]:
    n = points.shape[0]
    K = (cfg.sh_degree + 1) ** 2
    s = cfg.init_scale if cfg.init_scale > 0 else scale
    return {
        "means": points.float(),
        "log_scales": torch.full((n, 3), math.log(s)),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        "opacity_logits": torch.full((n,), math.log(cfg.init_opacity / (1 - cfg.init_opacity))),
        "sh0": ((colors.float().clamp(0, 1) - 0.5) / SH_C0)[:, None, :],
        "shN": torch.zeros(n, K - 1, 3),
    }


def initial_gaussians(cfg: GaussianGeometryConfig, generator: torch.Generator) -> Dict[str, Tensor]:
    """Parameter tensors for ``cfg.init`` (see :class:`GaussianGeometryConfig`)."""
    if cfg.init == "random":
        d = torch.randn(cfg.num_points, 3, generator=generator)
        r = cfg.radius * torch.rand(cfg.num_points, 1, generator=generator) ** (1.0 / 3.0)
        points = F.normalize(d, dim=-1) * r
        colors = torch.rand(cfg.num_points, 3, generator=generator)
        return _from_points(points, colors, cfg, _mean_spacing(cfg.num_points, cfg.radius))
    path = Path(str(cfg.init_path)).expanduser()
    if not path.exists():
        raise ConfigError(f"geometry.init_path: {path} does not exist")
    if cfg.init == "ply":
        params, _ = read_ply(path)
        K = (cfg.sh_degree + 1) ** 2
        sh = torch.cat([params["sh0"], params["shN"]], 1)
        sh = torch.cat([sh, torch.zeros(sh.shape[0], max(0, K - sh.shape[1]), 3)], 1)[:, :K]
        params.update(sh0=sh[:, :1].contiguous(), shN=sh[:, 1:].contiguous())
        return params
    if cfg.init == "point-cloud":
        points, colors = _read_point_cloud(path, generator)
    elif cfg.init == "mesh":
        points, colors = _sample_mesh(path, cfg.num_points, generator)
    else:
        points, colors = _sample_nerf(path, cfg.num_points, generator)
    extent = float((points.max(0).values - points.min(0).values).max().clamp(min=1e-3))
    return _from_points(points, colors, cfg, _mean_spacing(points.shape[0], 0.5 * extent))


def _read_point_cloud(path: Path, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    import trimesh

    cloud = trimesh.load(str(path), process=False)
    vertices = getattr(cloud, "vertices", None)
    if vertices is None or len(vertices) == 0:
        raise ConfigError(f"geometry.init_path: {path} holds no points")
    points = torch.as_tensor(np.asarray(vertices), dtype=torch.float32)
    colors = getattr(cloud, "colors", None)
    if colors is not None and len(colors) == len(points):
        return points, torch.as_tensor(np.asarray(colors)[:, :3], dtype=torch.float32) / 255.0
    return points, torch.rand(points.shape[0], 3, generator=generator)


def _sample_mesh(path: Path, n: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    import trimesh

    mesh = trimesh.load(str(path), force="mesh", process=False)
    if not hasattr(mesh, "faces") or len(mesh.faces) == 0:
        raise ConfigError(f"geometry.init_path: {path} holds no triangles")
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    points, face_idx = trimesh.sample.sample_surface(mesh, n, seed=seed)
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture":
        visual = visual.to_color()
    if getattr(visual, "kind", None) in ("face", "vertex"):
        colors = np.asarray(visual.face_colors)[face_idx, :3] / 255.0
    else:  # a mesh without colours: random ones, as the random initialisation
        colors = torch.rand(n, 3, generator=generator).numpy()
    return torch.as_tensor(np.asarray(points), dtype=torch.float32), torch.as_tensor(colors, dtype=torch.float32)


@torch.no_grad()
def _sample_nerf(run_dir: Path, n: int, generator: torch.Generator, resolution: int = 64) -> Tuple[Tensor, Tensor]:
    """Points drawn with probability proportional to a NeRF run's density (above its median), with its albedo."""
    from .rundir import load_geometry

    geometry, _ = load_geometry(run_dir)
    r = float(getattr(geometry.cfg, "radius", 1.0))
    axis = torch.linspace(-r, r, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).view(-1, 3)
    sigma = torch.cat([geometry.density(grid[s:s + 65536]).view(-1) for s in range(0, len(grid), 65536)])
    weights = (sigma - sigma.median()).clamp(min=0)
    if not float(weights.sum()) > 0:
        raise ConfigError(f"geometry.init_path: the NeRF in {run_dir} has no density above its median; "
                          "train it longer or use init: random")
    idx = torch.multinomial(weights, n, replacement=True, generator=generator)
    jitter = (torch.rand(n, 3, generator=generator) - 0.5) * (2 * r / resolution)
    points = grid[idx] + jitter
    colors = geometry(points)["albedo"].clamp(0, 1)
    return points, colors


def model_params(model: GaussianModel) -> Dict[str, Tensor]:
    """The parameters as drawn, in 3DGS's unconstrained form: ``log_scales`` are those of
    :meth:`GaussianModel.scales` (flattened), for a ``.ply`` or an export."""
    params = {name: getattr(model, name) for name in PARAM_NAMES}
    if model.cfg.flatten != 1.0:
        params["log_scales"] = torch.log(model.scales())
    return params
