"""What a folder shows in the viewer: one registered class per kind of folder (a run or edit, a
multi-view set, a batch), picked by :func:`open_view_source`."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Type

import numpy as np

from text3d.core.errors import RunDirError
from text3d.core.folders import folder_kind

from .config import ViewConfig
from .render import FrameRequests, serve_in_background, system_renderer
from .scene import add_mesh_file, add_splats, camera_pose

SOURCES: List[Type["ViewSource"]] = []
"""The kinds of folder the viewer shows, tried in order."""


def register(cls: Type["ViewSource"]) -> Type["ViewSource"]:
    SOURCES.append(cls)
    return cls


def open_view_source(cfg: ViewConfig) -> "ViewSource":
    """The view of ``cfg.path``, or one line saying what the folder is not."""
    path = Path(cfg.path)
    for cls in SOURCES:
        if cls.matches(path):
            return cls(path, cfg)
    what = folder_kind(path)
    raise RunDirError(f"path: {cfg.path!r} is {'a ' + what + ' folder' if what else 'not a text3d folder'}; "
                      "text3d view shows a run or edit folder, a multiview folder or a batch folder")


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _image(path: Path) -> Optional[np.ndarray]:
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(path))[..., :3]
    except Exception:  # a missing or damaged picture is simply not shown
        return None


class ViewSource:
    """A folder shown in a viser server: :meth:`show` builds the scene and the side panel."""

    def __init__(self, path: Path, cfg: ViewConfig):
        self.path, self.cfg = path, cfg

    @staticmethod
    def matches(path: Path) -> bool:
        raise NotImplementedError

    def show(self, server: Any, static: bool = False) -> None:
        """Build the scene; ``static``: for an HTML page (no rendering from the browser's camera)."""
        raise NotImplementedError


@register
class RunFolder(ViewSource):
    """A run or edit folder: Gaussians as splats, a NeRF rendered from the browser's camera (and its
    exported mesh), a checkpoint menu, the prompt, metrics, validation views and curves."""

    @staticmethod
    def matches(path: Path) -> bool:
        return (path / "config.yaml").is_file() and (path / "ckpts").is_dir() and folder_kind(path) is None

    def show(self, server: Any, static: bool = False) -> None:
        from text3d.core.checkpoint import checkpoint_candidates
        from text3d.scene.rundir import load_system

        self.lock = threading.Lock()
        self.cfg_scene, self.system, ckpt = load_system(self.path)
        steps = {int(c.name.split("-")[-1]): c for c in checkpoint_candidates(self.path) if c.name.startswith("step-")}
        self._frame(server)
        self._panel(server, int(ckpt.meta["step"]), steps)
        self._geometry(server, static)

    def _frame(self, server: Any) -> None:
        cams = self.cfg_scene.cameras
        elevation, distance = math.radians(cams.eval_elevation), cams.eval_distance
        server.scene.set_up_direction("+z")
        server.initial_camera.position = (distance * math.cos(elevation), 0.0, distance * math.sin(elevation))
        server.initial_camera.look_at = (0.0, 0.0, 0.0)

    def _geometry(self, server: Any, static: bool) -> None:
        mesh = self.path / "export" / "mesh.glb"
        gaussians = hasattr(self.system.geometry, "num_gaussians")
        if gaussians:
            self.splats = add_splats(server, "/scene/gaussians", self.system.geometry)
        if mesh.is_file():
            handle = add_mesh_file(server, "/scene/mesh", mesh, visible=static and not gaussians)
            toggle = server.gui.add_checkbox("exported mesh", initial_value=handle.visible)
            toggle.on_update(lambda _: setattr(handle, "visible", toggle.value))
        if not gaussians and not static:  # a NeRF: frames rendered from each browser's camera
            self.requests = FrameRequests(server, self.cfg.resolution)
            serve_in_background(self.requests, system_renderer(self.system, self.lock))

    def _panel(self, server: Any, step: int, steps: Dict[int, Path]) -> None:
        metrics = _read_json(self.path / "metrics.json")
        kind = "edit" if (self.path / "before_after.gif").exists() or "edit" in metrics else "run"
        lines = [f"**{kind}** `{self.path.name}`", f"prompt: *{self.cfg_scene.prompt or '(none)'}*", f"step {step}"]
        for key in ("silhouette_iou", "colour_found", "wall_time_s", "num_gaussians", "final_loss"):
            if key in metrics:
                lines.append(f"{key}: {metrics[key]:.4g}" if isinstance(metrics[key], float) else f"{key}: {metrics[key]}")
        server.gui.add_markdown("  \n".join(lines))
        if len(steps) > 1:
            menu = server.gui.add_dropdown("checkpoint", [f"step {s}" for s in sorted(steps)], initial_value=f"step {step}")
            menu.on_update(lambda _: self._load(server, steps[int(menu.value.split()[1])]))
        for name, path in (("validation", self._newest_validation()), ("curves", self.path / "curves.png")):
            image = _image(path) if path is not None else None
            if image is not None:
                server.gui.add_image(image, label=name)

    def _newest_validation(self) -> Optional[Path]:
        found = sorted((self.path / "validation").glob("step-*.png"))
        return found[-1] if found else None

    def _load(self, server: Any, checkpoint: Path) -> None:
        from text3d.scene.rundir import load_system

        _, system, _ = load_system(self.path, checkpoint)
        with self.lock:
            self.system.load_state_dict(system.state_dict(), strict=False)
        if hasattr(self.system.geometry, "num_gaussians"):
            self.splats.remove()
            self.splats = add_splats(server, "/scene/gaussians", system.geometry)
        elif hasattr(self, "requests"):
            for client in server.get_clients().values():
                self.requests._moved(client)


@register
class MultiviewFolder(ViewSource):
    """A ``text3d multiview`` set: each view as an image on its camera's frustum, and the grid."""

    @staticmethod
    def matches(path: Path) -> bool:
        return (path / "multiview.json").is_file()

    def show(self, server: Any, static: bool = False) -> None:
        meta = _read_json(self.path / "multiview.json")
        server.scene.set_up_direction("+z")
        for i, (name, cam) in enumerate(zip(meta.get("images", []), meta.get("cameras", []))):
            wxyz, position = camera_pose(np.asarray(cam["c2w"]))
            server.scene.add_camera_frustum(f"/views/{i:02d}", fov=math.radians(cam["fovy_deg"]),
                                            aspect=cam["width"] / cam["height"], scale=0.4, wxyz=wxyz,
                                            position=position, image=_image(self.path / name))
        server.gui.add_markdown(f"**multiview** `{self.path.name}`  \nprompt: *{meta.get('prompt', '')}*  \n"
                                f"mode {meta.get('mode')}, {meta.get('views')} views, seed {meta.get('seed')}")
        grid = _image(self.path / "grid.png")
        if grid is not None:
            server.gui.add_image(grid, label="views")


@register
class BatchFolder(ViewSource):
    """A batch: a gallery of its finished items (splats or exported meshes) on a grid, labelled with
    their prompts, and the contact sheet."""

    @staticmethod
    def matches(path: Path) -> bool:
        return (path / "batch.json").is_file()

    def show(self, server: Any, static: bool = False) -> None:
        from text3d.scene.rundir import load_system

        items = [it for it in _read_json(self.path / "batch.json").get("items", []) if it.get("status") == "done"]
        cols = max(1, math.ceil(math.sqrt(len(items))))
        server.scene.set_up_direction("+z")
        for k, item in enumerate(items):
            run, position = self.path / item["item"], (1.5 * (k % cols), -1.5 * (k // cols), 0.0)
            _, system, _ = load_system(run)
            if hasattr(system.geometry, "num_gaussians"):
                add_splats(server, f"/items/{item['item']}", system.geometry, position)
            elif (run / "export" / "mesh.glb").is_file():
                add_mesh_file(server, f"/items/{item['item']}", run / "export" / "mesh.glb", position)
            server.scene.add_label(f"/labels/{item['item']}", item.get("prompt", item["item"]),
                                   position=(position[0], position[1], 0.8))
        server.gui.add_markdown(f"**batch** `{self.path.name}`: {len(items)} finished item(s)")
        sheet = _image(self.path / "contact_sheet.png")
        if sheet is not None:
            server.gui.add_image(sheet, label="contact sheet")
