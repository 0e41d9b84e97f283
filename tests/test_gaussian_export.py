"""Mesh export of 3D Gaussians: the splatted density against the slow reference, Gaussians filling
known shapes against closed-form truth, the colour bake from rendered views, Gaussian runs and
bare .ply files through ``text3d export`` (trimesh + the Khronos validator)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from text3d.cli import main
from text3d.export.config import ExportConfig
from text3d.export import EmptyDensityError, extract_surface
from text3d.export.gaussians import GaussianCloud, export_gaussians, gaussian_grid, splat_density
from text3d.export.mesh import _is_watertight
from text3d.scene.gaussians import GaussianGeometryConfig, GaussianModel, model_params, write_ply

REPO = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent / "tools"
QUICK = REPO / "configs" / "quickstart-gaussians.yaml"
RED, BLUE = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9)
A = 0.04  # lattice spacing of the filled shapes (and their Gaussians' scale)


def lattice_cloud(inside, spacing: float = A, scale: float = A, opacity: float = 0.05, lim: float = 0.7):
    """Isotropic Gaussians on a cubic lattice wherever ``inside(points)``: a uniform density (the
    lattice's cells) filling that shape. Red above world z = 0, blue below."""
    axis = torch.arange(-lim, lim + 1e-9, spacing)
    p = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).view(-1, 3)
    p = p[inside(p)]
    n = len(p)
    colors = torch.where(p[:, 2:3] > 0, torch.tensor([RED]), torch.tensor([BLUE]))
    return GaussianCloud(p, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1), torch.full((n, 3), scale),
                         torch.full((n,), opacity), colors)


def trimesh_of(surface):
    import trimesh

    return trimesh.Trimesh(surface.vertices, surface.faces, process=False)


