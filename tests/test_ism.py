"""ISM against closed forms: DDIM inversion is exact for the linear score of a point mass (whatever
the number of steps), the interval score on the tiny UNet equals its hand-written form, and bad input."""

import pytest
import torch

from text3d.core.errors import ConfigError
from text3d.core.schedules import LinearSchedule
from text3d.guidance import ISMConfig, ISMGuidance, PromptProcessor
from text3d.guidance.ism import ddim_invert, inversion_timesteps


def test_inversion_timesteps_take_at_most_the_steps_and_at_least_the_stride():
    assert inversion_timesteps(480, 5, 200) == [0, 200, 400, 480]
    assert inversion_timesteps(900, 5, 100) == [0, 180, 360, 540, 720, 900]
    assert inversion_timesteps(0, 5, 200) == [0]


def test_ddim_inversion_is_exact_for_the_score_of_a_point_mass(tiny_prior):
    """For data at one point x0 the true noise is eps(x_a, a) = (x_a - sqrt(abar_a) x0) / sqrt(1 - abar_a):
    DDIM keeps x0_hat = x0 and that noise constant, so any number of steps lands on
    sqrt(abar_s) x0 + sqrt(1 - abar_s) eps_0 with eps_0 the noise at the start."""
    abar = tiny_prior.alphas_cumprod.float()
    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    start = abar[0].sqrt() * x0 + (1 - abar[0]).sqrt() * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    score = lambda x, a: (x - abar[a].sqrt().view(-1, 1, 1, 1) * x0) / (1 - abar[a]).sqrt().view(-1, 1, 1, 1)  # noqa: E731
    eps0 = score(start, torch.zeros(3, dtype=torch.long))
    exact = abar[600].sqrt() * x0 + (1 - abar[600]).sqrt() * eps0
    for steps in (1, 3, 12):
        got = ddim_invert(score, start, inversion_timesteps(600, steps, 1), abar)
        torch.testing.assert_close(got, exact, atol=1e-4, rtol=1e-4)


def test_the_interval_score_is_its_closed_form(tiny_prior):
    proc = PromptProcessor(tiny_prior, "a hamburger", negative_prompt="blurry")
    cond, neg = proc(torch.zeros(2), torch.zeros(2))
    empty = tiny_prior.encode_text([""])
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    t = torch.tensor([300, 800])
    ism = ISMGuidance(ISMConfig(delta_t=LinearSchedule.constant(80.0)), tiny_prior)
    out = ism(images, cond, neg, step=0, generator=torch.Generator().manual_seed(4), t=t)
    assert torch.equal(out["s"], t - 80)
    x0 = tiny_prior.encode_images(images.detach().permute(0, 3, 1, 2), torch.Generator().manual_seed(4))
    abar = tiny_prior.alphas_cumprod.float()
    eps0 = lambda x, a: tiny_prior.predict_noise(x, a, empty)  # noqa: E731
    expected = []
    for i in range(2):
        s = int(t[i]) - 80
        x_s = ddim_invert(eps0, x0[i:i + 1], inversion_timesteps(s, 5, 200), abar)
        x_t = ddim_invert(eps0, x_s, [s, int(t[i])], abar)
        eps_t = tiny_prior.predict_noise_cfg(x_t, t[i:i + 1], cond[i:i + 1], neg[i:i + 1], 7.5)
        eps_s = tiny_prior.predict_noise(x_s, s, empty)
        w = 0.1 * ((1 - abar[t[i]]) / abar[t[i]]).sqrt()
        expected.append(w * (eps_t - eps_s))
    torch.testing.assert_close(out["grad"], torch.cat(expected), atol=1e-5, rtol=1e-4)
    out["loss"].backward()
    assert images.grad.abs().sum() > 0


@pytest.mark.parametrize("override, words", [
    ({"xs_inv_steps": 0}, ["xs_inv_steps"]),
    ({"delta_t": LinearSchedule.constant(0.0)}, ["delta_t"]),
])
def test_bad_ism_settings_are_one_line(override, words):
    with pytest.raises(ConfigError) as e:
        ISMGuidance.check_config(ISMConfig(**override))
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)


def test_ism_from_the_command_line(tmp_path, expect_bad_input):
    from pathlib import Path

    preset = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    expect_bad_input(["run", preset, f"output_dir={tmp_path}", "guidance.type=ism", "guidance.xs_inv_steps=0",
                      "--print-config"], "guidance.xs_inv_steps", watch=tmp_path)
