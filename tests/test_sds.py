"""SDS against a closed-form reference computed directly with the tiny UNet and VAE."""

import pytest
import torch
from omegaconf import OmegaConf

from text3d.core.errors import ConfigError
from text3d.guidance import PromptProcessor, SDSConfig, SDSGuidance
from text3d.guidance.registry import GUIDANCES
from text3d.core.schedules import LinearSchedule

B = 2


@pytest.fixture(scope="module")
def conditioning(tiny_prior):
    proc = PromptProcessor(tiny_prior, "a hamburger")
    return proc(torch.tensor([0.0, 10.0]), torch.tensor([0.0, 90.0]))


def _renders(seed=0):
    return torch.rand(B, 64, 64, 3, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def _reference(prior, images, cond, uncond, t, noise, scale, weight, seed):
    """w(t) (eps_hat - eps) and d loss / d images, from the diffusers modules directly."""
    vae, unet = prior.vae, prior.unet
    posterior = vae.encode(images.permute(0, 3, 1, 2) * 2 - 1).latent_dist
    x0 = posterior.sample(generator=torch.Generator().manual_seed(seed)) * vae.config.scaling_factor
    abar = prior.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0.detach() + (1 - abar).sqrt() * noise
    with torch.no_grad():
        eps_u = unet(x_t, t, encoder_hidden_states=uncond).sample
        eps_c = unet(x_t, t, encoder_hidden_states=cond).sample
    eps_hat = eps_u + scale * (eps_c - eps_u)
    grad = weight(abar) * (eps_hat - noise)
    (image_grad,) = torch.autograd.grad(x0, images, grad_outputs=grad / B)
    return grad, image_grad


WEIGHTS = {
    "sds": lambda abar: 1 - abar,
    "uniform": lambda abar: torch.ones_like(abar),
    "fantasia3d": lambda abar: abar.sqrt() * (1 - abar),
}


@pytest.mark.parametrize("weighting", list(WEIGHTS))
def test_gradient_matches_closed_form(tiny_prior, conditioning, weighting):
    cond, uncond = conditioning
    t = torch.tensor([150, 700])
    noise = torch.randn(B, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sds = SDSGuidance(SDSConfig(weighting=weighting, guidance_scale=7.5), tiny_prior)
    images = _renders()
    out = sds(images, cond, uncond, step=0, generator=torch.Generator().manual_seed(11), t=t, noise=noise)
    out["loss"].backward()

    ref_images = _renders()
    grad, image_grad = _reference(tiny_prior, ref_images, cond, uncond, t, noise, 7.5, WEIGHTS[weighting], seed=11)
    torch.testing.assert_close(out["grad"], grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(images.grad, image_grad, atol=1e-4 * image_grad.abs().max().item(), rtol=1e-4)
    torch.testing.assert_close(out["loss"], 0.5 * grad.square().sum() / B, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["weights"], WEIGHTS[weighting](tiny_prior.alphas_cumprod[t]))
    assert torch.equal(out["t"], t) and not out["grad"].requires_grad


def test_loss_gradient_wrt_x0_is_grad_over_batch(tiny_prior, conditioning, monkeypatch):
    cond, uncond = conditioning
    captured = {}
    encode = tiny_prior.encode_images

    def keep_x0(images, generator=None):
        captured["x0"] = encode(images, generator)
        captured["x0"].retain_grad()
        return captured["x0"]

    monkeypatch.setattr(tiny_prior, "encode_images", keep_x0)
    out = SDSGuidance(SDSConfig(), tiny_prior)(_renders(), cond, uncond, 0, torch.Generator().manual_seed(0))
    out["loss"].backward()
    torch.testing.assert_close(captured["x0"].grad, out["grad"] / B)


def test_models_get_no_gradient_but_renders_do(tiny_prior, conditioning):
    cond, uncond = conditioning
    images = _renders()
    out = SDSGuidance(SDSConfig(), tiny_prior)(images, cond, uncond, 0, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    for module in (tiny_prior.unet, tiny_prior.vae, tiny_prior.text_encoder):
        for name, p in module.named_parameters():
            assert p.grad is None and not p.requires_grad, name


def test_grad_clip_and_nan_to_num(tiny_prior, conditioning):
    cond, uncond = conditioning
    sds = SDSGuidance(SDSConfig(grad_clip=0.01, weighting="uniform"), tiny_prior)
    out = sds(_renders(), cond, uncond, 0, torch.Generator().manual_seed(0))
    assert out["grad"].abs().max() <= 0.01 and (out["grad"].abs() == 0.01).any()
    noise = torch.randn(B, 4, 8, 8)
    noise[0, 0, 0, 0] = float("nan")
    out = SDSGuidance(SDSConfig(), tiny_prior)(_renders(), cond, uncond, 0, torch.Generator(), noise=noise)
    assert torch.isfinite(out["grad"]).all() and torch.isfinite(out["loss"])


def test_same_seed_same_result(tiny_prior, conditioning):
    cond, uncond = conditioning
    sds = SDSGuidance(SDSConfig(), tiny_prior)
    runs = [sds(_renders(), cond, uncond, 0, torch.Generator().manual_seed(seed)) for seed in (4, 4, 5)]
    assert torch.equal(runs[0]["loss"], runs[1]["loss"]) and torch.equal(runs[0]["grad"], runs[1]["grad"])
    assert torch.equal(runs[0]["t"], runs[1]["t"])
    assert not torch.equal(runs[0]["grad"], runs[2]["grad"])


def test_t_range_is_respected_and_annealed(tiny_prior):
    cfg = SDSConfig(t_min=LinearSchedule.constant(0.2),
                    t_max=LinearSchedule(start=0.98, end=0.5, start_step=0, end_step=100))
    sds, g = SDSGuidance(cfg, tiny_prior), torch.Generator().manual_seed(0)
    assert [sds.t_range(s) for s in (0, 50, 100, 1000)] == [(200, 980), (200, 740), (200, 500), (200, 500)]
    t = sds.sample_t(4000, step=100, generator=g)
    assert t.min() == 200 and t.max() == 500  # inclusive at both ends
    t = sds.sample_t(4000, step=0, generator=g)
    assert t.min() == 200 and t.max() == 980
    full = SDSGuidance(SDSConfig(t_min=LinearSchedule.constant(0.0), t_max=LinearSchedule.constant(1.0)), tiny_prior)
    assert full.t_range(0) == (0, 999)  # clipped to valid timesteps


def test_shared_t_when_batch_t_is_off(tiny_prior):
    sds = SDSGuidance(SDSConfig(batch_t=False), tiny_prior)
    t = sds.sample_t(8, 0, torch.Generator().manual_seed(0))
    assert t.shape == (8,) and (t == t[0]).all()


def test_config_validation_and_registry(tiny_prior):
    message = "guidance.weighting: unknown value 'x'; valid choices: sds, uniform, fantasia3d"
    with pytest.raises(ConfigError, match=message):
        SDSGuidance(SDSConfig(weighting="x"), tiny_prior)
    with pytest.raises(ConfigError, match="guidance.t_min: exceeds guidance.t_max at step 100"):
        SDSGuidance(SDSConfig(t_max=LinearSchedule(0.98, 0.01, 0, 100)), tiny_prior)
    with pytest.raises(ConfigError, match="guidance.t_max: expected fractions of T"):
        SDSGuidance(SDSConfig(t_max=LinearSchedule.constant(980)), tiny_prior)
    with pytest.raises(ConfigError, match="guidance.grad_clip"):
        SDSGuidance(SDSConfig(grad_clip=0.0), tiny_prior)
    assert isinstance(GUIDANCES.build(SDSConfig(), tiny_prior), SDSGuidance)
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SDSConfig), {"t_max": {"start": 0.9, "end": 0.5}}))
    assert isinstance(cfg.t_max, LinearSchedule) and cfg.t_max.end == 0.5


def test_shape_errors_echo_the_shape(tiny_prior, conditioning):
    cond, uncond = conditioning
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\], got \(2, 3, 64, 64\)"):
        SDSGuidance(SDSConfig(), tiny_prior)(torch.rand(2, 3, 64, 64), cond, uncond, 0, torch.Generator())


def test_bfloat16_prior_keeps_sds_math_in_float32(tiny_sd_dir):
    from text3d.guidance import StableDiffusionPrior, StableDiffusionPriorConfig

    cfg = StableDiffusionPriorConfig(model=str(tiny_sd_dir), dtype="bfloat16", enable_attention_slicing=True)
    prior = StableDiffusionPrior(cfg, torch.device("cpu"))
    cond, uncond = PromptProcessor(prior, "a hamburger")(torch.zeros(B), torch.zeros(B))
    assert cond.dtype == torch.bfloat16
    images = _renders()
    out = SDSGuidance(SDSConfig(), prior)(images, cond, uncond, 0, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert out["grad"].dtype == out["loss"].dtype == images.grad.dtype == torch.float32
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
