"""The nerf-volume renderer against closed-form scenes, nerfacc's batched compositing, and itself."""

from types import SimpleNamespace

import nerfacc
import pytest
import torch
from torch import nn

from text3d.scene.background import SolidBackground, SolidBackgroundConfig
from text3d.scene.cameras import turntable
from text3d.core.errors import ConfigError
from text3d.scene.geometry import ImplicitVolume, ImplicitVolumeConfig
from text3d.renderers.registry import RENDERERS
from text3d.renderers import (
    DiffuseWithPointLight,
    DiffuseWithPointLightConfig,
    NoMaterial,
    NoMaterialConfig,
    VolumeRenderer,
    VolumeRendererConfig,
    composite,
    ray_box_intersect,
)

ALBEDO = (0.2, 0.5, 0.8)
BG = [1.0, 0.9, 0.0]


class UniformSphere(nn.Module):
    """Density ``sigma`` inside a ball of radius ``R`` at the origin, constant albedo; counts points."""

    def __init__(self, R: float = 0.5, sigma: float = 3.0, box_radius: float = 1.0):
        super().__init__()
        self.R, self.sigma, self.cfg, self.n_points = R, sigma, SimpleNamespace(radius=box_radius), 0

    def density(self, p):
        return torch.where(p.norm(dim=-1) < self.R, self.sigma, 0.0).to(p.dtype)

    def forward(self, p, with_normal=False):
        self.n_points += p.shape[0]
        albedo = torch.tensor(ALBEDO, dtype=p.dtype, device=p.device).expand(p.shape[0], 3)
        out = {"density": self.density(p), "albedo": albedo}
        if with_normal:
            out["normal"] = torch.nn.functional.normalize(p, dim=-1)
        return out


class GaussianBlob(UniformSphere):
    """Smooth density ``sigma * exp(-|p|^2 / (2 s^2))``: its line integral is closed-form."""

    def __init__(self, s: float = 0.2, sigma: float = 4.0):
        super().__init__(R=1.0, sigma=sigma)
        self.s = s

    def density(self, p):
        return self.sigma * torch.exp(-0.5 * (p.norm(dim=-1) / self.s) ** 2)


def _renderer(**overrides) -> VolumeRenderer:
    return RENDERERS.build(VolumeRendererConfig(**overrides))


def _background():
    return SolidBackground(SolidBackgroundConfig(color=list(BG)))


def _camera(size=24):
    return turntable(1, elevation_deg=20.0, distance=2.5, fovy_deg=40.0, width=size, height=size)


def _impact(cams):
    """Per pixel: distance of the ray's line to the origin, and distance along the ray to its foot."""
    o, d = cams.rays()
    t_foot = -(o * d).sum(-1)
    b = (o + t_foot[..., None] * d).norm(dim=-1)
    return b[0], t_foot[0]


@torch.no_grad()
def test_uniform_sphere_opacity_rgb_depth_match_closed_form():
    S, sphere, cams = 1024, UniformSphere(R=0.5, sigma=3.0), _camera()
    out = _renderer(num_samples_per_ray=S, occupancy_grid=False)(
        sphere, NoMaterial(NoMaterialConfig()), _background(), cams, train=False)
    b, _ = _impact(cams)
    chord = 2 * (0.5 ** 2 - b ** 2).clamp_min(0).sqrt()
    expected = 1 - torch.exp(-sphere.sigma * chord)
    opacity = out["opacity"][0, ..., 0]
    # midpoint rule on an indicator: at most one bin of error at each of the two boundaries
    max_delta = 2 * 3 ** 0.5 / S
    assert (opacity - expected).abs().max() <= 2 * sphere.sigma * max_delta
    assert (opacity - expected).abs().mean() < 2e-3
    assert expected.max() > 0.9 and (expected == 0).any()  # the image shows the edge and the outside
    rgb = opacity[..., None] * torch.tensor(ALBEDO) + (1 - opacity[..., None]) * torch.tensor(BG)
    torch.testing.assert_close(out["rgb"][0], rgb, atol=1e-5, rtol=0)


@torch.no_grad()
def test_gaussian_blob_opacity_is_tight():
    blob, cams = GaussianBlob(s=0.2, sigma=4.0), _camera()
    out = _renderer(num_samples_per_ray=512, occupancy_grid=False)(
        blob, NoMaterial(NoMaterialConfig()), _background(), cams, train=False)
    b, _ = _impact(cams)
    tau = blob.sigma * torch.exp(-0.5 * (b / blob.s) ** 2) * blob.s * (2 * torch.pi) ** 0.5
    torch.testing.assert_close(out["opacity"][0, ..., 0], 1 - torch.exp(-tau), atol=2e-5, rtol=0)


