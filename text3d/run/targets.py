"""Multi-view images as reconstruction targets (the MVDream / Zero123++ / InstantMesh route).

A ``text3d run`` with ``targets: <multiview output folder>`` reads the views and the cameras that
``text3d multiview`` wrote (``multiview.json``) and adds an image loss: the scene rendered at a
target's own camera is compared with the target, ``mean((render - target)^2)`` over pixels and
channels. With ``loss.lambda_sds: 0`` the run is a pure reconstruction; with both weights it is
MVDream's SDS plus reconstruction loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict

import imageio.v2 as imageio
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.core.errors import ConfigError
from text3d.scene.cameras import Cameras, cameras_from_json

MULTIVIEW_JSON = "multiview.json"
"""The file of a ``text3d multiview`` folder that lists its views, cameras and settings."""
MULTIVIEW_FORMAT = 1
"""Version of that file's layout."""


def check_targets_dir(folder: str, key: str = "targets") -> None:
    """Raise :class:`ConfigError` unless ``folder`` is a ``text3d multiview`` output folder."""
    if not (Path(folder) / MULTIVIEW_JSON).is_file():
        raise ConfigError(f"{key}: {folder!r} is not a multiview output folder (no {MULTIVIEW_JSON}); pass the folder "
                          "that `text3d multiview` printed on its last line")


@dataclass
class ViewTargets:
    """Target images and the cameras they were sampled at.

    Attributes:
        images: ``[N, H, W, 3]`` float32 in [0, 1].
        cameras: ``N`` cameras (the convention of :mod:`text3d.scene.cameras`).
        meta: the contents of ``multiview.json``.
    """

    images: Tensor
    cameras: Cameras
    meta: Dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path) -> "ViewTargets":
        folder = Path(folder)
        check_targets_dir(str(folder))
        meta = json.loads((folder / MULTIVIEW_JSON).read_text(encoding="utf-8"))
        try:
            arrays = [np.asarray(imageio.imread(folder / name))[..., :3] for name in meta["images"]]
        except (OSError, KeyError, ValueError) as err:
            raise ConfigError(f"targets: cannot read the views of {str(folder)!r}: {err}") from None
        images = torch.from_numpy(np.stack(arrays)).float() / 255.0
        return cls(images, cameras_from_json(meta["cameras"]), meta)

    def loss(self, render: Callable[..., Dict[str, Tensor]], generator: torch.Generator, batch: int,
             device: torch.device) -> Tensor:
        """Mean squared error of ``batch`` random targets against renders at their cameras.

        Args:
            render: ``render(cameras, mode=..., generator=..., train=True)`` -> ``{"rgb": [B, H, W, 3], ...}``.
            generator: picks the targets (and feeds the renderer's sampling).
            batch: targets per step (at most all of them).
            device: where the renderer runs.
        """
        idx = torch.randperm(len(self.cameras), generator=generator)[:batch]
        out = render(self.cameras.index(idx).to(device), mode="albedo", generator=generator, train=True)
        return F.mse_loss(out["rgb"], self.images[idx].to(device))
