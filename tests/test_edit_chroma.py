"""Chroma smoothness of an edit's renders (text3d.edit.chroma): closed forms on painted images, shading
that costs nothing, pixels outside the object that do not count, and the term inside a tiny Gaussian
edit (reported, brings a patchy scene's render colours together). Resume with the term on: the Gaussian
preset carries it, so tests/test_edit_refine.py's bit-exact resume covers it."""

import pytest
import torch

from text3d.edit import open_edit
from text3d.edit.chroma import chroma_variation, chromaticity, object_colour
from test_edit import GS_PRESET, edit_args

ORANGE, BLUE = torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0.1, 0.2, 0.9])


def painted(h=6, w=8, split=3):
    """Opaque ``[1, h, w]`` views: orange left of column ``split``, blue from it on."""
    rgb = torch.empty(1, h, w, 3)
    rgb[:, :, :split], rgb[:, :, split:] = ORANGE, BLUE
    return rgb, torch.ones(1, h, w, 1)


def test_two_colours_cost_their_chroma_difference_once_per_row():
    rgb, opacity = painted()
    step = (chromaticity(ORANGE) - chromaticity(BLUE)).abs().sum()
    assert float(chroma_variation(rgb, opacity)) == pytest.approx(6 * float(step), rel=1e-6)
    # two views: averaged over views, so the same figure
    assert float(chroma_variation(rgb.repeat(2, 1, 1, 1), opacity.repeat(2, 1, 1, 1))) == pytest.approx(
        6 * float(step), rel=1e-6)


def test_shading_costs_nothing_and_the_background_does_not_count():
    gen = torch.Generator().manual_seed(0)
    shade = 0.35 + 0.65 * torch.rand(2, 10, 12, 1, generator=gen)  # diffuse shading: a factor per pixel
    rgb = ORANGE * shade
    opacity = torch.ones(2, 10, 12, 1)
    assert float(chroma_variation(rgb, opacity)) < 1e-5
    # a different colour behind opacity <= 0.5 (and the pairs touching it) is not object
    rgb2 = rgb.clone()
    rgb2[:, :, :4] = BLUE
    opacity2 = opacity.clone()
    opacity2[:, :, :4] = 0.5
    assert float(chroma_variation(rgb2, opacity2)) < 1e-5
    opacity2[:, :, :4] = 0.51
    assert float(chroma_variation(rgb2, opacity2)) > 1.0


def test_the_gradient_pulls_a_patch_towards_its_surroundings():
    rgb, opacity = painted(6, 6, 1)
    rgb = rgb.clone().requires_grad_(True)
    start = chroma_variation(rgb, opacity)
    start.backward()
    assert bool((rgb.grad[0, :, 0, 2] < 0).all())  # the orange column gains blue
    assert float(rgb.grad[0, :, 3:].abs().max()) == 0.0  # inside one colour, nothing moves
    with torch.no_grad():
        assert float(chroma_variation(rgb - 0.01 * rgb.grad, opacity)) < float(start)


def test_the_object_colour_leaves_out_the_background_seen_through_a_fuzzy_edge():
    """An orange edge at opacity 0.6 over white is greyer than the orange inside; the object's own colour
    is not, over any background: the term no longer pulls the inside towards the edge."""
    opacity = torch.tensor([1.0, 0.6]).view(1, 1, 2, 1)
    for background in (torch.ones(3), torch.tensor([0.0, 0.3, 1.0])):
        rgb = opacity * ORANGE + (1 - opacity) * background
        out = {"rgb": rgb, "opacity": opacity, "background": background.expand_as(rgb)}
        torch.testing.assert_close(object_colour(out), opacity * ORANGE)
        assert float(chroma_variation(object_colour(out), opacity)) < 1e-6 < float(chroma_variation(rgb, opacity))
    assert object_colour({"rgb": rgb, "opacity": opacity}) is rgb  # no background reported: the render


def test_the_gaussian_renderer_reports_the_background_it_composited_over(tiny_gaussian_run):
    from text3d.scene.cameras import turntable
    from text3d.scene.rundir import load_system

    cfg, system, _ = load_system(tiny_gaussian_run)
    cams = turntable(2, 20.0, cfg.cameras.eval_distance, cfg.cameras.eval_fovy, 16, 16)
    with torch.no_grad():
        out = system.render(cams, mode="albedo", train=False)
        system.background.cfg.color = [0.0, 0.0, 0.0]  # the quickstart's solid white, now black
        black = system.render(cams, mode="albedo", train=False)
    assert out["background"].shape == out["rgb"].shape
    torch.testing.assert_close(object_colour(out), black["rgb"], atol=1e-5, rtol=0)


def _render_variation(run):
    from text3d.scene.cameras import turntable

    cc = run.cfg.cameras
    with torch.no_grad():
        out = run.system.render(turntable(4, 20.0, cc.eval_distance, cc.eval_fovy, 32, 32), mode="albedo", train=False)
    return float(chroma_variation(out["rgb"], out["opacity"]))


def test_the_term_brings_a_patchy_gaussian_scenes_render_colours_together(tmp_path, tiny_sd_dir, tiny_prior,
                                                                          tiny_gaussian_run):
    """Random colours on the source's Gaussians (the same in both edits): after 6 steps the renders'
    chroma variation is lower with the term than without it, and the step reports the term."""
    def variation(weight):
        run = open_edit(GS_PRESET, edit_args(tmp_path, tiny_sd_dir, tiny_gaussian_run, "target_prompt=a blue cube",
                                             f"name=c{weight}", f"edit.smooth_chroma={weight}"), prior=tiny_prior)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            run.system.geometry.sh0.copy_(torch.randn(run.system.geometry.sh0.shape, generator=gen))
        before = _render_variation(run)
        for _ in range(6):
            figures = run.train_step()
            run.step += 1
        assert ("chroma" in figures) == (weight > 0)
        return before, _render_variation(run)

    before, without = variation(0)
    assert before > 1.0  # the random colours show
    _, with_term = variation(50)
    assert with_term < 0.8 * without
