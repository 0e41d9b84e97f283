"""Offline 3D editing with the embedded shapes prior, over a matrix no single pair can be tuned to.

Sources are quickstart runs (NeRF and Gaussians) of every shape, each in its own colour, for each
seed: with seeds ``s_0, s_1, ...`` the k-th seed's source of shape ``i`` (in :data:`SHAPES` order) is
coloured ``COLOUR_NAMES[(i + 4k) % 8]``. Each source gets three colour edits (the colours 2, 4 and 6
places on around the palette) and one shape edit (the shape 3 places on, same colour); ``--ply``
adds, per shape, a colour edit of the first seed's Gaussian source read back from its ``gaussians.ply``
(a 3DGS file, no run folder). Every cell runs with each ``--guidances`` (PDS and the SDS-edit and
DDS baselines) at the edit presets' settings and equal steps.

Per cell it prints whether the target was reached (the object's mean hue within 20 degrees of the
palette colour, at least 90 % of its coloured pixels nearest to that colour, and the right shape by
the analytic judge), identity (silhouette IoU of edit vs source
renders over 8 views; voxel IoU of the exported meshes, re-read from the GLB files by trimesh) and
cleanliness (share of the object's pixels that are see-through, against the source's; opacity
outside the source's silhouette, i.e. floaters; the exported mesh's piece count), then per scene and
guidance the share of cells meeting each goal, and PDS against SDS-edit cell by cell.

Sources are looked up under ``--sources`` (``<root>/<preset name>/<prompt slug>@<time>``, the newest
finished run of the current preset and the seed, :mod:`planned_runs`); ``--train`` trains the missing
ones there. Each finished edit's row is cached in ``--cache`` (default ``<out>/rows``; one JSON per
cell, written atomically): a restarted or repeated command skips the rows it has, so the matrix can
run in several background processes sharing one cache (``OMP_NUM_THREADS=1 ... --threads 1``). Each
edit is claimed by the process that runs it (``<row>.json.claim``): the others pass it over, run the
rest, then wait for its row (or run it if that process died), so every process ends with the whole table.

    python benchmarks/eval_edit.py --sources outputs/edit_sources --train --seeds 0 1 \\
        --json benchmarks/results/eval_edit_matrix.json --markdown benchmarks/results/eval_edit_matrix.md
    python benchmarks/eval_edit.py --nerf-source RUN_DIR --steps 120       # one source, its 4 default cells

Goals (issue 28; colour cells): >= 90 % reach the target with silhouette IoU >= 0.9, mesh voxel IoU
>= 0.85, a see-through share at most the source's + 0.02 and one mesh piece; PDS beats SDS-edit on
identity and cleanliness in >= 90 % of cells. Shape cells count for target and cleanliness only.
Timings are wall-clock on whatever machine runs it: say when cores were shared.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

from edit_meshes import mesh_voxel_iou  # noqa: E402
from edit_report import GOALS, markdown_table, picture, print_table, summary  # noqa: E402

PRESETS = {"nerf": REPO / "configs" / "edit-quickstart.yaml", "gaussians": REPO / "configs" / "edit-quickstart-gaussians.yaml",
           "ply": REPO / "configs" / "edit-quickstart-gaussians.yaml"}
"""The edit preset of each scene kind for appearance (colour) edits."""
SHAPE_PRESETS = {"nerf": REPO / "configs" / "edit-shape-quickstart.yaml",
                 "gaussians": REPO / "configs" / "edit-shape-quickstart-gaussians.yaml",
                 "ply": REPO / "configs" / "edit-shape-quickstart-gaussians.yaml"}
"""The edit preset of each scene kind for shape edits (the geometry may move)."""
SOURCE_PRESETS = {"nerf": "configs/quickstart.yaml", "gaussians": "configs/quickstart-gaussians.yaml"}
LATENT_PRESETS = {  # --prior latent: the miniature Stable Diffusion's presets (colour and pattern edits)
    "PRESETS": {"nerf": REPO / "configs" / "edit-quickstart-latent.yaml",
                "gaussians": REPO / "configs" / "edit-quickstart-gaussians-latent.yaml",
                "ply": REPO / "configs" / "edit-quickstart-gaussians-latent.yaml"},
    "SOURCE_PRESETS": {"nerf": "configs/quickstart-latent.yaml", "gaussians": "configs/quickstart-gaussians-latent.yaml"},
}
PATTERN_STEP = 4
"""``--prior latent``: a source of colour ``c`` also gets a stripe of colour ``c + 4`` (mod 8), its base kept."""
GUIDANCES = ["pds", "sds-edit", "dds"]
COLOUR_STEPS = (2, 4, 6)
"""A source of palette colour ``c`` is edited to colours ``c + 2``, ``c + 4``, ``c + 6`` (mod 8)."""
SHAPE_STEP = 3
"""A source of shape ``i`` is edited to shape ``i + 3`` (mod 7), keeping its colour."""


# ----------------------------------------------------------------------------------------- the plan
def source_prompts(seed_index: int) -> List[str]:
    """The sources' prompts for the ``seed_index``-th seed: shape ``i`` in colour ``i + 4 seed_index``."""
    from text3d.prior.shapes import COLOUR_NAMES, SHAPES, prompt_for

    return [prompt_for(shape, COLOUR_NAMES[(i + 4 * seed_index) % len(COLOUR_NAMES)]) for i, shape in enumerate(SHAPES)]


