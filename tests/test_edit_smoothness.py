"""Colour smoothness of an edit (text3d.edit.smoothness): closed forms on analytic fields, brute-force
neighbours, and the term inside a tiny edit (resumes bit-exactly, makes neighbouring colours closer)."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from text3d.edit import open_edit
from text3d.edit.smoothness import (NeighbourColours, SmoothnessSettings, SurfaceJitter, nearest_neighbours,
                                    step_generator, surface_points)
from text3d.core.checkpoint import latest_checkpoint, load_checkpoint
from test_edit import GS_PRESET, NERF_PRESET, edit_args


class SphereSource(nn.Module):
    """A source whose renders are those of an opaque sphere of radius ``r`` at the origin, exactly:
    opacity 1 where a ray hits it (else 0), and the renderer's depth (opacity-weighted distance)."""

    def __init__(self, r=0.6, opacity=0.8):
        super().__init__()
        self.r, self.alpha = r, opacity
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the module a device

    def render(self, cams, mode="albedo", train=False):
        o, d = cams.rays()
        b = (o * d).sum(-1)
        disc = b.square() - (o.square().sum(-1) - self.r ** 2)
        hit = disc > 0
        t = -b - disc.clamp(min=0).sqrt()
        opacity = hit.float() * self.alpha
        return {"opacity": opacity[..., None], "depth": (opacity * t)[..., None]}


def cameras_cfg(width=24):
    return SimpleNamespace(elevation_range=[-10.0, 60.0], eval_distance=3.0, eval_fovy=32.0, width=width, height=width)


def test_surface_points_lie_on_the_surface_the_renders_show():
    points = surface_points(SphereSource(r=0.6), cameras_cfg())
    assert len(points) > 500
    # the depth is opacity-weighted (here 0.8 x the distance): dividing by the opacity finds the surface
    assert torch.allclose(points.norm(dim=-1), torch.full((len(points),), 0.6), atol=1e-4)


def test_the_jitter_term_is_zero_on_one_colour_and_the_closed_form_on_a_linear_one():
    settings = SmoothnessSettings(radius=0.05, points=200_000, seed=0)
    term = SurfaceJitter(settings, SphereSource(), cameras_cfg(16))
    flat = lambda x: {"albedo": torch.full_like(x, 0.3)}  # noqa: E731
    assert float(term.loss(flat, step=0)) == 0.0
    # albedo = x + 0.5: the difference is the jitter itself, E sum_i |delta_i| = 3 sigma sqrt(2 / pi)
    linear = lambda x: {"albedo": x + 0.5}  # noqa: E731
    assert float(term.loss(linear, step=3)) == pytest.approx(3 * 0.05 * math.sqrt(2 / math.pi), rel=0.01)
    # the draws are a function of (seed, step): a resumed edit sees the same ones
    assert torch.equal(term.loss(linear, step=7), term.loss(linear, step=7))
    assert not torch.equal(term.loss(linear, step=7), term.loss(linear, step=8))


def test_nearest_neighbours_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(300, 3, generator=gen)
    got = nearest_neighbours(points, 5, chunk=64)  # several chunks
    d = ((points[:, None] - points[None]) ** 2).sum(-1)
    d.fill_diagonal_(float("inf"))
    want = d.argsort(dim=1)[:, :5]
    assert torch.equal(got.sort(dim=1).values, want.sort(dim=1).values)


def test_the_neighbour_term_is_the_mean_colour_difference_to_the_nearest_gaussians():
    from text3d.renderers.gaussians import SH_C0

    # two far clusters of 10 Gaussians each: every Gaussian's 6 neighbours are in its own cluster
    gen = torch.Generator().manual_seed(1)
    means = torch.cat([torch.randn(10, 3, generator=gen) * 0.01, torch.randn(10, 3, generator=gen) * 0.01 + 5.0])
    geometry = SimpleNamespace(means=means, num_gaussians=20, sh0=torch.zeros(20, 1, 3))
    term = NeighbourColours(SmoothnessSettings(0.02, 20, seed=0), SimpleNamespace(geometry=geometry), None)
    assert float(term.loss(geometry, 0)) == 0.0  # one colour everywhere (even two per cluster would be 0)
    geometry.sh0[:10, 0] = torch.tensor([0.2, 0.0, 0.0]) / SH_C0  # cluster A's red channel + 0.2: no pair straddles
    assert float(term.loss(geometry, 0)) == pytest.approx(0.0, abs=1e-6)
    geometry.sh0[0, 0] += torch.tensor([0.0, 0.6, 0.0]) / SH_C0  # one Gaussian of A off by 0.6 in green
    drawn = torch.randint(20, (20,), generator=step_generator(0, 0))  # the term's own draw
    pairs = sum(float(0.6 * ((term.neighbours[i] == 0).sum() + 6 * (i == 0))) for i in drawn.tolist())
    assert float(term.loss(geometry, 0)) == pytest.approx(pairs / (20 * 6), rel=1e-5)


@pytest.mark.parametrize("preset,source", [(NERF_PRESET, "tiny_nerf_run"), (GS_PRESET, "tiny_gaussian_run")])
def test_an_edit_with_the_term_resumes_exactly_and_reports_it(tmp_path, tiny_sd_dir, tiny_prior, preset, source, request):
    src = request.getfixturevalue(source)
    common = edit_args(tmp_path, tiny_sd_dir, src, "target_prompt=a blue cube", "edit.smooth_colour=5",
                       "edit.smooth_points=256")
    full = open_edit(preset, [*common, "steps=4", "name=full"], prior=tiny_prior)
    assert "smooth" in full.train_step()  # reported beside the guidance's figure
    full = open_edit(preset, [*common, "steps=4", "name=full2"], prior=tiny_prior)
    full.fit()
    part = open_edit(preset, [*common, "steps=2", "name=part"], prior=tiny_prior)
    part.fit()
    resumed = open_edit(None, [f"resume={part.run_dir}", "steps=4"], prior=tiny_prior)
    resumed.fit()
    a = load_checkpoint(latest_checkpoint(full.run_dir)).tensors
    b = load_checkpoint(latest_checkpoint(part.run_dir)).tensors
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_term_brings_neighbouring_colours_together(tmp_path, tiny_sd_dir, tiny_prior, tiny_nerf_run):
    """A speckled scene (noise added to the hash grid's features, the same in both edits) ends with
    neighbouring surface colours closer with the term than without it."""
    def roughness(weight):
        run = open_edit(NERF_PRESET, edit_args(tmp_path, tiny_sd_dir, tiny_nerf_run, "target_prompt=a blue cube",
                                               f"name=s{weight}", "edit.smooth_colour=1", "edit.smooth_points=512"),
                        prior=tiny_prior)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for table in run.system.geometry.encoding.parameters():
                table.add_(torch.randn(table.shape, generator=gen) * 0.5)
        run.edit.smooth_colour = weight
        for group in run.optimizer.param_groups:
            group["lr"] *= 10
        for _ in range(6):
            run.train_step()
            run.step += 1
        with torch.no_grad():
            return float(run.smoothness.loss(run.system.geometry, 1000))

    rough = roughness(0.0)
    assert rough > 0.01  # the noise shows in the colours
    assert roughness(200.0) < 0.7 * rough


def test_a_scene_type_without_a_neighbour_rule_gets_one_line_naming_the_key():
    from text3d.core.errors import ConfigError
    from text3d.edit.smoothness import build_smoothness

    with pytest.raises(ConfigError, match=r"^edit.smooth_colour: .*'mesh'.*set edit.smooth_colour=0$"):
        build_smoothness("mesh", SmoothnessSettings(0.02, 16, 0), None, None)
