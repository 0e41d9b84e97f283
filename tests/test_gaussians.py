"""The Gaussian rasteriser against an independent, per-Gaussian loop reference (images and gradients)."""

from __future__ import annotations

import math

import pytest
import torch

from text3d.renderers.gaussians import SH_C0, eval_sh, rasterize_gaussians, rasterize_gaussians_dense


# --------------------------------------------------------------------------------------------
# Reference: written from the 3DGS / gsplat description, one Gaussian at a time as the CUDA kernel walks
# them, with its own quaternion formula and a matrix inverse for the conic.
def _ref_rotation(q):
    q = q / q.norm()
    w, v = q[0], q[1:]
    vx = torch.stack([torch.stack([0 * w, -v[2], v[1]]), torch.stack([v[2], 0 * w, -v[0]]),
                      torch.stack([-v[1], v[0], 0 * w])])
    return (w * w - v @ v) * torch.eye(3, dtype=q.dtype) + 2 * torch.outer(v, v) + 2 * w * vx


def _ref_render(means, quats, scales, opacities, colors, viewmats, Ks, W, H, bg=None, near=0.01, antialiased=False):
    images, alphas = [], []
    for V, K in zip(viewmats, Ks):
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        splats = []
        for i in range(means.shape[0]):
            p = V[:3, :3] @ means[i] + V[:3, 3]
            if p[2] <= near:
                continue
            R = _ref_rotation(quats[i])
            cov = V[:3, :3] @ R @ torch.diag(scales[i] ** 2) @ R.T @ V[:3, :3].T
            u = torch.clamp(p[0] / p[2], -(cx / fx) - 0.3 * 0.5 * W / fx, (W - cx) / fx + 0.3 * 0.5 * W / fx)
            v = torch.clamp(p[1] / p[2], -(cy / fy) - 0.3 * 0.5 * H / fy, (H - cy) / fy + 0.3 * 0.5 * H / fy)
            J = torch.stack([torch.stack([fx / p[2], 0 * fx, -fx * u / p[2]]),
                             torch.stack([0 * fy, fy / p[2], -fy * v / p[2]])])
            cov2 = J @ cov @ J.T + 0.3 * torch.eye(2, dtype=means.dtype)
            op = opacities[i]
            if antialiased:  # Mip-Splatting: the low-pass keeps the Gaussian's mass
                op = op * torch.sqrt(torch.linalg.det(cov2 - 0.3 * torch.eye(2, dtype=means.dtype)) / torch.linalg.det(cov2))
            if op < 1 / 255:
                continue
            ext = min(3.33, math.sqrt(2 * math.log(op.item() * 255)))
            c = cov2.detach()
            rx, ry = math.ceil(ext * float(c[0, 0]) ** 0.5), math.ceil(ext * float(c[1, 1]) ** 0.5)
            mu = torch.stack([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
            if mu[0] + rx <= 0 or mu[0] - rx >= W or mu[1] + ry <= 0 or mu[1] - ry >= H:
                continue
            splats.append((float(p[2].detach()), mu, torch.linalg.inv(cov2), op, colors[i]))
        splats.sort(key=lambda s: s[0])
        ys, xs = torch.meshgrid(torch.arange(H, dtype=means.dtype), torch.arange(W, dtype=means.dtype), indexing="ij")
        pix = torch.stack([xs, ys], -1) + 0.5
        T = torch.ones(H, W, dtype=means.dtype)
        done = torch.zeros(H, W, dtype=torch.bool)
        img = torch.zeros(H, W, colors.shape[-1], dtype=means.dtype)
        for _, mu, P, op, col in splats:
            d = mu - pix
            sigma = 0.5 * torch.einsum("hwi,ij,hwj->hw", d, P, d)
            alpha = torch.clamp(op * torch.exp(-sigma), max=0.999)
            use = (sigma >= 0) & (alpha >= 1 / 255) & ~done
            next_T = T * (1 - alpha)
            stop = use & (next_T <= 1e-4)
            use = use & ~stop
            done = done | stop
            img = img + torch.where(use[..., None], (alpha * T)[..., None] * col, 0.0)
            T = torch.where(use, next_T, T)
        a = 1 - T
        if bg is not None:
            img = img + T[..., None] * bg
        images.append(img)
        alphas.append(a[..., None])
    return torch.stack(images), torch.stack(alphas)


def _look_at(eye, target=(0.0, 0.0, 0.0)):
    """OpenCV world-to-camera (x right, y down, z forward), world z up."""
    eye, target = torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    f = (target - eye) / (target - eye).norm()
    r = torch.linalg.cross(f, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    r = r / r.norm()
    d = torch.linalg.cross(f, r)
    Rw = torch.stack([r, d, f])
    V = torch.eye(4, dtype=torch.float64)
    V[:3, :3], V[:3, 3] = Rw, -Rw @ eye
    return V


def _scene(n=40, seed=0, W=37, H=29, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 1.6
    means[0] = torch.tensor([0.0, 0.0, 6.0], dtype=dtype)  # behind camera 2 (at z = 5, looking down)
    means[1] = torch.tensor([0.0, 9.0, 0.0], dtype=dtype)  # off-screen in every camera
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.25 + 0.02
    opac = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.1
    opac[2] = 1.0  # alpha clamp at 0.999
    scales[2] = 0.6
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    viewmats = torch.stack([_look_at((4.0, 0.0, 0.0)), _look_at((0.5, -3.0, 2.0)), _look_at((0.0, 0.0, 5.0),
                                                                                         (0.0, 0.01, 0.0))])
    Ks = torch.tensor([[40.0, 0, W / 2], [0, 42.0, H / 2], [0, 0, 1]], dtype=dtype).expand(3, 3, 3).clone()
    Ks[1, 0, 2] += 3.3
    return means, quats, scales, opac, colors, viewmats.to(dtype), Ks, W, H


@pytest.mark.parametrize("tile_size,max_pairs", [(8, 1 << 23), (16, 1 << 23), (4, 200)])
def test_images_match_loop_reference(tile_size, max_pairs):
    means, quats, scales, opac, colors, V, K, W, H = _scene()
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    img, alpha, meta = rasterize_gaussians(means, quats, scales, opac, colors, V, K, W, H, backgrounds=bg,
                                           tile_size=tile_size, max_pairs=max_pairs)
    ref_img, ref_a = _ref_render(means, quats, scales, opac, colors, V, K, W, H, bg=bg)
    assert img.shape == (3, H, W, 3) and alpha.shape == (3, H, W, 1)
    assert alpha.max() > 0.99 and alpha.min() < 0.01  # the scene is not trivial: opaque and empty pixels
    torch.testing.assert_close(img, ref_img, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(alpha, ref_a, atol=1e-9, rtol=1e-7)
    assert meta["radii"].shape == (3, 40, 2) and meta["means2d"].shape == (3, 40, 2)
    assert (meta["radii"][:, 1] == 0).all()  # off-screen in every camera


def test_antialiased_mode_matches_loop_reference_images_and_gradients():
    """gsplat's ``rasterize_mode="antialiased"``: opacities times sqrt(det S / det(S + eps I)), both paths."""
    means, quats, scales, opac, colors, V, K, W, H = _scene(n=25, seed=3, W=24, H=20)
    scales[3:8] = 0.003  # under a pixel: compensated most
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opac, colors)]
    img, a, meta = rasterize_gaussians(*params, V, K, W, H, tile_size=8, max_pairs=300, rasterize_mode="antialiased")
    ref_img, ref_a = _ref_render(*params, V, K, W, H, antialiased=True)
    torch.testing.assert_close(img, ref_img, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(a, ref_a, atol=1e-9, rtol=1e-7)
    assert (meta["opacities"] < opac).any() and (meta["opacities"] <= opac).all()
    classic, _, _ = rasterize_gaussians(*params, V, K, W, H)
    assert (classic - img).abs().max() > 1e-3  # the modes differ
    dense_img, dense_a = rasterize_gaussians_dense(*params, V, K, W, H, rasterize_mode="antialiased")
    torch.testing.assert_close(a, dense_a, atol=1e-9, rtol=1e-7)
    g = torch.Generator().manual_seed(7)
    up = torch.randn(3, H, W, 3, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((img * up).sum() + a.sum(), params)
    ref_grads = torch.autograd.grad((ref_img * up).sum() + ref_a.sum(), params)
    for name, got, want in zip(("means", "quats", "scales", "opacities", "colors"), grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6, msg=name)
    with pytest.raises(ValueError, match="rasterize_mode"):
        rasterize_gaussians(*params, V, K, W, H, rasterize_mode="mip")


@pytest.mark.parametrize("std_px", [0.5, 1.0, 2.0])
def test_antialiased_mass_does_not_depend_on_the_low_pass(std_px):
    """Closed form: one isotropic Gaussian of 2D std ``s`` px, drawn with peak ``A`` on a low-passed std
    ``b = sqrt(s^2 + eps)`` and cut where it falls below 1/255, sums to ``2 pi b^2 (A - 1/255)`` of alpha.
    Antialiased ``A = op s^2 / b^2``: the mass stays ``~op 2 pi s^2`` whatever ``eps2d``; classic grows with it."""
    f, z, op = 100.0, 4.0, 0.9
    args = dict(means=torch.zeros(1, 3, dtype=torch.float64), quats=torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
                scales=torch.full((1, 3), std_px * z / f, dtype=torch.float64),
                opacities=torch.tensor([op], dtype=torch.float64), colors=torch.ones(1, 3, dtype=torch.float64))
    V = torch.eye(4, dtype=torch.float64)[None].clone()
    V[0, 2, 3] = z
    K = torch.tensor([[[f, 0, 32.0], [0, f, 32.0], [0, 0, 1]]], dtype=torch.float64)
    s2, masses = std_px ** 2, []
    for eps in (0.3, 1.0):
        b2 = s2 + eps
        for mode, peak in (("antialiased", op * s2 / b2), ("classic", op)):
            _, alpha, _ = rasterize_gaussians(**args, viewmats=V, Ks=K, width=64, height=64, eps2d=eps,
                                              rasterize_mode=mode)
            assert float(alpha.sum()) == pytest.approx(2 * math.pi * b2 * (peak - 1 / 255), rel=0.03), (mode, eps)
            masses.append(float(alpha.sum()))
    assert masses[0] == pytest.approx(masses[2], rel=0.03 if std_px >= 1 else 0.06)  # antialiased: eps-free
    assert masses[3] > masses[1] * (1 + 0.5 / (s2 + 0.3))  # classic: grows with eps


@pytest.mark.parametrize("max_pairs", [300, 1 << 23])  # checkpointed pieces, and one piece without
def test_gradients_match_loop_reference(max_pairs):
    means, quats, scales, opac, colors, V, K, W, H = _scene(n=25, seed=3, W=24, H=20)
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opac, colors)]
    g = torch.Generator().manual_seed(7)
    up = torch.randn(3, H, W, 3, generator=g, dtype=torch.float64)
    up_a = torch.randn(3, H, W, 1, generator=g, dtype=torch.float64)
    img, a, _ = rasterize_gaussians(*params, V, K, W, H, tile_size=8, max_pairs=max_pairs)
    grads = torch.autograd.grad((img * up).sum() + (a * up_a).sum(), params)
    ref_img, ref_a = _ref_render(*params, V, K, W, H)
    ref_grads = torch.autograd.grad((ref_img * up).sum() + (ref_a * up_a).sum(), params)
    for name, got, want in zip(("means", "quats", "scales", "opacities", "colors"), grads, ref_grads):
        assert want.abs().max() > 0, name
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6, msg=name)


def test_float32_matches_dense_reference_and_means2d_gradient_is_retained():
    means, quats, scales, opac, colors, V, K, W, H = _scene(n=60, seed=1, dtype=torch.float32)
    means.requires_grad_()
    img, a, meta = rasterize_gaussians(means, quats, scales, opac, colors, V, K, W, H)
    meta["means2d"].retain_grad()
    img.sum().backward()
    grad2d = meta["means2d"].grad
    assert grad2d is not None and grad2d.shape == (3, 60, 2)
    visible = meta["visible"]
    assert torch.equal(visible, (meta["radii"] > 0).all(-1))
    assert grad2d[~visible].abs().max() == 0 and grad2d[visible].abs().sum() > 0
    with torch.no_grad():
        dense, dense_a = rasterize_gaussians_dense(means, quats, scales, opac, colors, V, K, W, H)
    torch.testing.assert_close(img.detach(), dense, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(a.detach(), dense_a, atol=2e-5, rtol=1e-4)


def test_expected_depth_of_an_opaque_wall_is_its_depth():
    # one big opaque flat Gaussian facing the camera at z = 3
    means = torch.tensor([[0.0, 0.0, 3.0]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    scales = torch.tensor([[100.0, 100.0, 1e-4]])
    V, K = torch.eye(4)[None], torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]])
    out, a, _ = rasterize_gaussians(means, quats, scales, torch.ones(1), torch.ones(1, 3), V, K, 16, 16,
                                    render_mode="RGB+ED")
    assert out.shape == (1, 16, 16, 4)
    torch.testing.assert_close(out[..., 3], torch.full((1, 16, 16), 3.0))
    torch.testing.assert_close(a, torch.full((1, 16, 16, 1), 0.999), atol=1e-6, rtol=0)
    d, _, _ = rasterize_gaussians(means, quats, scales, torch.ones(1), torch.ones(1, 3), V, K, 16, 16, render_mode="D")
    torch.testing.assert_close(d[..., 0], torch.full((1, 16, 16), 3.0 * 0.999))


def test_sh_colours_follow_3dgs_convention():
    dirs = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    coeffs = torch.zeros(3, 16, 3)
    coeffs[:, 0] = 1.0
    coeffs[:, 3] = torch.tensor([1.0, 0.0, 0.0])  # degree-1 x term: -C1 * x
    out = eval_sh(3, dirs, coeffs)
    c1 = 0.4886025119029199
    torch.testing.assert_close(out[:, 0], torch.tensor([SH_C0 - c1, SH_C0 + c1, SH_C0]))
    torch.testing.assert_close(out[:, 1], torch.full((3,), SH_C0))
    # a degree-3 field integrates to its DC term over the sphere (higher bands are orthogonal to Y00)
    g = torch.Generator().manual_seed(0)
    c = torch.randn(1, 16, 3, generator=g)
    d = torch.randn(200000, 3, generator=g)
    mean = eval_sh(3, d, c.expand(len(d), -1, -1)).mean(0)
    torch.testing.assert_close(mean, SH_C0 * c[0, 0], atol=0.01, rtol=0)


def test_sh_rendering_equals_rendering_the_evaluated_colours():
    means, quats, scales, opac, _, V, K, W, H = _scene(n=20, seed=2, dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    sh = torch.randn(20, 9, 3, generator=g) * 0.3
    img, _, _ = rasterize_gaussians(means, quats, scales, opac, sh, V, K, W, H, sh_degree=2)
    campos = torch.linalg.inv(V)[:, :3, 3]
    for c in range(3):
        cols = (eval_sh(2, means - campos[c], sh) + 0.5).clamp(min=0)
        ref, _, _ = rasterize_gaussians(means, quats, scales, opac, cols, V[c:c + 1], K[c:c + 1], W, H)
        torch.testing.assert_close(img[c], ref[0])


def test_degenerate_inputs_give_defined_results():
    V, K = torch.eye(4)[None], torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]])
    bg = torch.tensor([1.0, 1.0, 1.0])
    e = torch.zeros(0, 3)
    img, a, meta = rasterize_gaussians(e, torch.zeros(0, 4), e, torch.zeros(0), e, V, K, 16, 16, backgrounds=bg)
    assert (img == 1).all() and (a == 0).all()  # empty scene: background
    means = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.0, 3.0], [0.1, 0.0, 3.0]])
    quats = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [float("nan"), 0, 0, 0]])
    scales = torch.tensor([[0.3] * 3, [0.0] * 3, [0.3] * 3])
    cols = torch.zeros(3, 3)
    img, a, meta = rasterize_gaussians(means[:1], quats[:1], scales[:1], torch.ones(1), cols[:1], V, K, 16, 16,
                                       backgrounds=bg)
    assert (img == 1).all() and (meta["radii"] == 0).all()  # behind the camera: looking away
    img, a, meta = rasterize_gaussians(means[1:], quats[1:], scales[1:], torch.ones(2), cols[1:], V, K, 16, 16)
    assert torch.isfinite(img).all() and meta["n_nonfinite"] == 1
    # the zero-scale Gaussian is a point splat of the 0.3 px^2 low-pass (as in gsplat): its mean sits on a
    # pixel corner, so the four nearest pixel centres are 0.5 px away in x and y
    torch.testing.assert_close(a.max(), torch.tensor(math.exp(-0.5 * 0.5 / 0.3)))
    with pytest.raises(ValueError, match="scales"):
        rasterize_gaussians(means, quats, -scales, torch.ones(3), cols, V, K, 16, 16)
    with pytest.raises(ValueError, match=r"means: expected shape"):
        rasterize_gaussians(means[:, :2], quats, scales, torch.ones(3), cols, V, K, 16, 16)
    with pytest.raises(ValueError, match="render_mode"):
        rasterize_gaussians(means, quats, scales, torch.ones(3), cols, V, K, 16, 16, render_mode="RGBA")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat)")
@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_cpu_path_matches_gsplat(mode):
    means, quats, scales, opac, colors, V, K, W, H = _scene(n=200, seed=4, W=64, H=48, dtype=torch.float32)
    cuda = [t.cuda().requires_grad_() for t in (means, quats, scales, opac, colors)]
    cpu = [t.clone().requires_grad_() for t in (means, quats, scales, opac, colors)]
    img_g, a_g, _ = rasterize_gaussians(*cuda, V.cuda(), K.cuda(), W, H, backend="gsplat", rasterize_mode=mode)
    img_c, a_c, _ = rasterize_gaussians(*cpu, V, K, W, H, backend="torch", rasterize_mode=mode)
    torch.testing.assert_close(img_g.cpu(), img_c.detach(), atol=1e-4, rtol=1e-3)
    up = torch.randn_like(img_c)
    gg = torch.autograd.grad((img_g * up.cuda()).sum(), cuda)
    gc = torch.autograd.grad((img_c * up).sum(), cpu)
    for a, b in zip(gg, gc):
        torch.testing.assert_close(a.cpu(), b, atol=1e-3, rtol=1e-2)