def targets_of(source_prompt: str, patterns: bool = False) -> List[tuple]:
    """``(kind, target prompt)`` of a source: three colour edits, one shape edit, and with ``patterns``
    (the latent prior's world) a pattern edit: the same object with a stripe."""
    from text3d.prior.shapes import COLOUR_NAMES, SHAPES, parse_prompt, prompt_for

    shape, colour = parse_prompt(source_prompt)
    c, i = COLOUR_NAMES.index(colour), SHAPES.index(shape)
    colours = [("colour", prompt_for(shape, COLOUR_NAMES[(c + k) % len(COLOUR_NAMES)])) for k in COLOUR_STEPS]
    stripe = [("pattern", prompt_for(shape, colour, COLOUR_NAMES[(c + PATTERN_STEP) % len(COLOUR_NAMES)]))] if patterns else []
    return colours + [("shape", prompt_for(SHAPES[(i + SHAPE_STEP) % len(SHAPES)], colour))] + stripe


def use_prior(kind: str) -> None:
    """Point the plan at the presets of the embedded prior ``kind`` (``pixel``: as written; ``latent``:
    :data:`LATENT_PRESETS`, the pattern edits added by :func:`plan_cells`)."""
    if kind == "latent":
        PRESETS.update(LATENT_PRESETS["PRESETS"])
        SOURCE_PRESETS.update(LATENT_PRESETS["SOURCE_PRESETS"])


def source_mesh(run: Path) -> Optional[Path]:
    """The mesh a source run exported (``metrics.json``), or None."""
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    files = [f for f in (metrics.get("export") or {}).get("files", []) if f.endswith(".glb")]
    return run / files[0] if files else None


