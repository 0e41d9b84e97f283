"""SDS, then SDEdit targets (guidance.type: sds-refine): SDS's own figures before ``refine_from``, and
after it the target and the pixel loss against a DDIM loop written here with the tiny UNet and VAE."""

import pytest
import torch
from diffusers import DDIMScheduler

from text3d.core.errors import ConfigError
from text3d.guidance import PromptProcessor, SDSConfig, SDSGuidance, SDSRefineConfig, SDSRefineGuidance
from text3d.run.trainer import load_run_config

B = 2


@pytest.fixture(scope="module")
def conditioning(tiny_prior):
    return PromptProcessor(tiny_prior, "a hamburger")(torch.tensor([0.0, 10.0]), torch.tensor([0.0, 90.0]))


def _renders(seed=0):
    return torch.rand(B, 64, 64, 3, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def test_before_refine_from_it_is_sds(tiny_prior, conditioning):
    cond, uncond = conditioning
    refine = SDSRefineGuidance(SDSRefineConfig(guidance_scale=7.5, refine_from=10), tiny_prior)
    sds = SDSGuidance(SDSConfig(guidance_scale=7.5), tiny_prior)
    a = refine(_renders(), cond, uncond, step=9, generator=torch.Generator().manual_seed(5))
    b = sds(_renders(), cond, uncond, step=9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a["grad"], b["grad"]) and torch.equal(a["loss"], b["loss"]) and torch.equal(a["t"], b["t"])


def _reference_target(prior, images, cond, uncond, seed, steps, strength, scale):
    """Encode (posterior mean), noise to the first kept timestep, ancestral DDIM with CFG, decode."""
    vae, unet, sf = prior.vae, prior.unet, prior.vae.config.scaling_factor
    x0 = vae.encode(images * 2 - 1).latent_dist.mean * sf
    sched = DDIMScheduler.from_config(prior.scheduler.config, prediction_type="epsilon")
    sched.set_timesteps(steps)
    kept = sched.timesteps[steps - round(steps * strength):]
    g = torch.Generator().manual_seed(seed)
    initial = torch.randn(x0.shape, generator=g)
    per_step = [torch.randn(x0.shape, generator=g) for _ in kept]
    abar = prior.scheduler.alphas_cumprod[int(kept[0])]
    x = abar.sqrt() * x0 + (1 - abar).sqrt() * initial
    for t, n in zip(kept, per_step):
        eps_u = unet(x, t, encoder_hidden_states=uncond).sample
        eps_c = unet(x, t, encoder_hidden_states=cond).sample
        x = sched.step(eps_u + scale * (eps_c - eps_u), t, x, eta=1.0, variance_noise=n).prev_sample
    return (vae.decode(x / sf).sample * 0.5 + 0.5).clamp(0, 1)


@torch.no_grad()
def _reference(prior, images, cond, uncond, seed, cfg):
    return _reference_target(prior, images, cond, uncond, seed, cfg.refine_steps, cfg.refine_strength, cfg.refine_cfg)


def test_after_refine_from_the_render_is_pulled_to_its_sdedit_target(tiny_prior, conditioning):
    cond, uncond = conditioning
    cfg = SDSRefineConfig(refine_from=10, refine_steps=10, refine_strength=0.4, refine_cfg=3.0, lambda_refine=50.0)
    images = _renders(1)
    out = SDSRefineGuidance(cfg, tiny_prior)(images, cond, uncond, step=10, generator=torch.Generator().manual_seed(7))
    x = images.detach().permute(0, 3, 1, 2)
    y = _reference(tiny_prior, x, cond, uncond, 7, cfg)
    torch.testing.assert_close(out["target"], y, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["loss"], 50.0 * 0.5 * (x - y).pow(2).mean(), atol=1e-5, rtol=1e-5)
    out["loss"].backward()  # d loss / d x = lambda (x - y) / numel, in the renders' [B, H, W, 3] layout
    torch.testing.assert_close(images.grad, (50.0 * (x - y) / x.numel()).permute(0, 2, 3, 1), atol=1e-7, rtol=1e-4)


def test_a_target_that_is_the_render_gives_no_pull(tiny_prior, conditioning):
    """The loss is the distance to the target only: a render already equal to it has zero gradient."""
    cond, uncond = conditioning
    cfg = SDSRefineConfig(refine_from=0, refine_steps=10, refine_strength=0.3)
    guidance = SDSRefineGuidance(cfg, tiny_prior)
    y = guidance.target(_renders(2).detach().permute(0, 3, 1, 2), cond, uncond, torch.Generator().manual_seed(3))
    images = y.permute(0, 2, 3, 1).clone().requires_grad_(True)
    guidance.target = lambda *a, **k: y  # the same target again
    out = guidance(images, cond, uncond, step=0, generator=torch.Generator().manual_seed(3))
    out["loss"].backward()
    assert float(out["loss"]) == 0.0 and images.grad.abs().max() == 0


def test_perp_neg_is_refused_after_refine_from(tiny_prior, conditioning):
    cond, uncond = conditioning
    guidance = SDSRefineGuidance(SDSRefineConfig(refine_from=0), tiny_prior)
    with pytest.raises(ValueError, match="Perp-Neg"):
        guidance(_renders(), cond, uncond, step=0, generator=torch.Generator().manual_seed(0), perp_neg=object())


@pytest.mark.parametrize("override, words", [
    ("guidance.refine_from=0.5", "guidance.refine_from"),
    ("guidance.refine_strength=0", "guidance.refine_strength"),
    ("guidance.refine_steps=0", "guidance.refine_steps"),
    ("guidance.refine_eta=2", "guidance.refine_eta"),
])
def test_bad_refine_keys_name_the_key(override, words):
    with pytest.raises(ConfigError, match=words):
        load_run_config("configs/quickstart-latent.yaml", ["guidance.type=sds-refine", override])


def test_a_run_crossing_refine_from_is_repeatable_and_resumes_bit_exactly(tmp_path, tiny_sd_dir):
    """SMOKE's run with the refinement from step 3 (and 64 px renders box-filtered to the prior's size
    from there): the same seed gives the same scene, and a run stopped before the switch and resumed
    after it ends as the straight one."""
    from test_run import SMOKE, assert_same_tensors, final_tensors, overrides

    from text3d.run.trainer import open_run

    refine = ["guidance.type=sds-refine", "guidance.refine_from=3", "guidance.refine_steps=4",
              "cameras.resolution_milestones=[3]", "cameras.resolutions=[64]"]
    full = open_run(SMOKE, overrides(tmp_path, tiny_sd_dir, "steps=5", "name=full", *refine))
    full.fit()
    assert full.guidance.cfg.type == "sds-refine" and full.last_losses["sds"] > 0
    part = open_run(SMOKE, overrides(tmp_path, tiny_sd_dir, "steps=2", "name=part", *refine))
    part.fit()
    resumed = open_run(None, [f"resume={part.run_dir}", "steps=5"])
    resumed.fit()
    assert_same_tensors(final_tensors(full.run_dir), final_tensors(part.run_dir))
