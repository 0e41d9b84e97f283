"""Sample competence of the shapes prior, judged against the analytic renderer.

Samples every (shape, colour) pair of the prior's recipe at random cameras (the training camera
model, elevations capped at 60 degrees) with DDIM and classifier-free guidance, then judges each
sample (:mod:`text3d.prior.evaluation`): prompted colour by a hue vote of its saturated object pixels,
prompted shape by the nearest true silhouette among all shapes at that camera, clean white
background. Held-out pairs (never seen in training) are reported separately.

Targets of issue 3: >= 90 % colour, >= 80 % shape, clean backgrounds, for a documented sampler. The
documented sampler is the default: 50 ancestral DDIM steps (eta 1), CFG 2. Deterministic DDIM (--eta 0)
drifts off the data on this small model: speckled backgrounds and bloated shapes.

    python benchmarks/eval_prior_samples.py [--prior FOLDER] [--per-pair 4] [--steps 50] [--cfg 2]
        [--eta 1] [--seed 0] [--json report.json] [--grid samples.png]
    python benchmarks/eval_prior_samples.py --pose-probe "orange pyramid" "red cube" "green torus"
    python benchmarks/eval_prior_samples.py --outline-profile "orange pyramid" [--run RUN_DIR ...]
        [--elevations 0 15 30] [--offsets 0 15 30 45] [--copies 8]

``--pose-probe`` asks instead whether the samples of a pair have the wrong shape or only the wrong
pose: 32 samples (``--probe-samples``) at random cameras, each compared with the true render at its
own camera and at cameras turned up to 30 degrees in azimuth and 20 in elevation
(:func:`text3d.prior.evaluation.nearest_pose`); ~1 min per pair on 2 cores.

``--outline-profile`` asks whether a run draws what the prior draws (:mod:`text3d.outline_profile`): at
the prior's resolution, from azimuths 0-45 degrees off face-on (every quarter turn, ``--copies`` times
each) at a few elevations, it prints for the true shape, the prior's samples and each ``--run`` (its
renders at its finest training resolution, box-filtered to the prior's as in training) the outline's
area over the true one's at the same cameras, its first and last row, and its widest row; ``--grid``
writes one view of each (a row per elevation and source, a column per offset, 4x enlarged). ~1 min
per elevation on 2 cores.

Takes ~4 min on the 2-core CPU at 4 samples per pair (224 samples), ~2 min at --per-pair 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

import torch

from text3d.core.errors import Text3DError
from text3d.guidance.pixel_prior import BUILTIN
from outline_profile import outline_stats, outlines, prior_views, run_views, symmetric_cameras, true_views
from text3d.prior.evaluation import (area_ratio, evaluate_prior, evaluation_cameras, image_grid, nearest_pose, object_mask,
                               prior_camera_model)
from text3d.prior.model import DEFAULT_SAMPLER, load_prior, sample
from text3d.run import open_run
from text3d.prior.shapes import COLOUR_NAMES, SHAPES, parse_prompt


def pose_probe(prior, pair: str, n: int, seed: int, steps: int, cfg: float, eta: float) -> None:
    """Print, for ``n`` samples of ``"<colour> <shape>"``, the area ratio, the IoU at the asked camera and
    at the best nearby one, and how far that camera is (see the module docstring)."""
    colour, shape = pair.split()
    gen = torch.Generator().manual_seed(seed)
    cams = evaluation_cameras(n, gen, **prior_camera_model(prior))
    x = sample(prior, [f"a {colour} {shape}"] * n, cams, steps=steps, cfg_scale=cfg, generator=gen, eta=eta).cpu()
    mask = object_mask(x)
    r = nearest_pose(mask, cams, shape, colour)
    area = area_ratio(mask, cams, [shape] * n, [colour] * n)
    print(f"{pair:16s} area {area.mean():.3f}  IoU at the asked camera {r['iou'].mean():.3f}  at the best nearby "
          f"{r['best_iou'].mean():.3f}  |azimuth off| {r['azimuth_offset'].abs().mean():.1f} deg  "
          f"|elevation off| {r['elevation_offset'].abs().mean():.1f} deg")


def outline_profile(prior, pair: str, runs: list, elevations: list, offsets: list, copies: int, seed: int,
                    sampler: dict) -> torch.Tensor:
    """Print the outline figures of the true shape, the prior's samples and each run (module docstring);
    returns one view of each (source, elevation, offset), ``[elevations * sources * offsets, 3, H, W]``."""
    colour, shape = pair.split()
    model = prior_camera_model(prior)
    sources = {"true": None, "prior": None, **{f"run {i + 1}": run for i, run in enumerate(runs)}}
    for i, run in enumerate(runs):
        print(f"run {i + 1}: {run.run_dir} ({run.cfg.geometry.type})")
    header = "".join(f"{f'{o:g} deg off face-on':>24s}" for o in offsets)
    shown = []
    for elevation in elevations:
        print(f"{pair}, elevation {elevation:g}: outline area / true, first-last row, widest row "
              f"({model['resolution']} px)\n{'':8s}{header}")
        stats, views = {name: [] for name in sources}, {name: [] for name in sources}
        for k, offset in enumerate(offsets):
            cams = symmetric_cameras(offset, elevation, copies, model["resolution"], distance=model["distance"],
                                     fovy=model["fovy"])
            gen = torch.Generator().manual_seed(seed + k)
            for name, run in sources.items():
                images = (true_views(shape, colour, cams) if name == "true" else
                          prior_views(prior, f"a {colour} {shape}", cams, gen, **sampler) if name == "prior" else
                          run_views(run, cams))
                stats[name].append(outline_stats(outlines(images)))
                views[name].append(images[0])
        for name, per_offset in stats.items():
            cells = [f"{s['area'].mean() / t['area'].mean():.3f} {s['top'].mean():4.1f}-{s['bottom'].mean():4.1f} "
                     f"{s['widest'].mean():4.1f}" for s, t in zip(per_offset, stats["true"])]
            print(f"{name:8s}" + "".join(f"{c:>24s}" for c in cells), flush=True)
            shown.extend(views[name])
    return torch.stack(shown)


def parse_pair(text: str, flag: str) -> Optional[Tuple[str, str]]:
    """``(shape, colour)`` of a ``"<colour> <shape>"`` argument, or None after a one-line error."""
    parsed = parse_prompt(text)
    if parsed is None:
        print(f"error: {flag}: {text!r} is not '<colour> <shape>', e.g. 'orange pyramid' "
              f"(shapes: {', '.join(SHAPES)}; colours: {', '.join(COLOUR_NAMES)})", file=sys.stderr)
    return parsed


def outline_profile_command(prior, args) -> int:
    """``--outline-profile``: check the pair and the run folders (a one-line error, exit 2), then print."""
    parsed = parse_pair(args.outline_profile, "--outline-profile")
    if parsed is None:
        return 2
    try:
        runs = [open_run(None, [f"resume={d}"], prior=None) for d in args.run]
    except Text3DError as err:
        print(f"error: --run: {err}", file=sys.stderr)
        return 2
    shape, colour = parsed
    sampler = {"steps": args.steps, "cfg_scale": args.cfg, "eta": args.eta}
    shown = outline_profile(prior, f"{colour} {shape}", runs, args.elevations, args.offsets, args.copies, args.seed,
                            sampler)
    if args.grid:  # a row per (elevation, source), a column per offset; 4x nearest-neighbour
        write_grid(args.grid, shown.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3), len(args.offsets))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """This script's options (the docs test parses the documented command lines with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default=None,
                        help="prior folder (default, or 'builtin': the one shipped in the package)")
    parser.add_argument("--per-pair", type=int, default=4, help="samples per (shape, colour) pair")
    parser.add_argument("--steps", type=int, default=DEFAULT_SAMPLER["steps"], help="DDIM steps")
    parser.add_argument("--cfg", type=float, default=DEFAULT_SAMPLER["cfg_scale"],
                        help="classifier-free guidance scale (diffusers convention)")
    parser.add_argument("--eta", type=float, default=DEFAULT_SAMPLER["eta"],
                        help="DDIM stochasticity (1 = ancestral, 0 = deterministic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    parser.add_argument("--grid", type=Path, default=None,
                        help="write all samples as one PNG (a row per pair; with --outline-profile, one view per "
                             "elevation, source and offset)")
    parser.add_argument("--pose-probe", nargs="+", default=None, metavar="PAIR",
                        help='only probe shape against pose for these "<colour> <shape>" pairs')
    parser.add_argument("--probe-samples", type=int, default=32)
    parser.add_argument("--outline-profile", default=None, metavar="PAIR",
                        help='only compare outlines of the true "<colour> <shape>", the prior and --run folders')
    parser.add_argument("--run", nargs="+", default=[], metavar="RUN_DIR", help="run folders (--outline-profile)")
    parser.add_argument("--elevations", nargs="+", type=float, default=[0.0, 15.0, 30.0])
    parser.add_argument("--offsets", nargs="+", type=float, default=[0.0, 15.0, 30.0, 45.0],
                        help="azimuths off face-on, degrees")
    parser.add_argument("--copies", type=int, default=8, help="views per quarter turn and offset")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    try:
        prior = load_prior(None if args.prior in (None, BUILTIN) else args.prior,
                           "cuda" if torch.cuda.is_available() else "cpu")
    except Text3DError as err:
        print(f"error: --prior: {err}", file=sys.stderr)
        return 2
    if args.pose_probe:
        pairs = [parse_pair(pair, "--pose-probe") for pair in args.pose_probe]
        if None in pairs:
            return 2
        for shape, colour in pairs:
            pose_probe(prior, f"{colour} {shape}", args.probe_samples, args.seed, args.steps, args.cfg, args.eta)
        return 0
    if args.outline_profile:
        return outline_profile_command(prior, args)
    t0 = time.perf_counter()
    report, images = evaluate_prior(prior, samples_per_pair=args.per_pair, steps=args.steps, cfg_scale=args.cfg,
                                    seed=args.seed, batch_size=args.batch_size, eta=args.eta)
    report["prior"] = {"folder": str(args.prior or "builtin"), "version": prior.meta.get("version"),
                       "iterations": prior.meta.get("iterations")}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    for name in ("all", "trained_pairs", "held_out_pairs"):
        r = report[name]
        if r:
            print(f"{name:15s} n={r['n']:4d}  colour {r['colour']:6.1%}  shape {r['shape']:6.1%}  "
                  f"clean background {r['background']:6.1%}  mean IoU {r['mean_iou']:.3f}")
    print("silhouette area / prompted shape's (object masks of sample and true render): " + ", ".join(
        f"{shape} {r['mean_area']:.3f}" for shape, r in report["per_shape"].items()))
    worst = sorted(report["per_pair"].items(), key=lambda kv: kv[1]["shape"] + kv[1]["colour"])[:5]
    print("weakest pairs:", ", ".join(f"{k} (shape {v['shape']:.0%}, colour {v['colour']:.0%})" for k, v in worst))
    print(f"sampler: DDIM {args.steps} steps, CFG {args.cfg}, eta {args.eta}; {report['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.grid:
        write_grid(args.grid, images, args.per_pair)
    return 0


def write_grid(path: Path, images: torch.Tensor, columns: int) -> None:
    """Tile ``[N, 3, H, W]`` images in [0, 1] into one PNG at ``path``."""
    import imageio.v2 as imageio

    grid = image_grid(images, columns)
    imageio.imwrite(path, (grid.numpy() * 255).round().astype("uint8"))


if __name__ == "__main__":
    sys.exit(main())