# ------------------------------------------------------------------------------ density
def test_splat_equals_the_reference_density_and_big_gaussians_go_coarse():
    model = GaussianModel(GaussianGeometryConfig(num_points=150, seed=0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # anisotropic, rotated, some much larger than the cells
        model.quats.copy_(torch.randn(150, 4, generator=g))
        model.log_scales.copy_(torch.log(0.01 + 0.12 * torch.rand(150, 3, generator=g)))
        model.opacity_logits.copy_(torch.randn(150, generator=g))
    cloud = GaussianCloud.from_model(model)
    n, origin, h = 65, np.full(3, -0.8, np.float32), 1.6 / 64
    values, pairs = splat_density(cloud, origin, h, n)
    idx = torch.randint(0, n, (20000, 3), generator=g).numpy()  # the slow reference at some of the nodes
    nodes = torch.from_numpy(origin + idx * h).float()
    at = tuple(idx.T)
    ref = model.density(nodes).numpy()
    # Gaussians wider than 6 cells are splatted on a 2x, 4x coarser grid and upsampled: ~1 % of a peak
    assert np.abs(values[at] - ref).max() < 0.015 * ref.max()
    assert pairs < 0.5 * n ** 3 * 150  # each Gaussian touched its box only, coarse ones fewer nodes
    with torch.no_grad():
        model.log_scales.clamp_(max=math.log(0.05))
    exact, _ = splat_density(GaussianCloud.from_model(model), origin, h, n)  # all on the fine grid: the same sums
    np.testing.assert_allclose(exact[at], model.density(nodes).numpy(), atol=1e-5)


def test_gaussians_filling_a_ball_give_its_volume_area_and_bounds():
    cloud = lattice_cloud(lambda p: p.norm(dim=1) <= 0.5)
    grid = gaussian_grid(cloud, 64)
    assert grid.level_source == "auto" and 0 < grid.level < grid.values.max()
    s = extract_surface(grid)
    m = trimesh_of(s)
    r = (len(cloud) * A ** 3 * 3 / (4 * math.pi)) ** (1 / 3)  # the lattice cells' volume as a ball: 0.499
    assert m.is_watertight and _is_watertight(s.faces) and m.volume > 0  # closed, outward
    assert m.volume == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.03)
    assert m.area == pytest.approx(4 * math.pi * r ** 2, rel=0.03)
    np.testing.assert_allclose(m.bounds, [[-0.48] * 3, [0.48] * 3], atol=0.02)  # outermost lattice points
    outward = np.einsum("ij,ij->i", s.vertex_normals(), s.vertices / np.linalg.norm(s.vertices, axis=1, keepdims=True))
    assert outward.min() > 0.9


def test_gaussians_filling_a_box_give_its_volume_and_bounds_at_a_given_level():
    box = np.array([0.4, 0.28, 0.2])  # outermost lattice points at 0.38, 0.26, 0.18: the cells reach A/2 further
    # narrower Gaussians than the lattice spacing: less rounded edges, still a flat plateau (1 % ripple)
    cloud = lattice_cloud(lambda p: (p.abs() <= torch.tensor(box)).all(1), scale=A / 2)
    plateau = float(splat_density(cloud, np.full(3, -0.1, np.float32), 0.1, 3)[0][1, 1, 1])
    grid = gaussian_grid(cloud, 96, level=plateau / 2)
    assert grid.level_source == "given" and grid.level == plateau / 2
    m = trimesh_of(extract_surface(grid))
    assert m.is_watertight and m.volume == pytest.approx(8 * box.prod(), rel=0.03)
    # the Gaussians round the edges (fillets of ~1.2 x their scale): 3.9 % less area than the sharp box
    assert m.area == pytest.approx(8 * (box[0] * box[1] + box[0] * box[2] + box[1] * box[2]), rel=0.05)
    np.testing.assert_allclose(m.bounds, [-box, box], atol=0.01)


def test_a_shell_of_gaussians_gives_one_closed_surface_without_an_inner_wall():
    from text3d.export.gaussians import fibonacci_directions

    # evenly spread on the sphere (random points leave Poisson gaps that a level can turn into holes)
    n, R, s = 6000, 0.5, 0.02
    cloud = GaussianCloud(R * fibonacci_directions(n), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                          torch.full((n, 3), s), torch.full((n,), 0.5), torch.rand(n, 3))
    m = trimesh_of(extract_surface(gaussian_grid(cloud, 64), min_component_ratio=0.0))
    assert len(m.split(only_watertight=False)) == 1 and m.is_watertight  # the hollow inside was filled
    r = (m.volume * 3 / (4 * math.pi)) ** (1 / 3)
    assert R < r < R + 2 * s


def test_no_usable_gaussian_or_too_high_a_level_is_a_clear_error(tmp_path):
    cloud = lattice_cloud(lambda p: p.norm(dim=1) <= 0.3, opacity=0.001)  # all below 1/255
    with pytest.raises(EmptyDensityError, match="train more steps"):
        export_gaussians(cloud, ExportConfig(resolution=32), tmp_path / "out")
    with pytest.raises(EmptyDensityError, match="level 100.*peaks at"):
        gaussian_grid(lattice_cloud(lambda p: p.norm(dim=1) <= 0.3), 32, level=100.0)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ colour
@pytest.fixture(scope="module")
def two_coloured(tmp_path_factory):
    out = tmp_path_factory.mktemp("gexport")
    cloud = lattice_cloud(lambda p: p.norm(dim=1) <= 0.5, opacity=0.3)
    settings = ExportConfig(formats=["glb", "ply"], resolution=64, faces=3000, texture_size=128)
    return out, export_gaussians(cloud, settings, out, name="two_coloured_gaussians", n_views=12)


def test_texture_from_views_shows_both_colours_and_no_background(two_coloured):
    import trimesh

    from test_mesh_export import _glb_texture

    out, result = two_coloured
    image = _glb_texture(out / "mesh.glb").reshape(-1, 3).astype(float) / 255
    red, blue = np.array(RED), np.array(BLUE)
    # every texel lies on the red-blue segment (mixed at the equator), none is darkened by the
    # black render background or whitened: distance to the segment
    t = np.clip((image - blue) @ (red - blue) / ((red - blue) @ (red - blue)), 0, 1)
    off = np.linalg.norm(image - (blue + t[:, None] * (red - blue)), axis=1)
    assert np.quantile(off, 0.999) < 0.08 and off.max() < 0.2
    assert (t > 0.9).mean() > 0.25 and (t < 0.1).mean() > 0.25  # both colours, plenty of each
    info = json.loads((out / "export.json").read_text())
    assert info["colour"]["method"] == "back-projected views" and info["colour"]["views"] == 12
    assert info["colour"]["points_seen"] > 0.98 * info["colour"]["points"]  # a convex object: all seen
    mesh = trimesh.load(out / "mesh.ply", process=False)  # vertex colours, export frame: y up
    rgb, y = mesh.visual.vertex_colors[:, :3].astype(float), mesh.vertices[:, 1]
    assert (rgb[y > 0.1, 0] > 180).all() and (rgb[y < -0.1, 2] > 180).all()


def test_points_no_view_sees_take_the_nearest_gaussians_colour():
    from text3d.export.gaussians import ViewColors, render_views

    cloud = lattice_cloud(lambda p: p.norm(dim=1) <= 0.3, opacity=0.5)
    views = render_views(cloud, np.zeros(3), 0.35, 4, 32)
    colors = ViewColors(cloud, views, depth_tolerance=0.02)
    inner = np.array([[0.0, 0.0, 0.1], [0.0, 0.0, -0.1]])  # hidden inside the ball
    got = colors(inner, np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]))
    np.testing.assert_allclose(got, [RED, BLUE], atol=1e-6)
    assert colors.info["points_seen"] == 0