def find_sources(roots: Sequence[Path], seeds: Sequence[int], scenes: Sequence[str], train: bool,
                 shapes: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Every planned source run (of ``shapes``, default all), looked up under each of ``roots`` (trained
    under the first when missing and ``train``; passed over with a line otherwise)."""
    from planned_runs import find_run, train_run

    from text3d.prior.shapes import parse_prompt

    found = []
    for k, seed in enumerate(seeds):
        for scene in scenes:
            for prompt in [p for p in source_prompts(k) if not shapes or parse_prompt(p)[0] in shapes]:
                run = next((r for r in (find_run(root, SOURCE_PRESETS[scene], prompt, seed) for root in roots) if r), None)
                if run is None and train:
                    run = train_run(roots[0], SOURCE_PRESETS[scene], prompt, seed, extra=())
                if run is None:
                    print(f"missing source: {prompt!r} ({scene}, seed {seed}); pass --train", flush=True)
                    continue
                found.append({"scene": scene, "seed": seed, "prompt": prompt, "run": run})
    return found


def plan_cells(sources: List[Dict[str, Any]], guidances: Sequence[str], ply: bool,
               patterns: bool = False) -> List[Dict[str, Any]]:
    """The cells of the matrix: each guidance on each source's targets (:func:`targets_of`), then the
    ``.ply`` rows (PDS)."""
    cells = []
    for guidance in guidances:  # guidance by guidance: a partial run has whole tables of the first ones
        for src in sources:
            for kind, target in targets_of(src["prompt"], patterns):
                cells.append({"scene": src["scene"], "seed": src["seed"], "source_prompt": src["prompt"],
                              "source": str(src["run"]), "mesh": str(source_mesh(src["run"])), "kind": kind,
                              "target": target, "guidance": guidance})
    if ply:
        first = min((s["seed"] for s in sources), default=None)
        for src in sources:
            if src["scene"] == "gaussians" and src["seed"] == first:
                kind, target = targets_of(src["prompt"])[0]
                cells.append({"scene": "ply", "seed": src["seed"], "source_prompt": src["prompt"],
                              "source": str(src["run"] / "gaussians.ply"), "mesh": str(src["run"] / "gaussians.ply"),
                              "kind": kind, "target": target, "guidance": "pds"})
    return cells


# ----------------------------------------------------------------------------------------- one edit
class Timer:
    """Wraps a callable and adds its wall time to ``totals[name]`` while a training step runs
    (``outer`` marks the step itself; renders of the final outputs are not counted)."""

    def __init__(self, totals: Dict[str, float], name: str, fn, outer: bool = False):
        self.totals, self.name, self.fn, self.outer = totals, name, fn, outer

    def __call__(self, *args, **kwargs):
        if self.outer:
            self.totals["_in_step"] = 1.0
        elif not self.totals["_in_step"]:
            return self.fn(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.totals[self.name] += time.perf_counter() - t0
            if self.outer:
                self.totals["_in_step"] = 0.0


def instrument(run) -> Dict[str, float]:
    """Time source renders, edited renders and the guidance (prior passes) of every training step."""
    totals: Dict[str, float] = defaultdict(float)
    run.system.render = Timer(totals, "edited_render", run.system.render)
    run.source.render = Timer(totals, "source_render", run.source.render)
    run.guidance = Timer(totals, "guidance_total", run.guidance)
    step = run.train_step
    run.train_step = Timer(totals, "step_total", step, outer=True)
    return totals


def split(totals: Dict[str, float], steps: int) -> Dict[str, float]:
    """Per-step seconds: source render, edited render, prior passes (guidance minus the source
    renders it triggers), rest."""
    prior = totals["guidance_total"] - totals["source_render"]
    rest = totals["step_total"] - totals["guidance_total"] - totals["edited_render"]
    out = {"source_render": totals["source_render"], "edited_render": totals["edited_render"], "prior": prior,
           "rest": rest, "total": totals["step_total"]}
    return {k: round(v / max(steps, 1), 4) for k, v in out.items()}


def preset_section(path: Path, section: str) -> Dict[str, Any]:
    """One section of a preset, read through its ``base:`` chain as ``text3d`` reads it (a preset may set
    only what differs from its base)."""
    from text3d.core.config_files import load_raw

    data = load_raw(path).get(section)
    if not data:
        raise KeyError(f"{path}: no {section} section in it or its bases")
    return data


def preset_guidance_scale(path: Path) -> float:
    """``guidance.guidance_scale`` of a preset, through its ``base:`` chain."""
    return float(preset_section(path, "guidance")["guidance_scale"])


def one_edit(kind: str, source: str, target: str, guidance: str, steps: Optional[int], out_dir: Path, prior,
             extra: List[str], export: bool = False, edit_kind: str = "colour"):
    """Run one edit in this process with the ``kind`` scene's preset for ``edit_kind`` (``colour``:
    :data:`PRESETS`, ``shape``: :data:`SHAPE_PRESETS`; ``steps=None``: the preset's); returns the run,
    its ``metrics.json`` and the per-step time split."""
    from text3d.edit import open_edit

    overrides = [f"source={source}", f"target_prompt={target}", f"output_dir={out_dir}", f"guidance.type={guidance}",
                 "trainer.val_every=0", "trainer.checkpoint_every=0", "trainer.turntable_frames=12",
                 *([] if export else ["export.enabled=false"]), *([f"steps={steps}"] if steps else []), *extra]
    preset = (SHAPE_PRESETS if edit_kind == "shape" else PRESETS)[kind]
    if guidance != "pds":  # the baselines at the edit preset's CFG scale, for a like-for-like comparison
        overrides.append(f"guidance.guidance_scale={preset_guidance_scale(preset)}")
    run = open_edit(preset, overrides, prior=prior)
    totals = instrument(run)
    run.fit()
    # the instrumented finish also renders; only training steps count in the split
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    return run, metrics, split(totals, run.step)


@contextlib.contextmanager
def reference_mesh(path: Path):
    """The mesh an edit's is held against: a source run's export as it is; for a ``.ply`` source, the
    mesh ``text3d export FILE.ply`` makes of it with the ``.ply`` edit preset's export settings (in a
    temporary folder)."""
    if path.suffix.lower() != ".ply":
        yield path
        return
    import tempfile

    from text3d.export import export_run_dir
    from text3d.export.config import ExportConfig

    settings = {**preset_section(PRESETS["ply"], "export"), "texture_size": 0}  # the latent preset's comes from its base
    with tempfile.TemporaryDirectory() as folder:
        result = export_run_dir(path, ExportConfig(**settings), Path(folder) / "export")
        yield next(p for p in result.paths if p.suffix == ".glb")


def row(cell: Dict[str, Any], metrics: Dict[str, Any], timing: Dict[str, float], edit_dir: Optional[Path]) -> Dict[str, Any]:
    """A cell's figures from its edit's ``metrics.json`` (and the meshes, when both exist)."""
    from text3d.prior.shapes import parse_prompt

    tgt, idn, clean = metrics.get("target") or {}, metrics["identity"], metrics.get("cleanliness") or {}
    source_shape = (parse_prompt(cell["source_prompt"]) or (None, None))[0]
    shape_ok = tgt.get("shape_found") == (tgt.get("shape") if cell["kind"] == "shape" else source_shape)
    if "pattern_ok" in tgt:  # a striped target: base and stripe colours in the exact render's bands
        reached = bool(tgt["pattern_ok"]) and shape_ok
    else:
        reached = bool(tgt.get("hue_ok")) and (tgt.get("colour_share") or 0.0) >= GOALS["colour_share"] and shape_ok
    export = metrics.get("export") or {}
    glb = [f for f in export.get("files", []) if f.endswith(".glb")]
    voxel = None
    if glb and edit_dir is not None and cell.get("mesh") and Path(cell["mesh"]).is_file():
        with reference_mesh(Path(cell["mesh"])) as reference:
            voxel = round(mesh_voxel_iou(reference, edit_dir / glb[0]), 4)
    out = {k: cell[k] for k in ("scene", "seed", "source_prompt", "target", "kind", "guidance")}
    out.update(reached=reached, hue=tgt.get("hue"), hue_error=tgt.get("hue_error"), colour_found=tgt.get("colour_found"),
               colour_share=tgt.get("colour_share"),
               shape_found=tgt.get("shape_found"), target_iou=tgt.get("silhouette_iou"),
               identity_iou=idn["silhouette_iou"], colour_change=idn["mean_colour_change"], voxel_iou=voxel,
               semi=clean.get("semi_transparent"), semi_source=clean.get("semi_transparent_source"),
               semi_excess=clean.get("semi_transparent_excess"), floaters=clean.get("floaters"),
               stray=clean.get("stray_opacity"), pieces=export.get("pieces"), wall_s=metrics["wall_time_s"],
               step_split_s=timing, edit_dir=str(edit_dir) if edit_dir else None)
    out["goal"] = meets_goal(out)
    return out


def meets_goal(r: Dict[str, Any]) -> bool:
    """Whether a row meets every goal of its kind (shape cells: target and cleanliness only)."""
    clean = r["semi_excess"] is not None and r["semi_excess"] <= GOALS["semi_excess"] and r["pieces"] in (1, None)
    if r["kind"] == "shape":
        return bool(r["reached"] and clean)
    return bool(r["reached"] and clean and r["identity_iou"] >= GOALS["identity_iou"]
                and (r["voxel_iou"] is None or r["voxel_iou"] >= GOALS["voxel_iou"]))


def cell_key(cell: Dict[str, Any]) -> List[Any]:
    return [cell["scene"], str(Path(cell["source"]).resolve()), cell["target"], cell["guidance"]]


def presets_text(cell: Dict[str, Any]) -> str:
    """The text of the presets a cell's edit reads (its own and the appearance preset a shape preset
    is based on): part of its cache key, so a changed preset runs the cell again."""
    paths = [PRESETS[cell["scene"]], *([SHAPE_PRESETS[cell["scene"]]] if cell["kind"] == "shape" else [])]
    return "".join(p.read_text() for p in paths if p.is_file())


def row_path(cache: Path, cell: Dict[str, Any], steps: Optional[int], extra: List[str]) -> Path:
    """The cache file of one cell: readable name plus a hash of everything that changes its result."""
    key = json.dumps([*cell_key(cell), steps, sorted(extra), presets_text(cell)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return cache / f"{cell['scene']}-{'_'.join(cell['target'].split())}-{cell['guidance']}-{steps or 'preset'}-{digest}.json"


def cached_edit(cache: Path, cell: Dict[str, Any], steps: Optional[int], out_dir: Path, prior,
                extra: List[str]) -> Optional[Dict[str, Any]]:
    """The row of one cell: from the cache, or by running it here (then cached); None while another
    process sharing the cache runs it (it holds the row's claim, :func:`text3d.core.io.try_claim`)."""
    from text3d.core.io import release_claim, try_claim, write_json

    path = row_path(cache, cell, steps, extra)
    if path.is_file():
        return json.loads(path.read_text())
    if not try_claim(path):
        return None
    try:
        if path.is_file():  # finished by another process between the two checks
            return json.loads(path.read_text())
        source_prompt = [f"source_prompt={cell['source_prompt']}"] if cell["scene"] == "ply" else []
        run, metrics, timing = one_edit(cell["scene"], cell["source"], cell["target"], cell["guidance"], steps,
                                        out_dir, prior, [*source_prompt, *extra], export=True, edit_kind=cell["kind"])
        result = {**row(cell, metrics, timing, getattr(run, "run_dir", None)), "steps": metrics.get("steps"),
                  "set": list(extra)}
        write_json(path, result)
        return result
    finally:
        release_claim(path)


def collect_rows(jobs: List[Callable[[], Optional[Dict[str, Any]]]], report: Callable[[Dict[str, Any]], None],
                 poll_s: float = 10.0) -> List[Dict[str, Any]]:
    """Every job's row, in order. A job returns None while another process runs it: those are passed
    over at first, then polled until their row is cached (or their process died and this one ran
    them). ``report`` gets each row as it arrives."""
    rows: List[Optional[Dict[str, Any]]] = []
    for job in jobs:
        rows.append(job())
        if rows[-1] is not None:
            report(rows[-1])
    waiting = [i for i, r in enumerate(rows) if r is None]
    if waiting:
        print(f"waiting for {len(waiting)} edit(s) that other processes are running", flush=True)
    for i in waiting:
        rows[i] = jobs[i]()  # often finished while this process ran its own: no wait then
        while rows[i] is None:
            time.sleep(poll_s)
            rows[i] = jobs[i]()
        report(rows[i])
    return rows


# ----------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """This script's options (the docs test parses the documented command lines with it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", nargs="*", default=None,
                   help="roots of the matrix's source runs (<root>/<preset>/<slug>@<time>); --train trains into the first")
    p.add_argument("--train", action="store_true", help="train the missing sources under --sources")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1], help="source seeds (the k-th shifts colours by 4k)")
    p.add_argument("--scenes", nargs="*", default=["nerf", "gaussians"], choices=["nerf", "gaussians"])
    p.add_argument("--shapes", nargs="*", default=None, help="only sources of these shapes")
    p.add_argument("--kinds", nargs="*", default=["colour", "shape", "pattern"], choices=["colour", "shape", "pattern"],
                   help="edit kinds to run (pattern edits exist with --prior latent only)")
    p.add_argument("--prior", choices=["pixel", "latent"], default="pixel",
                   help="the embedded prior: pixel (32 px RGB) or latent (the miniature Stable Diffusion, its presets)")
    p.add_argument("--ply", action="store_true", help="add a colour edit per shape of the Gaussian source's .ply")
    p.add_argument("--nerf-source", default=None, help="instead of the matrix: one NeRF run folder")
    p.add_argument("--gs-source", default=None, help="instead of the matrix: one Gaussian run folder")
    p.add_argument("--steps", type=int, default=None, help="edit steps (default: the presets')")
    p.add_argument("--guidances", nargs="*", default=GUIDANCES[:2], choices=GUIDANCES)
    p.add_argument("--out", default="outputs/eval_edit", help="where the edit folders go")
    p.add_argument("--json", default=None, help="write every row and the summary here")
    p.add_argument("--markdown", default=None, help="write the table of every row here (markdown)")
    p.add_argument("--report-only", action="store_true", help="print the cached rows only (no edit runs), naming the missing cells")
    p.add_argument("--picture", default=None, help="write a grid of the edits' captioned before/after pictures here (PNG)")
    p.add_argument("--cache", default=None, help="per-edit row cache (default: <out>/rows); cached rows are not rerun")
    p.add_argument("--where-measured", default=None, metavar="GUIDANCE",
                   help="only the cells already measured with GUIDANCE (a baseline on the same cells)")
    p.add_argument("--set", nargs="*", default=[], help="extra key=value overrides of every edit")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    return p


