"""text3d edit end to end on CPU with the tiny SD: outputs, bit-exact resume, Gaussian and .ply sources."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import EDIT_FAST
from text3d.core.checkpoint import latest_checkpoint, load_checkpoint
from text3d.cli import main
from text3d.edit import open_edit
from text3d.scene.gaussians import read_ply, write_ply

REPO = Path(__file__).resolve().parents[1]
NERF_PRESET = REPO / "configs" / "edit-quickstart.yaml"
GS_PRESET = REPO / "configs" / "edit-quickstart-gaussians.yaml"


def edit_args(tmp_path, tiny_sd_dir, source, *extra):
    return [f"source={source}", "prior.type=stable-diffusion", f"prior.model={tiny_sd_dir}",
            f"output_dir={tmp_path / 'outputs'}", "edit.metric_views=2", "edit.metric_resolution=32",
            "edit.hold_steps=3", *EDIT_FAST, *extra]


def final_tensors(run_dir: Path) -> dict:
    return load_checkpoint(latest_checkpoint(run_dir)).tensors


def test_cli_edit_writes_every_output(tmp_path, tiny_sd_dir, tiny_nerf_run, capsys):
    argv = ["edit", str(NERF_PRESET), *edit_args(tmp_path, tiny_sd_dir, tiny_nerf_run, "steps=4",
                                                 'target_prompt=a blue cube', "export.enabled=true",
                                                 "export.resolution=32", "export.texture_size=0"), "--no-progress"]
    assert main(argv) == 0
    edit_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])  # the last line is the edit folder
    assert edit_dir.parent == tmp_path / "outputs" / "edit-quickstart"
    saved = yaml.safe_load((edit_dir / "config.yaml").read_text())
    assert saved["prompt"] == "a blue cube" and saved["guidance"]["type"] == "pds"
    assert saved["edit"]["source"] == str(tiny_nerf_run) and saved["edit"]["source_prompt"] == "a red cube"
    assert saved["geometry"]["type"] == "implicit-volume"  # the scene sections came from the source
    assert json.loads((edit_dir / "ckpts" / "last" / "state.json").read_text())["step"] == 4
    assert sorted(p.name for p in (edit_dir / "validation").glob("*.png")) == ["step-000002.png", "step-000004.png"]
    import imageio.v3 as iio

    for stem in ("turntable", "before_after"):
        assert (edit_dir / f"{stem}.mp4").stat().st_size > 0
        frames = iio.imread(edit_dir / f"{stem}.gif")
        assert frames.shape[0] == 3
    pair = iio.imread(edit_dir / "before_after.gif")
    assert pair.shape[2] == 2 * 32 + 2  # source | edit side by side
    assert pair.shape[1] > 32 and (pair[0, 40:, :, :] < 128).any()  # a caption band below, with dark text
    assert (edit_dir / "export" / "mesh.glb").stat().st_size > 0
    metrics = json.loads((edit_dir / "metrics.json").read_text())
    assert metrics["edit"]["source_prompt"] == "a red cube" and metrics["edit"]["guidance"] == "pds"
    assert 0 <= metrics["identity"]["silhouette_iou"] <= 1 and metrics["identity"]["views"] == 2
    assert metrics["identity"]["mean_colour_change"] >= 0 and metrics["wall_time_s"] > 0
    assert metrics["target"]["shape"] == "cube" and metrics["target"]["colour"] == "blue"
    assert {"shape_found", "colour_found", "silhouette_iou", "hue", "hue_error", "hue_ok"} <= set(metrics["target"])
    clean = metrics["cleanliness"]
    assert 0 <= clean["semi_transparent"] <= 1 and 0 <= clean["semi_transparent_source"] <= 1 and clean["floaters"] >= 0
    assert clean["semi_transparent_excess"] == pytest.approx(clean["semi_transparent"] - clean["semi_transparent_source"], abs=2e-4)
    assert isinstance(metrics["export"]["pieces"], int)  # export.json's count of the mesh's connected pieces


@pytest.mark.parametrize("guidance", ["pds", "dds"])
def test_resumed_edit_is_bit_identical(tmp_path, tiny_sd_dir, tiny_nerf_run, tiny_prior, guidance):
    common = edit_args(tmp_path, tiny_sd_dir, tiny_nerf_run, "target_prompt=a blue cube", f"guidance.type={guidance}")
    full = open_edit(NERF_PRESET, [*common, "steps=5", "name=full"], prior=tiny_prior)
    full.fit()
    part = open_edit(NERF_PRESET, [*common, "steps=2", "name=part"], prior=tiny_prior)
    part.fit()  # stops inside the first held view (hold_steps=3)
    resumed = open_edit(None, [f"resume={part.run_dir}", "steps=5"], prior=tiny_prior)
    assert resumed.step == 2 and resumed.run_dir == part.run_dir
    resumed.fit()
    a, b = final_tensors(full.run_dir), final_tensors(part.run_dir)
    assert a.keys() == b.keys() and any(k.startswith("source.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the edit moved the scene and left the frozen source where it was
    src = load_checkpoint(latest_checkpoint(tiny_nerf_run)).tensors
    keys = [k[len("system."):] for k in src if k.startswith("system.geometry.")]
    assert keys and all(torch.equal(a[f"source.{k}"], src[f"system.{k}"]) for k in keys)
    assert not all(torch.equal(a[f"system.{k}"], src[f"system.{k}"]) for k in keys)


def test_frozen_source_gets_no_gradient(tmp_path, tiny_sd_dir, tiny_nerf_run, tiny_prior):
    run = open_edit(NERF_PRESET, edit_args(tmp_path, tiny_sd_dir, tiny_nerf_run, "target_prompt=a blue cube"),
                    prior=tiny_prior)
    before = {k: v.clone() for k, v in run.source.state_dict().items()}
    for _ in range(2):
        run.train_step()
        run.step += 1
    assert all(p.grad is None and not p.requires_grad for p in run.source.parameters())
    assert all(torch.equal(before[k], v) for k, v in run.source.state_dict().items())
    assert all(p.grad is None for p in tiny_prior.unet.parameters())


def test_gaussian_edit_exports_and_chains(tmp_path, tiny_sd_dir, tiny_gaussian_run, tiny_prior, capsys):
    run = open_edit(GS_PRESET, edit_args(tmp_path, tiny_sd_dir, tiny_gaussian_run, "steps=2",
                                         "target_prompt=a red sphere", "export.enabled=true",
                                         "export.resolution=32", "export.texture_size=0"), prior=tiny_prior)
    edit_dir = run.fit()
    params, degree = read_ply(edit_dir / "gaussians.ply")  # as a run's: export/ holds only the export's files
    assert not (edit_dir / "export" / "gaussians.ply").exists()
    source_params, _ = read_ply(tiny_gaussian_run / "gaussians.ply")
    assert params["means"].shape == source_params["means"].shape and degree == 0
    assert (edit_dir / "export" / "mesh.glb").is_file()
    # text3d export reads the edit folder, and a further edit takes it as its source
    assert main(["export", str(edit_dir), "--resolution", "32", "--texture-size", "0", "--out",
                 str(tmp_path / "re-export")]) == 0
    # re-exported into its own export/: the edited Gaussians beside it are not touched
    assert main(["export", str(edit_dir), "--resolution", "32", "--texture-size", "0", "--no-progress"]) == 0
    assert read_ply(edit_dir / "gaussians.ply")[0]["means"].shape == params["means"].shape
    again = open_edit(GS_PRESET, edit_args(tmp_path, tiny_sd_dir, edit_dir, "steps=1", "target_prompt=a blue sphere"),
                      prior=tiny_prior)
    assert again.edit.source_prompt == "a red sphere"  # the previous edit's target


def _sh1_ply(path: Path, n: int = 200) -> Path:
    g = torch.Generator().manual_seed(0)
    params = {"means": torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([5.0, -2.0, 1.0]),
              "log_scales": torch.full((n, 3), -3.0), "quats": torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
              "opacity_logits": torch.full((n,), 2.0), "sh0": torch.randn(n, 1, 3, generator=g),
              "shN": 0.1 * torch.randn(n, 3, 3, generator=g)}  # SH degree 1: 3 extra coefficients per channel
    return write_ply(path, params)


def test_an_edited_ply_is_written_back_in_the_files_frame(tmp_path, tiny_sd_dir, tiny_prior):
    """A .ply is edited centred on the origin, yet its edited ``gaussians.ply`` and its mesh come back in
    the file's own frame (where the user's scene has it), and the mesh keeps the detail ``text3d export
    FILE.ply`` gives it rather than the edit's coarser renders' (a colour edit: the same mesh)."""
    ply = _sh1_ply(tmp_path / "scene.ply")  # centred near (5, -2, 1)
    run = open_edit(GS_PRESET, edit_args(tmp_path, tiny_sd_dir, ply, "source_prompt=a red cube", "steps=2",
                                         "target_prompt=a blue cube", "export.enabled=true", "export.resolution=32",
                                         "export.texture_size=0"), prior=tiny_prior)
    assert run.system.geometry.means.detach().median(0).values.abs().max() < 0.2  # trained centred
    edit_dir = run.fit()
    before, after = read_ply(ply)[0], read_ply(edit_dir / "gaussians.ply")[0]
    torch.testing.assert_close(after["means"], before["means"], atol=1e-5, rtol=0)  # colour preset: means fixed
    assert not torch.equal(after["sh0"], before["sh0"])
    assert main(["export", str(ply), "--resolution", "32", "--texture-size", "0", "--out", str(tmp_path / "bare"),
                 "--no-progress"]) == 0
    bare = json.loads((tmp_path / "bare" / "export.json").read_text())
    edited = json.loads((edit_dir / "export" / "export.json").read_text())
    assert edited["source"]["footprint_low_pass"]["pixel"] == pytest.approx(bare["source"]["footprint_low_pass"]["pixel"])
    for key, part in (("mesh", "world_bounds"), ("frame", "world_to_export")):
        torch.testing.assert_close(torch.tensor(edited[key][part]), torch.tensor(bare[key][part]), atol=1e-3, rtol=0)
    # text3d export of the edit folder, and an edit of the edit, stay in the file's frame as well
    assert main(["export", str(edit_dir), "--resolution", "32", "--texture-size", "0", "--out",
                 str(tmp_path / "again"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "export.json").read_text())
    torch.testing.assert_close(torch.tensor(again["mesh"]["world_bounds"]), torch.tensor(bare["mesh"]["world_bounds"]),
                               atol=1e-3, rtol=0)
    chained = open_edit(GS_PRESET, edit_args(tmp_path, tiny_sd_dir, edit_dir, "steps=1", "name=chained",
                                             "target_prompt=a green cube"), prior=tiny_prior).fit()
    torch.testing.assert_close(read_ply(chained / "gaussians.ply")[0]["means"], before["means"], atol=1e-5, rtol=0)


def test_an_edit_may_change_the_sources_material_type(tmp_path, tiny_sd_dir, tiny_gaussian_run):
    """The source's scene (camera-light, with its ``ambient``) is refined by the edit's overrides; a new
    ``material.type`` starts that section from the new type's defaults instead of failing on ``ambient``."""
    from text3d.edit import load_edit_config
    from text3d.run.config import load_config

    assert load_config(tiny_gaussian_run / "config.yaml").material.type == "camera-light"
    for material, expected in (([], "camera-light"), (["material.type=no-material"], "no-material")):
        args = edit_args(tmp_path, tiny_sd_dir, tiny_gaussian_run, "target_prompt=a blue cube", *material)
        assert load_edit_config(GS_PRESET, args)[0].material.type == expected


