"""Outlines at the prior's resolution (benchmarks/outline_profile.py): the figures of a mask, cameras around a
shape's quarter-turn symmetry checked against the projected shape, a run's renders resized the way
training resizes them, and the benchmark's --outline-profile end to end."""

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from text3d.prior.shapes import render_shapes
from text3d.scene.cameras import finest_resolution

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from outline_profile import outline_stats, outlines, run_views, symmetric_cameras, true_views  # noqa: E402


def test_outline_stats_reads_area_rows_and_widest_row():
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, 2, 3:5] = True      # a 2-pixel row at the top
    mask[0, 3, 2:6] = True      # a 4-pixel row under it
    mask[0, 5, 1:4] = True      # a gap, then 3 pixels
    s = outline_stats(mask)
    torch.testing.assert_close(s["area"], torch.tensor([9.0, 0.0]))
    torch.testing.assert_close(s["widest"], torch.tensor([4.0, 0.0]))
    assert s["top"][0] == 2 and s["bottom"][0] == 5
    assert math.isnan(s["top"][1]) and math.isnan(s["bottom"][1])  # an empty outline has no rows
    torch.testing.assert_close(s["row_widths"], torch.tensor([0, 0, 1, 2, 0, 1.5, 0, 0]))


def _projected_width(corners, cams, resolution):
    """Width in pixels of the corners' projection (pinhole: f = res / (2 tan(fovy/2)))."""
    w2c = torch.linalg.inv(cams.c2w[0])
    pts = torch.cat([corners, torch.ones(len(corners), 1)], 1) @ w2c.T
    f = 0.5 * resolution / math.tan(0.5 * float(cams.fovy[0]))
    x = f * pts[:, 0] / -pts[:, 2]  # the camera looks down -z (OpenGL convention)
    return float(x.max() - x.min())


def test_quarter_turns_look_alike_and_match_the_projected_pyramid():
    """Every quarter turn of a square pyramid draws the same outline; face-on the widest row is the
    projected front edge, corner-on the projected diagonal (to a pixel): the cameras are where they say."""
    base = torch.tensor([[x, y, -0.35] for x in (-0.35, 0.35) for y in (-0.35, 0.35)])
    for offset in (0.0, 45.0):
        cams = symmetric_cameras(offset, 0.0, copies=1, resolution=32)
        assert len(cams) == 4
        masks = outlines(true_views("pyramid", "orange", cams))
        for k in range(1, 4):
            assert torch.equal(masks[k], masks[0]), (offset, k)
        widest = float(outline_stats(masks)["widest"][0])
        expected = _projected_width(base, cams, 32)
        assert abs(widest - expected) <= 1.0, (offset, widest, expected)
    assert expected > 18.0  # corner-on: the diagonal, 0.99 wide at distance 3


class _TrueRun:
    """A stand-in for a run whose renders are the true shape: records the resolution it was asked for."""

    def __init__(self, height, resolutions):
        self.cfg = SimpleNamespace(cameras=SimpleNamespace(height=height, resolutions=resolutions))
        self.asked = []

    def render_views(self, cameras, mode="albedo"):
        self.asked.append((cameras.height, mode))
        rgb, _ = render_shapes(["pyramid"] * len(cameras), ["orange"] * len(cameras), cameras, supersample=2)
        return [{"rgb": img} for img in rgb]


def test_run_outlines_render_at_the_finest_training_resolution_and_box_filter_to_the_prior():
    """A 64-px render with 2x2 sub-pixels, box-filtered to 32 px, samples exactly the sub-pixels of a
    32-px render with 4x4: the outline must equal the true one pixel for pixel (a shifted or blurred
    resize would not)."""
    run = _TrueRun(32, [64])
    assert finest_resolution(run.cfg.cameras) == 64
    cams = symmetric_cameras(30.0, 10.0, copies=1, resolution=32)
    images = run_views(run, cams)
    assert run.asked == [(64, "albedo")]
    assert images.shape == (4, 3, 32, 32)
    masks = outlines(images)
    assert torch.equal(masks, outlines(true_views("pyramid", "orange", cams)))
    coarse = outlines(run_views(run, cams, render_resolution=32))  # no resize; 2x2 sub-pixels instead of 4x4
    assert (coarse != masks).float().mean() < 0.05


def test_outline_profile_command_prints_true_prior_and_run_rows(tiny_gaussian_run, tmp_path, capsys):
    import imageio.v2 as imageio
    from eval_prior_samples import main

    code = main(["--outline-profile", "red cube", "--run", str(tiny_gaussian_run), "--elevations", "0",
                 "--offsets", "0", "45", "--copies", "1", "--steps", "2", "--grid", str(tmp_path / "g.png")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"run 1: {tiny_gaussian_run} (gaussians)" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("true", "prior", "run"))}
    assert rows["true"][0] == "1.000" and rows["true"][3] == "1.000"  # area / true (then rows, widest), both offsets
    assert {"prior", "run"} <= set(rows)
    grid = imageio.imread(tmp_path / "g.png")  # 3 sources x 2 offsets, 32 px views enlarged 4x
    assert grid.shape == (3 * 128, 2 * 128, 3)


def test_outline_profile_command_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    from eval_prior_samples import main

    assert main(["--outline-profile", "red cube", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err and "config.yaml" in err


def test_eval_prior_samples_names_a_missing_prior_in_one_line(tmp_path, capsys):
    from eval_prior_samples import main

    assert main(["--prior", str(tmp_path / "nowhere"), "--outline-profile", "red cube"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --prior:") and "train-prior" in err


def test_outline_profile_command_names_a_pair_it_cannot_read(capsys):
    from eval_prior_samples import main

    assert main(["--outline-profile", "pyramid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'pyramid'" in err and "<colour> <shape>" in err and "orange" in err
    assert main(["--pose-probe", "red cube", "a cube"]) == 2  # checked before any pair is sampled
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --pose-probe: 'a cube'")
