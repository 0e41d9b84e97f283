"""CSD and NFSD against hand-written closed forms on the tiny UNet: each noise prediction computed
with the diffusers UNet directly, one call per prompt (so the batched call of the guidance is checked
too)."""

import pytest
import torch

from text3d.core.errors import ConfigError
from text3d.core.schedules import LinearSchedule
from text3d.guidance import CSDConfig, CSDGuidance, NFSDConfig, NFSDGuidance, PromptProcessor
from text3d.guidance.registry import GUIDANCES

B = 2


@pytest.fixture(scope="module")
def prompts(tiny_prior):
    cond, neg = PromptProcessor(tiny_prior, "a hamburger", negative_prompt="blurry")(torch.zeros(B), torch.zeros(B))
    return cond, neg, tiny_prior.encode_text([""])


def _inputs(prior, seed=11):
    images = torch.rand(B, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    x0 = prior.encode_images(images.permute(0, 3, 1, 2), torch.Generator().manual_seed(seed))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    return images, x0, noise


def _eps(prior, x_t, t, emb):
    with torch.no_grad():
        return prior.unet(x_t, t, encoder_hidden_states=emb.expand(B, -1, -1)).sample


def _predictions(prior, x0, noise, t, prompts):
    x_t = prior.add_noise(x0, noise, t)
    cond, neg, empty = prompts
    return _eps(prior, x_t, t, cond), _eps(prior, x_t, t, empty), _eps(prior, x_t, t, neg)


def test_batched_predictions_equal_one_call_per_prompt(tiny_prior, prompts):
    _, x0, noise = _inputs(tiny_prior)
    t = torch.tensor([100, 600])
    x_t = tiny_prior.add_noise(x0, noise, t)
    many = tiny_prior.predict_noise_many(x_t, t, list(prompts))
    for got, emb in zip(many, prompts):
        torch.testing.assert_close(got, tiny_prior.predict_noise(x_t, t, emb), atol=1e-5, rtol=1e-5)


def test_pure_csd_is_the_classifier_term_alone(tiny_prior, prompts):
    """c = 1, n = -1 (u = 0): w(t) (eps(y) - eps(0)); no -eps term, whatever the noise."""
    images, x0, noise = _inputs(tiny_prior)
    t = torch.tensor([150, 700])
    out = CSDGuidance(CSDConfig(), tiny_prior)(images.requires_grad_(True), prompts[0], prompts[1], step=0,
                                              generator=torch.Generator().manual_seed(11), t=t, noise=noise)
    eps_y, eps_0, _ = _predictions(tiny_prior, x0, noise, t, prompts)
    w = (1 - tiny_prior.alphas_cumprod[t]).view(-1, 1, 1, 1)
    torch.testing.assert_close(out["grad"], w * (eps_y - eps_0), atol=1e-5, rtol=1e-4)
    out["loss"].backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_annealed_csd_mixes_the_negative_and_normalizes(tiny_prior, prompts):
    """The image-fidelity schedule halfway (u = -0.5, n = -0.5), per-sample L2 normalisation."""
    images, x0, noise = _inputs(tiny_prior)
    t = torch.tensor([300, 800])
    cfg = CSDConfig(u=LinearSchedule(0.0, -1.0, 0, 1000), n=LinearSchedule(-1.0, 0.0, 0, 1000), normalize=True,
                    weighting="uniform")
    out = CSDGuidance(cfg, tiny_prior)(images, prompts[0], prompts[1], step=500,
                                       generator=torch.Generator().manual_seed(11), t=t, noise=noise)
    eps_y, eps_0, eps_neg = _predictions(tiny_prior, x0, noise, t, prompts)
    d = eps_y - 0.5 * eps_neg - 0.5 * eps_0
    torch.testing.assert_close(out["grad"], d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["grad"].flatten(1).norm(dim=1), torch.ones(B))


def test_nfsd_switches_its_domain_term_at_t_200(tiny_prior, prompts):
    images, x0, noise = _inputs(tiny_prior)
    t = torch.tensor([150, 700])  # one below 200, one above
    out = NFSDGuidance(NFSDConfig(guidance_scale=7.5), tiny_prior)(
        images, prompts[0], prompts[1], step=0, generator=torch.Generator().manual_seed(11), t=t, noise=noise)
    eps_y, eps_0, eps_neg = _predictions(tiny_prior, x0, noise, t, prompts)
    w = (1 - tiny_prior.alphas_cumprod[t]).view(-1, 1, 1, 1)
    delta_c = eps_y - eps_0
    expected = torch.stack([eps_0[0] + 7.5 * delta_c[0], eps_0[1] - eps_neg[1] + 7.5 * delta_c[1]])
    torch.testing.assert_close(out["grad"], w * expected, atol=1e-5, rtol=1e-4)


def test_both_are_registered_guidances_with_checked_configs():
    assert {"csd", "nfsd"} <= set(GUIDANCES.names())
    with pytest.raises(ConfigError, match="all 0"):
        GUIDANCES.get("csd").cls.check_config(CSDConfig(c=LinearSchedule.constant(0.0),
                                                        n=LinearSchedule.constant(0.0)))
    with pytest.raises(ConfigError, match="weighting"):
        GUIDANCES.get("nfsd").cls.check_config(NFSDConfig(weighting="cubic"))
