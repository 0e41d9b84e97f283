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
