"""The latent prior shipped in the package (text3d/data/latent_prior): it loads through the Stable
Diffusion loader from the latent quickstart preset, it was trained by the shipped recipe, samples are
deterministic with a seed and are judged right against the analytic renderer — plain and striped.

The full checks (VAE PSNR on held-out renders; 240 samples) live in benchmarks/eval_latent_prior.py."""

from pathlib import Path

import pytest
import torch

from text3d.guidance import StableDiffusionPrior
from text3d.guidance.registry import PRIORS
from text3d.prior.evaluation import judge, judge_stripes
from text3d.prior.latent_model import BUILTIN_LATENT_PRIOR_DIR, LatentPriorModules, sample_latent
from text3d.prior.recipes import load_recipe
from text3d.run.config import load_raw, resolve
from text3d.scene.cameras import orbit_cameras

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped():
    cfg = resolve(load_raw(REPO / "configs" / "quickstart-latent.yaml"))
    return PRIORS.build(cfg.prior, torch.device("cpu"))


def _modules(prior) -> LatentPriorModules:
    return LatentPriorModules(prior.vae, prior.unet, prior.text_encoder, prior.tokenizer, prior.scheduler, prior.meta)


def _cameras(n, az0=20.0):
    return orbit_cameras(torch.linspace(az0, az0 + 300, n), torch.full((n,), 20.0), torch.full((n,), 3.0),
                         torch.full((n,), 32.0), 32, 32)


def test_the_shipped_latent_prior_loads_through_the_sd_loader(shipped):
    assert isinstance(shipped, StableDiffusionPrior) and shipped.latent_space
    assert (shipped.image_size, shipped.x0_size, shipped.x0_channels) == (32, 8, 4)
    assert shipped.unet.config.down_block_types[:2] == ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    folder_bytes = sum(p.stat().st_size for p in BUILTIN_LATENT_PRIOR_DIR.rglob("*") if p.is_file())
    assert folder_bytes <= 40e6


def test_it_was_trained_by_the_shipped_recipe(shipped):
    import dataclasses

    from text3d.prior.train_state import RESUME_FREE_KEYS as _FREE_KEYS  # where and how fast it ran: free to differ

    recipe = dataclasses.asdict(load_recipe(REPO / "configs" / "train-latent-prior.yaml"))
    trained = shipped.meta["recipe"]
    if "views" not in trained:  # written before the optional stage 3 existed: the recipe must not ask for it
        assert recipe.pop("views")["iterations"] == 0
    else:  # stage 3 in one sitting or in a later one from the stage-2 prior: the same weights (test_latent_prior)
        trained = {**trained, "views": {k: v for k, v in trained["views"].items() if k != "start_from"}}
        recipe["views"].pop("start_from")
    assert {k: v for k, v in trained.items() if k not in _FREE_KEYS} == {k: v for k, v in recipe.items() if k not in _FREE_KEYS}
    assert abs(shipped.scaling_factor - shipped.meta["scaling_factor"]) < 1e-6


def test_samples_are_deterministic_and_right(shipped):
    prior = _modules(shipped)
    prompts = ["a red cube", "a green cylinder", "a yellow cone with a blue stripe", "an orange capsule with a purple stripe"]
    cams = _cameras(4)
    a = sample_latent(prior, prompts, cams, generator=torch.Generator().manual_seed(0))
    b = sample_latent(prior, prompts, cams, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    verdict = judge(a, cams, ["cube", "cylinder", "cone", "capsule"], ["red", "green", "yellow", "orange"])
    assert verdict["shape_ok"].all() and verdict["colour_ok"][:2].all()
    stripes = judge_stripes(a[2:], _cameras(4).index([2, 3]), ["cone", "capsule"], ["yellow", "orange"], ["blue", "purple"])
    assert stripes["pattern_ok"].all(), stripes