@pytest.mark.parametrize("which", ["project", "sh1"])
def test_3dgs_ply_sources_load(tmp_path, tiny_sd_dir, tiny_gaussian_run, tiny_prior, which):
    ply = tiny_gaussian_run / "gaussians.ply" if which == "project" else _sh1_ply(tmp_path / "scene.ply")
    run = open_edit(GS_PRESET, edit_args(tmp_path, tiny_sd_dir, ply, "source_prompt=a red cube",
                                         "target_prompt=a red sphere"), prior=tiny_prior)
    params, degree = read_ply(ply)
    geometry = run.system.geometry
    assert run.cfg.geometry.sh_degree == degree == (0 if which == "project" else 1)
    assert geometry.num_gaussians == params["means"].shape[0]
    centred = geometry.means.detach()
    assert torch.allclose(geometry.shN.detach(), params["shN"])
    assert centred.median(0).values.abs().max() < 0.2  # moved so that the bounds' centre is the origin
    cams = run.sample_cameras()
    with torch.no_grad():
        out = run.system.render(cams, train=False)
    src = run.source_x0(cams, "albedo")
    assert out["opacity"].amax() > 0.5  # the orbit cameras see the object
    torch.testing.assert_close(run.prior.encode_images(out["rgb"].permute(0, 3, 1, 2), None), src)
    run.train_step()


