"""Gaussian geometry: .ply round trips, densification and pruning, Gaussian runs (outputs, resume)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from text3d.cli import main
from text3d.core.errors import ConfigError
from text3d.scene.gaussians import (GaussianGeometryConfig, GaussianModel, PlyError, model_params, ply_properties, read_ply,
                              write_ply)
from text3d.run import open_run

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "quickstart-gaussians.yaml"
FAST = ["geometry.num_points=300", "cameras.width=24", "cameras.height=24", "cameras.resolution_milestones=[3]",
        "cameras.resolutions=[32]", "cameras.batch_size=2", "geometry.densify_from=2", "geometry.densify_every=2",
        "geometry.densify_until=100", "geometry.grad_threshold=0.0", "geometry.max_gaussians=1200",
        "trainer.val_every=3", "trainer.val_views=2", "trainer.val_resolution=32", "trainer.turntable_frames=3",
        "trainer.turntable_resolution=32", "trainer.checkpoint_every=2", "trainer.log_every=0"]


def _overrides(tmp_path, *extra):  # the preset's prior: the shipped shapes prior
    return [f"output_dir={tmp_path / 'outputs'}", *FAST, *extra]


def _model(n=50, sh_degree=1, seed=0, **kw) -> GaussianModel:
    return GaussianModel(GaussianGeometryConfig(num_points=n, sh_degree=sh_degree, seed=seed, **kw))


def test_ply_round_trip_and_another_reader(tmp_path):
    model = _model(sh_degree=2)
    with torch.no_grad():
        model.shN.normal_()
        model.quats.normal_()
    path = write_ply(tmp_path / "g.ply", model_params(model))
    params, degree = read_ply(path)
    assert degree == 2
    for name, value in model_params(model).items():
        torch.testing.assert_close(params[name], value.detach(), rtol=0, atol=0, msg=name)
    ply = PlyData.read(str(path))  # an independent reader sees the standard 3DGS layout
    names = [p.name for p in ply["vertex"].properties]
    assert names == ply_properties(2) and ply["vertex"].count == 50
    v = ply["vertex"]
    np.testing.assert_array_equal(v["x"], model.means[:, 0].detach().numpy())
    np.testing.assert_array_equal(v["opacity"], model.opacity_logits.detach().numpy())  # a logit
    np.testing.assert_array_equal(v["scale_1"], model.log_scales[:, 1].detach().numpy())  # a log
    np.testing.assert_array_equal(v["rot_0"], model.quats[:, 0].detach().numpy())  # w first
    # f_rest is channel-major: f_rest_{c * (K-1) + k} = shN[:, k, c]
    np.testing.assert_array_equal(v["f_rest_9"], model.shN[:, 1, 1].detach().numpy())


def test_ply_with_missing_attributes_names_them(tmp_path):
    path = write_ply(tmp_path / "g.ply", model_params(_model(sh_degree=0)))
    ply = PlyData.read(str(path))
    keep = [p.name for p in ply["vertex"].properties if p.name not in ("opacity", "scale_2")]
    from plyfile import PlyElement

    arr = ply["vertex"].data[keep]
    PlyData([PlyElement.describe(np.array(arr.tolist(), dtype=[(k, "<f4") for k in keep]), "vertex")]).write(
        str(tmp_path / "bad.ply"))
    with pytest.raises(PlyError, match="missing attribute.*opacity, scale_2"):
        read_ply(tmp_path / "bad.ply")
    (tmp_path / "text.txt").write_text("hello")
    with pytest.raises(PlyError, match="not a .ply"):
        read_ply(tmp_path / "text.txt")


def test_densify_clones_small_splits_large_prunes_faint_and_carries_adam_state():
    model = _model(n=6, sh_degree=0, percent_dense=0.05, prune_opacity=0.05, grad_threshold=0.5)
    with torch.no_grad():
        model.log_scales[:] = torch.log(torch.tensor([0.01, 0.01, 0.2, 0.2, 0.01, 0.01]))[:, None]
        model.opacity_logits[:] = torch.logit(torch.tensor([0.5, 0.5, 0.5, 0.5, 0.01, 0.5]))
        model.means[:] = torch.arange(6.0)[:, None]
    model.grad_accum[:] = torch.tensor([1.0, 0.1, 1.0, 0.1, 1.0, 0.1])
    model.grad_count[:] = 1.0
    groups = model.parameter_groups()
    opt = torch.optim.Adam([{"params": p, "name": k} for k, p in groups.items()], lr=0.1)
    loss = sum((p ** 2).sum() for ps in groups.values() for p in ps)
    loss.backward()
    opt.step()
    old_avg = opt.state[model.means]["exp_avg"].clone()
    old_means, old_scales = model.means.detach().clone(), model.scales().detach().clone()
    stats = model.densify_and_prune(opt, torch.Generator().manual_seed(0))
    # 0: cloned; 2: split into two (original removed); 4: faint -> pruned, and its clone too
    assert stats == {"cloned": 2, "split": 1, "pruned": 2, "total": 6 - 1 - 1 + 1 + 2}
    assert stats["total"] == 6 + stats["cloned"] + stats["split"] - stats["pruned"]
    means = model.means.detach()
    kept = [0, 1, 3, 5]
    torch.testing.assert_close(means[:4], old_means[kept])
    torch.testing.assert_close(means[4], old_means[0])  # the clone of Gaussian 0 (the clone of 4 was faint)
    torch.testing.assert_close(model.scales()[5:], (old_scales[2] / 1.6).expand(2, 3))  # split children
    assert ((means[5:] - old_means[2]).abs() < 1.0).all() and not torch.equal(means[5], means[6])
    state = opt.state[model.means]
    torch.testing.assert_close(state["exp_avg"][:4], old_avg[kept])
    assert (state["exp_avg"][4:] == 0).all() and state["exp_avg"].shape == (7, 3)
    assert all(p is q for (k, ps), g in zip(model.parameter_groups().items(), opt.param_groups) for p, q in
               zip(ps, g["params"]))
    assert model.grad_accum.shape == (7,) and model.grad_accum.sum() == 0


def test_reset_opacity_caps_and_clears_adam_moments():
    model = _model(n=4, sh_degree=0, prune_opacity=0.01)
    with torch.no_grad():
        model.opacity_logits[:] = 3.0
    opt = torch.optim.Adam([model.opacity_logits], lr=0.1)
    model.opacity_logits.sum().backward()
    opt.step()
    model.reset_opacity(opt)
    torch.testing.assert_close(model.opacities(), torch.full((4,), 0.02))
    assert (opt.state[model.opacity_logits]["exp_avg"] == 0).all()


@pytest.mark.parametrize("until, resets", [(None, [50, 100]), (51, [50])])
def test_opacity_resets_stop_at_opacity_reset_until_or_with_densification(until, resets):
    model = _model(n=4, sh_degree=0, prune_opacity=0.01, opacity_reset_every=50, opacity_reset_until=until,
                   densify_from=1000, densify_until=150)  # densification never runs: only the resets act
    seen = []
    for step in range(200):
        with torch.no_grad():
            model.opacity_logits[:] = 3.0
        model.after_step(step, None, torch.Generator())
        if model.opacities().max() < 0.5:
            seen.append(step + 1)
    assert seen == resets


def test_projected_colours_draw_the_same_and_get_their_gradient_back():
    """A base colour beyond [0, 1] is drawn clamped and its channel gets no gradient; projected (after
    every step with ``project_colours``) it draws the same and the channel can move again."""
    from text3d.renderers.gaussians import SH_C0

    model = _model(n=3, sh_degree=0, project_colours=True)
    rgb = torch.tensor([[1.6, 0.5, -0.4], [0.2, 1.0, 0.0], [0.3, 0.4, 0.5]])
    with torch.no_grad():
        model.sh0[:, 0] = (rgb - 0.5) / SH_C0
    drawn = model.base_colors().clone()
    model.base_colors().sum().backward()
    assert model.sh0.grad[0, 0, 0] == 0 and model.sh0.grad[0, 0, 2] == 0  # the clamp stops the gradient
    opt = torch.optim.Adam([model.sh0], lr=0.0)
    model.after_step(0, opt, torch.Generator())
    torch.testing.assert_close(model.base_colors(), drawn)  # nothing drawn changed
    torch.testing.assert_close(0.5 + SH_C0 * model.sh0[:, 0], rgb.clamp(0, 1))
    model.sh0.grad = None
    model.base_colors().sum().backward()
    assert (model.sh0.grad[0, 0] != 0).all()  # every channel moves again


def test_init_from_point_cloud_mesh_and_ply(tmp_path):
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    sphere.visual.face_colors = [255, 0, 0, 255]
    sphere.export(tmp_path / "sphere.ply")
    cloud = trimesh.PointCloud(sphere.vertices, colors=np.tile([0, 255, 0, 255], (len(sphere.vertices), 1)))
    cloud.export(tmp_path / "cloud.ply")
    m = GaussianModel(GaussianGeometryConfig(init="mesh", init_path=str(tmp_path / "sphere.ply"), num_points=200, seed=0))
    assert m.num_gaussians == 200
    torch.testing.assert_close(m.means.detach().norm(dim=-1), torch.full((200,), 0.4), atol=0.02, rtol=0)
    torch.testing.assert_close(m.base_colors()[:, 0], torch.ones(200), atol=1e-5, rtol=0)  # red faces
    c = GaussianModel(GaussianGeometryConfig(init="point-cloud", init_path=str(tmp_path / "cloud.ply"), seed=0))
    assert c.num_gaussians == len(sphere.vertices)
    torch.testing.assert_close(c.base_colors()[:, 1], torch.ones(c.num_gaussians), atol=1e-5, rtol=0)
    write_ply(tmp_path / "g.ply", model_params(c))
    p = GaussianModel(GaussianGeometryConfig(init="ply", init_path=str(tmp_path / "g.ply"), sh_degree=1))
    torch.testing.assert_close(p.means, c.means)
    assert p.shN.shape == (c.num_gaussians, 3, 3)
    with pytest.raises(ConfigError, match="init_path"):
        GaussianModel(GaussianGeometryConfig(init="mesh"))


def test_gaussian_run_outputs_and_resume_across_densification(tmp_path, capsys):
    reset = "geometry.opacity_reset_every=4"  # the resumed half crosses an opacity reset
    code = main(["run", str(QUICK), *_overrides(tmp_path, "steps=6", "name=full", reset), "--no-progress"])
    assert code == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    params, _ = read_ply(run_dir / "gaussians.ply")
    assert metrics["num_gaussians"] == params["means"].shape[0] > 300  # densified
    assert (run_dir / "turntable.mp4").is_file() and "silhouette_iou" in metrics

    part = open_run(QUICK, _overrides(tmp_path, "steps=3", "name=part", reset))
    part.fit()
    resumed = open_run(None, [f"resume={part.run_dir}", "steps=6"])
    assert resumed.step == 3
    resumed.fit()
    from safetensors.torch import load_file

    full_state = load_file(run_dir / "ckpts" / "last" / "state.safetensors")
    part_state = load_file(part.run_dir / "ckpts" / "last" / "state.safetensors")
    assert full_state.keys() == part_state.keys()
    for k in full_state:
        assert torch.equal(full_state[k], part_state[k]), k


def test_init_from_a_nerf_run_samples_where_the_density_is(tmp_path, tiny_sd_dir, capsys):
    smoke = REPO / "configs" / "smoke-tiny-sd.yaml"
    code = main(["run", str(smoke), f"prior.model={tiny_sd_dir}", f"output_dir={tmp_path}", "steps=1",
                 "cameras.width=16", "cameras.height=16", "trainer.val_every=0", "trainer.turntable_frames=0",
                 "export.enabled=false", "--no-progress"])
    assert code == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    model = GaussianModel(GaussianGeometryConfig(init="nerf", init_path=str(run_dir), num_points=500, seed=0))
    from text3d.scene.rundir import load_geometry

    nerf, _ = load_geometry(run_dir)
    with torch.no_grad():
        at_points = nerf.density(model.means.detach()).view(-1)
        g = torch.Generator().manual_seed(1)
        uniform = nerf.density((torch.rand(500, 3, generator=g) * 2 - 1) * nerf.radius).view(-1)
    assert model.num_gaussians == 500
    assert at_points.median() > 2 * uniform.median()  # drawn where the field is dense (the density blob)


def test_flatten_shrinks_the_shortest_axis_everywhere_it_is_drawn_or_written(tmp_path):
    """geometry.flatten: the shortest axis times the factor, in scales(), in the .ply (read back by the
    reader other tools use) and in renders: a flat disc seen edge-on covers a sliver of what it
    covers face-on, a round Gaussian the same from both sides."""
    from text3d.scene.cameras import orbit_cameras
    from text3d.renderers.gaussians import rasterize_gaussians

    def one(flatten):
        model = GaussianModel(GaussianGeometryConfig(num_points=1, seed=0, flatten=flatten))
        with torch.no_grad():
            model.means.zero_()
            model.quats.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
            model.log_scales.copy_(torch.log(torch.tensor([[0.2, 0.19, 0.21]])))
            model.opacity_logits.fill_(5.0)
        return model

    flat = one(0.1)
    torch.testing.assert_close(flat.scales(), torch.tensor([[0.2, 0.019, 0.21]]))
    torch.testing.assert_close(one(1.0).scales(), torch.tensor([[0.2, 0.19, 0.21]]))
    write_ply(tmp_path / "g.ply", model_params(flat))
    params, _ = read_ply(tmp_path / "g.ply")
    torch.testing.assert_close(params["log_scales"].exp(), flat.scales().detach())

    def covered(model, azimuth):  # the disc's normal is y: azimuth 90 looks along it, 0 across it
        cams = orbit_cameras(torch.tensor([azimuth]), torch.tensor([0.0]), torch.tensor([3.0]), torch.tensor([32.0]),
                             64, 64)
        with torch.no_grad():
            _, alpha, _ = rasterize_gaussians(model.means, model.quats, model.scales(), model.opacities(),
                                              model.base_colors(), cams.viewmats(), cams.intrinsics(), 64, 64,
                                              backend="torch")
        return float((alpha > 0.5).sum())

    assert covered(flat, 0.0) < 0.3 * covered(flat, 90.0)
    round_ = one(1.0)
    assert abs(covered(round_, 0.0) - covered(round_, 90.0)) <= 0.1 * covered(round_, 90.0)
    assert covered(flat, 90.0) == covered(round_, 90.0)  # face-on the disc is the round Gaussian's outline


def test_camera_light_shades_a_disc_as_the_prior_world_is_lit():
    """camera-light: a flat Gaussian facing the camera gets albedo * (0.35 + 0.65 l_z), l the prior's
    camera-frame light (closed form); seen from behind, its normal turns to the camera; its defaults
    are the shapes prior's own constants; the albedo mode is unlit."""
    from text3d.scene.cameras import orbit_cameras
    from text3d.renderers.shading import CameraLight, CameraLightConfig
    from text3d.prior.shapes import AMBIENT, LIGHT_DIR_CAMERA

    cfg = CameraLightConfig()
    assert tuple(cfg.direction) == tuple(LIGHT_DIR_CAMERA) and cfg.ambient == AMBIENT
    model = GaussianModel(GaussianGeometryConfig(num_points=1, seed=0, flatten=0.1))
    with torch.no_grad():
        model.means.zero_()
        model.quats.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        model.log_scales.copy_(torch.log(torch.tensor([[0.2, 0.1, 0.21]])))  # shortest axis: y
    torch.testing.assert_close(model.normals().abs(), torch.tensor([[0.0, 1.0, 0.0]]))
    cams = orbit_cameras(torch.tensor([90.0, -90.0]), torch.zeros(2), torch.full((2,), 3.0), torch.full((2,), 32.0),
                         8, 8)  # on the +y and -y axes: face-on from both sides
    albedo = torch.tensor([[0.8, 0.4, 0.2]])
    colors = CameraLight(cfg).gaussian_colors(albedo, model.normals(), model.means, cams.c2w)
    l_z = 1.0 / math.sqrt(0.4 ** 2 + 0.6 ** 2 + 1.0)
    expected = albedo * (AMBIENT + (1 - AMBIENT) * l_z)
    torch.testing.assert_close(colors, expected.expand(2, 1, 3))
    light = CameraLight(cfg)
    assert light.choose_mode(0) == "diffuse"
    torch.testing.assert_close(light.shade(albedo, None, torch.zeros(1, 3), torch.zeros(1, 3), "albedo"), albedo)
    with pytest.raises(ConfigError, match="camera-light shades 3D Gaussians"):
        light.shade(albedo, None, torch.zeros(1, 3), torch.zeros(1, 3), "diffuse")


