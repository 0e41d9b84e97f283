"""Topology of exported meshes of quickstart runs (NeRF and Gaussians), against the analytic shapes.

Exports each run at the run's default settings (128³ grid, 20k faces, 512² texture) and at the
final-asset settings of ``text3d export`` (256³, 50k faces, 1024²), and prints per mesh: pieces,
Euler characteristic (the shape's true one in brackets), non-manifold edges, watertight, area and
volume over the analytic shape's (:data:`text3d.shapes.MEASURES`), texture coverage, the hidden
share of the area, export seconds. ``--baseline`` adds the same exports without carving
(``pore_size 0``, the surface before this issue). Goals on every row: one piece, the true Euler
characteristic, no non-manifold edge, watertight, area and volume within 15 %.

    python benchmarks/eval_export_topology.py --runs outputs/runs/quickstart*/*@* [--baseline] [--json out.json]
    python benchmarks/eval_export_topology.py --analytic        # the 7 primitives with pores and floaters

Train the runs first (about 2 min each on 2 free cores), e.g.
``text3d run configs/quickstart.yaml prompt="a blue cylinder" seed=11`` and
``text3d run configs/quickstart-gaussians.yaml prompt="a green torus"``.
Timings on a shared machine are contended: compare rows of one invocation only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

SETTINGS = {"default": dict(resolution=128, faces=20000, texture_size=512),
            "final": dict(resolution=256, faces=50000, texture_size=1024)}
TOLERANCE = 0.15


def row_of(name: str, kind: str, shape: Optional[str], setting: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    from text3d.shapes import MEASURES

    topo, mesh = manifest["topology"], manifest["mesh"]
    volume, area, genus = MEASURES[shape] if shape in MEASURES else (None, None, None)
    row = {"run": name, "kind": kind, "shape": shape, "settings": setting,
           "pore_size": manifest["settings"].get("pore_size"), "faces": topo["faces"], "pieces": topo["pieces"],
           "euler": topo["euler"], "true_euler": None if genus is None else 2 - 2 * genus,
           "non_manifold_edges": topo["non_manifold_edges"], "watertight": topo["watertight"],
           "area_ratio": None if area is None else mesh["world_area"] / area,
           "volume_ratio": None if volume is None else mesh["world_volume"] / volume,
           "texture_coverage": (manifest.get("texture") or {}).get("covered_fraction"),
           "hidden_area": topo.get("hidden", {}).get("area"), "decimation": manifest["stages"]["decimation"]["result"],
           "seconds": round(sum(manifest["timings_s"].values()), 2)}
    row["goal"] = bool(row["pieces"] == 1 and row["euler"] == row["true_euler"] and row["non_manifold_edges"] == 0
                       and row["watertight"] and row["area_ratio"] is not None
                       and abs(row["area_ratio"] - 1) <= TOLERANCE and abs(row["volume_ratio"] - 1) <= TOLERANCE)
    return row


def export_run(run: Path, setting: str, pore_size: Optional[float], out: Path) -> Dict[str, Any]:
    from text3d.config import ExportConfig
    from text3d.export import export_run_dir
    from text3d.rundir import run_config
    from text3d.shapes import parse_prompt

    cfg = run_config(run)
    settings = ExportConfig(formats=["glb"], pore_size=pore_size, **SETTINGS[setting])
    result = export_run_dir(run, settings, out_dir=out)
    parsed = parse_prompt(cfg.prompt)
    kind = "gaussians" if cfg.geometry.type == "gaussians" else "nerf"
    name = run.name.split("@")[0] + ("" if pore_size is None else f" (pore {pore_size:g})")
    return row_of(name, kind, parsed[0] if parsed else None, setting, json.loads(result.manifest.read_text()))


def export_analytic(shape: str, setting: str, pore_size: Optional[float], out: Path) -> Dict[str, Any]:
    """The primitive as a density with interior pores and floaters (the tests' field)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_export_topology import D, density_of, white

    from text3d.config import ExportConfig
    from text3d.export import export_fields, sample_grid

    s = SETTINGS[setting]
    grid = sample_grid(density_of(shape, True, True), (-1.0, 1.0), s["resolution"], level=D / 2, stride=1)
    settings = ExportConfig(formats=["glb"], pore_size=pore_size, **s)
    result = export_fields(None, white, (-1.0, 1.0), settings, out, grid=grid)
    name = f"analytic {shape}" + ("" if pore_size is None else f" (pore {pore_size:g})")
    return row_of(name, "analytic", shape, setting, json.loads(result.manifest.read_text()))


def fmt(x: Any, spec: str = "") -> str:
    return "-" if x is None else format(x, spec)


def print_row(r: Dict[str, Any]) -> None:
    print(f"{r['run'][:30]:<30} {r['kind']:<9} {r['settings']:<7} {r['faces']:>6} {r['pieces']:>6} "
          f"{r['euler']:>6} ({fmt(r['true_euler'])}) {r['non_manifold_edges']:>5} {str(r['watertight']):>5} "
          f"{fmt(r['area_ratio'], '.3f'):>6} {fmt(r['volume_ratio'], '.3f'):>6} {fmt(r['texture_coverage'], '.2f'):>5} "
          f"{fmt(r['hidden_area'], '.3f'):>6} {r['seconds']:>7.1f}  {'ok' if r['goal'] else 'MISS'}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], help="quickstart run folders")
    parser.add_argument("--analytic", action="store_true", help="also the 7 analytic primitives with pores and floaters")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--baseline", action="store_true", help="also export without carving (pore size 0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    from text3d.shapes import SHAPES

    torch.set_num_threads(args.threads)
    print(f"{'mesh':<30} {'kind':<9} {'setting':<7} {'faces':>6} {'pieces':>6} {'Euler (true)':>11} {'n-m e':>5} "
          f"{'wtght':>5} {'area':>6} {'vol':>6} {'tex':>5} {'hidden':>6} {'s':>7}  goal")
    rows = []
    pores = [None, 0.0] if args.baseline else [None]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(export_run, Path(r)) for r in args.runs] + ([(export_analytic, s) for s in SHAPES] if args.analytic else [])
        for i, (fn, item) in enumerate(jobs):
            for setting in args.settings:
                for pore in pores:
                    rows.append(fn(item, setting, pore, Path(tmp) / f"{i}-{setting}-{pore}"))
                    print_row(rows[-1])
    carved = [r for r in rows if "(pore" not in r["run"]]
    print(f"\ngoal met on {sum(r['goal'] for r in carved)} of {len(carved)} carved meshes "
          f"(one piece, true Euler, 0 non-manifold edges, watertight, area and volume within {TOLERANCE:.0%})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