def sources_of(args) -> List[Dict[str, Any]]:
    """The sources: the two given run folders, or the matrix's under ``--sources``."""
    from text3d.run.config import load_config

    given = [(s, r) for s, r in (("nerf", args.nerf_source), ("gaussians", args.gs_source)) if r]
    if given:
        out = []
        for scene, run in given:
            cfg = load_config(Path(run) / "config.yaml")
            out.append({"scene": scene, "seed": cfg.seed, "prompt": cfg.prompt, "run": Path(run)})
        return out
    if not args.sources:
        raise SystemExit("eval_edit: give --sources ROOT (the matrix) or --nerf-source/--gs-source RUN_DIR")
    return find_sources([Path(r) for r in args.sources], args.seeds, args.scenes, args.train, args.shapes)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    use_prior(args.prior)
    sources = sources_of(args)
    prior = None  # --report-only runs no edit
    if not args.report_only:
        from text3d.guidance.registry import PRIORS

        prior = PRIORS.build(PRIORS.get(args.prior).config_cls(), torch.device("cpu"))  # loaded once, shared
    cells = [c for c in plan_cells(sources, args.guidances, args.ply, args.prior == "latent") if c["kind"] in args.kinds]
    cache = Path(args.cache or Path(args.out) / "rows")
    if args.where_measured:
        cells = [c for c in cells if row_path(cache, {**c, "guidance": args.where_measured}, args.steps, args.set).is_file()]
    if args.report_only:  # the cached rows only, the missing cells named
        paths = [row_path(cache, cell, args.steps, args.set) for cell in cells]
        missing = [f"{c['scene']}/{c['seed']} {c['source_prompt']} -> {c['target']} ({c['guidance']})"
                   for c, path in zip(cells, paths) if not path.is_file()]
        print(f"{len(cells) - len(missing)} of {len(cells)} cells measured; not yet: " + ("; ".join(missing) or "none"))
        cells = [c for c, path in zip(cells, paths) if path.is_file()]
    jobs = [functools.partial(cached_edit, cache, cell, args.steps, Path(args.out), prior, args.set) for cell in cells]
    print(f"{len(sources)} sources, {len(cells)} cells", flush=True)
    done: List[Dict[str, Any]] = []

    def report(r: Dict[str, Any]) -> None:
        done.append(r)
        print_table([r], head=len(done) == 1)

    rows = collect_rows(jobs, report)
    print("\nall edits:")
    print_table(rows)
    figures = summary(rows)
    if args.json:
        from text3d.core.io import write_json

        write_json(Path(args.json), {"rows": rows, **figures})
    if args.markdown:
        from text3d.core.io import write_text

        write_text(Path(args.markdown), markdown_table(rows))
    if args.picture:
        picture(rows, Path(args.picture))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process (all edits, prior loaded once): {peak_mb:.0f} MB; "
          f"torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