# ------------------------------------------------------------------------------ runs and the CLI
FAST = ["geometry.num_points=600", "cameras.width=24", "cameras.height=24", "cameras.resolution_milestones=[3]",
        "cameras.resolutions=[32]", "cameras.batch_size=2", "geometry.densify_from=2", "geometry.densify_every=2",
        "geometry.densify_until=100", "geometry.grad_threshold=0.0", "geometry.max_gaussians=1500",
        "trainer.val_every=0", "trainer.turntable_frames=0", "trainer.checkpoint_every=2", "trainer.log_every=0",
        "steps=4", "export.resolution=48", "export.faces=1500", "export.texture_size=64"]


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gruns")  # the preset's prior: the shipped shapes prior
    code = main(["run", str(QUICK), f"output_dir={out}", *FAST, "--no-progress"])
    assert code == 0
    return next(out.glob("*/*@*"))


def _validate(glb: Path) -> dict:
    proc = subprocess.run([shutil.which("node"), str(TOOLS / "validate_gltf.js"), str(glb)],
                          capture_output=True, text=True, timeout=60)
    return json.loads(proc.stdout)["issues"]


def test_a_gaussian_run_exports_at_the_end_and_the_cli_exports_again(gaussian_run, tmp_path, capsys):
    import trimesh

    metrics = json.loads((gaussian_run / "metrics.json").read_text())
    assert metrics["export"]["files"] == ["export/mesh.glb"], metrics["export"]
    assert metrics["num_gaussians"] > 600  # densified: the checkpoint holds another count than the config
    capsys.readouterr()
    code = main(["export", str(gaussian_run), "--format", "glb,obj,ply", "--resolution", "64", "--faces", "2000",
                 "--texture-size", "64", "--out", str(tmp_path / "x")])
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    assert code == 0 and [p.name for p in printed] == [
        "mesh.glb", "mesh.obj", "mesh_albedo.png", "mesh.mtl", "mesh.ply", "export.json"]
    info = json.loads(printed[-1].read_text())
    assert info["source"]["num_gaussians"] == metrics["num_gaussians"] and info["source"]["step"] == 4
    assert info["iso_level"] > 0  # (4 steps on a random prior: a noisy blob, with handles a decimation pinches)
    assert info["mesh"]["faces"] <= 2000 or info["stages"]["decimation"]["result"] != "decimated"
    assert info["topology"]["watertight"] and info["topology"]["non_manifold_edges"] == 0
    for name in ("mesh.glb", "mesh.obj", "mesh.ply"):
        mesh = trimesh.load(tmp_path / "x" / name, force="mesh")
        assert len(mesh.faces) == info["mesh"]["faces"], name
    assert trimesh.load(tmp_path / "x" / "mesh.obj", force="mesh").visual.material.image is not None
    if shutil.which("node") and (TOOLS / "node_modules" / "gltf-validator").is_dir():
        issues = _validate(tmp_path / "x" / "mesh.glb")
        assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]


def test_cli_exports_a_bare_3dgs_ply(tmp_path, capsys):
    cloud_model = GaussianModel(GaussianGeometryConfig(num_points=2000, radius=0.4, init_opacity=0.5, seed=0))
    ply = write_ply(tmp_path / "scene" / "splat.ply", model_params(cloud_model))
    assert main(["export", str(ply), "--resolution", "48", "--faces", "1000", "--texture-size", "0"]) == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    assert [p.name for p in printed] == ["mesh.glb", "export.json"] and printed[0].parent == tmp_path / "scene" / "export"
    assert json.loads(printed[-1].read_text())["source"]["ply"] == str(ply)
    (tmp_path / "bad.ply").write_text("ply\nformat ascii 1.0\nend_header\n")
    assert main(["export", str(tmp_path / "bad.ply")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "binary_little_endian" in err and "\n" not in err
    assert main(["export", str(tmp_path / "missing.ply")]) == 2
    assert "does not exist" in capsys.readouterr().err
