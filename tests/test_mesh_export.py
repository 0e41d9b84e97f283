"""Mesh extraction and export: analytic shapes against closed-form truth, file round trips with two
readers each, the Khronos glTF validator and Blender (when installed), the CLI end to end."""

import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from text3d.cli import main
from text3d.export.config import ExportConfig
from text3d.core.errors import ConfigError, RunDirError
from text3d.export import EmptyDensityError, export_fields, extract_surface, sample_grid
from text3d.export.grid import _half_opacity_density, level_from_opacity
from text3d.export.mesh import _is_watertight
from text3d.export.texture import rasterize
from text3d.export.writers import srgb_to_linear

REPO = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent / "tools"
D = 100.0  # inside density of the analytic shapes
RED, BLUE = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9)


# ------------------------------------------------------------------------------ analytic fields
def smooth_occupancy(sdf, softness: float):
    """A NeRF-like density ``D * sigmoid(-sdf / softness)``: D inside, 0 outside, D/2 on the surface."""
    return lambda p: D * torch.sigmoid(-sdf(p) / softness)


def sphere_sdf(radius: float, centre=(0.0, 0.0, 0.0)):
    c = torch.tensor(centre)
    return lambda p: (p - c).norm(dim=-1) - radius


def box_sdf(half):
    h = torch.tensor(half)

    def sdf(p):
        q = p.abs() - h
        return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)
    return sdf


def hemispheres(p):
    """Red where world z > 0, blue below: a two-coloured object."""
    return torch.where(p[:, 2:3] > 0, torch.tensor([RED]), torch.tensor([BLUE]))


def trimesh_of(surface):
    import trimesh

    return trimesh.Trimesh(surface.vertices, surface.faces, process=False)


def mesh_from(density, resolution=128, level=D / 2, **kwargs):
    return extract_surface(sample_grid(density, (-1.0, 1.0), resolution, level), **kwargs)


# ------------------------------------------------------------------------------ extraction
def test_sphere_volume_area_bounds_match_the_truth():
    r = 0.5
    s = mesh_from(smooth_occupancy(sphere_sdf(r), 0.01))
    m = trimesh_of(s)
    assert m.is_watertight and _is_watertight(s.faces)
    assert m.volume > 0 and s.signed_volume() == pytest.approx(m.volume)  # outward faces
    assert m.volume == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.02)
    assert m.area == pytest.approx(4 * math.pi * r ** 2, rel=0.02)
    np.testing.assert_allclose(m.bounds, [[-r] * 3, [r] * 3], atol=0.01)
    outward = np.einsum("ij,ij->i", s.vertex_normals(), s.vertices / np.linalg.norm(s.vertices, axis=1, keepdims=True))
    assert outward.min() > 0.9


def test_box_volume_area_bounds_match_the_truth():
    half = (0.4, 0.3, 0.2)
    m = trimesh_of(mesh_from(smooth_occupancy(box_sdf(half), 0.01)))
    assert m.is_watertight and m.volume > 0
    assert m.volume == pytest.approx(8 * math.prod(half), rel=0.03)
    assert m.area == pytest.approx(8 * (half[0] * half[1] + half[0] * half[2] + half[1] * half[2]), rel=0.03)
    np.testing.assert_allclose(m.bounds, [[-h for h in half], list(half)], atol=0.01)


def test_auto_level_of_a_sharp_surface_is_half_its_inside_density():
    grid = sample_grid(smooth_occupancy(sphere_sdf(0.5), 0.002), (-1.0, 1.0), 128)
    assert grid.level_source == "auto" and grid.level == pytest.approx(D / 2, rel=0.2)
    m = trimesh_of(extract_surface(grid))
    assert m.volume == pytest.approx(4 / 3 * math.pi * 0.5 ** 3, rel=0.03)


def test_auto_level_of_a_fog_is_where_it_gets_half_opaque():
    # uniform density 2 in a slab |x| < 0.6: a grid line gets half opaque after ln2 / 2 = 0.35
    values = np.zeros((65, 65, 65), np.float32)
    values[20:45] = 2.0
    assert level_from_opacity(values, 1.0 / 32) == pytest.approx(1.0)  # capped at half the plateau
    ramp = np.linspace(0.0, 8.0, 65)[None]  # one line, density 8 x on x in [0, 1]
    # tau(x) = 8 x^2 / 2 = ln 2 at x = 0.416: density 3.33 there (solved exactly within a segment)
    assert _half_opacity_density(ramp, 1.0 / 64) == pytest.approx(8 * math.sqrt(math.log(2) / 4), rel=1e-6)


