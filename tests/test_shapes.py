"""The analytic shapes world: exact SDFs, sphere-traced silhouettes against closed-form and brute-force
references, exact colours on white, prompt parsing, and the CLIP tokenizer shipped as package data."""

import math

import pytest
import torch

from text3d.scene.cameras import orbit_cameras
from text3d.prior.shapes import (AMBIENT, COLOUR_NAMES, COLOURS, LIGHT_DIR_CAMERA, PRIMITIVES, SHAPES, parse_prompt,
                           render_shapes, vocabulary)


def _cams(az, el, dist=3.0, fovy=32.0, res=32):
    n = len(az)
    return orbit_cameras(torch.tensor(az, dtype=torch.float32), torch.tensor(el, dtype=torch.float32),
                         torch.full((n,), dist), torch.full((n,), fovy), res, res)


def test_sphere_silhouette_is_the_projected_disk():
    d, r, res, fovy = 3.0, 0.45, 64, 32.0
    cams = _cams([0.0, 77.0, -150.0], [0.0, 35.0, -10.0], d, fovy, res)
    _, coverage = render_shapes(["sphere"] * 3, ["red"] * 3, cams, supersample=4)
    f = 0.5 * res / math.tan(math.radians(fovy) / 2)
    disk_radius = f * r / math.sqrt(d * d - r * r)  # pixels: tangent cone of the sphere on the image plane
    expected = math.pi * disk_radius**2
    for area in coverage.sum(dim=(1, 2)).tolist():
        assert area == pytest.approx(expected, rel=0.01), (area, expected)


def test_sphere_pixels_match_rays_from_cameras():
    """One ray per pixel: a pixel is covered exactly when its ray from Cameras.rays() passes within r."""
    cams = _cams([20.0, -100.0], [10.0, 50.0], res=24)
    _, coverage = render_shapes(["sphere", "sphere"], ["blue", "blue"], cams, supersample=1)
    origins, dirs = cams.rays()
    closest = origins - (origins * dirs).sum(-1, keepdim=True) * dirs  # closest point to the centre
    margin = closest.norm(dim=-1) - 0.45
    decided = margin.abs() > 1e-3
    assert torch.equal(coverage[decided] > 0.5, margin[decided] < 0)


def test_cube_front_view_is_a_centred_square():
    d, half, res, fovy = 3.0, 0.33, 64, 32.0
    _, coverage = render_shapes(["cube"], ["green"], _cams([0.0], [0.0], d, fovy, res), supersample=4)
    f = 0.5 * res / math.tan(math.radians(fovy) / 2)
    side = 2 * f * half / (d - half)  # the front face, nearest to the camera, bounds the silhouette
    assert coverage.sum().item() == pytest.approx(side**2, rel=0.01)
    mask = coverage[0] > 0.5
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    assert rows.min() + rows.max() == res - 1 and cols.min() + cols.max() == res - 1  # centred
    assert rows.numel() == cols.numel() == pytest.approx(side, abs=1.0)
    assert (coverage[0][rows.min() + 1:rows.max(), cols.min() + 1:cols.max()] == 1).all()  # no holes


def test_colours_exact_on_white():
    rgb, coverage = render_shapes(["cube"] * len(COLOURS), list(COLOURS), _cams([0.0] * 8, [0.0] * 8), supersample=2)
    light = torch.tensor(LIGHT_DIR_CAMERA)
    shade = AMBIENT + (1 - AMBIENT) * (light / light.norm())[2].item()  # front face normal = camera z
    centre = rgb[:, 14:18, 14:18]
    for i, name in enumerate(COLOURS):
        torch.testing.assert_close(centre[i], torch.tensor(COLOURS[name]).expand(4, 4, 3) * shade, atol=1e-5, rtol=0)
    background = coverage == 0
    assert background[:, :3].all() and (rgb[background] == 1.0).all()
    assert rgb.min() >= 0 and rgb.max() <= 1


