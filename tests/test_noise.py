"""Statistics of the sequence noises and of the warps (text3d.video.noise), against closed-form values."""

import math

import pytest
import torch
from scipy import stats

from text3d.video.noise import (NOISES, Correspondence, NoiseSettings, coherent_step, downsample_correspondence,
                          identity_coords, sum_pool_noise, warp_bilinear, warp_integral, warp_nearest)
from reference.noise_warp import upsample_conditional, warp_nearest_pull


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def similarity_coords(H, W, scale=1.0, angle_deg=0.0, shift=(0.0, 0.0)):
    """Pull map of a zoom/rotation about the image centre: target centre p -> scale * R (p - c) + c + shift."""
    p = identity_coords(H, W, torch.float64)
    c = torch.tensor([W / 2, H / 2], dtype=torch.float64)
    a = math.radians(angle_deg)
    R = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    return ((p - c) @ R.T * scale + c + torch.tensor(shift, dtype=torch.float64)).float()


def neighbour_corr(x):
    """Mean absolute-free correlation of horizontally and vertically adjacent values of [C, H, W]."""
    x = x - x.mean()
    h = (x[..., :, 1:] * x[..., :, :-1]).mean() / x.var()
    v = (x[..., 1:, :] * x[..., :-1, :]).mean() / x.var()
    return float(h), float(v)


def inside_mask(coords, h, w):
    return (coords[..., 0] >= 0) & (coords[..., 0] < w) & (coords[..., 1] >= 0) & (coords[..., 1] < h)


# ------------------------------------------------------------------ warps
def test_identity_warp_reproduces_the_noise():
    noise = torch.randn(3, 32, 40, generator=gen())
    ident, ok = identity_coords(32, 40), torch.ones(32, 40, dtype=torch.bool)
    assert torch.equal(warp_nearest(noise, ident, ok, gen(1)), noise)
    torch.testing.assert_close(warp_integral(noise, ident, ok, 4, gen(1)), noise, atol=1e-5, rtol=0)


@pytest.mark.parametrize("warp", ["nearest", "integral"])
def test_integer_translation_moves_the_noise_exactly(warp):
    noise = torch.randn(2, 24, 24, generator=gen())
    coords = identity_coords(24, 24) + torch.tensor([-3.0, 2.0])  # target (x, y) reads source (x - 3, y + 2)
    valid = inside_mask(coords, 24, 24)
    fn = (lambda n, c, v, g: warp_integral(n, c, v, 4, g)) if warp == "integral" else warp_nearest
    out = fn(noise, coords, valid, gen(2))
    torch.testing.assert_close(out[:, :22, 3:], noise[:, 2:, :21], atol=1e-5, rtol=0)
    # pixels whose source is outside the frame are fresh, not copies
    assert not torch.allclose(out[:, :, :3], noise[:, :, :3])


def test_conditional_upsampling_keeps_the_block_sum_and_unit_variance():
    noise = torch.randn(1, 64, 64, generator=gen())
    up = upsample_conditional(noise, 4, gen(1))
    torch.testing.assert_close(sum_pool_noise(up, 4), noise, atol=1e-5, rtol=0)
    assert abs(float(up.var()) - 1) < 0.02
    assert all(abs(c) < 0.02 for c in neighbour_corr(up))


@pytest.mark.parametrize("transform", [dict(scale=0.5), dict(scale=0.7, angle_deg=30.0), dict(angle_deg=45.0),
                                       dict(scale=1.6, angle_deg=-20.0)],
                         ids=["zoom-in-2x", "zoom+rotate", "rotate-45", "zoom-out+rotate"])
def test_nearest_and_integral_stay_white_where_bilinear_does_not(transform):
    H = W = 128
    noise = torch.randn(4, H, W, generator=gen())
    coords = similarity_coords(H, W, **transform)
    valid = inside_mask(coords, H, W)
    for name, fn in [("nearest", warp_nearest), ("integral", lambda n, c, v, g: warp_integral(n, c, v, 4, g))]:
        out = fn(noise, coords, valid, gen(3))[:, valid]
        ks = stats.kstest(out.flatten().numpy(), "norm")
        assert ks.pvalue > 1e-3, (name, ks)
        full = fn(noise, coords, valid, gen(3))
        assert all(abs(c) < 0.03 for c in neighbour_corr(full)), (name, neighbour_corr(full))
    bil = warp_bilinear(noise, coords, valid, gen(3))
    shrunk = float(bil[:, valid].var())
    corr = max(abs(c) for c in neighbour_corr(bil))
    assert shrunk < 0.9 or corr > 0.1, (shrunk, corr)
    assert stats.kstest(bil[:, valid].flatten().numpy(), "norm").pvalue < 1e-6


