"""``text3d export RUN_DIR [key=value ...]``: a textured mesh from a trained run or a 3DGS ``.ply``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import progress_bars
from .common import Verb, register

FLAGS = {"format": "formats", "resolution": "resolution", "faces": "faces", "texture_size": "texture_size",
         "level": "level", "smooth": "smooth_iterations", "min_component_ratio": "min_component_ratio",
         "size": "size", "pore_size": "pore_size"}
"""Option (argparse dest) -> export setting; ``key=value`` overrides name the settings directly."""


@register
class ExportVerb(Verb):
    name = "export"
    help = "extract a textured mesh (GLB / OBJ / PLY) from a trained run"
    description = ("Extract a mesh from a run's last checkpoint (NeRF or Gaussians) or from a 3DGS .ply: "
                   "density grid, marching cubes, floater removal, decimation, UV unwrap and albedo bake; "
                   "writes RUN_DIR/export/ (or --out; beside a .ply: export/) and prints the paths it wrote, "
                   "the export.json manifest last.")
    epilog = ("examples:\n"
              "  text3d export outputs/quickstart/a_red_cube@20260101-120000 --format glb,obj\n"
              "  text3d export RUN_DIR faces=100000 texture_size=2048 resolution=384\n"
              "settings (as key=value or as the options below): formats resolution level faces texture_size\n"
              "  smooth_iterations min_component_ratio size pore_size")
    items_metavar = "RUN_DIR [key=value ...]"
    items_help = "a run folder (the last line 'text3d run' printed) or a 3DGS .ply file, then export settings"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from text3d.export.config import EXPORT_COMMAND_DEFAULTS as D, EXPORT_FORMATS

        add = parser.add_argument
        add("--format", action="append", metavar="FMT",
            help=f"{', '.join(EXPORT_FORMATS)}; repeat or comma-separate for several (default: glb)")
        add("--resolution", type=int, help=f"density grid cells per axis (default: {D['resolution']})")
        add("--faces", type=int, help=f"decimate to this many faces; 0 = keep all (default: {D['faces']})")
        add("--texture-size", type=int, help=f"albedo texture side; 0 = vertex colours only (default: {D['texture_size']})")
        add("--level", type=float, help="density iso-level (default: where rays get half opaque)")
        add("--smooth", type=int, help="Taubin smoothing rounds; 0 = none (default: 10)")
        add("--min-component-ratio", type=float,
            help="drop pieces with fewer faces than this fraction of the largest (default: 0.05)")
        add("--size", type=float, help="largest side in metres; 0 = world units (default: 1)")
        add("--pore-size", type=float,
            help="close openings narrower than this (world units) and fill what no line of sight reaches behind "
                 "them; 0 = raw iso-surface (default: two pixels of the run's training renders for a NeRF, one for "
                 "Gaussians)")
        add("--out", default=None, help="output folder (default: RUN_DIR/export)")

    def config(self, args: argparse.Namespace) -> Any:
        from text3d.export.config import load_export_command_config

        _, overrides = self._target(args)
        flags = {FLAGS[dest]: getattr(args, dest) for dest in FLAGS if getattr(args, dest) is not None}
        if "formats" in flags:
            flags["formats"] = [f.strip() for item in flags["formats"] for f in item.split(",") if f.strip()]
        return load_export_command_config(flags, overrides)

    def run(self, args: argparse.Namespace) -> int:
        from text3d.export import export_run_dir

        target, _ = self._target(args)
        settings = self.config(args)
        with progress_bars(not args.no_progress) as bars:
            stages = []

            def progress(stage: str) -> None:
                stages.append(stage)
                bars.update("export", len(stages), None, unit="stage", stage=stage)

            result = export_run_dir(target, settings, out_dir=args.out, progress=progress)
        print(f"iso-level {result.level:.4g} ({result.level_source}), {result.vertices} vertices, "
              f"{result.faces} faces", file=sys.stderr)
        for path in [*result.paths, result.manifest]:
            print(path)
        return 0

    @staticmethod
    def _target(args: argparse.Namespace):
        from text3d.core.errors import Text3DError

        items = list(args.items)
        if not items or "=" in items[0]:
            raise Text3DError("export: give the run folder first: text3d export RUN_DIR [key=value ...]")
        return items[0], items[1:]
