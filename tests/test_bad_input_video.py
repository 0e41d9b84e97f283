"""`text3d video` with bad input: one `error:` line, exit 2, nothing written."""

from pathlib import Path

import numpy as np
import pytest


QUICKSTART = str(Path(__file__).parent.parent / "configs" / "video-quickstart.yaml")

BAD_KEYS = [
    (["alpha=1"], ["alpha", "[0, 1)"]),
    (["alpha=-0.1"], ["alpha"]),
    (["alpha=nan"], ["alpha", "finite"]),
    (["strength=0"], ["strength", "(0, 1]"]),
    (["strength=1.5"], ["strength"]),
    (["noise=perlin"], ["noise", "perlin", "warped"]),
    (["warp=cubic"], ["warp", "cubic", "nearest"]),
    (["flow_preset=slow"], ["flow_preset", "medium"]),
    (["attention=keyframe", "frames=24", "batch_size=8"], ["attention=keyframe", "batch_size >= frames"]),
    (["attention=keyframe", "keyframe=last"], ["keyframe", "last", "first_previous"]),
    (["attention=cross"], ["attention", "keyframe"]),
    (["frames=1"], ["frames"]),
    (["degrees_per_frame=-1"], ["degrees_per_frame"]),
    (["degrees_per_frame=400"], ["degrees_per_frame", "360"]),
    (["reference_camera=1.5"], ["reference_camera", "[0, 1]"]),
    (["reference_camera=nan"], ["reference_camera", "finite"]),
    (["colour=red"], ["colour", "valid keys"]),
]


@pytest.fixture
def clip_file(tmp_path):
    import imageio.v2 as imageio

    path = tmp_path / "src" / "clip.mp4"
    path.parent.mkdir()
    frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(3)]
    imageio.mimsave(path, frames, fps=4, macro_block_size=1)
    return path


@pytest.mark.parametrize("extra,words", BAD_KEYS, ids=[" ".join(r[0]) for r in BAD_KEYS])
def test_bad_key(clip_file, tmp_path, expect_bad_input, extra, words):
    out = tmp_path / "out"
    expect_bad_input(["video", QUICKSTART, f"source={clip_file}", "prompt=a red cube", f"output_dir={out}", *extra,
                      "--no-progress"], *words, watch=tmp_path)


