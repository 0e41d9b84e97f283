"""Putting text3d's things into a viser scene: Gaussians as splats, a mesh file, multi-view cameras,
and the conversions between text3d's cameras (OpenGL ``c2w``) and the browser's (OpenCV)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple

import numpy as np
import torch

from text3d.scene.cameras import Cameras

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
"""Flips a camera's y and z axes: OpenGL (text3d) <-> OpenCV (viser) camera-to-world."""


def add_splats(server: Any, name: str, geometry: Any, position: Tuple[float, float, float] = (0, 0, 0)) -> Any:
    """A Gaussian geometry (its means, rotations, scales as rendered, colours, opacities) as splats."""
    from text3d.renderers.gaussians import quat_scale_to_covar

    with torch.no_grad():
        covariances = quat_scale_to_covar(geometry.quats, geometry.scales())
        rgbs = geometry.base_colors().clamp(0, 1)
        return server.scene.add_gaussian_splats(
            name, centers=geometry.means.numpy().astype(np.float32),
            covariances=covariances.numpy().astype(np.float32), rgbs=rgbs.numpy().astype(np.float32),
            opacities=geometry.opacities().reshape(-1, 1).numpy().astype(np.float32), position=position)


def add_mesh_file(server: Any, name: str, path: Path, position: Tuple[float, float, float] = (0, 0, 0),
                  visible: bool = True) -> Any:
    """An exported mesh (``mesh.glb``: +Y up, metres) back in text3d's z-up world frame."""
    import trimesh

    mesh = trimesh.load(path, force="mesh")
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))  # +Y up -> +Z up
    return server.scene.add_mesh_trimesh(name, mesh, position=position, visible=visible)


def camera_pose(c2w_opengl: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(wxyz, position)`` of a text3d camera as viser places a frustum (OpenCV axes)."""
    import viser.transforms as tf

    c2w = c2w_opengl @ OPENGL_TO_OPENCV
    return tf.SO3.from_matrix(c2w[:3, :3]).wxyz, c2w[:3, 3]


def cameras_from_client(camera: Any, height: int) -> Cameras:
    """A text3d camera (one view, ``height`` pixels, the browser's aspect) from a viser client camera."""
    import viser.transforms as tf

    c2w = np.eye(4)
    c2w[:3, :3] = tf.SO3(np.asarray(camera.wxyz)).as_matrix()
    c2w[:3, 3] = np.asarray(camera.position)
    c2w = torch.tensor(c2w @ OPENGL_TO_OPENCV, dtype=torch.float32)[None]
    width = max(8, int(round(height * float(camera.aspect))))
    position = c2w[:, :3, 3]
    zero = torch.zeros(1)
    return Cameras(c2w, torch.tensor([float(camera.fov)]), width, height, zero, zero,
                   position.norm(dim=-1), position.clone())
