"""Cameras: poses, rays and intrinsics against closed-form geometry."""

import math

import pytest
import torch

from text3d.scene.cameras import RandomCameraConfig, RandomCameraSampler, orbit_cameras, turntable
from text3d.core.errors import ConfigError
from text3d.core.schedules import LinearSchedule


def test_orbit_pose_convention():
    cams = orbit_cameras(torch.tensor([0.0, 90.0]), torch.tensor([0.0, 30.0]), torch.tensor([2.0, 3.0]),
                         torch.tensor([45.0, 45.0]), 8, 8)
    # azimuth 0 sits on +x; z is up
    torch.testing.assert_close(cams.c2w[0, :3, 3], torch.tensor([2.0, 0.0, 0.0]))
    el = math.radians(30.0)
    torch.testing.assert_close(cams.c2w[1, :3, 3], torch.tensor([0.0, 3 * math.cos(el), 3 * math.sin(el)]),
                               atol=1e-6, rtol=0)
    rot = cams.c2w[:, :3, :3]
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6, rtol=0)
    assert torch.allclose(torch.det(rot), torch.ones(2))
    # OpenGL: the camera looks down -z, towards the origin; its up vector has a positive z
    forward = -cams.c2w[:, :3, 2]
    torch.testing.assert_close(forward, -torch.nn.functional.normalize(cams.c2w[:, :3, 3], dim=-1))
    assert (cams.c2w[:, 2, 1] > 0).all()


def test_rays_and_projection_agree():
    cams = orbit_cameras(torch.tensor([30.0]), torch.tensor([20.0]), torch.tensor([2.5]), torch.tensor([40.0]), 16, 12)
    origins, dirs = cams.rays()
    assert origins.shape == dirs.shape == (1, 12, 16, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(1, 12, 16))
    # a point along each pixel's ray projects back onto that pixel's centre (OpenCV view + K)
    points = origins + 1.7 * dirs
    view, K = cams.viewmats()[0], cams.intrinsics()[0]
    cam = points[0].reshape(-1, 3) @ view[:3, :3].T + view[:3, 3]
    assert (cam[:, 2] > 0).all()  # OpenCV: in front of the camera means +z
    pix = cam @ K.T
    pix = pix[:, :2] / pix[:, 2:]
    jj, ii = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(12) + 0.5, indexing="xy")
    torch.testing.assert_close(pix, torch.stack([jj, ii], -1).reshape(-1, 2).float(), atol=1e-4, rtol=0)
    # vertical field of view: the top and bottom edges subtend fovy
    f = cams.focal()[0]
    assert math.isclose(2 * math.atan(0.5 * 12 / float(f)), math.radians(40.0), rel_tol=1e-6)


def test_sampler_is_seeded_and_in_range():
    cfg = RandomCameraConfig(batch_size=64, elevation_range=[-10, 45], distance_range=[1.5, 2.0])
    sampler = RandomCameraSampler(cfg)
    a = sampler.sample(torch.Generator().manual_seed(3))
    b = sampler.sample(torch.Generator().manual_seed(3))
    c = sampler.sample(torch.Generator().manual_seed(4))
    torch.testing.assert_close(a.c2w, b.c2w)
    assert not torch.equal(a.c2w, c.c2w)
    assert a.elevation.min() >= -10 and a.elevation.max() <= 45
    assert a.distance.min() >= 1.5 and a.distance.max() <= 2.0
    dist_light = a.light_positions.norm(dim=-1)
    assert dist_light.min() >= 0.8 - 1e-5 and dist_light.max() <= 1.5 + 1e-5


def test_sampler_rejects_bad_ranges():
    with pytest.raises(ConfigError, match="cameras.fovy_range"):
        RandomCameraSampler(RandomCameraConfig(fovy_range=[70.0, 40.0]))


def test_turntable_is_evenly_spaced():
    cams = turntable(8, 15.0, 2.0, 45.0, 4, 4)
    torch.testing.assert_close(cams.azimuth, torch.arange(8.0) * 45.0)
    torch.testing.assert_close(cams.c2w[:, :3, 3].norm(dim=-1), torch.full((8,), 2.0))


def test_linear_schedule():
    s = LinearSchedule(start=10.0, end=1000.0, start_step=0, end_step=5000)
    assert s.value(0) == 10.0 and s.value(2500) == pytest.approx(505.0) and s.value(9999) == 1000.0
    jump = LinearSchedule(start=1.0, end=2.0, start_step=5, end_step=5)
    assert (jump.value(4), jump.value(5)) == (1.0, 2.0)
    assert LinearSchedule.constant(0.5).value(123) == 0.5


def test_project_to_pixels_puts_the_look_at_point_at_the_image_centre_and_agrees_with_the_rays():
    """A camera's own ray through pixel (x + 0.5, y + 0.5), followed to any depth, projects back onto
    that pixel position; the point it looks at lands at the image centre; behind it, z < 0."""
    from text3d.scene.cameras import project_to_pixels, turntable

    cams = turntable(3, 20.0, 3.0, 40.0, 48, 32)
    origins, dirs = cams.rays()
    for v in range(3):
        uv, z = project_to_pixels(torch.zeros(1, 3), cams.viewmats()[v], cams.intrinsics()[v])
        assert torch.allclose(uv, torch.tensor([[24.0, 16.0]]), atol=1e-4) and z.item() == pytest.approx(3.0, abs=1e-5)
        y, x = 5, 37
        points = origins[v, y, x] + torch.tensor([[1.0], [2.5]]) * dirs[v, y, x]
        uv, z = project_to_pixels(points, cams.viewmats()[v], cams.intrinsics()[v])
        assert torch.allclose(uv, torch.tensor([[x + 0.5, y + 0.5]] * 2), atol=1e-3) and (z > 0).all()
        behind = origins[v, y, x] - dirs[v, y, x]
        assert project_to_pixels(behind[None], cams.viewmats()[v], cams.intrinsics()[v])[1].item() < 0
