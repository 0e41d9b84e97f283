"""The implicit-volume field: hash encoding against a slow reference, blob, activations, normals."""

import itertools
import math

import pytest
import torch

from text3d.core.errors import ConfigError
from text3d.scene.geometry import HashGridEncoding, ImplicitVolume, ImplicitVolumeConfig, trunc_exp
from text3d.scene.registry import GEOMETRIES


def reference_encoding(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """Per-level, per-point, per-corner loop with Python integers and instant-ngp's full primes."""
    T, F = enc.hashmap_size, enc.n_features
    out = torch.zeros(x.shape[0], enc.n_levels * F, dtype=enc.table.dtype)
    table = enc.table.detach()
    for lvl, res in enumerate(enc.level_resolutions):
        dense = (res + 1) ** 3 <= T
        base = int(enc.level_offsets[lvl])
        for n in range(x.shape[0]):
            pos = [float(v) * res for v in x[n]]
            cell = [min(max(int(math.floor(p)), 0), res - 1) for p in pos]
            frac = [p - c for p, c in zip(pos, cell)]
            for corner in itertools.product((0, 1), repeat=3):
                v = [c + o for c, o in zip(cell, corner)]
                w = math.prod(f if o else 1.0 - f for f, o in zip(frac, corner))
                if dense:
                    row = v[0] + v[1] * (res + 1) + v[2] * (res + 1) ** 2
                else:
                    row = (v[0] * 1 ^ v[1] * 2654435761 ^ v[2] * 805459861) % T
                out[n, lvl * F:(lvl + 1) * F] += w * table[base + row]
    return out


@pytest.fixture
def small_encoding():
    gen = torch.Generator().manual_seed(0)
    enc = HashGridEncoding(n_levels=5, n_features=2, log2_hashmap_size=10, base_resolution=3,
                           per_level_scale=2.0, generator=gen).double()
    with torch.no_grad():
        enc.table.normal_(generator=gen)  # the default init is ~1e-4: too small to see errors
    return enc


def test_encoding_has_dense_and_hashed_levels(small_encoding):
    enc = small_encoding
    assert enc.level_resolutions == [3, 6, 12, 24, 48]
    assert enc.n_dense == 2  # 4^3 and 7^3 fit in 1024 entries, 13^3 does not
    assert int(enc.level_offsets[2]) % enc.hashmap_size == 0


def test_encoding_matches_slow_reference(small_encoding):
    x = torch.rand(40, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[0] = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)  # borders of the cube
    torch.testing.assert_close(small_encoding(x), reference_encoding(small_encoding, x), rtol=1e-12, atol=1e-12)


def test_encoding_gradients():
    gen = torch.Generator().manual_seed(2)
    enc = HashGridEncoding(n_levels=3, n_features=2, log2_hashmap_size=7, base_resolution=2,
                           per_level_scale=2.0, generator=gen).double()
    assert enc.n_dense == 2 and enc.n_levels == 3
    x = torch.rand(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    # the output is linear in the table (checks the custom scatter-add backward) ...
    assert torch.autograd.gradcheck(lambda table: HashGridEncoding.forward(enc, x.detach()), (enc.table,),
                                    eps=1e-6, atol=1e-8)
    # ... and piecewise trilinear in the points
    assert torch.autograd.gradcheck(enc, (x,), eps=1e-7, atol=1e-6)
    enc(x.detach()).sum().backward()
    touched = (enc.table.grad.abs().sum(dim=1) > 0).sum()
    assert 0 < touched <= 6 * 3 * 8


def test_encoding_handles_no_points(small_encoding):
    assert small_encoding(torch.zeros(0, 3, dtype=torch.float64)).shape == (0, 10)


def _radial_field(**overrides) -> ImplicitVolume:
    """A field whose density is the activation of its blob only (table and last layer zeroed)."""
    values = dict(density_bias="blob_dreamfusion", density_blob_std=0.4)
    values.update(overrides)
    cfg = ImplicitVolumeConfig.cpu_preset(**values)
    field = ImplicitVolume(cfg)
    with torch.no_grad():
        field.encoding.table.zero_()
        field.network[-1].weight.zero_()
        field.network[-1].bias.zero_()
    return field


def test_blob_density_and_box():
    field = _radial_field()
    p = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.4], [0.9, 0.0, 0.0], [1.2, 0.0, 0.0]])
    out = field(p)
    bias = 10.0 * torch.exp(-0.5 * (p.norm(dim=-1) / 0.4) ** 2)
    expected = torch.nn.functional.softplus(bias)
    expected[3] = 0.0  # outside the box
    torch.testing.assert_close(out["density"], expected)
    torch.testing.assert_close(out["albedo"], torch.full((4, 3), 0.5))
    magic = ImplicitVolume(ImplicitVolumeConfig.cpu_preset(density_bias="blob_magic3d"))
    torch.testing.assert_close(magic.density_bias(p[:2]), 10.0 * (1 - p[:2].norm(dim=-1) / 0.5))


def test_exp_activation_is_shifted_truncated_exp():
    field = _radial_field(density_activation="exp", density_bias="none")
    torch.testing.assert_close(field.density(torch.zeros(3, 3)), torch.full((3,), math.exp(-1.0)))
    x = torch.tensor([0.0, 20.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, math.exp(15.0)]))


