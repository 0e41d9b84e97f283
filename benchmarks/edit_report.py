"""The edit matrix's reports (benchmarks/eval_edit.py): the row table printed as cells finish, the
share of cells meeting each goal, PDS against SDS-edit cell by cell, the markdown table and the grid
of captioned before/after pictures."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

GOALS = {"identity_iou": 0.9, "voxel_iou": 0.85, "semi_excess": 0.02, "colour_share": 0.9}
"""Identity and cleanliness goals of issue 28, and the share of the object's coloured pixels that must
be the target colour (a mean hue within 20 degrees can hide patches left in the old colour)."""


def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


COLUMNS = [("scene", "<9", "s"), ("seed", ">4", "d"), ("source_prompt", "<19", "s"), ("target", "<19", "s"),
           ("guidance", "<8", "s"), ("reached", "<5", ""), ("hue_error", ">5", ".0f"), ("colour_share", ">5", ".2f"), ("shape_found", "<8", "s"),
           ("identity_iou", ">6", ".3f"), ("voxel_iou", ">6", ".3f"), ("semi", ">5", ".2f"), ("semi_source", ">5", ".2f"),
           ("floaters", ">6", ".3f"), ("pieces", ">3", "d"), ("goal", "<5", ""), ("wall_s", ">6", ".0f")]
HEADS = ["scene", "seed", "source", "target", "guidance", "reach", "dhue", "share", "shape", "IoU", "voxel", "semi", "src",
         "float", "pcs", "goal", "wall"]


def print_table(rows: List[Dict[str, Any]], head: bool = True) -> None:
    if head:
        line = " ".join(format(h, align) for h, (_, align, _) in zip(HEADS, COLUMNS))
        print(line + "\n" + "-" * len(line))
    for r in rows:
        cells = []
        for name, align, fmt in COLUMNS:
            value = r.get(name)
            cells.append(format(str(value) if fmt == "" or value is None else _f(value, fmt), align))
        print(" ".join(cells))
    sys.stdout.flush()


def share(rows: List[Dict[str, Any]], test: Callable[[Dict[str, Any]], bool]) -> str:
    return f"{sum(bool(test(r)) for r in rows)}/{len(rows)}" if rows else "-"


def goal_lines(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per scene, guidance and kind: the share of cells meeting each goal."""
    out = []
    groups: Dict[tuple, List[Dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["scene"], r["guidance"], r["kind"])].append(r)
    for (scene, guidance, kind), rs in sorted(groups.items()):
        out.append({"scene": scene, "guidance": guidance, "kind": kind, "cells": len(rs),
                    "reached": share(rs, lambda r: r["reached"]),
                    "identity_iou>=0.9": share(rs, lambda r: r["identity_iou"] >= GOALS["identity_iou"]),
                    "voxel_iou>=0.85": share(rs, lambda r: (r["voxel_iou"] or 0) >= GOALS["voxel_iou"]),
                    "semi<=src+0.02": share(rs, lambda r: r["semi_excess"] is not None and r["semi_excess"] <= GOALS["semi_excess"]),
                    "one_piece": share(rs, lambda r: r["pieces"] == 1),
                    "all_goals": share(rs, lambda r: r["goal"])})
    return out


BASELINES = ("sds-edit", "dds")
"""The editing baselines PDS is held against, cell by cell (issue 28)."""


def pds_vs(rows: List[Dict[str, Any]], baseline: str = "sds-edit") -> Dict[str, str]:
    """Cell by cell, whether PDS keeps identity (silhouette IoU) and is at least as clean (see-through
    share and floaters) as ``baseline`` on the same cell, per scene: ``"wins/cells"``."""
    by = {(r["scene"], r["seed"], r["source_prompt"], r["target"], r["guidance"]): r for r in rows}
    wins: Dict[str, List[bool]] = defaultdict(list)
    for (scene, seed, src, target, guidance), pds in by.items():
        other = by.get((scene, seed, src, target, baseline))
        if guidance != "pds" or other is None:
            continue
        wins[scene].append(pds["identity_iou"] >= other["identity_iou"] and pds["semi"] <= other["semi"]
                           and pds["floaters"] <= other["floaters"])
    return {scene: f"{sum(w)}/{len(w)}" for scene, w in wins.items()}


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """Every row as a markdown table."""
    out = ["| scene | seed | source | target | guidance | reached | hue off | target share | shape | IoU to source | "
           "voxel IoU | see-through (source) | floaters | pieces | all goals |", "|" + "---|" * 15]
    for r in rows:
        out.append(f"| {r['scene']} | {r['seed']} | {r['source_prompt']} | {r['target']} | {r['guidance']} | "
                   f"{'yes' if r['reached'] else 'no'} | {_f(r['hue_error'], '.0f')} | {_f(r.get('colour_share'), '.2f')} | "
                   f"{r['shape_found']} | "
                   f"{r['identity_iou']:.3f} | {_f(r['voxel_iou'], '.3f')} | {_f(r['semi'], '.2f')} ({_f(r['semi_source'], '.2f')}) | "
                   f"{_f(r['floaters'], '.3f')} | {r['pieces']} | {'yes' if r['goal'] else 'no'} |")
    return "\n".join(out) + "\n"


def picture(rows: List[Dict[str, Any]], path: Path, columns: int = 4, frame: int = 3) -> Optional[Path]:
    """A grid of the rows' captioned before/after pictures (frame ``frame`` of each ``before_after.gif``)."""
    import imageio.v3 as iio
    import numpy as np

    from text3d.core.media import save_image

    tiles = [iio.imread(Path(r["edit_dir"]) / "before_after.gif", index=frame)[..., :3]
             for r in rows if r.get("edit_dir") and (Path(r["edit_dir"]) / "before_after.gif").is_file()]
    if not tiles:
        return None
    h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, h - t.shape[0]), (0, w - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    grid = np.concatenate([np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)], axis=0)
    return save_image(path, grid)


def summary(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    lines = goal_lines(rows)
    print("\nshare of cells meeting each goal, by scene, guidance and kind:")
    keys = [k for k in lines[0] if k not in ("scene", "guidance", "kind")] if lines else []
    print(f"  {'scene':<9} {'guidance':<8} {'kind':<6} " + " ".join(f"{k:>16}" for k in keys))
    for line in lines:
        print(f"  {line['scene']:<9} {line['guidance']:<8} {line['kind']:<6} " + " ".join(f"{str(line[k]):>16}" for k in keys))
    figures: Dict[str, Any] = {"goals": lines}
    for baseline in BASELINES:
        wins = pds_vs(rows, baseline)
        if wins:
            print(f"PDS at least as good as {baseline} on identity and cleanliness, cells: "
                  + ", ".join(f"{scene} {w}" for scene, w in wins.items()))
        figures[f"pds_beats_{baseline.replace('-', '_')}"] = wins
    return figures
