"""Old module paths of text3d 0.1, kept importable: each one names the module it moved to.

text3d 0.2 moved its flat modules into one package per stage (``text3d.config`` is now
``text3d.run.config``, ``text3d.cameras`` is ``text3d.scene.cameras``, ...; the table is
:data:`MOVED` and ``docs/changelog.md``). Importing an old path gives the new module itself
(the same object, so patches and ``isinstance`` checks agree) with a :class:`DeprecationWarning`;
the old paths go away in 0.3.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Dict, Optional

ModuleSpec = type(__spec__)
"""importlib's ModuleSpec, taken from this module so that ``import text3d`` stays light (importlib.abc
and importlib.util would add ~10 ms to every ``text3d`` command)."""

MOVED: Dict[str, str] = {
    "text3d.errors": "text3d.core.errors",
    "text3d.registry": "text3d.core.registry",
    "text3d.bounds": "text3d.core.bounds",
    "text3d.schedules": "text3d.core.schedules",
    "text3d.paths": "text3d.core.paths",
    "text3d.io": "text3d.core.io",
    "text3d.checkpoint": "text3d.core.checkpoint",
    "text3d.interrupt": "text3d.core.interrupt",
    "text3d.device": "text3d.core.device",
    "text3d.media": "text3d.core.media",
    "text3d.quiet": "text3d.core.quiet",
    "text3d.config_files": "text3d.core.config_files",
    "text3d.config_merge": "text3d.core.config_merge",
    "text3d.config": "text3d.run.config",
    "text3d.cameras": "text3d.scene.cameras",
    "text3d.geometry": "text3d.scene.geometry",
    "text3d.gaussians": "text3d.scene.gaussians",
    "text3d.gaussian_ply": "text3d.scene.gaussian_ply",
    "text3d.background": "text3d.scene.background",
    "text3d.rundir": "text3d.scene.rundir",
    "text3d.shapes": "text3d.prior.shapes",
    "text3d.prior_model": "text3d.prior.model",
    "text3d.prior_training": "text3d.prior.training",
    "text3d.prior_eval": "text3d.prior.evaluation",
    "text3d.scene_eval": "text3d.prior.scene_eval",
    "text3d.sdedit": "text3d.guidance.sdedit",
    "text3d.reference_camera": "text3d.guidance.reference_camera",
    "text3d.multiview_targets": "text3d.run.targets",
    "text3d.multiview_run": "text3d.multiview.pipeline",
    "text3d.edit_source": "text3d.edit.source",
    "text3d.edit_refine": "text3d.edit.refine",
    "text3d.edit_metrics": "text3d.edit.metrics",
    "text3d.clip_metric": "text3d.edit.clip_metric",
    "text3d.video_source": "text3d.video.source",
    "text3d.noise": "text3d.video.noise",
    "text3d.correspondence": "text3d.video.correspondence",
}
"""Old module path -> the module it moved to."""


class MovedModules:
    """A meta path finder and loader (the protocols of ``importlib.abc``): finds the old paths of
    :data:`MOVED` and loads each as the module it moved to."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[Any]:
        if fullname not in MOVED:
            return None
        return ModuleSpec(fullname, self)

    def create_module(self, spec: Any) -> Any:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new} in text3d 0.2; import it from there (the old path goes in 0.3)",
                      DeprecationWarning, stacklevel=2)
        __import__(new)
        return sys.modules[new]

    def exec_module(self, module: Any) -> None:
        """The module it moved to is already executed."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``import text3d`` does it)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