def test_coarse_to_fine_equals_evaluating_every_node():
    density = smooth_occupancy(box_sdf((0.45, 0.3, 0.25)), 0.02)
    fast = sample_grid(density, (-1.0, 1.0), 64, D / 2)
    full = sample_grid(density, (-1.0, 1.0), 64, D / 2, stride=1)
    assert fast.evaluated < 0.5 * full.evaluated
    a, b = trimesh_of(extract_surface(fast)), trimesh_of(extract_surface(full))
    assert len(a.faces) == len(b.faces) and a.volume == pytest.approx(b.volume, rel=1e-5)


def test_floaters_are_dropped_unless_asked_to_keep_them():
    big, small = sphere_sdf(0.4, (-0.3, 0, 0)), sphere_sdf(0.08, (0.7, 0.6, 0.6))
    density = smooth_occupancy(lambda p: torch.minimum(big(p), small(p)), 0.01)
    grid = sample_grid(density, (-1.0, 1.0), 64, D / 2)
    assert len(trimesh_of(extract_surface(grid, min_component_ratio=0.0)).split()) == 2
    kept = trimesh_of(extract_surface(grid))
    assert len(kept.split()) == 1 and kept.bounds[1][0] < 0.2


def test_decimation_keeps_the_shape_closed_and_outward():
    s = mesh_from(smooth_occupancy(sphere_sdf(0.5), 0.01), faces=2000, smooth_iterations=3)
    m = trimesh_of(s)
    assert 1900 <= len(m.faces) <= 2000 and m.is_watertight and m.volume > 0
    assert m.volume == pytest.approx(4 / 3 * math.pi * 0.5 ** 3, rel=0.03)