@pytest.mark.parametrize("preset,source", [(NERF_PRESET, "tiny_nerf_run"),
                                           (REPO / "configs" / "edit-shape-quickstart-gaussians.yaml", "tiny_gaussian_run")])
def test_the_opacity_anchor_keeps_the_sources_opacity(tmp_path, tiny_sd_dir, tiny_prior, preset, source, request):
    """``edit.keep_opacity``: the loss gains ``weight * sum((alpha - alpha_src)^2) / views`` of the held
    view (the frozen source's render of the same cameras), and the edited opacity stays nearer the
    source's with it than without, on fixed views the edit never trained on."""
    src = request.getfixturevalue(source)

    def edit(weight):
        run = open_edit(preset, edit_args(tmp_path, tiny_sd_dir, src, "target_prompt=a blue cube", f"name=k{weight}",
                                          f"edit.keep_opacity={weight}", "guidance.guidance_scale=100"), prior=tiny_prior)
        for group in run.optimizer.param_groups:  # large steps, so a few of them move the geometry
            group["lr"] *= 10
        terms = []
        for _ in range(6):
            terms.append(run.train_step().get("keep"))
            run.step += 1
        cams = run.sampler.eval_cameras(3, 32, 32)
        drift = [(a["opacity"] - b["opacity"]).abs().mean() for a, b in zip(run.render_views(cams), run.render_source_views(cams))]
        return float(sum(drift)) / len(drift), terms, run

    free, terms, _ = edit(0)
    assert terms == [None] * 6  # no term without a weight
    kept, terms, run = edit(1000)
    assert kept < 0.5 * free, (kept, free)
    assert all(t is not None and t >= 0 for t in terms) and max(terms) > 0
    # the term itself: the held view's source opacity against a given render
    alpha_src = run.source_view(run.sample_cameras(), "albedo")[1]
    alpha = torch.rand_like(alpha_src)
    rgb = torch.rand(*alpha.shape[:-1], 3)  # the preset's chroma term reads the colours too
    got = run.loss_terms({"opacity": alpha, "rgb": rgb}, torch.zeros(()))["keep"]
    assert float(got) == pytest.approx(1000 * float((alpha - alpha_src).square().sum()) / alpha.shape[0], rel=1e-5)