def test_subpixel_translation_correlation_follows_the_overlap_with_integral_warping():
    noise = torch.randn(8, 64, 64, generator=gen())
    coords = identity_coords(64, 64) + torch.tensor([0.25, 0.0])
    valid = inside_mask(coords + 1, 64, 64) & inside_mask(coords - 1, 64, 64)
    out = warp_integral(noise, coords, valid, 4, gen(1))
    a, b = out[:, valid], noise[:, valid]
    corr = float((a * b).mean() / (a.std() * b.std()))
    # a 1/4-pixel shift leaves 3/4 of each pixel's area over its own source pixel: correlation 0.75
    assert abs(corr - 0.75) < 0.03
    # nearest rounds the shift away: correlation 1
    near = warp_nearest(noise, coords, valid, gen(1))[:, valid]
    assert float((near * b).mean()) > 0.99


def test_duplicates_are_regaussianised_with_the_group_sum_kept():
    noise = torch.randn(1, 8, 8, generator=gen())
    coords = identity_coords(16, 16) / 2  # a 16x16 target pulling a 2x zoom of the 8x8 source
    valid = torch.ones(16, 16, dtype=torch.bool)
    out = warp_nearest(noise, coords, valid, gen(1))
    # each source value is copied into a 2x2 block: the block sum is 2 v (= v/sqrt(4) * 4), values differ
    block_sum = torch.nn.functional.avg_pool2d(out[None], 2)[0] * 4
    torch.testing.assert_close(block_sum, noise * 2, atol=1e-5, rtol=0)
    assert (out[:, 0, 0] != out[:, 0, 1]).all()


def test_sum_pool_noise_is_white_at_the_coarse_grid():
    noise = torch.randn(4, 256, 256, generator=gen())
    coarse = sum_pool_noise(noise, 8)
    assert coarse.shape == (4, 32, 32)
    assert stats.kstest(coarse.flatten().numpy(), "norm").pvalue > 1e-3
    batched = sum_pool_noise(noise[None].expand(2, -1, -1, -1), 8)
    assert torch.equal(batched[0], coarse)


def test_downsample_correspondence_divides_positions_and_keeps_validity():
    coords = identity_coords(64, 64) + torch.tensor([8.0, -16.0])
    valid = torch.ones(64, 64, dtype=torch.bool)
    valid[:, :32] = False
    small = downsample_correspondence(Correspondence(coords, valid), 8)
    expected = identity_coords(8, 8) + torch.tensor([1.0, -2.0])
    torch.testing.assert_close(small.coords[:, 4:], expected[:, 4:])
    assert small.valid[:, 4:].all() and not small.valid[:, :4].any()


