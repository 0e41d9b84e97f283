"""Striped primitives: the stripe band against the SDFs, hit points and the camera projection, exact
colours, the striped prompts, and the pattern judge on exact renders."""

import colorsys
import math

import pytest
import torch

from text3d.scene.cameras import orbit_cameras
from text3d.prior.evaluation import judge_stripes
from text3d.prior.shapes import (COLOUR_NAMES, COLOURS, PRIMITIVES, SHAPES, colour_tensor, colourize, parse_pattern,
                                 parse_prompt, prompt_for, render_depth, render_shading, render_shapes, stripe_mask,
                                 vocabulary)


def _cams(az, el, dist=3.0, fovy=32.0, res=32):
    n = len(az)
    return orbit_cameras(torch.tensor(az, dtype=torch.float32), torch.tensor(el, dtype=torch.float32),
                         torch.full((n,), dist), torch.full((n,), fovy), res, res)


def _band(shape):
    """The middle third of the shape's z extent, straight from its definition."""
    lo, hi = PRIMITIVES[shape].z_extent
    return lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3


def _hue(rgb):
    return 360.0 * colorsys.rgb_to_hsv(*rgb)[0]


def _hue_gap(a, b):
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


@pytest.mark.parametrize("name", SHAPES)
def test_z_extent_is_the_extent_of_the_solid(name):
    lo, hi = PRIMITIVES[name].z_extent
    assert lo == -hi
    axis = torch.linspace(-0.6, 0.6, 121)  # 0.01 apart
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).view(-1, 3)
    inside = grid[PRIMITIVES[name].sdf(grid) < 0]
    assert inside[:, 2].max().item() == pytest.approx(hi, abs=0.011)
    assert inside[:, 2].min().item() == pytest.approx(lo, abs=0.011)


def test_stripe_shading_is_within_shading_and_leaves_the_rest_unchanged():
    cams = _cams([10.0, -60.0, 135.0, 80.0, -170.0, 45.0, 0.0], [0.0, 20.0, -10.0, 45.0, 30.0, 60.0, 89.0])
    shapes = list(SHAPES[:6]) + ["cube"]
    shading, coverage = render_shading(shapes, cams, supersample=2)
    s2, c2, stripe = render_shading(shapes, cams, supersample=2, stripes=True)
    assert torch.equal(shading, s2) and torch.equal(coverage, c2)
    assert (stripe >= 0).all() and (stripe <= shading).all()
    assert (stripe[coverage == 0] == 0).all()
    assert (stripe.sum(dim=(1, 2)) > 0)[:6].all()  # the band is seen from the side ...
    assert (stripe[6] == 0).all() and coverage[6].sum() > 50  # ... and not on the cube's top, seen from above


@pytest.mark.parametrize("name", SHAPES)
def test_stripe_pixels_are_the_rays_whose_hit_is_in_the_band(name):
    cams = _cams([20.0, -100.0, 170.0], [5.0, 35.0, -10.0])
    _, coverage, stripe = render_shading([name] * 3, cams, supersample=1, stripes=True)
    _, points = render_depth([name] * 3, cams)
    hit, z = coverage > 0, points[..., 2]
    z0, z1 = _band(name)
    expected = hit & (z >= z0) & (z <= z1)
    clear = ~hit | (((z - z0).abs() > 1e-4) & ((z - z1).abs() > 1e-4))
    assert expected.sum() > 10 and (hit & ~expected).sum() > 10
    assert torch.equal((stripe > 0)[clear], expected[clear])
    assert torch.equal(stripe_mask([name] * 3, points)[clear], expected[clear])


