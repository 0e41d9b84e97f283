"""Shared fixtures: a tiny random Stable Diffusion saved to disk and loaded like a real model.

The hub is switched off before anything imports huggingface_hub, so a test that would reach for
the network fails at once instead of hanging.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A diffusers folder holding the tiny random pipeline (seed 0), written by ``save_pretrained``."""
    from text3d.guidance.tiny import build_tiny_sd_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_sd_pipeline(seed=0).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_prior(tiny_sd_dir):
    """The tiny pipeline loaded through the user-facing loader (``prior.model: <folder>``), on CPU."""
    from text3d.guidance import StableDiffusionPrior, StableDiffusionPriorConfig

    return StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tiny_sd_dir)), torch.device("cpu"))


@pytest.fixture
def fresh_tiny_prior(tiny_sd_dir):
    """A tiny prior with an empty text-embedding cache (for tests that count encoder calls)."""
    from text3d.guidance import StableDiffusionPrior, StableDiffusionPriorConfig

    return StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tiny_sd_dir)), torch.device("cpu"))


EDIT_FAST = ["cameras.width=32", "cameras.height=32", "trainer.val_every=2", "trainer.val_views=2",
             "trainer.val_resolution=32", "trainer.turntable_frames=3", "trainer.turntable_resolution=32",
             "trainer.checkpoint_every=2", "trainer.log_every=0", "export.enabled=false"]
"""Overrides that make a run or an edit take seconds (tests of text3d edit)."""


@pytest.fixture(scope="session")
def tiny_nerf_run(tiny_sd_dir, tmp_path_factory):
    """A 2-step NeRF run of the smoke preset ("a red cube", tiny SD): a source for edits."""
    from pathlib import Path

    from text3d.run import open_run

    out = tmp_path_factory.mktemp("edit-sources")
    preset = Path(__file__).resolve().parents[1] / "configs" / "smoke-tiny-sd.yaml"
    run = open_run(preset, [f"prior.model={tiny_sd_dir}", f"output_dir={out}", "steps=2", "name=nerf",
                            "renderer.num_samples_per_ray=24", *EDIT_FAST])
    return run.fit()


@pytest.fixture(scope="session")
def tiny_gaussian_run(tiny_sd_dir, tmp_path_factory):
    """A 2-step Gaussian run of the quickstart-gaussians preset on the tiny SD (300 Gaussians)."""
    from pathlib import Path

    from text3d.run import open_run

    out = tmp_path_factory.mktemp("edit-sources")
    preset = Path(__file__).resolve().parents[1] / "configs" / "quickstart-gaussians.yaml"
    run = open_run(preset, ["prior.type=stable-diffusion", f"prior.model={tiny_sd_dir}", f"output_dir={out}",
                            "steps=2", "name=gaussians", "geometry.num_points=300", "cameras.resolution_milestones=[]",
                            "cameras.resolutions=[]", *EDIT_FAST])
    return run.fit()


SMOKE_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "smoke-tiny-sd.yaml")
TINY_RUN_OVERRIDES = ["cameras.width=32", "cameras.height=32", "renderer.num_samples_per_ray=16",
                      "trainer.val_every=0", "trainer.turntable_frames=0", "trainer.log_every=0",
                      "trainer.checkpoint_every=1", "trainer.keep_checkpoints=3", "steps=3",
                      "export.resolution=32", "export.faces=500", "export.texture_size=32"]


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_sd_dir):
    """A finished 3-step run of the tiny SD (checkpoints at steps 1, 2, 3 kept). Read-only: copy it
    (``shutil.copytree``) before damaging it."""
    from text3d.cli import main

    out = tmp_path_factory.mktemp("tiny-runs")
    code = main(["run", SMOKE_CONFIG, f"prior.model={tiny_sd_dir}", f"output_dir={out}", "name=tiny",
                 *TINY_RUN_OVERRIDES, "--no-progress"])
    assert code == 0
    return next(out.glob("tiny/*@*"))


@pytest.fixture(scope="session")
def no_attention_model(tmp_path_factory):
    """A Stable Diffusion folder whose UNet has no attention layers at all."""
    from diffusers import UNet2DConditionModel

    from text3d.guidance.tiny import build_tiny_sd_pipeline

    pipe = build_tiny_sd_pipeline(seed=0)
    pipe.unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                     layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "UpBlock2D"), mid_block_type=None,
                                     cross_attention_dim=32, norm_num_groups=4)
    folder = tmp_path_factory.mktemp("no-attn-sd")
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def tree_snapshot(root):
    """Every path under ``root`` with its size (files) — to show a command left nothing behind."""
    from pathlib import Path

    root = Path(root)
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))}


@pytest.fixture
def expect_bad_input(capsys):
    """``expect_bad_input(argv, *words, watch=dir)``: the CLI exits 2 with exactly one stderr line
    ``error: ...`` holding every word, prints nothing on stdout, and changes nothing under ``watch``."""
    from text3d.cli import main

    def check(argv, *words, watch=None):
        before = tree_snapshot(watch) if watch is not None else None
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own errors
            code = e.code
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (code, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err and not out.strip(), (out, err)
        for word in words:
            assert word in lines[0], (word, lines[0])
        if watch is not None:
            assert tree_snapshot(watch) == before, "the command left something behind"
        return lines[0]

    return check
