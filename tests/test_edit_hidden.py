"""Hidden Gaussians before a shape edit (text3d.edit.hidden) and the per-Gaussian opacity entropy
(loss.lambda_gaussian_opacity): an opaque shell around a few inner Gaussians, whose compositing
weights add up to the rendered opacity and whose inner Gaussians no view sees; the recolouring they get;
the term's closed form; and the edit that uses both (the frozen source keeps its own colours)."""

import math

import pytest
import torch

from text3d.edit import open_edit
from text3d.edit.hidden import compositing_weights, orbit_rings, recolour_hidden
from text3d.renderers.gaussians import SH_C0, rasterize_gaussians
from text3d.scene.gaussians import GaussianGeometryConfig, GaussianModel, model_params, write_ply
from test_edit import GS_PRESET, REPO, edit_args

SHELL, INNER = 1500, 5
RED, BLUE = torch.tensor([1.0, 0.1, 0.1]), torch.tensor([0.1, 0.1, 1.0])


def shell_scene() -> GaussianModel:
    """``SHELL`` opaque red Gaussians on a sphere of radius 0.5 (Fibonacci points), ``INNER`` blue ones
    inside it (radius 0.1): no view from outside can see the blue ones."""
    model = GaussianModel(GaussianGeometryConfig(num_points=SHELL + INNER, sh_degree=0, seed=0))
    i = torch.arange(SHELL, dtype=torch.float32) + 0.5
    z, phi = 1 - 2 * i / SHELL, math.pi * (1 + 5 ** 0.5) * i
    shell = 0.5 * torch.stack([(1 - z**2).sqrt() * phi.cos(), (1 - z**2).sqrt() * phi.sin(), z], -1)
    inner = 0.1 * torch.randn(INNER, 3, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    with torch.no_grad():
        model.means.copy_(torch.cat([shell, inner]))
        model.log_scales.fill_(math.log(0.05))
        model.quats.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(SHELL + INNER, 4))
        model.opacity_logits.fill_(8.0)
        colours = torch.cat([RED.expand(SHELL, 3), BLUE.expand(INNER, 3)])
        model.sh0.copy_(((colours - 0.5) / SH_C0)[:, None])
    return model


def _alpha_sum(model: GaussianModel, views, mode: str) -> float:
    return sum(float(rasterize_gaussians(model.means.detach(), model.quats.detach(), model.scales().detach(),
                                         model.opacities().detach(), torch.ones(SHELL + INNER, 1), c.viewmats(),
                                         c.intrinsics(), 32, 32, rasterize_mode=mode)[1].sum())
               for c in views)


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_weights_add_up_to_the_rendered_opacity_and_miss_the_inside(mode):
    model, views = shell_scene(), orbit_rings([-10.0, 60.0], 3.0, 32.0, rings=2, per_ring=4, resolution=32)
    weights = compositing_weights(model, views, mode)
    assert float(weights.sum()) == pytest.approx(_alpha_sum(model, views, mode), rel=1e-4)  # sum_i T_i alpha_i: opacity
    assert float(weights[SHELL:].max()) < 1e-3 < float(weights[:SHELL].median())


def test_weights_follow_the_scenes_drawing():
    """~1-px Gaussians: drawn antialiased, each keeps its mass rather than its peak opacity, so the shell
    covers less — the weights are those of the scene as its renderer draws it, not classic's."""
    model, views = shell_scene(), orbit_rings([-10.0, 60.0], 3.0, 32.0, rings=2, per_ring=4, resolution=32)
    classic, antialiased = compositing_weights(model, views), compositing_weights(model, views, "antialiased")
    assert _alpha_sum(model, views, "antialiased") < _alpha_sum(model, views, "classic")
    assert float(antialiased.sum()) < float(classic.sum())


def test_hidden_gaussians_take_the_colour_of_the_nearest_seen_one():
    model = shell_scene()
    views = orbit_rings([-10.0, 60.0], 3.0, 32.0, rings=3, per_ring=6, resolution=48)
    before = model.sh0.detach().clone()
    assert recolour_hidden(model, views) == INNER
    torch.testing.assert_close(model.base_colors()[SHELL:], RED.expand(INNER, 3), atol=1e-5, rtol=0)
    assert torch.equal(model.sh0[:SHELL], before[:SHELL])  # what the views see is untouched
    assert recolour_hidden(model, views) == INNER  # still hidden, now the seen colour: nothing changes
    torch.testing.assert_close(model.base_colors()[SHELL:], RED.expand(INNER, 3), atol=1e-5, rtol=0)
    with torch.no_grad():
        model.means.add_(100.0)  # out of every view: nothing seen, nothing to copy from
    assert recolour_hidden(model, views) == 0


def test_the_gaussian_opacity_term_is_the_summed_binary_entropy(tmp_path, tiny_sd_dir, tiny_prior, tiny_gaussian_run):
    run = open_edit(GS_PRESET, edit_args(tmp_path, tiny_sd_dir, tiny_gaussian_run, "target_prompt=a blue cube",
                                         "loss.lambda_gaussian_opacity=0.3"), prior=tiny_prior)
    o = run.system.geometry.opacities().detach().double()
    closed = 0.3 * float((-o * o.log() - (1 - o) * (1 - o).log()).sum())
    out = run.system.render(run.sample_cameras(), mode="albedo", train=True)
    term = run.loss_terms(out, torch.zeros(()))["gaussian_opacity"]
    assert float(term.detach()) == pytest.approx(closed, rel=1e-4)
    term.backward()  # faint Gaussians are pushed fainter, solid ones more solid
    grad, logits = run.system.geometry.opacity_logits.grad, run.system.geometry.opacity_logits.detach()
    assert bool((grad[logits < -0.1] > 0).all()) and bool((grad[logits > 0.1] < 0).all())


def test_the_shape_preset_recolours_the_edited_copy_only(tmp_path, tiny_sd_dir, tiny_prior):
    """A 3DGS .ply of the shell scene as the source: the edit's inner Gaussians turn red, the source's stay blue."""
    write_ply(tmp_path / "shell.ply", model_params(shell_scene()))
    preset = REPO / "configs" / "edit-shape-quickstart-gaussians.yaml"
    run = open_edit(preset, edit_args(tmp_path, tiny_sd_dir, tmp_path / "shell.ply", "source_prompt=a red sphere",
                                      "target_prompt=a red torus"), prior=tiny_prior)
    assert run.cfg.edit.recolour_hidden and run.cfg.guidance.type == "sds-edit"
    torch.testing.assert_close(run.system.geometry.base_colors(), RED.expand(SHELL + INNER, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(run.source.geometry.base_colors()[SHELL:], BLUE.expand(INNER, 3), atol=1e-5, rtol=0)
