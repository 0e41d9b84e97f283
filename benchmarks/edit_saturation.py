"""How saturated the colour edits of an edit matrix are, against from-scratch runs of the same colour.

The matrix's judge (:func:`text3d.edit.metrics.target_scores`) counts a pixel as coloured from
saturation 0.3, so an edit that lands on the right hue but dull passes it. This script reads the rows
``benchmarks/eval_edit.py --json`` wrote, renders each colour edit and each source in the views an edit's
``metrics.json`` uses by default (``edit.metric_views`` at ``edit.metric_resolution``, around the object
at the eval elevation), and prints the mean
saturation of the object's pixels (``target_scores``' ``saturation``) beside that of the matrix's
sources of the target colour: they are from-scratch runs of that colour, on other shapes.

    OMP_NUM_THREADS=1 python benchmarks/edit_saturation.py edits.json [--guidance pds] [--scene gaussians]

Prints one line per cell, then the median ratio edit / from-scratch and how many cells reach 0.9 of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List

import torch

RATIO_GOAL = 0.9
"""An edit counts as saturated when it reaches this share of the from-scratch saturation."""


@lru_cache(maxsize=None)
def saturation(run_dir: str, prompt: str) -> float:
    """Mean saturation of the object's pixels in the default metric views of a run or edit folder."""
    from text3d.edit.config import EditConfig
    from text3d.edit.metrics import target_scores
    from text3d.scene.cameras import turntable
    from text3d.scene.rundir import load_system

    cfg, system, _ = load_system(run_dir)
    c, e = cfg.cameras, EditConfig()
    cams = turntable(e.metric_views, c.eval_elevation, c.eval_distance, c.eval_fovy, e.metric_resolution,
                     e.metric_resolution)
    with torch.no_grad():
        out = system.render(cams, mode="albedo", train=False)
    rendered = [{k: out[k][i] for k in ("rgb", "opacity")} for i in range(len(cams))]
    return float(target_scores(prompt, rendered, cams)["saturation"])


def colour_rows(rows: List[Dict[str, Any]], guidance: str, scene: str) -> List[Dict[str, Any]]:
    """The colour cells of one guidance and scene kind that have an edit folder."""
    return [r for r in rows if r["kind"] == "colour" and r["guidance"] == guidance and r["scene"] == scene
            and r.get("edit_dir") and Path(r["edit_dir"]).is_dir()]


def source_of(row: Dict[str, Any]) -> str:
    """The source folder an edit was made from (its ``metrics.json`` records it)."""
    return str(json.loads((Path(row["edit_dir"]) / "metrics.json").read_text())["edit"]["source"]["path"])


def from_scratch(rows: List[Dict[str, Any]]) -> Dict[str, float]:
    """Mean saturation of the rows' sources by their colour (each source once)."""
    from text3d.prior.shapes import parse_prompt

    by_colour: Dict[str, List[float]] = {}
    for src, prompt in sorted({(source_of(r), r["source_prompt"]) for r in rows}):
        by_colour.setdefault(parse_prompt(prompt)[1], []).append(saturation(src, prompt))
    return {c: statistics.fmean(v) for c, v in by_colour.items()}


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", help="the JSON eval_edit.py --json wrote")
    p.add_argument("--guidance", default="pds")
    p.add_argument("--scene", default="gaussians", choices=["nerf", "gaussians"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from text3d.prior.shapes import parse_prompt

    rows = colour_rows(json.loads(Path(args.rows).read_text())["rows"], args.guidance, args.scene)
    if not rows:
        raise SystemExit(f"error: {args.rows} has no {args.scene} colour rows of guidance {args.guidance} with an edit folder")
    reference = from_scratch(rows)
    print("from-scratch saturation by colour: " + ", ".join(f"{c} {v:.3f}" for c, v in sorted(reference.items())))
    ratios = []
    for r in rows:
        colour = parse_prompt(r["target"])[1]
        sat = saturation(r["edit_dir"], r["target"])
        ratio = sat / reference[colour] if colour in reference else float("nan")
        ratios.append(ratio)
        print(f"{r['seed']} {r['source_prompt']:<20} -> {r['target']:<20} saturation {sat:.3f}  from scratch "
              f"{reference.get(colour, float('nan')):.3f}  ratio {ratio:.3f}", flush=True)
    known = [x for x in ratios if x == x]
    if not known:
        raise SystemExit("error: no source of any target colour among the rows' sources: nothing to compare with")
    print(f"cells {len(ratios)}: median ratio {statistics.median(known):.3f}, lowest {min(known):.3f}, "
          f"at least {RATIO_GOAL} in {sum(x >= RATIO_GOAL for x in known)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
