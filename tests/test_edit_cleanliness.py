"""An edit's cleanliness and colour figures (``text3d.edit.metrics``) on synthetic views with known
answers, the before/after caption, and the edit benchmark's plan and mesh voxel IoU (closed form)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from text3d.core.media import add_caption
from text3d.edit.metrics import cleanliness_scores, semi_transparent_share, stray_opacity
from text3d.edit.trainer import edit_caption
from text3d.prior.evaluation import colour_shares, hue_distance, object_hue, object_saturation, palette_hues
from text3d.prior.shapes import COLOURS, COLOUR_NAMES, SHAPES, parse_prompt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import edit_meshes  # noqa: E402
import edit_report  # noqa: E402
import eval_edit  # noqa: E402


def disc(size=32, radius=8.0, centre=(16.0, 16.0), value=1.0):
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius ** 2).float() * value


def views(opacities):
    return [{"opacity": a[..., None], "rgb": torch.ones(*a.shape, 3)} for a in opacities]


def test_a_solid_edit_of_a_solid_source_is_clean():
    src = [disc(), disc(radius=6)]
    clean = cleanliness_scores(views(src), views(src))
    assert clean["semi_transparent"] == clean["semi_transparent_source"] == 0.0
    assert clean["floaters"] == 0.0 and clean["stray_opacity"] == 0.0 and clean["semi_transparent_excess"] == 0.0


def test_a_see_through_edit_counts_every_object_pixel_and_floaters_their_opacity_mass():
    src = disc()
    haze = disc(value=0.5)                                   # the same silhouette, half transparent
    blob = disc(radius=2, centre=(28.0, 4.0), value=0.3)    # a floater well outside the source
    clean = cleanliness_scores(views([src]), views([haze + blob]))
    assert clean["semi_transparent"] == 1.0                 # every pixel the object covers is see-through
    assert clean["floaters"] == pytest.approx(float(blob.sum() / src.sum()), abs=1e-4)
    assert clean["stray_opacity"] == 1.0  # nothing reaches opacity 0.5: there is no solid piece, all is stray
    assert clean["semi_transparent_excess"] == 1.0


def test_stray_opacity_is_the_mass_outside_the_main_piece():
    main, blob = disc(), disc(radius=2, centre=(28.0, 4.0))
    a = (main + blob)[None]
    assert stray_opacity(a) == pytest.approx(float(blob.sum() / a.sum()), rel=1e-4)
    assert semi_transparent_share(torch.tensor([0.0, 0.01, 0.5, 0.5, 1.0, 1.0])) == pytest.approx(0.5)


def test_object_hue_is_the_palette_hue_of_a_flat_object_and_hue_distance_wraps():
    for name in COLOUR_NAMES:
        img = torch.ones(1, 3, 8, 8)
        img[:, :, 2:6, 2:6] = torch.tensor(COLOURS[name]).view(1, 3, 1, 1) * 0.7  # shaded: the hue is kept
        mask = torch.zeros(1, 8, 8, dtype=torch.bool)
        mask[:, 2:6, 2:6] = True
        assert hue_distance(object_hue(img, mask), float(palette_hues([name])[0])) < 1e-3
    assert hue_distance(350.0, 10.0) == 20.0 and hue_distance(0.0, 180.0) == 180.0
    assert object_hue(torch.ones(1, 3, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool)) is None  # white: no voter


def test_colour_shares_count_patches_left_in_another_colour():
    img = torch.ones(1, 3, 8, 8)
    img[:, :, :, :6] = torch.tensor(COLOURS["cyan"]).view(1, 3, 1, 1)
    img[:, :, :2, 6:] = torch.tensor(COLOURS["orange"]).view(1, 3, 1, 1)   # 4 of 52 coloured pixels
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    shares = colour_shares(img, mask)
    assert shares["cyan"] == pytest.approx(48 / 52) and shares["orange"] == pytest.approx(4 / 52)
    assert sum(shares.values()) == pytest.approx(1.0) and colour_shares(torch.ones(1, 3, 4, 4), mask[:, :4, :4]) == {}


def test_object_saturation_is_the_mean_over_the_mask_and_shading_keeps_it():
    img = torch.ones(1, 3, 8, 8)
    img[:, :, :, :4] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1) * 0.6  # shaded pure red: saturation 1
    img[:, :, :, 4:] = torch.tensor([1.0, 0.5, 0.5]).view(1, 3, 1, 1)         # pink: (1 - 0.5) / 1
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :, 2:6] = True  # half red, half pink: the white around them does not count
    assert object_saturation(img, mask) == pytest.approx(0.75)
    assert object_saturation(img, torch.zeros_like(mask)) is None


def test_the_before_after_caption_shows_identity_and_cleanliness():
    metrics = {"edit": {"target_prompt": "a cyan torus"}, "identity": {"silhouette_iou": 0.824},
               "target": {"hue": 166.1, "hue_error": 21.0},
               "cleanliness": {"semi_transparent": 0.978, "semi_transparent_source": 0.139, "floaters": 0.0139},
               "export": {"pieces": 1}}
    lines = edit_caption(metrics, width=258)
    assert lines[0] == "source | edit: a cyan torus"
    assert "IoU to source 0.82" in lines[1] and "hue 166 (21 off)" in lines[1]
    assert lines[2] == "see-through 98% (source 14%)" and lines[3] == "floaters 0.01  mesh pieces 1"
    frames = add_caption([np.zeros((16, 40, 3), np.uint8)], lines)
    assert frames[0].shape[0] % 2 == 0 and frames[0].shape[0] > 16 + 4 * 11 and frames[0].shape[1] == 40
    assert (frames[0][:16] == 0).all() and (frames[0][16:] < 128).any() and (frames[0][16:] == 255).any()


def test_the_matrix_edits_every_shape_to_three_other_colours_and_one_other_shape():
    for k in (0, 1):
        prompts = eval_edit.source_prompts(k)
        assert sorted(parse_prompt(p)[0] for p in prompts) == sorted(SHAPES)
        for p in prompts:
            shape, colour = parse_prompt(p)
            targets = eval_edit.targets_of(p)
            colours = [parse_prompt(t)[1] for kind, t in targets if kind == "colour"]
            assert len(set(colours)) == 3 and colour not in colours
            assert all(parse_prompt(t)[0] == shape for kind, t in targets if kind == "colour")
            (kind, t), = [x for x in targets if x[0] == "shape"]
            assert parse_prompt(t)[1] == colour and parse_prompt(t)[0] != shape
    assert {parse_prompt(p)[1] for p in eval_edit.source_prompts(0)} != {parse_prompt(p)[1] for p in eval_edit.source_prompts(1)}
    sources = [{"scene": "gaussians", "seed": 3, "prompt": p, "run": Path(f"/runs/{i}")}
               for i, p in enumerate(eval_edit.source_prompts(0))]
    cells = eval_edit.plan_cells(sources, ["pds", "sds-edit"], ply=True)
    assert len(cells) == 7 * 4 * 2 + 7
    assert [c["source"] for c in cells if c["scene"] == "ply"] == [f"/runs/{i}/gaussians.ply" for i in range(7)]
    assert all(c["mesh"] == c["source"] for c in cells if c["scene"] == "ply")  # held against the .ply's own export


def test_a_ply_sources_reference_mesh_is_its_export_in_the_files_frame(tmp_path):
    """The voxel reference of a ``.ply`` row is what ``text3d export FILE.ply`` makes of the file, where the
    file has it (a ball of Gaussians around (5, -2, 1)); a run's export is used as it is."""
    pytest.importorskip("trimesh")
    from text3d.scene.gaussians import write_ply

    g, n = torch.Generator().manual_seed(0), 400
    ply = write_ply(tmp_path / "ball.ply", {
        "means": torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1) * 0.3 + torch.tensor([5.0, -2.0, 1.0]),
        "log_scales": torch.full((n, 3), -2.5), "quats": torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
        "opacity_logits": torch.full((n,), 3.0), "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 0, 3)})
    with eval_edit.reference_mesh(ply) as glb:
        mesh = edit_meshes.world_mesh(glb)
        assert glb.suffix == ".glb" and mesh.is_watertight
        np.testing.assert_allclose(mesh.bounds.mean(0), [5.0, -2.0, 1.0], atol=0.05)
        assert 0.6 < float(mesh.extents.min()) < 1.2  # the 0.3 shell, widened by the Gaussians (sd 0.08)
    assert not glb.exists()  # made in a temporary folder
    other = tmp_path / "mesh.glb"
    with eval_edit.reference_mesh(other) as same:
        assert same == other


def test_the_latent_matrix_adds_a_stripe_in_another_colour_keeping_shape_and_base():
    from text3d.prior.shapes import parse_pattern

    for p in eval_edit.source_prompts(0):
        shape, colour = parse_prompt(p)
        assert all(kind != "pattern" for kind, _ in eval_edit.targets_of(p))
        (kind, t), = [x for x in eval_edit.targets_of(p, patterns=True) if x[0] == "pattern"]
        got_shape, base, stripe = parse_pattern(t)
        assert (got_shape, base) == (shape, colour) and stripe not in (None, colour)
    sources = [{"scene": "nerf", "seed": 0, "prompt": p, "run": Path(f"/runs/{i}")}
               for i, p in enumerate(eval_edit.source_prompts(0))]
    assert len(eval_edit.plan_cells(sources, ["pds"], ply=False, patterns=True)) == 7 * 5
    for scene, preset in eval_edit.LATENT_PRESETS["PRESETS"].items():  # the baselines' CFG scale, through base:
        assert eval_edit.preset_guidance_scale(preset) == eval_edit.preset_guidance_scale(eval_edit.PRESETS[scene])
        # the .ply reference's export settings too (the latent preset sets none: they come from its base)
        assert eval_edit.preset_section(preset, "export") == eval_edit.preset_section(eval_edit.PRESETS[scene], "export")
    for preset in eval_edit.LATENT_PRESETS["SOURCE_PRESETS"].values():
        assert (eval_edit.REPO / preset).is_file()


def _glb(path, mesh):
    mesh.export(path)
    return path


def test_mesh_voxel_iou_of_two_boxes_is_their_closed_form_overlap(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    a = _glb(tmp_path / "a.glb", trimesh.creation.box(extents=(1.0, 1.0, 1.0)))
    b = _glb(tmp_path / "b.glb", trimesh.creation.box(extents=(1.0, 1.0, 1.0)).apply_translation((0.5, 0.0, 0.0)))
    assert edit_meshes.mesh_voxel_iou(a, a) == 1.0
    assert edit_meshes.mesh_voxel_iou(a, b) == pytest.approx(1 / 3, abs=0.03)  # overlap 0.5 over union 1.5
    ring = _glb(tmp_path / "t.glb", trimesh.creation.torus(major_radius=0.35, minor_radius=0.14))
    solid = _glb(tmp_path / "c.glb", trimesh.creation.cylinder(radius=0.49, height=0.28))
    expected = 2 * math.pi ** 2 * 0.35 * 0.14 ** 2 / (math.pi * 0.49 ** 2 * 0.28)  # the torus lies inside the disc
    assert edit_meshes.mesh_voxel_iou(ring, solid) == pytest.approx(expected, abs=0.06)  # the hole is not filled


def test_the_matrix_picture_tiles_every_edits_before_after(tmp_path):
    import imageio.v3 as iio

    rows = []
    for i, (h, w) in enumerate([(20, 30), (16, 30), (20, 30)]):
        folder = tmp_path / f"e{i}"
        folder.mkdir()
        frames = np.stack([np.full((h, w, 3), 40 * i + 2 * f, np.uint8) for f in range(4)])  # distinct frames
        iio.imwrite(folder / "before_after.gif", frames)
        rows.append({"edit_dir": str(folder)})
    rows.append({"edit_dir": None})  # a row without pictures is left out
    out = edit_report.picture(rows, tmp_path / "grid.png", columns=2, frame=1)
    grid = iio.imread(out)
    assert grid.shape[:2] == (40, 60)  # 3 tiles on 2 columns, each padded to 20 x 30
    assert abs(int(grid[0, 0, 0]) - 2) <= 2 and abs(int(grid[0, 30, 0]) - 42) <= 2  # frame 1 of each
    assert (grid[16:20, 30:] == 255).all() and (grid[20:, 30:] == 255).all()  # padding and the empty slot


def test_pds_is_held_against_each_baseline_on_the_same_cells_only():
    def cell(scene, target, guidance, iou, semi, floaters):
        return {"scene": scene, "seed": 0, "source_prompt": "a red cube", "target": target, "guidance": guidance,
                "identity_iou": iou, "semi": semi, "floaters": floaters}

    rows = [cell("nerf", "a blue cube", "pds", 0.99, 0.10, 0.001),
            cell("nerf", "a blue cube", "sds-edit", 0.98, 0.10, 0.001),   # PDS keeps more identity: a win
            cell("nerf", "a blue cube", "dds", 0.99, 0.09, 0.001),        # DDS is less see-through: a loss
            cell("nerf", "a cyan cube", "pds", 0.99, 0.10, 0.002),
            cell("nerf", "a cyan cube", "sds-edit", 0.99, 0.10, 0.001),   # more floaters with PDS: a loss
            cell("gaussians", "a blue cube", "pds", 0.95, 0.30, 0.02)]    # no baseline on this cell: not counted
    assert edit_report.pds_vs(rows, "sds-edit") == {"nerf": "1/2"}
    assert edit_report.pds_vs(rows, "dds") == {"nerf": "0/1"}
    assert edit_report.pds_vs(rows, "pds") == {"nerf": "2/2", "gaussians": "1/1"}  # against itself: every cell ties


def test_the_saturation_script_reads_the_matrix_rows_and_agrees_with_the_edits_metrics(
        tmp_path, tiny_sd_dir, tiny_prior, tiny_gaussian_run, capsys):
    """One edit of the tiny Gaussian run ("a red cube") towards red, as a one-row matrix: the script's
    saturation of the edit is the one the edit wrote to its metrics.json (same 8 views at 64 px), and the
    ratio is edit / source (the only from-scratch run of red)."""
    import json

    import edit_saturation
    from text3d.edit import open_edit
    from test_edit import GS_PRESET, edit_args

    run = open_edit(GS_PRESET, edit_args(tmp_path, tiny_sd_dir, tiny_gaussian_run, "target_prompt=a red cube",
                                         "steps=1", "edit.metric_views=8", "edit.metric_resolution=64"), prior=tiny_prior)
    edit_dir = run.fit()
    metrics = json.loads((edit_dir / "metrics.json").read_text())
    row = {"scene": "gaussians", "kind": "colour", "guidance": "pds", "seed": 0, "source_prompt": "a red cube",
           "target": "a red cube", "edit_dir": str(edit_dir)}
    (tmp_path / "rows.json").write_text(json.dumps({"rows": [row]}))
    threads = str(torch.get_num_threads())  # main() sets torch's threads: keep this process's for later tests
    assert edit_saturation.main([str(tmp_path / "rows.json"), "--threads", threads]) == 0
    out = capsys.readouterr().out
    sat = edit_saturation.saturation(str(edit_dir), "a red cube")
    assert sat == pytest.approx(metrics["target"]["saturation"], abs=1e-4)
    ratio = sat / edit_saturation.saturation(str(tiny_gaussian_run), "a red cube")
    assert f"ratio {ratio:.3f}" in out and "cells 1: median ratio" in out