def test_no_surface_is_an_error_that_says_what_to_try(tmp_path):
    empty = lambda p: torch.zeros(p.shape[0])  # noqa: E731
    with pytest.raises(EmptyDensityError, match="train more steps"):
        sample_grid(empty, (-1.0, 1.0), 32)
    with pytest.raises(EmptyDensityError, match=r"level 1e\+06.*ranges"):
        sample_grid(smooth_occupancy(sphere_sdf(0.5), 0.01), (-1.0, 1.0), 32, level=1e6)
    with pytest.raises(EmptyDensityError):
        export_fields(empty, hemispheres, (-1.0, 1.0), ExportConfig(resolution=32), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_rasterize_covers_each_texel_once():
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    texel, face, bary = rasterize(uvs, np.array([[0, 1, 2], [0, 2, 3]]), 16)
    assert len(texel) == 256 and len(np.unique(texel, axis=0)) == 256  # the diagonal's texels once
    np.testing.assert_allclose(bary.sum(axis=1), 1.0)
    assert (bary >= -1e-9).all()


# ------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    settings = ExportConfig(formats=["glb", "obj", "ply"], resolution=64, faces=3000, texture_size=128)
    result = export_fields(smooth_occupancy(sphere_sdf(0.5), 0.02), hemispheres, (-1.0, 1.0), settings, out,
                           name="two_coloured_sphere")
    return out, result


def _near_red_or_blue(rgb: np.ndarray) -> np.ndarray:
    """Per colour (0-255) the distance to the nearer of the two hemisphere colours."""
    refs = np.array([RED, BLUE]) * 255
    return np.linalg.norm(rgb[:, None, :].astype(float) - refs[None], axis=-1).min(axis=1)


def test_export_writes_every_format_and_a_manifest(exported):
    out, result = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == ["export.json", "mesh.glb", "mesh.mtl", "mesh.obj", "mesh.ply", "mesh_albedo.png"]
    assert all(p.stat().st_size > 0 for p in out.iterdir())
    info = json.loads((out / "export.json").read_text())
    assert info["files"]["obj"] == ["mesh.obj", "mesh_albedo.png", "mesh.mtl"]
    assert info["iso_level"] == result.level and info["iso_level_source"] == "auto"
    assert info["settings"]["resolution"] == 64 and info["mesh"]["watertight"]
    assert info["frame"]["up"] == "+Y" and info["texture"]["size"] == 128


def test_glb_round_trip_with_trimesh_and_pygltflib(exported):
    import trimesh
    pygltflib = pytest.importorskip("pygltflib")

    out, result = exported
    mesh = trimesh.load(out / "mesh.glb", force="mesh")
    assert len(mesh.faces) == result.faces
    np.testing.assert_allclose(mesh.bounds, [[-0.5] * 3, [0.5] * 3], atol=0.01)  # centred, 1 m
    gltf = pygltflib.GLTF2().load(str(out / "mesh.glb"))
    prim = gltf.meshes[0].primitives[0]
    assert gltf.nodes[0].name == "two_coloured_sphere" and len(gltf.meshes) == 1
    assert prim.attributes.TEXCOORD_0 is not None and prim.attributes.NORMAL is not None
    tex = gltf.materials[0].pbrMetallicRoughness.baseColorTexture
    assert tex is not None and gltf.textures[tex.index].source == 0
    image = _glb_texture(out / "mesh.glb")
    assert image.shape == (128, 128, 3) and image.std(axis=(0, 1)).max() > 30  # not flat
    assert _near_red_or_blue(image.reshape(-1, 3)).max() < 40  # gutters filled: no background bleed
    # Y up: world z > 0 (red) is export y > 0; sample the texture at those vertices' UVs
    uv, pos = np.asarray(mesh.visual.uv), np.asarray(mesh.vertices)
    px = image[((1 - uv[:, 1]) * 127).round().astype(int), (uv[:, 0] * 127).round().astype(int)].astype(float)
    top, bottom = pos[:, 1] > 0.1, pos[:, 1] < -0.1
    assert (px[top, 0] > px[top, 2]).mean() > 0.95 and (px[bottom, 2] > px[bottom, 0]).mean() > 0.95


def _glb_chunks(path: Path):
    """The JSON document and a bufferView reader of a GLB, parsed by hand (a third reader)."""
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2 and length == len(data)
    json_len, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    doc = json.loads(data[20:20 + json_len])
    bin_start = 20 + json_len + 8

    def view_bytes(index: int) -> bytes:
        view = doc["bufferViews"][index]
        start = bin_start + view.get("byteOffset", 0)
        return data[start:start + view["byteLength"]]
    return doc, view_bytes


def _glb_texture(path: Path) -> np.ndarray:
    import io

    from PIL import Image

    doc, view_bytes = _glb_chunks(path)
    png = view_bytes(doc["images"][0]["bufferView"])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_obj_round_trip_with_trimesh_and_by_hand(exported):
    import trimesh

    out, result = exported
    text = (out / "mesh.obj").read_text().splitlines()
    counts = {k: sum(1 for line in text if line.startswith(k + " ")) for k in ("v", "vt", "vn", "f")}
    assert counts["v"] == counts["vn"] == result.vertices and counts["f"] == result.faces and counts["vt"] >= result.vertices
    assert "mtllib mesh.mtl" in text and "usemtl albedo" in text
    mtl = (out / "mesh.mtl").read_text().splitlines()
    assert "map_Kd mesh_albedo.png" in mtl and (out / "mesh_albedo.png").is_file()  # relative path
    faces = np.array([[int(i) for c in line.split()[1:] for i in c.split("/")] for line in text if line.startswith("f ")])
    assert faces.min() == 1 and faces[:, 0::3].max() == result.vertices and faces[:, 1::3].max() == counts["vt"]
    mesh = trimesh.load(out / "mesh.obj", force="mesh")
    assert len(mesh.faces) == result.faces and mesh.visual.material.image is not None
    np.testing.assert_allclose(mesh.bounds, [[-0.5] * 3, [0.5] * 3], atol=0.01)


def test_ply_round_trip_with_trimesh_and_plyfile(exported):
    import trimesh
    plyfile = pytest.importorskip("plyfile")

    out, result = exported
    ply = plyfile.PlyData.read(str(out / "mesh.ply"))
    v = ply["vertex"]
    assert len(v) == result.vertices and len(ply["face"]) == result.faces
    rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1)
    y = np.asarray(v["y"])
    assert (rgb[y > 0.1, 0] > 200).all() and (rgb[y < -0.1, 2] > 200).all()  # red top, blue bottom
    mesh = trimesh.load(out / "mesh.ply", process=False)
    assert mesh.is_watertight and mesh.volume > 0
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], rgb)


