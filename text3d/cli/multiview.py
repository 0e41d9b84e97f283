"""``text3d multiview CONFIG [key=value ...]``: N consistent views of one prompt."""

from __future__ import annotations

import argparse
from typing import Any

from .common import progress_bars
from .common import Verb, register


@register
class MultiviewVerb(Verb):
    name = "multiview"
    help = "sample N consistent views of one prompt (shared / full attention, grids)"
    description = ("Sample N views of one object from a diffusion prior with the views sharing self-attention "
                   "(StyleAligned), attending to each other (full), tiled into one canvas (grid) or independent. "
                   "Writes view_00.png ..., grid.png and multiview.json (cameras, prompts, settings, timings) "
                   "and prints the output folder last.")
    epilog = ("examples:\n"
              "  text3d multiview configs/multiview-quickstart.yaml prompt=\"a cube\" views=8 mode=shared seed=0\n"
              "  text3d multiview configs/multiview-sd.yaml prompt=\"a ceramic teapot\" views=4 mode=full\n"
              "keys: prompt views mode (independent|shared|full|grid) grid (RxC) noise (independent|shared) seed\n"
              "      azimuths elevation resolution sampler.steps sampler.cfg_scale attention.shared_score_shift ...")
    items_help = "a YAML preset (configs/multiview-*.yaml) followed by overrides"

    def schema(self) -> Any:
        from text3d.multiview.config import MULTIVIEW_SCHEMA

        return MULTIVIEW_SCHEMA

    def config(self, args: argparse.Namespace) -> Any:
        from text3d.multiview import load_multiview_config

        return load_multiview_config(*self.items(args))

    def run(self, args: argparse.Namespace) -> int:
        from text3d.multiview import run_multiview

        with progress_bars(not args.no_progress) as bars:
            out = run_multiview(*self.items(args), progress=lambda step, total: bars.update("multiview", step, total))
        print(out)
        return 0
