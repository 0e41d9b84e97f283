"""`text3d video`: noise schedules along correspondences, metrics on known frames, and the command end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from text3d.cli import main
from text3d.video.noise import Correspondence, identity_coords
from text3d.video.pipeline import colour_flip_rate, noise_schedule, noise_settings, VideoConfig, warp_error
from text3d.video.source import Clip

QUICKSTART = str(Path(__file__).parent.parent / "configs" / "video-quickstart.yaml")
RUN_CONFIG = str(Path(__file__).parent.parent / "configs" / "quickstart.yaml")
SMALL = ["frames=4", "steps=4", "resolution=64", "--no-progress"]


@pytest.fixture(scope="session")
def quick_run_dir(tmp_path_factory):
    """A 2-step quickstart run on the shipped shapes prior (its scene is still the initial blob)."""
    out = tmp_path_factory.mktemp("video-runs")
    code = main(["run", RUN_CONFIG, f"output_dir={out}", "steps=2", "trainer.val_every=0",
                 "trainer.turntable_frames=0", "export.enabled=false", "cameras.batch_size=1",
                 "renderer.num_samples_per_ray=16", "--no-progress"])
    assert code == 0
    return next(out.glob("quickstart/*@*"))


def translating_clip(n=4, res=64, shift=4):
    """Frames of a square moving ``shift`` px right per frame, with exact correspondences."""
    frames = torch.ones(n, res, res, 3)
    for i in range(n):
        frames[i, 20:40, 10 + i * shift:30 + i * shift] = torch.tensor([0.1, 0.2, 0.9])
    ident = identity_coords(res, res)
    inside = lambda c: (c[..., 0] >= 0) & (c[..., 0] < res)  # noqa: E731
    back = Correspondence(ident - torch.tensor([shift, 0.0]), inside(ident - torch.tensor([shift, 0.0])))
    fwd = Correspondence(ident + torch.tensor([shift, 0.0]), inside(ident + torch.tensor([shift, 0.0])))
    return Clip(frames, None, [back] * (n - 1), [fwd] * (n - 1), "video")


def test_warp_error_is_zero_for_exact_motion_and_not_for_flicker():
    clip = translating_clip()
    assert warp_error(clip.frames, clip.forward) < 1e-10
    flicker = clip.frames.clone()
    flicker[1, 20:40, 14:34] = torch.tensor([0.9, 0.1, 0.1])
    # the square's 400 pixels of 4096 change by |(0.8, -0.1, -0.8)|^2 = 1.29 in two of three pairs
    expected = 2 / 3 * 400 / (64 * (64 - 4)) * 1.29
    assert abs(warp_error(flicker, clip.forward) - expected) < 0.02 * expected


def test_colour_flip_rate_counts_changes_of_the_object_colour():
    clip = translating_clip()
    assert colour_flip_rate(clip.frames)[0] == 0.0
    frames = clip.frames.clone()
    frames[2, 20:40, 18:38] = torch.tensor([0.86, 0.08, 0.08])
    rate, names = colour_flip_rate(frames)
    assert names == ["blue", "blue", "red", "blue"] and rate == pytest.approx(2 / 3)


def test_warped_per_step_noise_follows_the_motion_and_iid_does_not():
    clip = translating_clip(n=3, res=64, shift=4)
    cfg = VideoConfig(alpha=0.9, warp="nearest")
    init, steps = noise_schedule(noise_settings(cfg), clip, 3, 32, n_steps=4, seed=0)
    assert init.shape == (3, 3, 32, 32) and len(steps) == 4
    for noise in [init, *steps]:
        cur, prev = noise[1:, :, :, 2:], noise[:-1, :, :, :-2]  # 4 px at 64 = 2 px at 32
        corr = float((cur * prev).mean() / (cur.std() * prev.std()))
        assert corr > 0.8
    iid, _ = noise_schedule(noise_settings(cfg, "iid"), clip, 3, 32, n_steps=1, seed=0)
    cur, prev = iid[1:, :, :, 2:], iid[:-1, :, :, :-2]
    assert abs(float((cur * prev).mean())) < 0.05


def test_video_of_a_run_writes_every_output_and_is_reproducible(quick_run_dir, tmp_path, capsys):
    args = ["video", QUICKSTART, f"source={quick_run_dir}", "prompt=a blue cube", f"output_dir={tmp_path}", *SMALL]
    assert main(args) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert out.parent == tmp_path / "video"
    names = {p.name for p in out.iterdir()}
    assert {"frames", "video.mp4", "video.gif", "side_by_side.mp4", "metrics.json", "config.yaml"} <= names
    assert len(list((out / "frames").glob("*.png"))) == 4
    m = json.loads((out / "metrics.json").read_text())
    for key in ("warp_error", "warp_error_iid", "warp_error_ratio", "colour_flip_rate", "colour_flip_rate_iid",
                "seconds_per_frame"):
        assert np.isfinite(m[key]), key
    assert m["warp_error_ratio"] == pytest.approx(m["warp_error"] / m["warp_error_iid"])
    import imageio.v2 as imageio

    side = imageio.mimread(out / "side_by_side.mp4")
    assert len(side) == 4 and side[0].shape[:2] == (64, 3 * 64)
    assert main(args) == 0
    again = Path(capsys.readouterr().out.strip().splitlines()[-1])
    for a, b in zip(sorted((out / "frames").iterdir()), sorted((again / "frames").iterdir())):
        assert a.read_bytes() == b.read_bytes()


def test_video_file_source_with_flow(tmp_path, capsys):
    from text3d.scene.cameras import turntable
    from text3d.core.media import save_video
    from text3d.prior.shapes import render_checker

    cams = turntable(24, 15.0, 3.0, 32.0, 64, 64)
    rgb, _ = render_checker(["cube"] * 4, cams.index(slice(0, 4)))
    clip = save_video(tmp_path / "clip.mp4", list(rgb), fps=8)
    assert main(["video", QUICKSTART, f"source={clip}", "prompt=a red cube", f"output_dir={tmp_path / 'o'}",
                 "compare_iid=false", *SMALL]) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1])
    m = json.loads((out / "metrics.json").read_text())
    assert m["source_kind"] == "video" and m["frames"] == 4 and np.isfinite(m["results"]["warped"]["warp_error"])


def test_video_with_a_latent_prior_brings_the_noise_to_the_latent_grid(tiny_sd_dir, tmp_path, capsys):
    """The tiny Stable Diffusion (VAE latents, 4 channels): correspondences at 64 px, noise area-summed to its grid."""
    from text3d.scene.cameras import turntable
    from text3d.core.media import save_video
    from text3d.prior.shapes import render_checker

    cams = turntable(24, 15.0, 3.0, 32.0, 64, 64)
    rgb, _ = render_checker(["cube"] * 3, cams.index(slice(0, 3)))
    clip = save_video(tmp_path / "clip.mp4", list(rgb), fps=8)
    assert main(["video", str(Path(QUICKSTART).parent / "video-sd.yaml"), f"source={clip}", "prompt=a cube",
                 f"prior.model={tiny_sd_dir}", "prior.image_size=64", "device=cpu", f"output_dir={tmp_path / 'o'}",
                 "frames=3", "steps=4", "resolution=64", "cfg_scale=2", "--no-progress"]) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1])
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames"] == 3 and m["frame_size"] == 64 and np.isfinite(m["warp_error_ratio"])


def test_keyframe_attention_keeps_frame_0_and_changes_the_later_frames(tmp_path, capsys):
    """attention=keyframe: frame 0 is its own keyframe (unchanged); later frames attend to frame 0."""
    from text3d.scene.cameras import turntable
    from text3d.core.media import save_video
    from text3d.prior.shapes import render_checker

    cams = turntable(24, 15.0, 3.0, 32.0, 64, 64)
    rgb, _ = render_checker(["cube"] * 4, cams.index(slice(0, 4)))
    clip = save_video(tmp_path / "clip.mp4", list(rgb), fps=8)
    frames = {}
    for attention in ("none", "keyframe"):
        assert main(["video", QUICKSTART, f"source={clip}", "prompt=a red cube", f"output_dir={tmp_path / attention}",
                     "compare_iid=false", f"attention={attention}", "batch_size=4", *SMALL]) == 0
        out = Path(capsys.readouterr().out.strip().splitlines()[-1])
        frames[attention] = sorted((out / "frames").glob("*.png"))
        assert json.loads((out / "metrics.json").read_text())["frames"] == 4
    import imageio.v3 as iio

    first = [iio.imread(p) for p in (frames["none"][0], frames["keyframe"][0])]
    later = [iio.imread(p) for p in (frames["none"][2], frames["keyframe"][2])]
    assert np.array_equal(first[0], first[1])  # frame 0 is its own keyframe: unchanged
    assert not np.array_equal(later[0], later[1])  # later frames attend to frame 0 instead of themselves


# --------------------------------------------------------------------------------------------
# degrees_per_frame and reference_camera
def test_turntable_step_defaults_to_a_full_turn_and_follows_degrees_per_frame():
    from text3d.scene.cameras import turntable

    full, ref = turntable(16, 15.0, 3.0, 40.0, 32, 32), turntable(16, 15.0, 3.0, 40.0, 32, 32, degrees_per_view=22.5)
    assert torch.equal(full.c2w, ref.c2w) and torch.equal(full.azimuth, ref.azimuth)
    slow = turntable(16, 15.0, 3.0, 40.0, 32, 32, degrees_per_view=7.5)
    assert torch.allclose(slow.azimuth, torch.arange(16) * 7.5)
    # consecutive camera centres are a chord of 7.5 degrees apart on the orbit's circle
    centres = slow.c2w[:, :3, 3]
    radius = 3.0 * np.cos(np.radians(15.0))
    chord = 2 * radius * np.sin(np.radians(7.5) / 2)
    assert torch.allclose((centres[1:] - centres[:-1]).norm(dim=-1), torch.tensor(chord).float(), atol=1e-5)


@pytest.fixture(scope="module")
def shapes_prior():
    from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig

    return PixelPrior(PixelPriorConfig(), torch.device("cpu"))


def turntable_clip(n=4, same_frames=False):
    """A shapes-prior-sized (32 px) clip of an analytic cube turntable, 30 degrees per frame."""
    from text3d.scene.cameras import turntable
    from text3d.prior.shapes import render_shapes

    cams = turntable(n, 15.0, 3.0, 40.0, 32, 32, degrees_per_view=30.0)
    rgb = render_shapes(["cube"] * n, ["red"] * n, cams)[0]
    frames = rgb[:1].expand(n, -1, -1, -1).clone() if same_frames else rgb
    return Clip(frames, cams, [], [], "run", "a red cube")


def test_reference_camera_0_is_the_plain_sdedit_and_frame_0_never_changes(shapes_prior):
    """reference_camera=0 gives exactly the frames of SDEdit with each frame's own camera (the call
    without reference cameras); a fraction > 0 keeps frame 0 (its own camera is the reference) and
    changes the later frames (the camera-conditioned prior sees frame 0's camera first)."""
    from text3d.guidance.sdedit import sdedit, sdedit_timesteps
    from text3d.video.pipeline import restyle

    clip = turntable_clip()
    cfg = VideoConfig(steps=6, strength=0.8, noise="iid", prompt="a cube", batch_size=4)
    plain, _ = restyle(shapes_prior, clip, cfg, "iid")
    x0 = shapes_prior.encode_images(clip.frames.permute(0, 3, 1, 2), generator=torch.Generator().manual_seed(0))
    n_steps = len(sdedit_timesteps(shapes_prior, 6, 0.8))
    initial, per_step = noise_schedule(noise_settings(cfg, "iid"), clip, x0.shape[1], x0.shape[-1], n_steps, 0)
    cond, uncond = shapes_prior.encode_text(["a cube"]), shapes_prior.encode_text([""])
    x = sdedit(shapes_prior, x0, cond, uncond, initial, per_step, 6, 0.8, cfg.cfg_scale, cfg.eta, cameras=clip.cameras)
    assert torch.equal(plain, shapes_prior.decode(x).permute(0, 2, 3, 1))
    ref, _ = restyle(shapes_prior, clip, VideoConfig(**{**cfg.__dict__, "reference_camera": 0.5}), "iid")
    assert torch.equal(ref[0], plain[0])
    assert all(not torch.equal(ref[i], plain[i]) for i in range(1, 4))


def test_reference_camera_1_with_shared_noise_makes_identical_inputs_identical_frames(shapes_prior):
    """Identical source frames with one noise: conditioned on frame 0's camera throughout, every frame is
    frame 0; on their own cameras they differ (what the schedule changes is only the camera)."""
    from text3d.video.pipeline import restyle

    clip = turntable_clip(same_frames=True)
    cfg = VideoConfig(steps=6, strength=0.8, noise="shared", prompt="a cube", batch_size=4)
    own, _ = restyle(shapes_prior, clip, cfg, "shared")
    assert not torch.allclose(own[1], own[0], atol=1e-4)
    ref, _ = restyle(shapes_prior, clip, VideoConfig(**{**cfg.__dict__, "reference_camera": 1.0}), "shared")
    for i in range(1, 4):
        assert torch.allclose(ref[i], ref[0], atol=1e-5)
    assert torch.equal(ref[0], own[0])


def test_reference_frame_is_the_keyframe():
    from text3d.video.pipeline import reference_frame

    assert reference_frame(VideoConfig(), 8) == 0
    assert reference_frame(VideoConfig(attention="keyframe", keyframe="middle"), 8) == 4
    assert reference_frame(VideoConfig(attention="none", keyframe="middle"), 8) == 0
