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