def test_gaussian_renderer_shades_training_views_and_not_albedo_views():
    from text3d.scene.cameras import orbit_cameras
    from text3d.renderers.splatting import GaussianRenderer, GaussianRendererConfig
    from text3d.renderers.shading import CameraLight, CameraLightConfig, NoMaterial, NoMaterialConfig

    model = GaussianModel(GaussianGeometryConfig(num_points=200, seed=0, flatten=0.1))
    cams = orbit_cameras(torch.tensor([30.0]), torch.tensor([20.0]), torch.tensor([3.0]), torch.tensor([32.0]), 16, 16)
    bg = lambda dirs, train=True, generator=None: torch.ones_like(dirs)  # noqa: E731
    render = GaussianRenderer(GaussianRendererConfig(backend="torch"))
    with torch.no_grad():
        plain = render(model, NoMaterial(NoMaterialConfig()), bg, cams, mode="albedo")
        unlit = render(model, CameraLight(CameraLightConfig()), bg, cams, mode="albedo")
        lit = render(model, CameraLight(CameraLightConfig()), bg, cams, mode="diffuse")
    torch.testing.assert_close(unlit["rgb"], plain["rgb"])
    torch.testing.assert_close(lit["opacity"], plain["opacity"])  # shading changes colour, not coverage
    assert (lit["rgb"] <= plain["rgb"] + 1e-6).all() and (lit["rgb"] < plain["rgb"] - 1e-3).any()