# ------------------------------------------------------------------ sequence noises
def corr_between(a, b):
    a, b = a.flatten(), b.flatten()
    return float(((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std()))


@pytest.mark.parametrize("kind, expected", [("iid", lambda a: (0.0, 0.0)), ("shared", lambda a: (1.0, 1.0)),
                                            ("mixed", lambda a: (a * a / (1 + a * a),) * 2),
                                            ("progressive", lambda a: (a / math.sqrt(1 + a * a),
                                                                       a * a / (1 + a * a)))])
def test_pyoco_and_baseline_correlations(kind, expected):
    alpha = 0.8
    sampler = NOISES.build(NoiseSettings(type=kind, alpha=alpha))
    x = sampler.sample(3, (4, 64, 64), gen())
    for frame in x:
        assert abs(float(frame.mean())) < 0.03 and abs(float(frame.var()) - 1) < 0.05
    lag1, lag2 = expected(alpha)
    assert abs(corr_between(x[0], x[1]) - lag1) < 0.03
    assert abs(corr_between(x[0], x[2]) - lag2) < 0.03


@pytest.mark.parametrize("warp_name", ["nearest", "integral"])
def test_warped_noise_correlates_by_alpha_along_correspondences_and_is_fresh_where_disoccluded(warp_name):
    alpha, H, W, n = 0.7, 64, 64, 6
    coords = identity_coords(H, W) + torch.tensor([-2.0, 0.0])  # content moves 2 px right per frame
    valid = inside_mask(coords, H, W)
    valid[20:30, 20:30] = False  # a disoccluded patch
    corr = Correspondence(coords, valid)
    sampler = NOISES.build(NoiseSettings(type="warped", alpha=alpha, warp=warp_name, upsample=2))
    x = sampler.sample(n, (16, H, W), gen(), [corr] * (n - 1))
    assert abs(float(x.mean())) < 0.02 and abs(float(x.var()) - 1) < 0.03
    cur, prev = x[1:, :, :, 2:], x[:-1, :, :, :-2]  # pixel (i, j) of frame k reads (i, j - 2) of frame k - 1
    ok = valid[None, None, :, 2:].expand_as(cur)
    assert abs(corr_between(cur[ok], prev[ok]) - alpha) < 0.03
    # elsewhere (a pixel and a non-corresponding pixel of the previous frame): uncorrelated
    assert abs(corr_between(x[1:, :, :, 10:], x[:-1, :, :, :-10])) < 0.03
    # disoccluded pixels are independent of the previous frame, both at the same and at the source position
    hole = ~valid[None, None].expand_as(x[1:])
    assert abs(corr_between(x[1:][hole], x[:-1][hole])) < 0.05
    shifted = torch.roll(x[:-1], 2, dims=-1)
    assert abs(corr_between(x[1:][hole], shifted[hole])) < 0.05


def test_coherent_step_with_alpha_zero_is_fresh_noise_and_unnormalised_form_matches_the_brief():
    H = W = 32
    prev = torch.randn(2, H, W, generator=gen())
    corr = Correspondence(identity_coords(H, W), torch.ones(H, W, dtype=torch.bool))
    assert abs(corr_between(coherent_step(prev, corr, 0.0, "nearest", gen(1)), prev)) < 0.05
    # the brief's recursion eps^i = a eps^{i-1} + (1 - a) eps_ind with var (1-a)/(1+a), scaled to unit variance
    a = 0.6
    sigma = math.sqrt((1 - a) / (1 + a))
    g1, g2 = gen(5), gen(5)
    ours = coherent_step(prev, corr, a, "nearest", g1)
    warped = warp_nearest(prev, corr.coords, corr.valid, g2)  # identity: prev itself, same RNG use
    fresh = torch.randn(warped.shape, generator=g2)
    brief = a * (sigma * warped) + (1 - a) * fresh
    torch.testing.assert_close(ours, brief / sigma, atol=1e-5, rtol=1e-5)


def test_warped_noise_is_deterministic_for_a_seed():
    corr = Correspondence(similarity_coords(32, 32, angle_deg=10.0), torch.ones(32, 32, dtype=torch.bool))
    sampler = NOISES.build(NoiseSettings(type="warped"))
    a = sampler.sample(3, (3, 32, 32), gen(4), [corr, corr])
    b = sampler.sample(3, (3, 32, 32), gen(4), [corr, corr])
    assert torch.equal(a, b)


@pytest.mark.parametrize("transform", [dict(scale=0.7, angle_deg=30.0), dict(scale=1.6, angle_deg=-20.0),
                                       dict(shift=(0.25, 0.5))], ids=["zoom-in+rotate", "zoom-out+rotate", "subpixel"])
def test_vectorised_warps_match_the_reference_and_the_footprint_overlap(transform):
    """Nearest copies what the first implementation (tests/reference/noise_warp.py) copies where a source value
    is read once; integral correlates with the source pixel under each target's centre by the share of
    the target's footprint in that pixel times sqrt(footprint area) (the white-noise integral), computed
    here from 16x16 analytic points per target."""
    H = W = 96
    noise = torch.randn(8, H, W, generator=gen())
    coords = similarity_coords(H, W, **transform)
    valid = inside_mask(coords - 2, H, W) & inside_mask(coords + 2, H, W)
    fast, ref = warp_nearest(noise, coords, valid, gen(1)), warp_nearest_pull(noise, coords, valid, gen(1))
    src = (coords[..., 1].long() * W + coords[..., 0].long())[valid]
    once = torch.bincount(src, minlength=H * W)[src] == 1
    assert once.any()
    torch.testing.assert_close(fast[:, valid][:, once], ref[:, valid][:, once], atol=0, rtol=0)
    centre = noise.reshape(8, -1)[:, src]

    def corr(out):
        a = out[:, valid]
        return float((a * centre).mean() / (a.std() * centre.std()))

    assert abs(corr(fast) - corr(ref)) < 0.02
    m, scale = 16, transform.get("scale", 1.0)
    shift = tuple(v * m for v in transform.get("shift", (0.0, 0.0)))
    points = similarity_coords(H * m, W * m, **{**transform, "shift": shift}) / m  # the footprints' points
    in_centre = points.floor().view(H, m, W, m, 2) == coords.floor().view(H, 1, W, 1, 2)
    share = in_centre.all(-1).float().mean((1, 3))[valid]
    expected = float((share * scale).mean())
    out = warp_integral(noise, coords, valid, 4, gen(1))
    assert abs(corr(out) - expected) < 0.03, (corr(out), expected)
    assert stats.kstest(out[:, valid].flatten().numpy(), "norm").pvalue > 1e-3
