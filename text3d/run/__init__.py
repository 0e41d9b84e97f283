"""``text3d run``: text to 3D. A config (:mod:`.config`) builds the scene, prior and guidance, a
:class:`Run` (:mod:`.trainer`) optimises it with score distillation and writes its folder;
:mod:`.targets` adds multi-view images as reconstruction targets.

May import: ``text3d.core``, ``renderers``, ``scene``, ``prior``, ``guidance``, ``export``.

Public API::

    from text3d.run import open_run
    run = open_run("configs/quickstart.yaml", ["prompt=a blue cone", "steps=200"])
    run.fit()
"""

from text3d.scene.system import NeRFSystem

from .config import RUN_SCHEMA, Config, load_config
from .trainer import (MODEL_SECTIONS, Run, build_optimizer, load_run_config, new_run_dir, open_run, slugify,
                      state_dict_difference, versions)

__all__ = ["MODEL_SECTIONS", "RUN_SCHEMA", "Config", "NeRFSystem", "Run", "build_optimizer", "load_config", "load_run_config",
           "new_run_dir", "open_run", "slugify", "state_dict_difference", "versions"]