def test_export_frame_is_y_up_centred_and_sized(tmp_path):
    import trimesh

    # a box elongated along world z (up), off-centre; exported with its largest side 2 m
    half, centre = torch.tensor([0.1, 0.2, 0.4]), torch.tensor([0.3, 0.0, 0.1])
    density = smooth_occupancy(lambda p: box_sdf(half.tolist())(p - centre), 0.01)
    settings = ExportConfig(formats=["ply"], resolution=64, faces=0, texture_size=0, size=2.0, level=D / 2)
    export_fields(density, hemispheres, (-1.0, 1.0), settings, tmp_path)
    mesh = trimesh.load(tmp_path / "mesh.ply", process=False)
    np.testing.assert_allclose(mesh.bounds, [[-0.5, -1.0, -0.25], [0.5, 1.0, 0.25]], atol=0.03)  # (y, z, x)


def test_vertex_colour_glb_without_texture(tmp_path):
    import trimesh

    settings = ExportConfig(formats=["glb"], resolution=32, faces=500, texture_size=0)
    export_fields(smooth_occupancy(sphere_sdf(0.5), 0.05), hemispheres, (-1.0, 1.0), settings, tmp_path)
    mesh = trimesh.load(tmp_path / "mesh.glb", force="mesh")
    doc, view_bytes = _glb_chunks(tmp_path / "mesh.glb")
    prim = doc["meshes"][0]["primitives"][0]
    assert "TEXCOORD_0" not in prim["attributes"] and "textures" not in doc
    acc = doc["accessors"][prim["attributes"]["COLOR_0"]]
    colors = np.frombuffer(view_bytes(acc["bufferView"]), np.float32).reshape(-1, 3)
    assert len(colors) == len(mesh.vertices) == acc["count"]
    # linear colours (glTF COLOR_0): the sRGB hemisphere colours decoded
    red, blue = srgb_to_linear(np.array(RED)), srgb_to_linear(np.array(BLUE))
    assert np.isclose(colors, red, atol=1e-5).all(axis=1).mean() > 0.3
    assert np.isclose(colors, blue, atol=1e-5).all(axis=1).mean() > 0.3


def _validator():
    node = shutil.which("node")
    module = TOOLS / "node_modules" / "gltf-validator"
    return (node, module) if node and module.is_dir() else None


@pytest.mark.skipif(_validator() is None, reason="needs node and tests/tools/node_modules/gltf-validator "
                                                 "(cd tests/tools && npm install)")
def test_glb_passes_the_khronos_validator(exported, tmp_path):
    out, _ = exported
    settings = ExportConfig(formats=["glb"], resolution=32, faces=500, texture_size=0)
    export_fields(smooth_occupancy(sphere_sdf(0.5), 0.05), hemispheres, (-1.0, 1.0), settings, tmp_path)
    for glb in (out / "mesh.glb", tmp_path / "mesh.glb"):
        proc = subprocess.run([_validator()[0], str(TOOLS / "validate_gltf.js"), str(glb)],
                              capture_output=True, text=True, timeout=60)
        report = json.loads(proc.stdout)
        assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
        assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]


@pytest.mark.skipif(shutil.which("blender") is None, reason="needs blender (apt-get install blender python3-numpy)")
def test_blender_imports_glb_and_obj_with_the_texture(exported):
    out, result = exported
    proc = subprocess.run(["blender", "-b", "--factory-startup", "--python", str(TOOLS / "blender_import_check.py"),
                           "--", str(out / "mesh.glb"), str(out / "mesh.obj")],
                          capture_output=True, text=True, timeout=300)
    lines = [json.loads(x[len("TEXT3D "):]) for x in proc.stdout.splitlines() if x.startswith("TEXT3D ")]
    assert proc.returncode == 0 and len(lines) == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    for found in lines:  # both importers: all faces, the texture attached, red (world +z) on top
        assert found["faces"] == result.faces and found["texture"] and found["image_size"] == [128, 128]
        assert found["top_rgb"][0] > 0.8 > found["top_rgb"][2] and found["bottom_rgb"][2] > 0.8 > found["bottom_rgb"][0]
        np.testing.assert_allclose(found["bounds_zup"], [[-0.5] * 3, [0.5] * 3], atol=0.01)
        # Blender's own topology check agrees with export.json: one closed sphere-like piece
        topo = json.loads((out / "export.json").read_text())["topology"]
        assert found["bmesh"] == {"non_manifold_edges": 0, "boundary_edges": 0, "loose_parts": 1, "euler": 2}
        assert (topo["pieces"], topo["euler"], topo["non_manifold_edges"]) == (1, 2, 0)


