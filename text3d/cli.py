"""The ``text3d`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional, Sequence

from .errors import Text3DError

RUN_EPILOG = """\
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


class OneLineParser(argparse.ArgumentParser):
    """argparse with the project's error convention: one ``error:`` line (no usage block), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _split_config_and_overrides(items: Sequence[str]) -> tuple[Optional[str], List[str]]:
    if items and "=" not in items[0]:
        return items[0], list(items[1:])
    return None, list(items)


def cmd_run(args: argparse.Namespace) -> int:
    from .run import open_run

    config_path, overrides = _split_config_and_overrides(args.items)
    if args.print_config:
        from .config import load_config, to_yaml

        if config_path is None:
            raise Text3DError("--print-config needs a config file")
        print(to_yaml(load_config(config_path, overrides)), end="")
        return 0
    run = open_run(config_path, overrides)
    return _fit_and_print(run, args.no_progress, verb="run")


def _fit_and_print(run, no_progress: bool, verb: str) -> int:
    """Train ``run`` with a progress bar; print its folder last (0), or the resume command on Ctrl-C (130)."""
    progress = _progress_bar(run) if not no_progress else None
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            run.fit(progress=progress)
    except KeyboardInterrupt:
        print(f"interrupted at step {run.step}; continue with: text3d {verb} resume={run.run_dir}", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()  # type: ignore[attr-defined]
    print(run.run_dir)
    return 0


def _progress_bar(run):
    from tqdm.auto import tqdm

    bar = tqdm(total=run.cfg.steps, initial=run.step, desc=run.cfg.name, unit="step", dynamic_ncols=True)

    def update(step: int, losses: dict) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{losses['loss']:.4g}", refresh=False)

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def cmd_train_prior(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .prior_model import BUILTIN_PRIOR_DIR
    from .prior_training import load_train_config, train_prior

    config_path, overrides = _split_config_and_overrides(args.items)
    cfg = load_train_config(config_path, overrides)
    out = args.out or BUILTIN_PRIOR_DIR
    bars = []  # made at the first iteration, so a refused --out prints no empty bar

    def progress(step: int, total: int, figures: dict) -> None:
        if args.no_progress:
            return
        if not bars:
            bars.append(tqdm(total=total, desc="train-prior", unit="it", dynamic_ncols=True))
        bars[0].update(step - bars[0].n)
        bars[0].set_postfix(loss=f"{figures['loss']:.4f}", lr=f"{figures['lr']:.1e}", refresh=False)

    try:
        with logging_redirect_tqdm():
            folder = train_prior(cfg, out, progress=progress, work_dir=args.work_dir, replace=args.replace)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue from the last state", file=sys.stderr)
        return 130
    finally:
        for bar in bars:
            bar.close()
    print(folder)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .config import ExportConfig, check_export_config
    from .export import export_run_dir

    formats = [f.strip() for item in (args.format or ["glb"]) for f in item.split(",") if f.strip()]
    settings = ExportConfig(formats=formats, resolution=args.resolution, level=args.level, faces=args.faces,
                            texture_size=args.texture_size, smooth_iterations=args.smooth,
                            min_component_ratio=args.min_component_ratio, size=args.size,
                            pore_size=args.pore_size)
    options = {"formats": "--format", "smooth_iterations": "--smooth"}  # config field -> option
    check_export_config(settings, key=lambda name: options.get(name, "--" + name.replace("_", "-")))
    result = export_run_dir(args.run_dir, settings, out_dir=args.out)
    print(f"iso-level {result.level:.4g} ({result.level_source}), {result.vertices} vertices, "
          f"{result.faces} faces", file=sys.stderr)
    for path in [*result.paths, result.manifest]:
        print(path)
    return 0


def _add_export_parser(sub) -> None:
    from .config import EXPORT_FORMATS

    export = sub.add_parser(
        "export", help="extract a textured mesh (GLB / OBJ / PLY) from a trained run",
        description="Extract a mesh from a run's last checkpoint (NeRF or Gaussians) or from a 3DGS .ply: "
                    "density grid, marching cubes, floater removal, decimation, UV unwrap and albedo bake; "
                    "writes RUN_DIR/export/ (or --out; beside a .ply: export/) and prints the paths it wrote, "
                    "the export.json manifest last.",
        epilog="example: text3d export outputs/quickstart/a_red_cube@20260101-120000 --format glb,obj")
    export.add_argument("run_dir", metavar="RUN_DIR",
                        help="a run folder (the last line 'text3d run' printed), or a 3DGS .ply file")
    export.add_argument("--format", action="append", metavar="FMT",
                        help=f"{', '.join(EXPORT_FORMATS)}; repeat or comma-separate for several (default: glb)")
    export.add_argument("--resolution", type=int, default=256, help="density grid cells per axis (default: 256)")
    export.add_argument("--faces", type=int, default=50000, help="decimate to this many faces; 0 = keep all (default: 50000)")
    export.add_argument("--texture-size", type=int, default=1024, help="albedo texture side; 0 = vertex colours only (default: 1024)")
    export.add_argument("--level", type=float, default=None, help="density iso-level (default: where rays get half opaque)")
    export.add_argument("--smooth", type=int, default=10, help="Taubin smoothing rounds; 0 = none (default: 10)")
    export.add_argument("--min-component-ratio", type=float, default=0.05,
                        help="drop pieces with fewer faces than this fraction of the largest (default: 0.05)")
    export.add_argument("--size", type=float, default=1.0, help="largest side in metres; 0 = world units (default: 1)")
    export.add_argument("--pore-size", type=float, default=None,
                        help="close openings narrower than this (world units) and fill what no line of sight "
                             "reaches behind them; 0 = raw iso-surface (default: two pixels of the run's training "
                             "renders for a NeRF, one for Gaussians)")
    export.add_argument("--out", default=None, help="output folder (default: RUN_DIR/export)")
    export.set_defaults(func=cmd_export)


def cmd_multiview(args: argparse.Namespace) -> int:
    from .multiview_run import run_multiview

    config_path, overrides = _split_config_and_overrides(args.items)
    print(run_multiview(config_path, overrides))
    return 0


def _add_multiview_parser(sub) -> None:
    mv = sub.add_parser(
        "multiview", help="sample N consistent views of one prompt (shared / full attention, grids)",
        description="Sample N views of one object from a diffusion prior with the views sharing self-attention "
                    "(StyleAligned), attending to each other (full), tiled into one canvas (grid) or independent. "
                    "Writes view_00.png ..., grid.png and multiview.json (cameras, prompts, settings, timings) "
                    "and prints the output folder last.",
        epilog="examples:\n"
               "  text3d multiview configs/multiview-quickstart.yaml prompt=\"a cube\" views=8 mode=shared seed=0\n"
               "  text3d multiview configs/multiview-sd.yaml prompt=\"a ceramic teapot\" views=4 mode=full\n"
               "keys: prompt views mode (independent|shared|full|grid) grid (RxC) noise (independent|shared) seed\n"
               "      azimuths elevation resolution sampler.steps sampler.cfg_scale attention.shared_score_shift ...",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    mv.add_argument("items", nargs="*", metavar="CONFIG [key=value ...]",
                    help="a YAML preset (configs/multiview-*.yaml) followed by overrides")
    mv.set_defaults(func=cmd_multiview)


EDIT_EPILOG = """\
examples:
  text3d edit configs/edit-quickstart.yaml source=outputs/quickstart/a_red_cube@... target_prompt="a blue cube"
  text3d edit configs/edit-quickstart-gaussians.yaml source=scene.ply source_prompt="a red cube" target_prompt="a red sphere"
  text3d edit configs/edit-pds.yaml source=RUN_DIR target_prompt="a DSLR photo of a golden hamburger" guidance.type=dds
  text3d edit resume=outputs/<name>/<tag>@<timestamp> [steps=N]

  source: a run or edit folder (NeRF or Gaussians) or a 3DGS .ply; source_prompt defaults to the
  source run's prompt. Overrides, errors and outputs follow 'text3d run'; the edit folder also holds
  before_after.mp4/.gif (source | edit) and metrics.json with identity and target figures.