@torch.no_grad()
def test_opaque_sphere_depth_is_distance_to_surface():
    sphere, cams = UniformSphere(R=0.5, sigma=400.0), _camera()
    out = _renderer(num_samples_per_ray=1024, occupancy_grid=False)(
        sphere, NoMaterial(NoMaterialConfig()), _background(), cams, train=False)
    b, t_foot = _impact(cams)
    inner = b < 0.4
    t_surface = t_foot - (0.5 ** 2 - b ** 2).clamp_min(0).sqrt()
    depth = out["depth"][0, ..., 0] / out["opacity"][0, ..., 0].clamp_min(1e-6)
    assert inner.sum() > 50
    assert (depth[inner] - t_surface[inner]).abs().max() < 0.01
    assert torch.all(out["depth"][0, ..., 0][b > 1.8] == 0)  # rays that miss the box


def test_composite_matches_nerfacc_batched_and_gradients():
    gen = torch.Generator().manual_seed(0)
    R, S = 5, 7
    sig = (torch.rand(R, S, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    rgbs = torch.rand(R, S, 3, generator=gen, dtype=torch.float64).requires_grad_()
    bg = torch.rand(R, 3, generator=gen, dtype=torch.float64).requires_grad_()
    edges = torch.sort(torch.rand(R, S + 1, generator=gen, dtype=torch.float64) * 2, dim=1).values
    t0, t1 = edges[:, :-1], edges[:, 1:]
    ours = composite(sig, rgbs, (t0 + t1) / 2, t1 - t0, bg)
    rgb, opacity, depth, _ = nerfacc.rendering(t0, t1, rgb_sigma_fn=lambda *_: (rgbs, sig))
    ref = {"rgb": rgb + (1 - opacity) * bg, "opacity": opacity, "depth": depth * opacity}
    upstream = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in ref.items()}
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k])
    g_ours = torch.autograd.grad(sum((ours[k] * upstream[k]).sum() for k in ref), (sig, rgbs, bg))
    g_ref = torch.autograd.grad(sum((ref[k] * upstream[k]).sum() for k in ref), (sig, rgbs, bg))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda s, c, g: composite(s, c, (t0 + t1) / 2, t1 - t0, g)["rgb"],
                                    (sig, rgbs, bg))