# ------------------------------------------------------------------------------ CLI
SMOKE = REPO / "configs" / "smoke-tiny-sd.yaml"
TINY_RUN = ["cameras.width=32", "cameras.height=32", "renderer.num_samples_per_ray=16", "trainer.val_every=0",
            "trainer.turntable_frames=0", "trainer.log_every=0", "steps=2",
            "export.resolution=64", "export.faces=2000", "export.texture_size=64"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_sd_dir):
    out = tmp_path_factory.mktemp("runs")
    code = main(["run", str(SMOKE), f"prior.model={tiny_sd_dir}", f"output_dir={out}", *TINY_RUN, "--no-progress"])
    assert code == 0
    return next(out.glob("*/*@*"))


def test_a_run_exports_at_the_end_and_the_cli_exports_again(trained_run, tmp_path, capsys):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["export"]["files"] == ["export/mesh.glb"] and (trained_run / "export" / "mesh.glb").is_file()
    capsys.readouterr()
    code = main(["export", str(trained_run), "--format", "glb,obj", "--format", "ply", "--resolution", "64",
                 "--faces", "1500", "--texture-size", "64", "--out", str(tmp_path / "x")])
    printed = capsys.readouterr().out.split()
    assert code == 0 and [Path(p).name for p in printed] == [
        "mesh.glb", "mesh.obj", "mesh_albedo.png", "mesh.mtl", "mesh.ply", "export.json"]
    assert all(Path(p).stat().st_size > 0 for p in printed)
    info = json.loads((tmp_path / "x" / "export.json").read_text())
    assert info["source"]["step"] == 2 and info["mesh"]["faces"] <= 1500 and info["iso_level"] > 0


def test_cli_errors_are_one_line(trained_run, tmp_path, capsys):
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(trained_run / "config.yaml", no_ckpt / "config.yaml")
    assert main(["export", str(no_ckpt)]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--format", "fbx"]) == 2
    assert "--format" in capsys.readouterr().err
    out = tmp_path / "high"
    assert main(["export", str(trained_run), "--resolution", "32", "--level", "1e9", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no surface at level 1e+09") and "\n" not in err and not out.exists()


def test_empty_field_is_reported_not_exported(trained_run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = tmp_path / "empty_run"
    shutil.copytree(trained_run, run, symlinks=True)
    shutil.rmtree(run / "export")
    st = (run / "ckpts" / "last" / "state.safetensors").resolve()
    tensors = load_file(str(st))
    last_bias = sorted(k for k in tensors if k.startswith("system.geometry.network.") and k.endswith(".bias"))[-1]
    tensors[last_bias][0] = -60.0  # density pre-activation far below 0 everywhere: an empty field
    save_file(tensors, str(st))
    assert main(["export", str(run), "--resolution", "32"]) == 2
    err = capsys.readouterr().err
    assert "no surface" in err and "train more steps" in err and not (run / "export").exists()


def test_config_section_is_validated():
    from text3d.export.config import EXPORT_FORMATS
    from text3d.run.config import load_config
    from text3d.export.writers import WRITERS

    assert sorted(WRITERS) == sorted(EXPORT_FORMATS)  # every format the config accepts has a writer

    cfg = load_config(SMOKE, ["export.formats=[glb,ply]", "export.faces=0"])
    assert cfg.export.formats == ["glb", "ply"] and cfg.export.faces == 0 and cfg.export.resolution == 128
    with pytest.raises(ConfigError, match=r"export.formats.*valid: glb, obj, ply"):
        load_config(SMOKE, ["export.formats=[fbx]"])
    with pytest.raises(ConfigError, match="export.texture_size"):
        load_config(SMOKE, ["export.texture_size=3"])
    with pytest.raises(RunDirError):
        from text3d.scene.rundir import load_geometry
        load_geometry(REPO / "configs")
