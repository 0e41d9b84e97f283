"""Materials (closed-form Lambertian, mode choice) and backgrounds."""

import pytest
import torch

from text3d.scene.background import NeuralEnvironment, NeuralEnvironmentConfig, SolidBackground, SolidBackgroundConfig
from text3d.core.errors import ConfigError
from text3d.scene.registry import BACKGROUNDS
from text3d.renderers.registry import MATERIALS
from text3d.renderers import DiffuseWithPointLightConfig, NoMaterialConfig


def _material(**overrides):
    return MATERIALS.build(DiffuseWithPointLightConfig(**overrides))


def test_lambertian_closed_form():
    mat = _material(ambient_light_color=0.1, diffuse_light_color=0.9)
    albedo = torch.tensor([[0.5, 0.2, 1.0], [0.5, 0.2, 1.0], [0.5, 0.2, 1.0]])
    normal = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    lights = torch.tensor([[0.0, 0.0, 5.0], [2.0, 0.0, 1.0], [0.0, 0.0, 5.0]])
    # light straight above: cos 1; at 45 degrees: cos 1/sqrt(2); behind the surface: cos clamped to 0
    cos = torch.tensor([1.0, 2 ** -0.5, 0.0])[:, None]
    expected = albedo * (0.1 + 0.9 * cos)
    torch.testing.assert_close(mat.shade(albedo, normal, points, lights, "diffuse"), expected)
    torch.testing.assert_close(mat.shade(albedo, normal, points, lights, "textureless"), (0.1 + 0.9 * cos).expand(3, 3))
    assert torch.equal(mat.shade(albedo, None, points, lights, "albedo"), albedo)
    assert mat.needs_normal("diffuse") and mat.needs_normal("textureless") and not mat.needs_normal("albedo")
    with pytest.raises(ValueError, match="valid modes: albedo, diffuse, textureless"):
        mat.shade(albedo, normal, points, lights, "shiny")
    with pytest.raises(ValueError, match="needs normals"):
        mat.shade(albedo, None, points, lights, "diffuse")


def test_choose_mode_is_seeded_and_respects_ambient_only_steps():
    mat = _material(ambient_only_steps=100, albedo_ratio=0.2, textureless_prob=0.5)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert all(mat.choose_mode(step, gen) == "albedo" for step in range(100))
    assert torch.equal(gen.get_state(), state)  # nothing drawn before ambient_only_steps
    runs = [[mat.choose_mode(100 + i, g) for i in range(3000)]
            for g in (torch.Generator().manual_seed(1), torch.Generator().manual_seed(1))]
    assert runs[0] == runs[1]
    freq = {m: runs[0].count(m) / 3000 for m in ("albedo", "textureless", "diffuse")}
    assert abs(freq["albedo"] - 0.2) < 0.03 and abs(freq["textureless"] - 0.4) < 0.03
    assert abs(freq["diffuse"] - 0.4) < 0.03
    # two numbers per call whatever the outcome, so the generator stays in step
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    mat.choose_mode(500, g1)
    torch.rand(2, generator=g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_no_material_is_albedo():
    mat = MATERIALS.build(NoMaterialConfig())
    albedo = torch.rand(4, 3)
    assert mat.choose_mode(10**6, None) == "albedo" and not mat.needs_normal("albedo")
    assert torch.equal(mat.shade(albedo, None, torch.zeros(4, 3), torch.ones(4, 3), "albedo"), albedo)


def test_material_config_errors():
    with pytest.raises(ConfigError, match="material.albedo_ratio: must be in"):
        _material(albedo_ratio=1.5)


def test_solid_background():
    bg = BACKGROUNDS.build(SolidBackgroundConfig(color=[0.1, 0.2, 0.3]))
    out = bg(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 3) and torch.equal(out[1, 4], torch.tensor([0.1, 0.2, 0.3]))
    assert bg.parameter_groups() == {}
    with pytest.raises(ConfigError, match="background.color"):
        SolidBackground(SolidBackgroundConfig(color=[1.0, 1.0]))


def test_neural_environment():
    bg = BACKGROUNDS.build(NeuralEnvironmentConfig())
    dirs = torch.nn.functional.normalize(torch.randn(4, 6, 3), dim=-1)
    out = bg(dirs)
    assert out.shape == (4, 6, 3) and (out > 0).all() and (out < 1).all()
    assert not torch.allclose(out[0, 0], out[1, 1])  # depends on the direction
    groups = bg.parameter_groups()
    assert list(groups) == ["background"] and len(groups["background"]) == 6
    out.sum().backward()
    assert all(p.grad is not None for p in groups["background"])


def test_neural_environment_random_aug_is_seeded():
    bg = NeuralEnvironment(NeuralEnvironmentConfig(random_aug=True, random_aug_prob=0.5))
    dirs = torch.nn.functional.normalize(torch.randn(8, 3), dim=-1)
    gens = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    runs = [[bg(dirs, train=True, generator=g) for _ in range(40)] for g in gens]
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    solid = [o for o in runs[0] if torch.equal(o, o[:1].expand_as(o))]
    assert 5 < len(solid) < 35  # about half the steps get a random solid colour
    assert torch.equal(bg(dirs), bg(dirs, train=False))  # never in evaluation
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        bg(dirs, train=True)
