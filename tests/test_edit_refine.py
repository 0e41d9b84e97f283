"""The refinement stage of text3d edit (official PDS ``pds_refinement``): the photometric loss fits
renders to the cached views, SDEdit replacements follow the cycle and stay close to the render at
small t, and an edit resumed mid-refinement ends bit-identical to an uninterrupted one."""

from pathlib import Path

import pytest
import torch

from conftest import EDIT_FAST
from text3d.core.checkpoint import latest_checkpoint, load_checkpoint
from text3d.edit import open_edit

REPO = Path(__file__).resolve().parents[1]
PRESETS = {"nerf": REPO / "configs" / "edit-quickstart.yaml", "gaussians": REPO / "configs" / "edit-quickstart-gaussians.yaml"}
TARGET = torch.tensor([0.1, 0.3, 0.9])


def refine_args(tmp_path, tiny_sd_dir, source, *extra):
    return [f"source={source}", "prior.type=stable-diffusion", f"prior.model={tiny_sd_dir}",
            f"output_dir={tmp_path / 'outputs'}", "edit.metric_views=2", "edit.metric_resolution=32",
            "edit.hold_steps=2", "target_prompt=a blue cube", *EDIT_FAST, "refine.enabled=true",
            "refine.views=3", "refine.sdedit_steps=10", "refine.guidance_scale=3.0", "refine.batch_size=1", *extra]


def still_error(run) -> float:
    """Mean squared difference between still renders of every cached view and the cached images."""
    ref = run.refinement
    with torch.no_grad():
        renders = torch.cat([run._render_still(ref.cameras.index([i])) for i in range(ref.cfg.views)])
    return float(((renders - ref.images) ** 2).mean())


@pytest.mark.parametrize("scene", ["nerf", "gaussians"])
def test_refine_loss_pulls_renders_toward_cached_views(scene, tmp_path, tiny_sd_dir, tiny_nerf_run,
                                                       tiny_gaussian_run, tiny_prior):
    source = tiny_nerf_run if scene == "nerf" else tiny_gaussian_run
    lr = ["optimizer.lr.sh0=0.05"] if scene == "gaussians" else []
    run = open_edit(PRESETS[scene], refine_args(tmp_path, tiny_sd_dir, source, "steps=60", "refine.start_step=0",
                                                "refine.every=1000", "refine.batch_size=2", *lr), prior=tiny_prior)
    ref = run.refinement
    ref.start(run._render_still)
    with torch.no_grad():  # an independent target: the object of every cached view recoloured flat blue
        alpha = torch.cat([run.system.render(ref.cameras.index([i]), train=False)["opacity"] for i in range(3)])
    ref.images = ref.images * (1 - alpha) + TARGET * alpha
    target = ref.images.clone()
    run.step = 1  # past the stage's first replacement (step 0), so the targets stay as set
    before = still_error(run)
    losses = []
    for _ in range(40):
        losses.append(run.train_step()["refine"])
        run.step += 1
    after = still_error(run)
    assert after < 0.4 * before, (before, after)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert torch.equal(ref.images, target)  # no replacement between the stage's first step and step 1000


