"""``text3d edit CONFIG source=... target_prompt=... [key=value ...]``: edit a scene (or ``resume=EDIT_DIR``)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import TrainingVerb, fit_and_print, register

EPILOG = """\
examples:
  text3d edit configs/edit-quickstart.yaml source=outputs/quickstart/a_red_cube@... target_prompt="a blue cube"
  text3d edit configs/edit-quickstart-gaussians.yaml source=scene.ply source_prompt="a red cube" target_prompt="a red sphere"
  text3d edit configs/edit-pds.yaml source=RUN_DIR target_prompt="a DSLR photo of a golden hamburger" guidance.type=dds
  text3d edit resume=outputs/<name>/<tag>@<timestamp> [steps=N]

  source: a run or edit folder (NeRF or Gaussians) or a 3DGS .ply; source_prompt defaults to the
  source run's prompt. Overrides, errors and outputs follow 'text3d run'; the edit folder also holds
  before_after.mp4/.gif (source | edit) and metrics.json with identity and target figures.
"""


@register
class EditVerb(TrainingVerb):
    name = "edit"
    help = "edit a 3D scene towards a target prompt (PDS, DDS or SDS-edit)"
    description = ("Edit a trained scene (run folder or 3DGS .ply) towards target_prompt while keeping its "
                   "identity: Posterior Distillation Sampling by default (guidance.type: pds, dds, sds-edit).")
    epilog = EPILOG
    items_metavar = "CONFIG source=SOURCE target_prompt=... [key.path=value ...]"
    items_help = "an edit preset (configs/edit-*.yaml) followed by the source, the target prompt and overrides"

    def schema(self) -> Any:
        from text3d.edit.config import EDIT_SCHEMA

        return EDIT_SCHEMA

    def config(self, args: argparse.Namespace) -> Any:
        from text3d.edit import load_edit_run_config

        return load_edit_run_config(*self.items(args))[0]

    def run(self, args: argparse.Namespace) -> int:
        from text3d.edit import open_edit

        return fit_and_print(open_edit(*self.items(args)), args.no_progress, verb=self.name)
