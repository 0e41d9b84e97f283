"""SDEdit with outside noise (text3d.guidance.sdedit) against the prior's own sampler."""

import pytest
import torch

from text3d.scene.cameras import turntable
from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig
from text3d.prior.model import sample
from text3d.guidance.sdedit import sdedit, sdedit_timesteps


@pytest.fixture(scope="module")
def pixel_prior():
    return PixelPrior(PixelPriorConfig(), torch.device("cpu"))


def test_strength_one_with_the_samplers_noise_reproduces_the_prior_sampler(pixel_prior):
    """Drawing the noises in the order sample() draws them, SDEdit from a blank image at strength 1
    is the documented ancestral sampler (the start x_T = sqrt(1 - abar_T) eps is eps to 1e-4)."""
    steps, B, res = 8, 2, pixel_prior.image_size
    cams = turntable(B, 15.0, 3.0, 32.0, res, res)
    prompts = ["a red cube", "a blue cone"]
    reference = sample(pixel_prior_modules(pixel_prior), prompts, cams, steps=steps, cfg_scale=2.0,
                       generator=torch.Generator().manual_seed(3), eta=1.0)
    g = torch.Generator().manual_seed(3)
    initial = torch.randn(B, 3, res, res, generator=g)
    per_step = [torch.randn(B, 3, res, res, generator=g) for _ in range(steps)]
    cond = pixel_prior.encode_text(prompts)
    uncond = pixel_prior.encode_text([""] * B)
    x = sdedit(pixel_prior, torch.zeros(B, 3, res, res), cond, uncond, initial, per_step, steps, 1.0, 2.0,
               eta=1.0, cameras=cams)
    torch.testing.assert_close(pixel_prior.decode(x), reference, atol=2e-3, rtol=0)


def pixel_prior_modules(prior):
    from text3d.prior.model import PriorModules

    return PriorModules(prior.unet, prior.text_encoder, prior.tokenizer, prior.scheduler)


def test_sdedit_timesteps_follow_the_strength(pixel_prior):
    assert len(sdedit_timesteps(pixel_prior, 50, 0.5)) == 25
    assert int(sdedit_timesteps(pixel_prior, 50, 1.0)[0]) == pixel_prior.num_train_timesteps - 1
    assert len(sdedit_timesteps(pixel_prior, 50, 0.001)) == 1


def test_the_per_step_noise_matters_and_the_same_noise_gives_the_same_result(pixel_prior):
    steps, res = 10, pixel_prior.image_size
    cams = turntable(1, 15.0, 3.0, 32.0, res, res)
    x0 = torch.zeros(1, 3, res, res)
    cond, uncond = pixel_prior.encode_text(["a red cube"]), pixel_prior.encode_text([""])
    g = torch.Generator().manual_seed(0)
    init = torch.randn(1, 3, res, res, generator=g)
    noises = [torch.randn(1, 3, res, res, generator=g) for _ in range(steps)]
    other = [torch.randn(1, 3, res, res, generator=g) for _ in range(steps)]
    a = sdedit(pixel_prior, x0, cond, uncond, init, noises, steps, 0.6, 2.0, cameras=cams)
    b = sdedit(pixel_prior, x0, cond, uncond, init, noises, steps, 0.6, 2.0, cameras=cams)
    c = sdedit(pixel_prior, x0, cond, uncond, init, other, steps, 0.6, 2.0, cameras=cams)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.05