def test_missing_and_absent_sources(tmp_path, expect_bad_input):
    expect_bad_input(["video", QUICKSTART, f"output_dir={tmp_path}"], "source", "missing", watch=tmp_path)
    expect_bad_input(["video", QUICKSTART, f"source={tmp_path / 'nope.mp4'}", f"output_dir={tmp_path}"],
                     "source", "does not exist", watch=tmp_path)
    (tmp_path / "empty_dir").mkdir()
    expect_bad_input(["video", QUICKSTART, f"source={tmp_path / 'empty_dir'}", f"output_dir={tmp_path}"],
                     "source", "neither a run folder", watch=tmp_path)


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 10], ids=["empty", "garbage"])
def test_unreadable_or_empty_video(tmp_path, expect_bad_input, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    expect_bad_input(["video", QUICKSTART, f"source={bad}", "prompt=a red cube", f"output_dir={tmp_path / 'o'}",
                      "--no-progress"], "source", "cannot read", watch=tmp_path)


def test_single_frame_video(tmp_path, expect_bad_input):
    import imageio.v2 as imageio

    folder = tmp_path / "frames"
    folder.mkdir()
    imageio.imwrite(folder / "f0.png", np.zeros((16, 16, 3), np.uint8))
    expect_bad_input(["video", QUICKSTART, f"source={folder}", "prompt=a red cube", f"output_dir={tmp_path / 'o'}",
                      "--no-progress"], "1 frame", watch=tmp_path)


def test_frames_of_mismatched_sizes(tmp_path, expect_bad_input):
    import imageio.v2 as imageio

    folder = tmp_path / "frames"
    folder.mkdir()
    imageio.imwrite(folder / "f0.png", np.zeros((16, 16, 3), np.uint8))
    imageio.imwrite(folder / "f1.png", np.zeros((16, 24, 3), np.uint8))
    expect_bad_input(["video", QUICKSTART, f"source={folder}", "prompt=a red cube", f"output_dir={tmp_path / 'o'}",
                      "--no-progress"], "mismatched sizes", watch=tmp_path)


def test_video_needs_a_prompt(clip_file, tmp_path, expect_bad_input):
    expect_bad_input(["video", QUICKSTART, f"source={clip_file}", f"output_dir={tmp_path / 'o'}", "frames=3",
                      "--no-progress"], "prompt", watch=tmp_path)


def test_resolution_not_a_multiple_of_the_prior_grid(clip_file, tmp_path, expect_bad_input):
    expect_bad_input(["video", QUICKSTART, f"source={clip_file}", "prompt=a red cube", f"output_dir={tmp_path / 'o'}",
                      "resolution=48", "--no-progress"], "resolution", "multiple", watch=tmp_path)


def test_run_whose_render_is_nan(tmp_path, expect_bad_input):
    """A run whose checkpoint holds NaN weights renders NaN depth: refused with one line."""

    import torch
    from safetensors.torch import load_file, save_file

    from text3d.cli import main as cli

    out = tmp_path / "runs"
    assert cli(["run", str(Path(QUICKSTART).parent / "quickstart.yaml"), f"output_dir={out}", "steps=1",
                "trainer.val_every=0", "trainer.turntable_frames=0", "export.enabled=false", "cameras.batch_size=1",
                "renderer.num_samples_per_ray=8", "--no-progress"]) == 0
    run = next(out.glob("quickstart/*@*"))
    state = next(run.glob("ckpts/step-*/state.safetensors"))
    tensors = load_file(str(state))
    for k, v in tensors.items():
        if k.startswith("system.geometry.") and v.is_floating_point():
            tensors[k] = torch.full_like(v, float("nan"))
    save_file(tensors, str(state))
    expect_bad_input(["video", QUICKSTART, f"source={run}", f"output_dir={tmp_path / 'o'}", "frames=2",
                      "resolution=32", "--no-progress"], "NaN", watch=tmp_path)


def test_unreadable_sources_say_why(tmp_path, clip_file, expect_bad_input):
    """A text file named .mp4, a truncated MP4, a .ply and a damaged frame each get their reason in one
    line (not ffmpeg's version banner, not a message cut mid-word)."""
    import imageio.v2 as imageio

    run = ["video", QUICKSTART, "prompt=a red cube", f"output_dir={tmp_path / 'o'}", "--no-progress"]
    text = tmp_path / "notes.mp4"
    text.write_text("these are my notes, not a video\n" * 3)
    line = expect_bad_input([*run, f"source={text}"], "cannot read", "text file", watch=tmp_path)
    assert "ffmpeg version" not in line
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip_file.read_bytes()[:200])
    expect_bad_input([*run, f"source={cut}"], "cut.mp4", "damaged or cut short", watch=tmp_path)
    ply = tmp_path / "scene.ply"
    ply.write_text("ply\nformat ascii 1.0\nend_header\n")
    expect_bad_input([*run, f"source={ply}"], "scene.ply", "not a video", watch=tmp_path)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        imageio.imwrite(frames / f"f{i}.png", np.zeros((16, 16, 3), np.uint8))
    (frames / "f1.png").write_bytes((frames / "f1.png").read_bytes()[:40])
    expect_bad_input([*run, f"source={frames}"], "f1.png", "cannot be read", watch=tmp_path)


def test_an_empty_prompt_never_restyles_unconditioned(tiny_run_dir, tmp_path, expect_bad_input, caplog):
    """``prompt=`` takes the run's own prompt (said in the log); with none there either, one line."""
    import shutil

    import yaml

    from text3d.cli import main

    small = ["frames=2", "resolution=64", "steps=2", "compare_iid=false", "--no-progress"]
    with caplog.at_level("INFO"):
        assert main(["video", QUICKSTART, f"source={tiny_run_dir}", "prompt=", "prior.type=stable-diffusion",
                     "prior.model=tiny-random-sd", f"output_dir={tmp_path / 'o'}", *small]) == 0
    assert any("restyled toward the run's own prompt 'a red cube'" in r.getMessage() for r in caplog.records)
    run = shutil.copytree(tiny_run_dir, tmp_path / "run", symlinks=True)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**saved, "prompt": ""}))
    expect_bad_input(["video", QUICKSTART, f"source={run}", "prompt=", f"output_dir={tmp_path / 'o2'}", *small],
                     "prompt", "empty", watch=tmp_path / "run")