def test_replacements_follow_the_cycle_and_stay_close_at_small_t(tmp_path, tiny_sd_dir, tiny_nerf_run, tiny_prior):
    run = open_edit(PRESETS["nerf"], refine_args(tmp_path, tiny_sd_dir, tiny_nerf_run, "steps=20",
                                                 "refine.start_step=2", "refine.every=3"), prior=tiny_prior)
    ref = run.refinement
    assert [ref.slots(s) for s in (2, 3, 4, 5, 8, 11, 14)] == [[0], [], [], [1], [2], [0], [1]]
    ref.start(run._render_still)
    cached = ref.images.clone()
    run.step = 2
    assert ref.replace(2, run._render_still, run.prompts, run.device) == [0]
    assert torch.equal(ref.images[1:], cached[1:])  # only the step's slot changed
    # the tiny VAE's round trip of the render (what an SDEdit from t = 0 would give)
    with torch.no_grad():
        x0 = run.prior.encode_images(cached[:1].permute(0, 3, 1, 2), None)
        round_trip = torch.nn.functional.interpolate(run.prior.decode(x0), (32, 32), mode="bilinear")[0].permute(1, 2, 0)
    small_t = (ref.images[0] - round_trip).abs().mean()
    # the same view SDEdited from pure noise (no step skipped) moves much further from the render
    cams = ref.cameras.index([0])
    cond, uncond = run.prompts(cams.elevation, cams.azimuth)
    ref.cfg.skip_min = ref.cfg.skip_max = 0.0
    from_noise = ref.sdedit_view(cached[:1], cond, uncond, cams, torch.Generator().manual_seed(0))
    assert 0 < small_t < (from_noise[0] - round_trip).abs().mean()
    assert from_noise.shape == (1, 32, 32, 3) and 0 <= float(from_noise.min()) and float(from_noise.max()) <= 1


def test_sdedit_runs_the_official_last_steps(tmp_path, tiny_sd_dir, tiny_nerf_run, tiny_prior, monkeypatch):
    """Official run_sdedit: a 20-step DDIM grid, skip in [16, 18], noised to reversed(grid)[S - 1],
    then exactly the last S = 20 - skip steps of the grid, each with the refine CFG scale."""
    from diffusers import DDIMScheduler

    run = open_edit(PRESETS["nerf"], refine_args(tmp_path, tiny_sd_dir, tiny_nerf_run, "steps=20", "refine.start_step=0",
                                                 "refine.sdedit_steps=20"), prior=tiny_prior)
    ref, calls = run.refinement, []
    original = type(tiny_prior).predict_noise_cfg
    monkeypatch.setattr(type(tiny_prior), "predict_noise_cfg",
                        lambda self, x, t, c, u, scale, **kw: calls.append((int(t), scale)) or original(self, x, t, c, u, scale, **kw))
    grid = DDIMScheduler.from_config(tiny_prior.scheduler.config)
    grid.set_timesteps(20)
    seen = set()
    for seed in range(12):
        calls.clear()
        ref.images = None
        cams = ref.cameras.index([0])
        cond, uncond = run.prompts(cams.elevation, cams.azimuth)
        ref.sdedit_view(torch.full((1, 32, 32, 3), 0.5), cond, uncond, cams, torch.Generator().manual_seed(seed))
        S = len(calls)
        assert 2 <= S <= 4 and [t for t, _ in calls] == grid.timesteps[-S:].tolist()
        assert all(scale == 3.0 for _, scale in calls)
        seen.add(S)
    assert seen == {2, 3, 4}  # skip drawn over the whole official range


@pytest.mark.parametrize("scene", ["nerf", "gaussians"])
def test_resume_mid_refinement_is_bit_identical(scene, tmp_path, tiny_sd_dir, tiny_nerf_run, tiny_gaussian_run,
                                                tiny_prior):
    source = tiny_nerf_run if scene == "nerf" else tiny_gaussian_run
    common = refine_args(tmp_path, tiny_sd_dir, source, "refine.start_step=2", "refine.every=2")
    full = open_edit(PRESETS[scene], [*common, "steps=7", "name=full"], prior=tiny_prior)
    full.fit()
    part = open_edit(PRESETS[scene], [*common, "steps=3", "name=part"], prior=tiny_prior)
    part.fit()  # stops inside the stage, between two replacements
    mid = load_checkpoint(latest_checkpoint(part.run_dir)).tensors
    assert mid["refine.images"].shape == (3, 32, 32, 3)
    resumed = open_edit(None, [f"resume={part.run_dir}", "steps=7"], prior=tiny_prior)
    assert resumed.step == 3 and resumed.refinement.images is not None
    resumed.fit()
    a = load_checkpoint(latest_checkpoint(full.run_dir)).tensors
    b = load_checkpoint(latest_checkpoint(part.run_dir)).tensors
    assert a.keys() == b.keys() and "refine.images" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["refine.images"], mid["refine.images"])  # replacements happened after the resume