@pytest.mark.parametrize("normal_type", ["finite_difference", "analytic"])
def test_normals_of_radial_density_point_outward(normal_type):
    field = _radial_field(normal_type=normal_type)
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(200, 3, generator=gen)
    p = p / p.norm(dim=-1, keepdim=True) * (0.2 + 0.5 * torch.rand(200, 1, generator=gen))
    with torch.no_grad():
        out = field(p, with_normal=True)
    assert not out["normal"].requires_grad
    cos = (out["normal"] * p / p.norm(dim=-1, keepdim=True)).sum(-1)
    assert cos.min() > 0.9999, cos.min()


def test_analytic_and_finite_difference_normals_agree_on_a_trained_like_field():
    cfg = ImplicitVolumeConfig.cpu_preset(density_bias="blob_magic3d", seed=5, normal_type="finite_difference")
    fd, an = ImplicitVolume(cfg), ImplicitVolume(ImplicitVolumeConfig.cpu_preset(
        density_bias="blob_magic3d", seed=5, normal_type="analytic", finite_difference_eps=1e-3))
    with torch.no_grad():  # a smooth non-radial perturbation through the coarse levels and MLP
        fd.encoding.table.normal_(std=0.05, generator=torch.Generator().manual_seed(0))
        an.encoding.table.copy_(fd.encoding.table)
    p = torch.rand(100, 3, generator=torch.Generator().manual_seed(4)) - 0.5
    n_fd = fd(p, with_normal=True)["normal"]
    n_an = an(p, with_normal=True)["normal"]
    cos = (n_fd * n_an).sum(-1)
    assert cos.median() > 0.99, cos.median()


@pytest.mark.parametrize("activation,bias", [("softplus", "blob_magic3d"), ("exp", "blob_dreamfusion"),
                                             ("softplus", "none")])
def test_analytic_normal_is_the_exact_density_gradient(activation, bias):
    field = ImplicitVolume(ImplicitVolumeConfig.cpu_preset(normal_type="analytic", density_activation=activation,
                                                           density_bias=bias, mlp_hidden_layers=2)).double()
    with torch.no_grad():
        field.encoding.table.normal_(std=0.3, generator=torch.Generator().manual_seed(0))
    p = (torch.rand(64, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.5) * 1.6
    p.requires_grad_(True)
    (grad,) = torch.autograd.grad(field.density(p).sum(), p)  # reference: plain autograd
    out = field(p.detach(), with_normal=True)
    torch.testing.assert_close(out["normal"], -torch.nn.functional.normalize(grad, dim=-1))
    torch.testing.assert_close(out["density"], field.density(p.detach()))


def test_analytic_normals_are_differentiable_in_training():
    field = ImplicitVolume(ImplicitVolumeConfig.cpu_preset(normal_type="analytic"))
    p = torch.rand(20, 3) - 0.5
    out = field(p, with_normal=True)
    assert out["normal"].requires_grad
    (out["normal"] * torch.randn(20, 3, generator=torch.Generator().manual_seed(0))).sum().backward()
    assert field.network[-1].weight.grad.abs().sum() > 0
    assert field.encoding.table.grad.abs().sum() > 0


def test_parameter_groups_and_registry():
    field = GEOMETRIES.build(ImplicitVolumeConfig.cpu_preset(radius=0.8))
    groups = field.parameter_groups()
    assert set(groups) == {"encoding", "network"}
    assert groups["encoding"][0] is field.encoding.table
    assert sum(p.numel() for g in groups.values() for p in g) == sum(p.numel() for p in field.parameters())
    assert field.cfg.radius == 0.8 and field.radius == 0.8


def test_initialisation_is_seeded():
    # an explicit seed ignores the global RNG
    torch.manual_seed(123)
    a = ImplicitVolume(ImplicitVolumeConfig.cpu_preset(seed=7))
    torch.manual_seed(456)
    b = ImplicitVolume(ImplicitVolumeConfig.cpu_preset(seed=7))
    c = ImplicitVolume(ImplicitVolumeConfig.cpu_preset(seed=1))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.encoding.table, c.encoding.table)
    # seed None (what runs use) draws from the caller's RNG state, which a run seeds
    torch.manual_seed(5)
    d = ImplicitVolume(ImplicitVolumeConfig.cpu_preset())
    torch.manual_seed(5)
    e = ImplicitVolume(ImplicitVolumeConfig.cpu_preset())
    assert all(torch.equal(pd, pe) for pd, pe in zip(d.parameters(), e.parameters()))


@pytest.mark.parametrize("key,value,message", [
    ("density_activation", "foo", "geometry.density_activation: unknown value 'foo'; valid choices: softplus, exp"),
    ("density_bias", "blob", "geometry.density_bias: unknown value 'blob'"),
    ("normal_type", "sobel", "geometry.normal_type: unknown value 'sobel'"),
    ("radius", 0.0, "geometry.radius: must be > 0"),
])
def test_config_errors_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        ImplicitVolume(ImplicitVolumeConfig(**{key: value}))