@pytest.mark.parametrize("name", SHAPES)
def test_sphere_tracing_matches_brute_force_marching(name):
    """Silhouettes agree with a dense sign test along each ray (catches SDFs that overestimate distance)."""
    cams = _cams([30.0, -120.0], [15.0, 55.0], res=16)
    _, coverage = render_shapes([name, name], ["red", "red"], cams, supersample=1)
    origins, dirs = cams.rays()
    t = torch.linspace(2.0, 4.0, 800)
    points = origins[..., None, :] + t[:, None] * dirs[..., None, :]  # [B, H, W, T, 3]
    sdf = PRIMITIVES[name].sdf(points)
    crosses, misses = (sdf < -2e-3).any(dim=-1), (sdf > 2e-3).all(dim=-1)  # grazing rays are left out
    assert crosses.sum() > 20 and misses.sum() > 20 and (crosses | misses).float().mean() > 0.95
    assert (coverage[crosses] == 1).all() and (coverage[misses] == 0).all()


@pytest.mark.parametrize("name", [s for s in SHAPES if s != "pyramid"])
def test_exact_sdfs_have_unit_gradient(name):
    points = (torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) - 0.5) * 1.6
    points.requires_grad_(True)
    (grad,) = torch.autograd.grad(PRIMITIVES[name].sdf(points).sum(), points)
    norms = grad.norm(dim=-1)
    assert ((norms - 1).abs() < 1e-3).float().mean() > 0.99  # a few points sit on medial kinks


def test_shapes_fit_their_bounds():
    g = torch.Generator().manual_seed(1)
    dirs = torch.nn.functional.normalize(torch.randn(4000, 3, generator=g), dim=-1)
    for prim in PRIMITIVES.values():
        assert 0.45 <= prim.bound <= 0.62, prim.name
        assert (prim.sdf(dirs * (prim.bound + 1e-3)) > 0).all(), prim.name
        assert prim.sdf(torch.zeros(1, 3)).item() < 0 or prim.name == "torus"


@pytest.mark.parametrize("text, expected", [
    ("a red cube", ("cube", "red")),
    ("a red cube, front view", ("cube", "red")),
    ("A Blue SPHERE, overhead view.", ("sphere", "blue")),
    ("two yellow donuts", ("torus", "yellow")),
    ("a violet pyramid, back view", ("pyramid", "purple")),
    ("a cube", None),
    ("a red green cube", None),
    ("a red cube and a cone", None),
    ("a photo of a cat", None),
    ("", None),
])
def test_parse_prompt(text, expected):
    assert parse_prompt(text) == expected


def test_every_pair_round_trips_through_its_prompt():
    for s in SHAPES:
        for c in COLOUR_NAMES:
            assert parse_prompt(f"a {c} {s}, side view") == (s, c)


def test_unknown_names_are_reported():
    cams = _cams([0.0], [0.0])
    with pytest.raises(ValueError, match="unknown shape.*valid: cube"):
        render_shapes(["cubes"], ["red"], cams)
    with pytest.raises(ValueError, match="unknown colour"):
        render_shapes(["cube"], ["white"], cams)


def test_clip_tokenizer_ids_are_openai_clip_ids():
    from text3d.prior.model import load_clip_tokenizer

    tok = load_clip_tokenizer()
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok("a red cube").input_ids == [49406, 320, 736, 11353, 49407]
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("hello world").input_ids == [49406, 3306, 1002, 49407]
    ids = tok("", padding="max_length", max_length=77).input_ids
    assert ids[:2] == [49406, 49407] and len(ids) == 77 and set(ids[2:]) == {49407}
    unknown = [w for w in vocabulary() if tok.convert_ids_to_tokens(tok(w).input_ids[1:-1]) != [w + "</w>"]]
    assert len(unknown) <= 2, unknown  # nearly every training word is a single CLIP token