def test_an_edits_export_keeps_the_detail_its_source_was_trained_to(tmp_path, tiny_sd_dir, tiny_prior):
    """An edit rendering coarser than its source exports with the source's pore size (two of the finest
    pixel that supervised the scene), in the edit run and through ``text3d export`` of the edit folder."""
    from conftest import EDIT_FAST
    from text3d.export.mesh import PORE_PIXELS, settings_for_run, supervised_pixel
    from text3d.run import open_run
    from text3d.scene.rundir import load_geometry, scene_config

    source = open_run(REPO / "configs" / "smoke-tiny-sd.yaml",
                      [f"prior.model={tiny_sd_dir}", f"output_dir={tmp_path / 'src'}", "steps=1", "name=fine",
                       "renderer.num_samples_per_ray=16", *EDIT_FAST, "cameras.width=64", "cameras.height=64"],
                      prior=tiny_prior).fit()
    source_pixel = supervised_pixel(scene_config(source).cameras)
    run = open_edit(NERF_PRESET, edit_args(tmp_path, tiny_sd_dir, source, "target_prompt=a blue cube", "steps=2"),
                    prior=tiny_prior)
    own = settings_for_run(run.cfg.export, run.cfg).pore_size
    assert own == pytest.approx(2 * PORE_PIXELS * source_pixel, rel=1e-4)  # the edit's 32 px renders: twice as coarse
    assert run.export_settings().pore_size == pytest.approx(PORE_PIXELS * source_pixel, rel=1e-4)
    run.fit()
    assert load_geometry(run.run_dir)[1]["supervised_pixel"] == pytest.approx(source_pixel)  # text3d export reads it
    assert run.export_settings().pore_size == pytest.approx(PORE_PIXELS * source_pixel, rel=1e-4)


def test_a_gaussian_colour_edit_moves_only_the_colours(tmp_path, tiny_sd_dir, tiny_gaussian_run, tiny_prior):
    """The Gaussian appearance preset: every geometric parameter stays bit-identical to the source's,
    the colours move and stay in the range they are drawn in (``geometry.project_colours``)."""
    from text3d.renderers.gaussians import SH_C0

    run = open_edit(GS_PRESET, edit_args(tmp_path, tiny_sd_dir, tiny_gaussian_run, "target_prompt=a blue cube", "steps=4",
                                         "guidance.guidance_scale=100"), prior=tiny_prior)
    run.fit()
    a, b = final_tensors(run.run_dir), load_checkpoint(latest_checkpoint(tiny_gaussian_run)).tensors
    for name in ("means", "log_scales", "quats", "opacity_logits"):
        assert torch.equal(a[f"system.geometry.{name}"], b[f"system.geometry.{name}"]), name
    sh0 = a["system.geometry.sh0"]
    assert not torch.equal(sh0, b["system.geometry.sh0"])
    rgb = 0.5 + SH_C0 * sh0
    assert rgb.min() >= -1e-6 and rgb.max() <= 1 + 1e-6
