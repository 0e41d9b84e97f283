"""Perp-Neg (threestudio's interpolation and weights) against closed forms: the weights at r = 0 and 1,
the perpendicular component with parallel and orthogonal negatives, the guided noise against one UNet
call per prompt, SDS with it, and its bad input."""

import math

import pytest
import torch

from text3d.guidance import PromptingConfig, PromptProcessor, SDSConfig, SDSGuidance
from text3d.guidance.priors import perpendicular


def f(abc, r):
    a, b, c = abc
    return a * math.exp(-b * r) + c


FS, SB, FSB = (4.0, 0.5, -2.426), (1.0, 0.5, -0.606), (1.0, 0.5, 0.967)


@pytest.fixture(scope="module")
def processor(tiny_prior):
    return PromptProcessor(tiny_prior, "a hamburger", negative_prompt="", cfg=PromptingConfig(perp_neg=True))


def test_positive_prompt_and_weights_at_the_ends_and_between(processor):
    e = processor.cond_embeddings  # front, side, back, overhead
    azimuth = torch.tensor([0.0, 45.0, -90.0, 180.0, 135.0, 30.0])
    elevation = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 80.0])
    terms = processor.perp_neg(elevation, azimuth)
    torch.testing.assert_close(terms.pos[0], e[0])  # front: r = 1
    torch.testing.assert_close(terms.pos[1], 0.5 * e[0] + 0.5 * e[1])
    torch.testing.assert_close(terms.pos[2], e[1])  # side, from the back branch: r = 1
    torch.testing.assert_close(terms.pos[3], e[2])  # back: r = 0
    torch.testing.assert_close(terms.pos[5], e[3])  # overhead: its own prompt, no negatives
    expected = torch.tensor([[-f(FS, 1), -f(FS, 0)], [-f(FS, 0.5), -f(FS, 0.5)], [-f(SB, 1), -f(FSB, 1)],
                             [-f(SB, 0), -f(FSB, 0)], [-f(SB, 0.5), -f(FSB, 0.5)], [0.0, 0.0]])
    torch.testing.assert_close(terms.weights, expected)
    torch.testing.assert_close(terms.negatives[0], torch.stack([e[0], e[1]]))  # front then side
    torch.testing.assert_close(terms.negatives[3], torch.stack([e[1], e[0]]))  # side then front


def test_the_perpendicular_part_of_parallel_and_orthogonal_negatives():
    y = torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    torch.testing.assert_close(perpendicular(3 * y, y), torch.zeros_like(y))  # parallel: nothing left
    ortho = torch.tensor([[2.0, -1.0, 5.0, 0.0]])
    torch.testing.assert_close(perpendicular(ortho, y), ortho)  # orthogonal: all of it
    mixed = 0.5 * y + ortho
    torch.testing.assert_close(perpendicular(mixed, y), ortho)
    torch.testing.assert_close(perpendicular(y, torch.zeros_like(y)), y)  # no division by zero


def test_guided_noise_is_the_perp_neg_formula(tiny_prior, processor):
    azimuth, elevation = torch.tensor([20.0, 150.0]), torch.zeros(2)
    terms = processor.perp_neg(elevation, azimuth)
    _, uncond = processor(elevation, azimuth)
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300, 700])
    got = tiny_prior.predict_noise_perp_neg(x_t, t, terms.pos, terms.negatives, terms.weights, uncond, 7.5)
    eps = lambda emb: tiny_prior.predict_noise(x_t, t, emb)  # noqa: E731
    eps_u, eps_p = eps(uncond), eps(terms.pos)
    total = eps_p - eps_u
    for k in range(2):
        total = total + terms.weights[:, k].view(-1, 1, 1, 1) * perpendicular(eps(terms.negatives[:, k]) - eps_u,
                                                                              eps_p - eps_u)
    torch.testing.assert_close(got, eps_u + 7.5 * total, atol=1e-5, rtol=1e-4)


def test_sds_with_perp_neg_uses_the_perp_neg_noise(tiny_prior, processor):
    azimuth, elevation = torch.tensor([20.0, 150.0]), torch.zeros(2)
    cond, uncond = processor(elevation, azimuth)
    terms = processor.perp_neg(elevation, azimuth)
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([300, 700])
    sds = SDSGuidance(SDSConfig(guidance_scale=7.5, weighting="uniform"), tiny_prior)
    out = sds(images, cond, uncond, step=0, generator=torch.Generator().manual_seed(3), t=t, noise=noise,
              perp_neg=terms)
    x0 = tiny_prior.encode_images(images.permute(0, 3, 1, 2), torch.Generator().manual_seed(3))
    x_t = tiny_prior.add_noise(x0, noise, t)
    eps_hat = tiny_prior.predict_noise_perp_neg(x_t, t, terms.pos, terms.negatives, terms.weights, uncond, 7.5)
    torch.testing.assert_close(out["grad"], eps_hat - noise, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("extra, words", [
    (["prompting.perp_neg=true", "prompting.view_dependent=false"], ["prompting.perp_neg", "view-dependent"]),
    (["prompting.perp_neg=true", "guidance.type=csd"], ["prompting.perp_neg", "guidance.type=csd"]),
])
def test_perp_neg_bad_input_is_one_line(extra, words, tmp_path, expect_bad_input):
    from pathlib import Path

    preset = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    expect_bad_input(["run", preset, f"output_dir={tmp_path}", *extra, "--print-config"], *words, watch=tmp_path)
