"""``text3d run CONFIG [key=value ...]``: text to 3D from a preset (or ``resume=RUN_DIR``)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import TrainingVerb, fit_and_print, register

EPILOG = """\
overrides:
  Any config key can be set on the command line as key.path=value (threestudio style):
    text3d run configs/quickstart.yaml prompt="a blue cone" steps=500 seed=3
    text3d run configs/dreamfusion-sd.yaml guidance.guidance_scale=50 cameras.width=128
  Short top-level keys: prompt, negative_prompt, seed, steps, name, tag, device, output_dir.
  A typo, a wrong type or an unknown component type stops the run before any model loads.

resume:
  text3d run resume=outputs/<name>/<tag>@<timestamp> [steps=N]
  continues from the run's last checkpoint with the config saved in that folder.

outputs:
  outputs/<name>/<tag>@<timestamp>/  config.yaml  ckpts/  validation/  turntable.mp4  turntable.gif  export/  metrics.json
  The last line printed on success is that folder; 'text3d export FOLDER' re-exports its mesh.
"""


@register
class RunVerb(TrainingVerb):
    name = "run"
    help = "optimise a 3D scene from a config preset"
    description = "Optimise a 3D scene from a YAML config preset and key.path=value overrides."
    epilog = EPILOG
    items_help = "a YAML preset (configs/*.yaml) followed by overrides, or resume=RUN_DIR"

    def schema(self) -> Any:
        from text3d.run.config import RUN_SCHEMA

        return RUN_SCHEMA

    def config(self, args: argparse.Namespace) -> Any:
        from text3d.run import load_run_config

        return load_run_config(*self.items(args))

    def run(self, args: argparse.Namespace) -> int:
        from text3d.run import open_run

        return fit_and_print(open_run(*self.items(args)), args.no_progress, verb=self.name)
