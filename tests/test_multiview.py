"""The multi-view sampler and ``text3d multiview``: modes, noise, grids, outputs, determinism."""

import json
from pathlib import Path

import pytest
import torch

from text3d.scene.cameras import turntable
from text3d.cli import main
from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig
from text3d.multiview.modes import MultiviewSettings, SamplerConfig, parse_grid, sample_multiview, tile, untile, view_prompts
from text3d.scene.cameras import cameras_from_json
from text3d.prior.model import sample
from text3d.guidance.prompts import PromptingConfig

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "multiview-quickstart.yaml"


@pytest.fixture(scope="module")
def prior():
    return PixelPrior(PixelPriorConfig(), torch.device("cpu"))


def settings(mode, steps=3, **kw):
    return MultiviewSettings(mode=mode, sampler=SamplerConfig(steps=steps), **kw)


def test_independent_mode_is_the_priors_own_sampler(prior):
    cams = turntable(3, 15.0, 3.0, 32.0, 32, 32)
    prompts = ["a red cube", "a blue sphere", "a green cone"]
    got = sample_multiview(prior, prompts, cams, 3, settings("independent"), torch.Generator().manual_seed(4))
    parts = prior.unet, prior.text_encoder, prior.tokenizer, prior.scheduler
    from text3d.prior.model import PriorModules

    want = sample(PriorModules(*parts), prompts, cams, steps=3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_grid_tiles_round_trip_and_a_one_view_grid_is_independent(prior):
    x = torch.randn(12, 3, 4, 5)
    canvas = tile(x, 2, 3)
    assert canvas.shape == (2, 3, 8, 15)
    assert torch.equal(canvas[0, :, 4:8, 5:10], x[4])  # view 4 = row 1, column 1 of set 0
    assert torch.equal(untile(canvas, 2, 3), x)
    assert parse_grid("auto", 6) == (2, 3) and parse_grid("3x2", 6) == (3, 2) and parse_grid("auto", 5) == (1, 5)
    cams = turntable(2, 15.0, 3.0, 32.0, 32, 32)
    one = lambda mode: sample_multiview(prior, ["a cube"] * 2, cams, 1, settings(mode),  # noqa: E731
                                        torch.Generator().manual_seed(1))
    torch.testing.assert_close(one("grid"), one("independent"), rtol=0, atol=1e-5)


def test_shared_noise_gives_identical_views_for_identical_cameras(prior):
    cams = turntable(1, 15.0, 3.0, 32.0, 32, 32).index(torch.zeros(4, dtype=torch.long))
    for mode in ("independent", "shared", "full"):
        x = sample_multiview(prior, ["a cube"] * 4, cams, 2, settings(mode, noise="shared"), torch.Generator().manual_seed(2))
        torch.testing.assert_close(x[0], x[1], rtol=0, atol=1e-5)
        assert not torch.allclose(x[0], x[2], atol=1e-3)  # the second set has its own noise


def test_reference_camera_schedule(prior):
    """reference_camera=1: every view is sampled as its set's view 0 (same noise, same conditioning);
    0 < f < 1: the first round(f * steps) steps as view 0, the rest at the view's own camera."""
    cams = turntable(4, 15.0, 3.0, 32.0, 32, 32)
    run = lambda f, steps=4: sample_multiview(  # noqa: E731
        prior, ["a cube"] * 4, cams, 2, settings("independent", steps, noise="shared", reference_camera=f),
        torch.Generator().manual_seed(3))
    full, none, half = run(1.0), run(0.0), run(0.5)
    torch.testing.assert_close(full[1], full[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(full[3], full[2], rtol=0, atol=1e-5)  # set 2's own reference, not view 0
    torch.testing.assert_close(full[0], none[0], rtol=0, atol=1e-5)  # the reference itself is unchanged
    assert not torch.allclose(none[1], none[0], atol=1e-3)
    assert not torch.allclose(half[1], none[1], atol=1e-4) and not torch.allclose(half[1], full[1], atol=1e-4)


def test_stable_diffusion_path_with_view_dependent_prompts(tiny_prior):
    cams = turntable(4, 15.0, 3.0, 40.0, 64, 64)
    prompts = view_prompts(tiny_prior, "a teapot", cams, PromptingConfig(view_dependent=True))
    assert prompts == ["a teapot, front view", "a teapot, side view", "a teapot, back view", "a teapot, side view"]
    for mode in ("shared", "full", "grid"):
        x = sample_multiview(tiny_prior, prompts, cams, 4, settings(mode, steps=2), torch.Generator().manual_seed(0))
        assert x.shape == (4, 3, 64, 64) and torch.isfinite(x).all()
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in tiny_prior.unet.attn_processors.values())


def test_cli_writes_views_grid_and_json_and_is_deterministic(tmp_path, capsys):
    args = ["multiview", str(QUICK), "prompt=a red object", "views=3", "mode=shared", "seed=5", "sampler.steps=2",
            "azimuths=[0,90,200]", f"output_dir={tmp_path}"]
    dirs = []
    for _ in range(2):
        assert main(args) == 0
        dirs.append(Path(capsys.readouterr().out.strip().splitlines()[-1]))
    out = dirs[0]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "grid.png", "multiview.json", "view_00.png",
                                                      "view_01.png", "view_02.png"]
    meta = json.loads((out / "multiview.json").read_text())
    assert meta["mode"] == "shared" and meta["prompts"] == ["a red object"] * 3 and meta["views"] == 3
    assert [c["azimuth_deg"] for c in meta["cameras"]] == [0.0, 90.0, 200.0]
    cams = cameras_from_json(meta["cameras"])
    torch.testing.assert_close(cams.c2w, torch.tensor([c["c2w"] for c in meta["cameras"]]))
    assert set(meta["timings"]) == {"load_s", "sample_s", "save_s"}
    assert meta["settings"]["sampler"]["steps"] == 2
    for name in meta["images"]:
        assert (out / name).read_bytes() == (dirs[1] / name).read_bytes()