def test_ray_box_intersection():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [2.0, 2.0, 3.0], [0.5, 0.5, 3.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far, hit = ray_box_intersect(o, d, 1.0)
    assert hit.tolist() == [True, True, False, True]
    torch.testing.assert_close(near[[0, 1, 3]], torch.tensor([2.0, 0.0, 2.0]))
    torch.testing.assert_close(far[[0, 1, 3]], torch.tensor([4.0, 1.0, 4.0]))


def _train_grid(renderer, field, updates=8):
    gen = torch.Generator().manual_seed(0)
    for step in range(updates * renderer.cfg.grid_update_every):
        renderer.update_occupancy(field, step, gen)


@torch.no_grad()
def test_occupancy_grid_skips_evaluations_without_changing_the_render():
    sphere, cams, mat = UniformSphere(R=0.5, sigma=3.0), _camera(32), NoMaterial(NoMaterialConfig())
    culled = _renderer(num_samples_per_ray=64, grid_dilation=1)
    _train_grid(culled, sphere, updates=1)
    assert bool(culled.grid.active)
    occupied = culled.grid.binary.float().mean()
    assert 0.065 < occupied < 0.15, occupied  # the ball is 6.5% of the box; plus boundary and dilation
    assert not culled.grid.occupied(torch.tensor([[0.0, 0.0, 0.75]])).item()
    sphere.n_points = 0
    out = culled(sphere, mat, _background(), cams, train=False)
    n_culled, sphere.n_points = sphere.n_points, 0
    ref = _renderer(num_samples_per_ray=64, occupancy_grid=False)(sphere, mat, _background(), cams, train=False)
    assert n_culled < 0.35 * sphere.n_points, (n_culled, sphere.n_points)
    for k in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(out[k], ref[k], atol=1e-6, rtol=0)


class AlignedCube(UniformSphere):
    """Density inside ``[-0.5, 0.5]^3``: its faces lie on the 32^3 grid's cell faces."""

    def density(self, p):
        return torch.where((p.abs() < 0.5).all(dim=-1), self.sigma, 0.0).to(p.dtype)


@torch.no_grad()
def test_occupancy_grid_is_exact_for_cell_aligned_matter_without_dilation():
    cube, cams, mat = AlignedCube(sigma=2.0), _camera(32), NoMaterial(NoMaterialConfig())
    culled = _renderer(num_samples_per_ray=64, grid_dilation=0)
    _train_grid(culled, cube, updates=1)
    assert culled.grid.binary.sum() == 16 ** 3
    out = culled(cube, mat, _background(), cams, train=False)
    n_culled, cube.n_points = cube.n_points, 0
    ref = _renderer(num_samples_per_ray=64, occupancy_grid=False)(cube, mat, _background(), cams, train=False)
    assert n_culled < 0.5 * cube.n_points, (n_culled, cube.n_points)
    for k in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(out[k], ref[k], atol=1e-6, rtol=0)


def test_occupancy_update_is_deterministic_and_warmup_culls_nothing():
    field = ImplicitVolume(ImplicitVolumeConfig.cpu_preset())
    a, b = (_renderer(grid_warmup_steps=32, grid_resolution=16) for _ in range(2))
    ga, gb = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for step in range(17):
        a.update_occupancy(field, step, ga)
        b.update_occupancy(field, step, gb)
        assert not bool(a.grid.active)
        assert a.grid.occupied(torch.zeros(1, 3)).item() and a.grid.occupied(torch.full((1, 3), 0.95)).item()
    assert torch.equal(a.grid.occupancy, b.grid.occupancy) and torch.equal(ga.get_state(), gb.get_state())
    a.update_occupancy(field, 32, ga)
    assert bool(a.grid.active) and not a.grid.occupied(torch.full((1, 3), 0.95)).item()
    assert a.grid.occupied(torch.zeros(1, 3)).item()  # the blob at the centre
    assert torch.equal(a.estimator.binaries[0], a.grid.binary)  # the nerfacc mirror follows
    state = a.state_dict()
    assert {"grid.occupancy", "grid.binary", "grid.active", "estimator.binaries", "estimator.occs"} <= set(state)
    b.load_state_dict(state)
    assert torch.equal(b.grid.binary, a.grid.binary) and bool(b.grid.active)


def test_training_render_is_reproducible_and_differentiable():
    field = ImplicitVolume(ImplicitVolumeConfig.cpu_preset(normal_type="analytic"))
    mat = DiffuseWithPointLight(DiffuseWithPointLightConfig())
    renderer, cams = _renderer(num_samples_per_ray=32), _camera(16)
    renderer.update_occupancy(field, 0, torch.Generator().manual_seed(0))
    outs = [renderer(field, mat, _background(), cams, mode="diffuse", generator=torch.Generator().manual_seed(1))
            for _ in range(2)]
    for k in outs[0]:
        assert torch.equal(outs[0][k], outs[1][k]), k
    out = outs[0]
    assert out["rgb"].shape == (1, 16, 16, 3) and out["normal"].shape == (1, 16, 16, 3)
    assert out["orient_loss"].dim() == 0 and out["orient_loss"] >= 0
    (out["rgb"].mean() + out["orient_loss"]).backward()
    assert field.encoding.table.grad.abs().sum() > 0 and field.network[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        renderer(field, mat, _background(), cams, mode="albedo", generator=None, train=True)


def test_orientation_loss_penalises_normals_facing_away():
    class Inward(UniformSphere):
        def forward(self, p, with_normal=False):
            out = super().forward(p, with_normal)
            if with_normal:
                out["normal"] = -out["normal"]
            return out

    mat, cams = DiffuseWithPointLight(DiffuseWithPointLightConfig()), _camera(16)
    renderer = _renderer(num_samples_per_ray=128, occupancy_grid=False)
    with torch.no_grad():
        good = renderer(UniformSphere(sigma=50.0), mat, _background(), cams, mode="diffuse", train=False)
        bad = renderer(Inward(sigma=50.0), mat, _background(), cams, mode="diffuse", train=False)
    assert good["orient_loss"] < 1e-3 < bad["orient_loss"]
    assert "normal" not in renderer(UniformSphere(), mat, _background(), cams, mode="albedo", train=False)


@torch.no_grad()
def test_eval_chunks_do_not_change_the_render():
    field = ImplicitVolume(ImplicitVolumeConfig.cpu_preset())
    mat, cams = NoMaterial(NoMaterialConfig()), _camera(10)
    whole = _renderer(return_normal=True, num_samples_per_ray=32)(field, mat, _background(), cams, train=False)
    chunked = _renderer(return_normal=True, num_samples_per_ray=32, eval_chunk_size=30)(
        field, mat, _background(), cams, train=False)
    assert set(whole) == {"rgb", "opacity", "depth", "normal", "orient_loss"}
    for k in whole:
        torch.testing.assert_close(whole[k], chunked[k], atol=1e-6, rtol=1e-5)


def test_config_and_device_errors():
    message = "renderer.backend: unknown value 'cuda'; valid choices: auto, torch, nerfacc"
    with pytest.raises(ConfigError, match=message):
        _renderer(backend="cuda")
    mat, cams = NoMaterial(NoMaterialConfig()), _camera(4)
    with pytest.raises(ConfigError, match="renderer.radius: 1.0 differs from geometry.radius 0.5"):
        _renderer()(UniformSphere(box_radius=0.5), mat, _background(), cams, train=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs CUDA tensors"):
            _renderer(backend="nerfacc")(UniformSphere(), mat, _background(), cams, train=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the nerfacc path needs a CUDA device")
@torch.no_grad()
def test_nerfacc_path_agrees_with_torch_path_on_cuda():
    dev = torch.device("cuda")
    blob, cams, mat = GaussianBlob(s=0.2, sigma=4.0), _camera(32).to(dev), NoMaterial(NoMaterialConfig())
    bg = _background().to(dev)
    outs = {}
    for backend in ("torch", "nerfacc"):
        renderer = _renderer(backend=backend, num_samples_per_ray=1024, render_step_size=2e-3,
                             nerfacc_early_stop_eps=0.0).to(dev)
        _train_grid(renderer, blob, updates=2)
        outs[backend] = renderer(blob, mat, bg, cams, train=False)
    for k in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(outs["nerfacc"][k], outs["torch"][k], atol=2e-3, rtol=0)