def test_cylinder_seen_level_has_its_stripe_on_the_middle_third_of_its_rows():
    d, res, fovy, radius = 3.0, 64, 32.0, 0.3
    cams = _cams([0.0], [0.0], d, fovy, res)
    _, coverage, stripe = render_shading(["cylinder"], cams, supersample=1, stripes=True)
    f = 0.5 * res / math.tan(math.radians(fovy) / 2)
    lo, hi = PRIMITIVES["cylinder"].z_extent
    z0, z1 = lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3
    for col in (res // 2 - 1, res // 2):
        x = (col + 0.5 - res / 2) / f
        depth = d - radius
        for _ in range(20):  # depth along the axis of the ray's hit on the side: (d - D)^2 + (x D)^2 = r^2
            depth = d - math.sqrt(radius**2 - (x * depth) ** 2)
        z = [(res / 2 - (row + 0.5)) / f * depth for row in range(res)]
        on_object = [abs(v) < hi for v in z]
        in_stripe = [z0 <= v <= z1 for v in z]
        assert [bool(c > 0) for c in coverage[0, :, col]] == on_object
        assert [bool(s > 0) for s in stripe[0, :, col]] == in_stripe
        rows, stripe_rows = sum(on_object), sum(in_stripe)
        assert abs(stripe_rows - rows / 3) <= 1 and rows > 30
        first = in_stripe.index(True)
        assert abs(first - on_object.index(True) - rows / 3) <= 1  # the middle third, not any third


def test_colourize_with_the_stripe_in_the_base_colour_is_the_plain_render():
    cams = _cams([30.0, -75.0, 120.0, 0.0, 200.0, -10.0, 60.0], [10.0, 40.0, -5.0, 0.0, 25.0, 55.0, 15.0])
    shading, coverage, stripe = render_shading(list(SHAPES), cams, supersample=2, stripes=True)
    colours = colour_tensor([COLOUR_NAMES[i] for i in range(7)], 7)
    plain = colourize(shading, coverage, colours)
    assert torch.equal(colourize(shading, coverage, colours, stripe, colours.clone()), plain)
    names = list(COLOUR_NAMES[:7])
    rgb, _ = render_shapes(list(SHAPES), names, cams)
    assert torch.equal(render_shapes(list(SHAPES), names, cams, stripe_colours=names)[0], rgb)
    assert torch.equal(render_shapes(list(SHAPES), names, cams, stripe_colours=[None] * 7)[0], rgb)
    mixed = [None, "blue", None, "red", None, "green", None]
    striped = render_shapes(list(SHAPES), names, cams, stripe_colours=mixed)[0]
    for b, c in enumerate(mixed):
        assert torch.equal(striped[b], rgb[b]) == (c is None)


@pytest.mark.parametrize("name", SHAPES)
def test_stripe_pixels_have_the_stripe_hue(name):
    cams = _cams([15.0, -80.0, 150.0], [0.0, 25.0, -8.0])
    base, stripe = ["red", "cyan", "yellow"], ["blue", "orange", "purple"]
    rgb, coverage = render_shapes([name] * 3, base, cams, supersample=1, stripe_colours=stripe)
    _, points = render_depth([name] * 3, cams)
    z0, z1 = _band(name)
    z = points[..., 2]
    for b in range(3):
        regions = {stripe[b]: (z[b] > z0 + 1e-4) & (z[b] < z1 - 1e-4),
                   base[b]: (z[b] < z0 - 1e-4) | (z[b] > z1 + 1e-4)}
        for colour, region in regions.items():
            pixels = rgb[b][region & (coverage[b] == 1)]
            assert len(pixels) > 5, (name, b, colour)
            gaps = [_hue_gap(_hue(p.tolist()), _hue(COLOURS[colour])) for p in pixels]
            assert max(gaps) < 2.0, (name, b, colour, max(gaps))


@pytest.mark.parametrize("base, stripe", [("red", "blue"), ("orange", "cyan"), ("pink", "green"), ("yellow", "purple")])
def test_striped_prompts_round_trip(base, stripe):
    for shape in SHAPES:
        prompt = prompt_for(shape, base, stripe)
        assert prompt.endswith(f" with a {stripe} stripe")
        assert parse_pattern(prompt) == (shape, base, stripe)
        assert parse_pattern(prompt + ", side view") == (shape, base, stripe)
        assert parse_prompt(prompt) == (shape, base)
        assert parse_pattern(prompt_for(shape, base)) == (shape, base, None)
        assert prompt_for(shape, base) == prompt_for(shape, base, None)
        assert set(prompt.split()) <= set(vocabulary())


@pytest.mark.parametrize("text, expected", [
    ("a red cube with a blue stripe", ("cube", "red", "blue")),
    ("an orange cone with an orange stripe", ("cone", "orange", "orange")),
    ("A red cube with blue stripes.", ("cube", "red", "blue")),
    ("a blue-striped red cube", ("cube", "red", "blue")),
    ("a blue striped red cube, front view", ("cube", "red", "blue")),
    ("a red blue-striped cube", ("cube", "red", "blue")),
    ("two violet donuts with turquoise stripes", ("torus", "purple", "cyan")),
    ("a magenta box with a yellow stripe, overhead view", ("cube", "pink", "yellow")),
    ("a red cube", ("cube", "red", None)),
    ("a red cube with stripes", None),
    ("a striped red cube", None),
    ("a cube with a blue stripe", None),
    ("a red green cube with a blue stripe", None),
    ("a red cube with a blue green stripe", None),
    ("a red cube with a blue stripe and green stripes", None),
    ("a red cube with a blue cone", None),
    ("", None),
])
def test_parse_pattern(text, expected):
    assert parse_pattern(text) == expected
    if expected:
        assert parse_prompt(text) == expected[:2]


def test_parse_shape_leaves_colours_and_stripe_open():
    from text3d.prior.shapes import parse_shape

    assert parse_shape("a cube") == "cube" and parse_shape("a striped cone") == "cone"
    assert parse_shape("a red cube with a blue stripe") == "cube" and parse_shape("Blue-striped cubes") == "cube"
    assert parse_shape("a cube and a sphere") is None and parse_shape("a red object") is None


def test_parse_prompt_of_stripe_words_without_a_stripe_colour():
    assert parse_prompt("a red cube with stripes") == ("cube", "red")  # as before stripes were known
    assert parse_prompt("a blue striped cube") is None  # blue is the stripe; no base colour
    assert parse_prompt("a red cube with a blue cone") is None


def test_pattern_words_are_in_the_vocabulary():
    assert {"with", "stripe"} <= set(vocabulary())


def test_stripe_input_errors_are_one_line():
    cams = _cams([0.0, 0.0], [0.0, 0.0], res=8)
    with pytest.raises(ValueError, match="unknown colour.*'white'.*valid: red"):
        render_shapes(["cube", "cone"], ["red", "red"], cams, stripe_colours=["white", None])
    with pytest.raises(ValueError, match="expected 2 stripe colours"):
        render_shapes(["cube", "cone"], ["red", "red"], cams, stripe_colours=["blue"])
    with pytest.raises(ValueError, match="unknown shape.*valid: cube"):
        stripe_mask(["cubes"], torch.zeros(1, 4, 3))
    shading, coverage, stripe = render_shading(["cube", "cone"], cams, stripes=True)
    with pytest.raises(ValueError, match="go together"):
        colourize(shading, coverage, colour_tensor(["red", "red"], 2), stripe)
    with pytest.raises(ValueError, match="unknown colour.*valid: red"):
        judge_stripes(torch.ones(2, 3, 8, 8), cams, ["cube", "cone"], ["red", "red"], ["blue", "teal"])


def test_judge_stripes_on_exact_renders():
    g = torch.Generator().manual_seed(3)
    n = 4 * len(SHAPES)
    az = (360.0 * torch.rand(n, generator=g) - 180.0).tolist()
    el = (40.0 * torch.rand(n, generator=g) - 10.0).tolist()  # a torus seen from high up shows no stripe
    cams = _cams(az, el)
    shapes = [SHAPES[i % len(SHAPES)] for i in range(n)]
    base = [COLOUR_NAMES[i % 8] for i in range(n)]
    stripe = [COLOUR_NAMES[(i + 1 + i // 8) % 8] for i in range(n)]
    assert all(b != s for b, s in zip(base, stripe))
    striped = render_shapes(shapes, base, cams, stripe_colours=stripe)[0].permute(0, 3, 1, 2)
    result = judge_stripes(striped, cams, shapes, base, stripe)
    assert result["pattern_ok"].all() and (result["stripe_pixels"] > 0).all()
    swapped = judge_stripes(striped, cams, shapes, stripe, base)
    assert not swapped["base_ok"].any() and not swapped["stripe_ok"].any() and not swapped["pattern_ok"].any()
    plain = render_shapes(shapes, base, cams)[0].permute(0, 3, 1, 2)
    judged = judge_stripes(plain, cams, shapes, base, stripe)
    assert judged["base_ok"].all() and not judged["stripe_ok"].any() and not judged["pattern_ok"].any()
    other = render_shapes(shapes, stripe, cams)[0].permute(0, 3, 1, 2)  # plain in the stripe colour
    assert not judge_stripes(other, cams, shapes, base, stripe)["pattern_ok"].any()


def test_an_edits_striped_target_is_judged_by_its_pattern():
    from text3d.edit.metrics import target_scores
    from text3d.scene.cameras import turntable

    cams = turntable(6, 15.0, 3.0, 32.0, 32, 32)
    shapes = ["cube"] * 6

    def views(stripe):
        rgb, coverage = render_shapes(shapes, ["red"] * 6, cams, stripe_colours=stripe)
        return [{"rgb": c, "opacity": a[..., None]} for c, a in zip(rgb, coverage)]

    striped = target_scores("a red cube with a blue stripe", views(["blue"] * 6), cams)
    assert striped["pattern_ok"] and striped["colour_found"] == "red" and striped["stripe_found"] == "blue"
    assert striped["shape_found"] == "cube" and striped["pattern_views"] > 0
    plain = target_scores("a red cube with a blue stripe", views(None), cams)
    assert not plain["pattern_ok"] and plain["colour_found"] == "red" and plain["stripe_found"] == "red"
    assert "pattern_ok" not in target_scores("a red cube", views(None), cams)


def test_the_video_benchmarks_pattern_flips_count_stripe_changes_between_frames():
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    from text3d.scene.cameras import turntable

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from eval_video_consistency import pattern_flip_rate

    cams = turntable(8, 15.0, 3.0, 32.0, 32, 32)
    clip = SimpleNamespace(cameras=cams)
    steady = render_shapes(["cube"] * 8, ["red"] * 8, cams, stripe_colours=["blue"] * 8)[0]
    assert pattern_flip_rate(steady, clip, "cube") == 0.0
    alternating = render_shapes(["cube"] * 8, ["red"] * 8, cams, stripe_colours=["blue", "green"] * 4)[0]
    assert pattern_flip_rate(alternating, clip, "cube") == 1.0
    plain = render_shapes(["cube"] * 8, ["red"] * 8, cams)[0]  # a stripe-less object flips nothing either
    assert pattern_flip_rate(plain, clip, "cube") == 0.0
