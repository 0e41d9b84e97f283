"""Topology of exported meshes of quickstart runs (NeRF and Gaussians), against the analytic shapes.

Exports each run at the run's default settings (128³ grid, 20k faces, 512² texture) and at the
final-asset settings of ``text3d export`` (256³, 50k faces, 1024²), and prints per mesh: pieces,
Euler characteristic (the shape's true one in brackets), non-manifold edges, watertight, area and
volume over the analytic shape's (:data:`text3d.prior.shapes.MEASURES`), texture coverage, the hidden
share of the area, the run's own silhouette IoU against the analytic shape (``metrics.json``, its
validation renders judged by ``text3d.prior.scene_eval``: a low one says the run, not the export, differs
from the analytic shape), for Gaussian runs the IoU and area ratio of the run's outline against the
analytic one from 32 views all around and the written mesh's outline against the run's from the same
views (:func:`outline_figures`: the first says what the run draws, the second how faithfully the export
keeps it), export seconds. ``--baseline``
adds the same exports without carving
(``pore_size 0``, the surface before this issue). Goals on every row: one piece, the true Euler
characteristic, no non-manifold edge, watertight, area and volume within 15 %.

    python benchmarks/eval_export_topology.py --train          # the PLAN's runs, trained once, reused after
    python benchmarks/eval_export_topology.py --runs outputs/runs/quickstart*/*@* [--baseline]
    python benchmarks/eval_export_topology.py --analytic       # the 7 primitives with pores and floaters
    python benchmarks/eval_export_topology.py --tolerances     # how close each shape's faces must sit (volume goal)

Without ``--runs``, the runs of :data:`PLAN` (all 7 shapes on the NeRF quickstart, 5 prompts on the
Gaussian one) are looked up under ``--root`` (``<root>/<config name>/<prompt slug>@<time>/``: the
newest one trained to its last step with the current preset and the plan's seed, :func:`find_run`)
and, with ``--train``, the missing ones are trained there (1-1.5 min each alone on 2 cores,
``export.enabled=false``), so each run is trained once. Rows go to ``--json`` (default
``benchmarks/results/export_topology.json``), merged with the rows already there (a row is replaced
by a new one of the same kind, prompt, seed and settings). Timings on a shared machine are
contended: compare rows of one invocation only.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:  # loaded by path (tests) as well as run as a script
    sys.path.insert(0, str(REPO / "benchmarks"))

from planned_runs import find_run, train_run  # noqa: E402

NERF, GAUSSIANS = "configs/quickstart.yaml", "configs/quickstart-gaussians.yaml"
PLAN = [(NERF, "a red cube", 0), (NERF, "a yellow sphere", 0), (NERF, "a green cone", 0),
        (NERF, "a blue cylinder", 11), (NERF, "an orange pyramid", 0), (NERF, "a purple capsule", 0),
        (NERF, "a cyan torus", 0), (GAUSSIANS, "a yellow torus", 0), (GAUSSIANS, "a green torus", 0),
        (GAUSSIANS, "an orange pyramid", 0), (GAUSSIANS, "a pink capsule", 0), (GAUSSIANS, "a blue sphere", 0)]
"""(config, prompt, seed) of the quickstart runs exported: every shape on the NeRF, five on the Gaussians."""
DEFAULT_JSON = REPO / "benchmarks" / "results" / "export_topology.json"
SETTINGS = {"default": dict(resolution=128, faces=20000, texture_size=512),
            "final": dict(resolution=256, faces=50000, texture_size=1024)}
TOLERANCE = 0.15


def row_of(name: str, kind: str, shape: Optional[str], setting: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    from text3d.prior.shapes import MEASURES

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
    from text3d.scene.cameras import finest_resolution
    from text3d.export.config import ExportConfig
    from text3d.export import export_run_dir
    from text3d.scene.rundir import run_config
    from text3d.prior.shapes import parse_prompt

    cfg = run_config(run)
    settings = ExportConfig(formats=["glb"], pore_size=pore_size, **SETTINGS[setting])
    result = export_run_dir(run, settings, out_dir=out)
    parsed = parse_prompt(cfg.prompt)
    kind = "gaussians" if cfg.geometry.type == "gaussians" else "nerf"
    name = run.name.split("@")[0] + ("" if pore_size is None else f" (pore {pore_size:g})")
    row = row_of(name, kind, parsed[0] if parsed else None, setting, json.loads(result.manifest.read_text()))
    row["path"], row["seed"] = str(run), cfg.seed
    if kind == "gaussians" and row["shape"] is not None:
        row.update(outline_figures(run, row["shape"], out / "mesh.glb", size=finest_resolution(cfg.cameras)))
    metrics = run / "metrics.json"  # the run's own renders vs the analytic shape's (text3d.prior.scene_eval)
    row["run_iou"] = json.loads(metrics.read_text()).get("silhouette_iou") if metrics.is_file() else None
    return row


def outline_cameras(n_views: int = 32, size: int = 64):
    """``n_views`` cameras all around (Fibonacci directions, also looking down through a torus's hole) at
    the quickstart's distance (3) and field of view (32 degrees), ``size`` pixels square."""
    import math

    import torch

    from text3d.scene.cameras import Cameras, look_at
    from text3d.export.gaussians import fibonacci_directions

    eye = 3.0 * fibonacci_directions(n_views).float()
    fovy, zeros = torch.full((n_views,), math.radians(32.0)), torch.zeros(n_views)
    up = torch.where((eye[:, 2:].abs() > 2.9), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
    return Cameras(look_at(eye, torch.zeros_like(eye), up), fovy, size, size, zeros, zeros,
                   torch.full((n_views,), 3.0), eye)


def mesh_outline(glb: Path, cams: Any, supersample: int = 4):
    """``[V, H, W]`` bool: the written mesh's silhouettes (pixels at least half covered) from ``cams``; its
    vertices are taken back to the world frame with the ``world_to_export`` matrix of ``export.json``
    beside it, faces drawn with Pillow at ``supersample`` x the size."""
    import numpy as np
    import torch
    import trimesh
    from PIL import Image, ImageDraw

    from text3d.scene.cameras import project_to_pixels

    mesh = trimesh.load(glb, force="mesh")
    matrix = np.array(json.loads((glb.parent / "export.json").read_text())["frame"]["world_to_export"])
    world = (np.asarray(mesh.vertices) - matrix[:3, 3]) @ np.linalg.inv(matrix[:3, :3]).T
    verts = torch.as_tensor(world, dtype=torch.float32)
    viewmats, Ks, size, ss = cams.viewmats(), cams.intrinsics(), int(cams.width), supersample
    masks = []
    for v in range(len(viewmats)):
        uv = project_to_pixels(verts, viewmats[v], Ks[v])[0].numpy() * ss
        img = Image.new("L", (size * ss, size * ss), 0)
        draw = ImageDraw.Draw(img)
        for tri in uv[np.asarray(mesh.faces)].tolist():
            draw.polygon([tuple(p) for p in tri], fill=255)
        cover = np.asarray(img, np.float32).reshape(size, ss, size, ss).mean((1, 3)) / 255.0
        masks.append(cover >= 0.5)
    return torch.as_tensor(np.stack(masks))


def _iou_ratio(a, b) -> Dict[str, float]:
    """Mean per-view IoU of masks ``a`` and ``b`` and the ratio of their areas (summed over the views)."""
    iou = (a & b).sum(dim=(1, 2)).float() / (a | b).sum(dim=(1, 2)).clamp(min=1).float()
    return {"iou": round(float(iou.mean()), 4), "ratio": round(float(a.sum()) / max(float(b.sum()), 1.0), 4)}


def outline_figures(run: Path, shape: str, glb: Optional[Path] = None, n_views: int = 32,
                    size: int = 64) -> Dict[str, Any]:
    """A Gaussian run's own outline against the analytic shape's, from all around (the turntable of
    ``metrics.json`` stays at 15 degrees elevation and never looks through a torus's hole): ``n_views``
    renders (:func:`outline_cameras`) at ``size`` pixels (pass its finest training resolution: the
    rasteriser's 0.3 px² low-pass widens flat Gaussians by a coarser pixel's share), silhouettes at alpha >= 0.5
    vs analytic coverage >= 0.5. ``outline_iou`` (mean) and ``outline_ratio`` (run outline area / analytic
    outline area, summed over the views): the export can only be as close to the analytic shape as what
    the run draws. ``hull_volume_ratio``: the volume of the visual hull of those renders (:func:`hull_volume`)
    over the analytic volume, the most a solid drawing them can hold. With ``glb`` (a written mesh),
    ``mesh_run_iou`` / ``mesh_run_ratio``: the mesh's own silhouettes against the run's, from the same
    views (the export's fidelity to what the run draws)."""
    cams, drawn, out = _run_outline(str(run), shape, n_views, size)
    out = dict(out)
    if glb is not None:
        mesh_vs_run = _iou_ratio(mesh_outline(glb, cams), drawn)
        out.update(mesh_run_iou=mesh_vs_run["iou"], mesh_run_ratio=mesh_vs_run["ratio"])
    return out


@functools.lru_cache(maxsize=4)
def _run_outline(run: str, shape: str, n_views: int, size: int):
    """The cameras, the run's silhouettes and its figures of :func:`outline_figures` (once per run: each
    run is exported at several settings)."""
    import torch

    from text3d.export.gaussians import load_gaussian_ply
    from text3d.renderers.gaussians import rasterize_gaussians
    from text3d.prior.shapes import MEASURES, render_shading
    from text3d.export.pipeline import drawn_as
    from text3d.scene.rundir import scene_config

    cloud, _ = load_gaussian_ply(Path(run) / "gaussians.ply")
    mode = drawn_as(scene_config(Path(run)))
    cams = outline_cameras(n_views, size)
    ok = cloud.usable()
    with torch.no_grad():
        _, alpha, _ = rasterize_gaussians(cloud.means[ok], cloud.quats[ok], cloud.scales[ok], cloud.opacities[ok],
                                          cloud.colors[ok], cams.viewmats(), cams.intrinsics(), size, size,
                                          sh_degree=cloud.sh_degree, backend="torch", rasterize_mode=mode)
        _, coverage = render_shading([shape] * n_views, cams, supersample=4)
    drawn, truth = alpha[..., 0] >= 0.5, coverage.reshape(alpha.shape[:3]) > 0.5
    run_vs_truth = _iou_ratio(drawn, truth)
    return cams, drawn, {"outline_iou": run_vs_truth["iou"], "outline_ratio": run_vs_truth["ratio"],
                         "hull_volume_ratio": round(hull_volume(alpha[..., 0], cams) / MEASURES[shape][0], 4)}


def hull_volume(alpha, cams, n: int = 160, half: float = 0.8) -> float:
    """Volume of the visual hull of the masks ``alpha >= 0.5`` (``[V, H, W]``, seen by ``cams``): the
    points of an ``n``³ lattice over ``[-half, half]³`` that every view shows covered (bilinear)."""
    import torch

    from text3d.scene.cameras import project_to_pixels
    from text3d.export.gaussian_views import sample_pixels

    xs = torch.linspace(-half, half, n)
    points = torch.stack(torch.meshgrid(xs, xs, xs, indexing="ij"), -1).reshape(-1, 3)
    inside = torch.ones(len(points), dtype=torch.bool)
    viewmats, Ks = cams.viewmats(), cams.intrinsics()
    for v in range(len(viewmats)):
        uv, _ = project_to_pixels(points, viewmats[v], Ks[v])
        inside &= sample_pixels(alpha[v][None].float(), uv)[:, 0] >= 0.5
    return float(inside.sum()) * (2 * half / (n - 1)) ** 3


def export_analytic(shape: str, setting: str, pore_size: Optional[float], out: Path) -> Dict[str, Any]:
    """The primitive as a density with interior pores and floaters (the tests' field)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_export_topology import D, density_of, white

    from text3d.export.config import ExportConfig
    from text3d.export import export_fields, sample_grid

    s = SETTINGS[setting]
    grid = sample_grid(density_of(shape, True, True), (-1.0, 1.0), s["resolution"], level=D / 2, stride=1)
    settings = ExportConfig(formats=["glb"], pore_size=pore_size, **s)
    result = export_fields(None, white, (-1.0, 1.0), settings, out, grid=grid)
    name = f"analytic {shape}" + ("" if pore_size is None else f" (pore {pore_size:g})")
    return row_of(name, "analytic", shape, setting, json.loads(result.manifest.read_text()))


def planned_runs(root: Path, train: bool) -> List[Path]:
    """The :data:`PLAN`'s run folders (trained when missing and ``train``; skipped, with a line, otherwise)."""
    runs = []
    for config, prompt, seed in PLAN:
        found = find_run(root, config, prompt, seed)
        if found is None and train:
            found = train_run(root, config, prompt, seed)
        if found is None:
            print(f"missing: {prompt!r} ({config}); pass --train to train it", flush=True)
        else:
            runs.append(found)
    return runs


def merge_rows(path: Path, rows: List[Dict[str, Any]]) -> None:
    """Write ``rows`` to ``path`` with the rows already there that no new row replaces (same kind,
    prompt, seed, settings and pore size: a newer run of a prompt replaces the older one's rows)."""
    from text3d.core.io import write_json

    def key(r: Dict[str, Any]) -> tuple:
        return r.get("kind"), r["run"], r.get("seed"), r["settings"]

    old = json.loads(path.read_text()) if path.is_file() else []
    new = {key(r) for r in rows}
    write_json(path, [r for r in old if key(r) not in new] + rows)


def trimesh_figures(glb: Path) -> Dict[str, Any]:
    """The written GLB re-read by trimesh (UV-seam vertices welded): pieces, Euler, non-manifold
    edges, watertight: an independent check of ``export.json``."""
    import numpy as np
    import trimesh

    mesh = trimesh.load(glb, force="mesh", process=False)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    _, counts = np.unique(mesh.edges_sorted, axis=0, return_counts=True)
    return {"pieces": len(mesh.split(only_watertight=False)), "euler": int(mesh.euler_number),
            "non_manifold_edges": int((counts > 2).sum()), "watertight": bool(mesh.is_watertight)}


def blender_figures(glb: Path) -> Optional[Dict[str, Any]]:
    """Blender's bmesh count of the GLB (``tests/tools/blender_import_check.py``), or None without blender."""
    import shutil

    if shutil.which("blender") is None:
        return None
    tool = REPO / "tests" / "tools" / "blender_import_check.py"
    proc = subprocess.run(["blender", "-b", "--factory-startup", "--python", str(tool), "--", str(glb)],
                          capture_output=True, text=True, timeout=600)
    lines = [json.loads(x[len("TEXT3D "):]) for x in proc.stdout.splitlines() if x.startswith("TEXT3D ")]
    return lines[0]["bmesh"] if lines else {"error": (proc.stdout + proc.stderr)[-300:]}


def cross_check(row: Dict[str, Any], glb: Path, keep: Optional[Path]) -> None:
    """Add trimesh's and Blender's figures of the written file to ``row`` (and keep the file)."""
    row["trimesh"] = trimesh_figures(glb)
    row["blender"] = blender_figures(glb)
    t, b = row["trimesh"], row["blender"]
    row["trimesh_agrees"] = (t["pieces"], t["euler"], t["non_manifold_edges"], t["watertight"]) == \
        (row["pieces"], row["euler"], row["non_manifold_edges"], row["watertight"])
    row["blender_agrees"] = None if b is None else (b.get("loose_parts"), b.get("euler"), b.get("non_manifold_edges")) \
        == (row["pieces"], row["euler"], row["non_manifold_edges"])
    if keep is not None:
        import shutil

        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(glb, keep / f"{row['kind']}-{row['run'].split(' ')[0]}-{row['settings']}.glb")


def fmt(x: Any, spec: str = "") -> str:
    return "-" if x is None else format(x, spec)


def print_row(r: Dict[str, Any]) -> None:
    print(f"{r['run'][:30]:<30} {r['kind']:<9} {r['settings']:<7} {r['faces']:>6} {r['pieces']:>6} "
          f"{r['euler']:>6} ({fmt(r['true_euler'])}) {r['non_manifold_edges']:>5} {str(r['watertight']):>5} "
          f"{fmt(r['area_ratio'], '.3f'):>6} {fmt(r['volume_ratio'], '.3f'):>6} {fmt(r['texture_coverage'], '.2f'):>5} "
          f"{fmt(r['hidden_area'], '.3f'):>6} {fmt(r.get('run_iou'), '.3f'):>7} "
          f"{fmt(r.get('outline_iou'), '.3f'):>6} {fmt(r.get('outline_ratio'), '.3f'):>6} {fmt(r.get('hull_volume_ratio'), '.3f'):>6} "
          f"{fmt(r.get('mesh_run_iou'), '.3f'):>6} {fmt(r.get('mesh_run_ratio'), '.3f'):>6} {r['seconds']:>7.1f}  {'ok' if r['goal'] else 'MISS'}"
          f"  trimesh {_agree(r.get('trimesh_agrees'))} blender {_agree(r.get('blender_agrees'))}", flush=True)


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """``rows`` (carved ones, NeRF first) as the table of docs/export.md; a run that is not the :data:`PLAN`'s
    seed for its prompt is labelled with its seed."""
    planned = {(prompt, seed) for _, prompt, seed in PLAN}
    head = ("| mesh | setting | pore size | faces | pieces | Euler (true) | non-manifold edges | watertight | "
            "area / true | volume / true | texture coverage | run IoU | outline IoU / area | "
            "run's hull volume / true | mesh / run outline IoU / area | s | goal | trimesh / Blender |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in sorted((r for r in rows if "(pore" not in r["run"]), key=lambda r: r["kind"] != "nerf"):
        prompt = r["run"].replace("_", " ")
        seed = r.get("seed")
        label = f"{r['kind']} `{prompt}`" + ("" if seed is None or (prompt, seed) in planned else f" (seed {seed})")
        pair = lambda a, b: "-" if r.get(a) is None else f"{r[a]:.3f} / {r[b]:.2f}"
        hull = lambda: "-" if r.get("hull_volume_ratio") is None else f"{r['hull_volume_ratio']:.2f}"
        sym = lambda k: "-" if r.get(k) is None else ("=" if r[k] else "DIFFERS")
        lines.append(f"| {label} | {r['settings']} | {r['pore_size']:.3f} | {r['faces']:,} | {r['pieces']} | "
                     f"{r['euler']} ({r['true_euler']}) | {r['non_manifold_edges']} | "
                     f"{'yes' if r['watertight'] else 'no'} | {r['area_ratio']:.2f} | {r['volume_ratio']:.2f} | "
                     f"{fmt(r['texture_coverage'], '.2f')} | {fmt(r.get('run_iou'), '.3f')} | "
                     f"{pair('outline_iou', 'outline_ratio')} | {hull()} | {pair('mesh_run_iou', 'mesh_run_ratio')} | "
                     f"{r['seconds']:.0f} | {'ok' if r['goal'] else 'miss'} | {sym('trimesh_agrees')} / "
                     f"{sym('blender_agrees')} |")
    return "\n".join(lines)


def volume_tolerances(tolerance: float = TOLERANCE) -> List[Dict[str, Any]]:
    """How far each primitive's surface may move outward before its volume is off by ``tolerance``:
    to first order a uniform offset ``d`` adds ``area * d``, so ``d = tolerance * volume / area``. Also
    in the built-in prior's pixels at the object (its recipe's camera distance, fovy and resolution):
    the volume goal asks a run to place every face that close to where the prior's 32-px images put it."""
    from text3d.guidance.pixel_prior import BUILTIN, prior_folder
    from text3d.prior.shapes import MEASURES

    recipe = json.loads((prior_folder(BUILTIN) / "text3d_prior.json").read_text())["recipe"]
    data, res = recipe["data"], recipe["model"]["resolution"]
    pixel = 2 * data["distance"] * math.tan(math.radians(data["fovy"]) / 2) / res
    rows = []
    for shape, (volume, area, _genus) in MEASURES.items():
        offset = tolerance * volume / area
        rows.append({"shape": shape, "area_per_volume": area / volume, "offset": offset, "prior_pixels": offset / pixel})
    return sorted(rows, key=lambda r: r["offset"])


def print_tolerances(rows: List[Dict[str, Any]]) -> None:
    print(f"{'shape':<9} {'area/volume':>11} {'offset for ' + format(TOLERANCE, '.0%') + ' volume':>22} {'prior px':>8}")
    for r in rows:
        print(f"{r['shape']:<9} {r['area_per_volume']:>11.2f} {r['offset']:>22.4f} {r['prior_pixels']:>8.2f}")


def _agree(flag: Optional[bool]) -> str:
    return "-" if flag is None else ("agrees" if flag else "DIFFERS")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=None, help="run folders (default: the PLAN's under --root)")
    parser.add_argument("--root", default="outputs/runs", help="where the PLAN's runs are found and trained")
    parser.add_argument("--train", action="store_true", help="train the PLAN's runs that are missing")
    parser.add_argument("--only", nargs="*", default=None, help="only runs whose folder name contains one of these")
    parser.add_argument("--analytic", action="store_true", help="also the 7 analytic primitives with pores and floaters")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--baseline", action="store_true", help="also export without carving (pore size 0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", default=None, help="copy every exported GLB into this folder")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="results file (merged); '' = none")
    parser.add_argument("--markdown", action="store_true", help="only print the rows of --json as the table of docs/export.md")
    parser.add_argument("--tolerances", action="store_true",
                        help="only print how far each shape's surface may move before its volume misses the goal")
    args = parser.parse_args(argv)

    import torch

    from text3d.prior.shapes import SHAPES

    torch.set_num_threads(args.threads)
    if args.tolerances:
        print_tolerances(volume_tolerances())
        return 0
    if args.markdown:
        print(markdown_table(json.loads(Path(args.json).read_text())))
        return 0
    print(f"{'mesh':<30} {'kind':<9} {'setting':<7} {'faces':>6} {'pieces':>6} {'Euler (true)':>11} {'n-m e':>5} "
          f"{'wtght':>5} {'area':>6} {'vol':>6} {'tex':>5} {'hidden':>6} {'run IoU':>7} "
          f"{'o IoU':>6} {'o area':>6} {'hull v':>6} {'m/r IoU':>6} {'m/r a':>6} {'s':>7}  goal")
    rows = []
    pores = [None, 0.0] if args.baseline else [None]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(r) for r in args.runs] if args.runs is not None else planned_runs(Path(args.root), args.train)
        if args.only:
            runs = [r for r in runs if any(o in str(r) for o in args.only)]
        jobs = [(export_run, r) for r in runs] + ([(export_analytic, s) for s in SHAPES] if args.analytic else [])
        for i, (fn, item) in enumerate(jobs):
            for setting in args.settings:
                for pore in pores:
                    out = Path(tmp) / f"{i}-{setting}-{pore}"
                    rows.append(fn(item, setting, pore, out))
                    cross_check(rows[-1], out / "mesh.glb", None if args.keep is None else Path(args.keep))
                    print_row(rows[-1])
    carved = [r for r in rows if "(pore" not in r["run"]]
    print(f"\ngoal met on {sum(r['goal'] for r in carved)} of {len(carved)} carved meshes "
          f"(one piece, true Euler, 0 non-manifold edges, watertight, area and volume within {TOLERANCE:.0%})")
    if args.json:
        merge_rows(Path(args.json), rows)
        print(f"rows merged into {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
