"""PDS, DDS and SDS-edit against closed forms computed directly with the tiny UNet and VAE."""

import pytest
import torch

from text3d.core.errors import ConfigError
from text3d.guidance import (DDSConfig, DDSGuidance, PDSConfig, PDSGuidance, PromptProcessor, SDSEditConfig,
                             SDSEditGuidance, timestep_grid)
from text3d.guidance.registry import GUIDANCES
from text3d.core.schedules import LinearSchedule

B = 2


@pytest.fixture(scope="module")
def prompts(tiny_prior):
    src = PromptProcessor(tiny_prior, "a red cube")
    tgt = PromptProcessor(tiny_prior, "a blue cube")
    el, az = torch.tensor([0.0, 10.0]), torch.tensor([0.0, 90.0])
    (src_cond, uncond), (tgt_cond, _) = src(el, az), tgt(el, az)
    return src_cond, tgt_cond, uncond


def _images(seed):
    return torch.rand(B, 64, 64, 3, generator=torch.Generator().manual_seed(seed))


def _x0(prior, images):
    vae = prior.vae
    return vae.encode(images.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean * vae.config.scaling_factor


def _eps_hat(prior, x_t, t, cond, uncond, scale):
    with torch.no_grad():
        eps_u = prior.unet(x_t, t, encoder_hidden_states=uncond).sample
        eps_c = prior.unet(x_t, t, encoder_hidden_states=cond).sample
    return eps_u + scale * (eps_c - eps_u)


def _psi_chi(sched, t, t_prev, exact=False):
    """psi(t), chi(t) from the diffusers scheduler's own tensors (independent of text3d's prior)."""
    abar_t, abar_p = sched.alphas_cumprod[t], sched.alphas_cumprod[t_prev]
    alpha, beta = (abar_t / abar_p, 1 - abar_t / abar_p) if exact else (sched.alphas[t], sched.betas[t])
    c0 = abar_p.sqrt() * beta / (1 - abar_t)
    c1 = alpha.sqrt() * (1 - abar_p) / (1 - abar_t)
    sigma = ((1 - abar_p) * beta / (1 - abar_t)).sqrt()
    psi = (abar_p.sqrt() - c0 - c1 * abar_t.sqrt()) / sigma
    chi = c0 * (1 - abar_t).sqrt() / (abar_t.sqrt() * sigma)
    return psi.view(-1, 1, 1, 1), chi.view(-1, 1, 1, 1)


def _fixed_draws(seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 4, 8, 8, generator=g), torch.randn(B, 4, 8, 8, generator=g)


@pytest.mark.parametrize("coefficients", ["official", "exact"])
def test_pds_gradient_is_the_closed_form(tiny_prior, prompts, coefficients):
    src_cond, tgt_cond, uncond = prompts
    pds = PDSGuidance(PDSConfig(guidance_scale=7.5, coefficients=coefficients), tiny_prior)
    index = torch.tensor([40, 300])
    noise, noise_prev = _fixed_draws()
    src_images, images = _images(0), _images(1).requires_grad_(True)
    with torch.no_grad():
        src_x0 = _x0(tiny_prior, src_images)
    out = pds(images, tgt_cond, uncond, step=0, generator=torch.Generator(), source_x0=src_x0,
              source_cond=src_cond, index=index, noise=noise, noise_prev=noise_prev)
    out["loss"].backward()

    offset = tiny_prior.scheduler.config.steps_offset  # 1, as Stable Diffusion's DDIM config
    t, t_prev = index * 2 + offset, (index - 1) * 2 + offset  # the 500-step grid over T = 1000
    assert torch.equal(out["t"], t) and torch.equal(out["t_prev"], t_prev)
    ref_images = _images(1).requires_grad_(True)
    x0 = _x0(tiny_prior, ref_images)
    abar = tiny_prior.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    eps_src = _eps_hat(tiny_prior, abar.sqrt() * src_x0 + (1 - abar).sqrt() * noise, t, src_cond, uncond, 7.5)
    eps_tgt = _eps_hat(tiny_prior, abar.sqrt() * x0.detach() + (1 - abar).sqrt() * noise, t, tgt_cond, uncond, 7.5)
    psi, chi = _psi_chi(tiny_prior.scheduler, t, t_prev, exact=coefficients == "exact")
    grad = psi * (x0.detach() - src_x0) + chi * (eps_tgt - eps_src)
    torch.testing.assert_close(out["grad"], grad, atol=2e-4, rtol=1e-4)
    (image_grad,) = torch.autograd.grad(x0, ref_images, grad_outputs=grad / B)
    torch.testing.assert_close(images.grad, image_grad, atol=1e-5, rtol=1e-3)
    if coefficients == "exact":
        assert psi.abs().max() < 1e-4  # exact two-step coefficients: no identity term at all
    else:
        assert psi.abs().min() > 1e-3  # the official single-step coefficients keep one


def test_pds_same_prompt_same_scene_gives_zero(tiny_prior, prompts):
    src_cond, _, uncond = prompts
    pds = PDSGuidance(PDSConfig(), tiny_prior)
    images = _images(0).requires_grad_(True)
    with torch.no_grad():
        src_x0 = tiny_prior.encode_images(images.permute(0, 3, 1, 2), None)
    out = pds(images, src_cond, uncond, step=0, generator=torch.Generator().manual_seed(0), source_x0=src_x0,
              source_cond=src_cond)
    assert out["grad"].abs().max() < 1e-3 * (1 + out["grad"].numel() ** 0)  # CFG 100 amplifies rounding
    out["loss"].backward()
    assert images.grad.abs().max() < 1e-4


def test_dds_is_the_difference_of_two_unet_calls(tiny_prior, prompts):
    src_cond, tgt_cond, uncond = prompts
    dds = DDSGuidance(DDSConfig(), tiny_prior)
    t = torch.tensor([100, 800])
    noise, _ = _fixed_draws(5)
    with torch.no_grad():
        src_x0 = _x0(tiny_prior, _images(0))
    images = _images(1).requires_grad_(True)
    out = dds(images, tgt_cond, uncond, step=0, generator=torch.Generator(), source_x0=src_x0,
              source_cond=src_cond, t=t, noise=noise)
    x0 = _x0(tiny_prior, _images(1))
    abar = tiny_prior.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    eps_tgt = _eps_hat(tiny_prior, abar.sqrt() * x0 + (1 - abar).sqrt() * noise, t, tgt_cond, uncond, 7.5)
    eps_src = _eps_hat(tiny_prior, abar.sqrt() * src_x0 + (1 - abar).sqrt() * noise, t, src_cond, uncond, 7.5)
    torch.testing.assert_close(out["grad"], eps_tgt - eps_src, atol=1e-4, rtol=1e-4)


def test_no_gradient_reaches_the_source_or_the_prior(tiny_prior, prompts):
    src_cond, tgt_cond, uncond = prompts
    source_images = _images(0).requires_grad_(True)  # stands for the frozen source scene's renders
    for guidance in (PDSGuidance(PDSConfig(), tiny_prior), DDSGuidance(DDSConfig(), tiny_prior)):
        images = _images(1).requires_grad_(True)
        src_x0 = tiny_prior.encode_images(source_images.permute(0, 3, 1, 2), None)
        out = guidance(images, tgt_cond, uncond, step=0, generator=torch.Generator().manual_seed(1),
                       source_x0=src_x0, source_cond=src_cond)
        out["loss"].backward()
        assert images.grad is not None and images.grad.abs().sum() > 0
        assert source_images.grad is None
        for module in (tiny_prior.unet, tiny_prior.vae, tiny_prior.text_encoder):
            assert all(p.grad is None and not p.requires_grad for p in module.parameters())


def test_sds_edit_is_sds_towards_the_target(tiny_prior, prompts):
    from text3d.guidance import SDSConfig, SDSGuidance

    _, tgt_cond, uncond = prompts
    images = _images(1).requires_grad_(True)
    a = SDSEditGuidance(SDSEditConfig(), tiny_prior)(images, tgt_cond, uncond, 0, torch.Generator().manual_seed(2),
                                                     source_x0=torch.zeros(1), source_cond=tgt_cond)
    b = SDSGuidance(SDSConfig(), tiny_prior)(images, tgt_cond, uncond, 0, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a["grad"], b["grad"])


def test_uniform_grid_indices_follow_the_official_range(tiny_prior):
    pds = PDSGuidance(PDSConfig(), tiny_prior)
    assert torch.equal(pds.grid, torch.arange(500) * 2 + tiny_prior.scheduler.config.steps_offset)
    idx = pds.sample_index(20000, 0, torch.Generator().manual_seed(0))
    assert int(idx.min()) == 10 and int(idx.max()) == 489  # [int(500 * 0.02), int(500 * 0.98))
    gap = PDSGuidance(PDSConfig(gap=3), tiny_prior)
    out_idx = gap.sample_index(100, 0, torch.Generator().manual_seed(0))
    assert torch.all(gap.grid[out_idx] - gap.grid[out_idx - 3] == 6)


def test_decreasing_timesteps_go_linearly_from_0_9_to_0_2(tiny_prior):
    cfg = PDSConfig(timesteps="decreasing", t_decrease=LinearSchedule(0.9, 0.2, 0, 100))
    pds = PDSGuidance(cfg, tiny_prior)
    ts = [int(pds.grid[pds.sample_index(1, s, torch.Generator())][0]) for s in (0, 50, 100, 200)]
    # the nearest points of the grid 1, 3, ..., 999 to 900, 550, 200, 200
    assert all(abs(t - want) == 1 for t, want in zip(ts, [900, 550, 200, 200]))


def test_grid_is_ddim_set_timesteps(tiny_prior):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(tiny_prior.scheduler.config)
    sched.set_timesteps(500)
    assert torch.equal(timestep_grid(tiny_prior, 500), sched.timesteps.flip(0).long())


@pytest.mark.parametrize("key, value, words", [
    ("coefficients", "twostep", "coefficients"), ("timesteps", "cosine", "timesteps"),
    ("gap", 500, "gap"), ("weighting", "nope", "weighting"), ("grad_clip", -1.0, "grad_clip"),
    ("t_min", LinearSchedule.constant(0.5), "empty"),
])
def test_config_errors_name_the_key(tiny_prior, key, value, words):
    cfg = PDSConfig(**{key: value, **({"t_max": LinearSchedule.constant(0.5)} if key == "t_min" else {})})
    with pytest.raises(ConfigError, match=words):
        PDSGuidance(cfg, tiny_prior)


def test_registered_like_sds():
    assert {"pds", "dds", "sds-edit"} <= set(GUIDANCES.names())
    assert GUIDANCES.get("pds").cls.needs_source and GUIDANCES.get("dds").cls.needs_source