"""


def cmd_edit(args: argparse.Namespace) -> int:
    from .edit import open_edit

    config_path, overrides = _split_config_and_overrides(args.items)
    run = open_edit(config_path, overrides)
    return _fit_and_print(run, args.no_progress, verb="edit")


def _add_edit_parser(sub) -> None:
    edit = sub.add_parser(
        "edit", help="edit a 3D scene towards a target prompt (PDS, DDS or SDS-edit)",
        description="Edit a trained scene (run folder or 3DGS .ply) towards target_prompt while keeping its "
                    "identity: Posterior Distillation Sampling by default (guidance.type: pds, dds, sds-edit).",
        epilog=EDIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    edit.add_argument("items", nargs="*", metavar="CONFIG source=SOURCE target_prompt=... [key.path=value ...]",
                      help="an edit preset (configs/edit-*.yaml) followed by the source, the target prompt and overrides")
    edit.add_argument("--no-progress", action="store_true", help="no progress bar")
    edit.set_defaults(func=cmd_edit)


BATCH_EPILOG = """\
PROMPTS:
  prompts.txt    one prompt per line (# comments and blank lines skipped)
  items.jsonl    one JSON object of overrides per line: {"prompt": "a red cube", "seed": 3}
  items.yaml     a list of prompts or override mappings
  In an override set, "item" names the item's folder and "config" picks another preset.

examples:
  text3d batch configs/quickstart.yaml prompts.txt steps=200 --cpus-per-run 1
  text3d batch configs/dreamfusion-sd.yaml prompts.txt --address auto --gpus-per-run 1
  text3d batch --resume outputs/quickstart/batch@20260101-120000 [steps=800]

outputs:
  outputs/<name>/batch@<timestamp>/  batch.json  batch.csv  contact_sheet.png  <item>/ (a run folder each)
  The last line printed is that folder. Exit status: 0 all done, 1 some item failed, 2 bad input,
  130 interrupted (resumable).
"""


def _add_batch_parser(sub) -> None:
    def cmd_batch(args: argparse.Namespace) -> int:
        from .batch.command import cmd_batch

        return cmd_batch(args)

    batch = sub.add_parser(
        "batch", help="run many prompts (or override sets) as separate runs, scheduled by Ray",
        description="Run every item of a PROMPTS file as an ordinary run inside one batch directory, scheduled by "
                    "Ray on this machine or a cluster; failed runs are retried from their last checkpoint, and "
                    "an interrupted batch continues with --resume.",
        epilog=BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("items", nargs="*", metavar="CONFIG PROMPTS [key.path=value ...]",
                       help="a YAML preset, the prompts file, then overrides for every item")
    batch.add_argument("--address", default=None,
                       help="join a running Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a local instance)")
    batch.add_argument("--gpus-per-run", type=float, default=None, help="GPUs per run (default: 0)")
    batch.add_argument("--cpus-per-run", type=float, default=None, help="CPU cores per run (default: 1)")
    batch.add_argument("--max-retries", type=int, default=None,
                       help="retries of a failed run from its last checkpoint (default: 2)")
    batch.add_argument("--resume", default=None, metavar="BATCH_DIR",
                       help="continue a batch: skip finished runs, continue the others from their checkpoints")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.set_defaults(func=cmd_batch)


VIDEO_EPILOG = """\
examples:
  text3d video configs/video-quickstart.yaml source=outputs/quickstart/a_red_cube@20260101-120000 prompt="a blue cube"
  text3d video configs/video-quickstart.yaml source=clip.mp4 prompt="a red cube" noise=iid
  Keys: source, prompt, noise (iid|shared|mixed|progressive|warped), alpha, warp (nearest|integral|bilinear),
  strength, steps, seed, frames, resolution, flow_preset, attention, prior.*; see text3d/video.py.

outputs:
  outputs/video/<tag>@<time>/  frames/  video.mp4  video.gif  side_by_side.mp4  metrics.json  config.yaml
  The last line printed is that folder.
"""


def cmd_video(args: argparse.Namespace) -> int:
    from .video import load_video_config, run_video

    config_path, overrides = _split_config_and_overrides(args.items)
    cfg = load_video_config(config_path, overrides)
    bars: dict = {}

    def progress(label: str, step: int, total: int) -> None:
        if args.no_progress:
            return
        from tqdm.auto import tqdm

        bar = bars.get(label) or bars.setdefault(label, tqdm(total=total, desc=f"video ({label} noise)", unit="step",
                                                              dynamic_ncols=True))
        bar.update(step - bar.n)

    try:
        out = run_video(cfg, progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    print(out)
    return 0


def _add_video_parser(sub) -> None:
    video = sub.add_parser(
        "video", help="restyle a run's turntable or a video with SDEdit, the noise following correspondences",
        description="SDEdit every frame of a run's turntable (correspondences from rendered depth and cameras) or "
                    "of a video file (DIS optical flow) with correspondence-guided noise, and the same with "
                    "i.i.d. noise for comparison; measures warp error and colour flips.",
        epilog=VIDEO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    video.add_argument("items", nargs="*", metavar="CONFIG [key=value ...]",
                       help="a YAML preset (configs/video-*.yaml) followed by overrides")
    video.add_argument("--no-progress", action="store_true", help="no progress bar")
    video.set_defaults(func=cmd_video)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="text3d",
        description="Text to 3D with a frozen diffusion prior (SDS on a NeRF), on CPU or GPU.",
        epilog="Start with: text3d run configs/quickstart.yaml   (see 'text3d run --help')",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    run = sub.add_parser(
        "run", help="optimise a 3D scene from a config preset",
        description="Optimise a 3D scene from a YAML config preset and key.path=value overrides.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("items", nargs="*", metavar="CONFIG [key.path=value ...]",
                     help="a YAML preset (configs/*.yaml) followed by overrides")
    run.add_argument("--print-config", action="store_true",
                     help="validate the config (no model loads), print it resolved, and exit")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    train = sub.add_parser(
        "train-prior", help="train the embedded shapes prior from scratch (CPU or GPU)",
        description="Train the embedded shapes prior (a small pixel-space diffusion model of primitives) "
                    "from a recipe such as configs/train-prior.yaml. A stopped run continues from its work "
                    "folder when started again with the same recipe.",
        epilog="example: text3d train-prior configs/train-prior.yaml iterations=6000 --out /tmp/my-prior")
    train.add_argument("items", nargs="*", metavar="[CONFIG] [key.path=value ...]",
                       help="a recipe YAML (default: the built-in recipe) followed by overrides")
    train.add_argument("--out", default=None, help="prior folder to write (default: the package's built-in prior)")
    train.add_argument("--replace", action="store_true",
                       help="overwrite --out if it holds an earlier prior (atomically); any other content is never touched")
    train.add_argument("--work-dir", default=None, help="resumable state folder (default: <out>.train)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train_prior)
    _add_export_parser(sub)
    _add_multiview_parser(sub)
    _add_edit_parser(sub)
    _add_batch_parser(sub)
    _add_video_parser(sub)
    return parser


def _quiet_libraries() -> None:
    """transformers/diffusers print import-time notices that are not about the user's run."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    # Overrides may come after options (``run cfg.yaml --no-progress steps=5``): argparse leaves
    # them over, and they join the positional items.
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or not hasattr(args, "items")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.items = list(args.items) + extra
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("text3d").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    _quiet_libraries()
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except Text3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before any work started (loading models): nothing to save
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
