"""Offline 3D editing experiments with the embedded shapes prior: PDS vs SDS-edit vs DDS.

For quickstart source scenes (a NeRF run and/or a Gaussian run of "a red cube"), runs colour edits
(one to the prior's held-out pair "a blue cube") and shape edits with each guidance at equal steps,
and prints, per edit: whether the target was reached (colour / best-fitting shape by the analytic
judge) and how much of the source was kept (silhouette IoU to the source over 8 views, mean colour
change). It also times the edit steps (source render, edited render, prior passes, rest) and reports
the process's peak memory. Everything is seeded: the same command prints the same figures.

Each finished edit's row is cached in ``--cache`` (default ``<out>/rows``, one JSON per scene, target,
guidance, steps and overrides; written atomically): a restarted or repeated command skips the rows
it has and prints the whole table, so heavy sets can run in several background processes
(``OMP_NUM_THREADS=1 ... --threads 1``) sharing one cache. Each edit is claimed by the process that
runs it (``<row>.json.claim``): the others pass it over, run the rest, then wait for its row (or run it
if that process died), so every process ends by printing the whole table.

    python benchmarks/eval_edit.py --nerf-source outputs/src/quickstart/a_red_cube@... \\
        --gs-source outputs/src/quickstart-gaussians/a_red_cube@... --steps 100 --json edits.json

Goals (issue 11): colour edits reach the target colour with silhouette IoU to the source >= 0.9; shape
edits reach the target shape; PDS keeps the source better than SDS-edit at equal target success.
Timings are wall-clock on whatever machine runs it: say when cores were shared.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRESETS = {"nerf": REPO / "configs" / "edit-quickstart.yaml", "gaussians": REPO / "configs" / "edit-quickstart-gaussians.yaml"}
COLOUR_EDITS = ["a blue cube", "a green cube", "a yellow cube", "a purple cube"]  # "a blue cube": held out of the prior
SHAPE_EDITS = ["a red sphere", "a red cylinder"]
GUIDANCES = ["pds", "sds-edit", "dds"]


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


def one_edit(kind: str, source: str, target: str, guidance: str, steps: int, out_dir: Path, prior, extra: List[str]):
    from text3d.edit import open_edit

    overrides = [f"source={source}", f"target_prompt={target}", f"steps={steps}", f"output_dir={out_dir}",
                 f"guidance.type={guidance}", "trainer.val_every=0", "trainer.checkpoint_every=0",
                 "trainer.turntable_frames=12", "export.enabled=false", *extra]
    if guidance != "pds":  # the baselines at the edit preset's CFG scale, for a like-for-like comparison
        overrides.append("guidance.guidance_scale=20")
    run = open_edit(PRESETS[kind], overrides, prior=prior)
    totals = instrument(run)
    run.fit()
    # the instrumented finish also renders; only training steps count in the split
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    return run, metrics, split(totals, steps)


def row_path(cache: Path, kind: str, source: str, target: str, guidance: str, steps: int, extra: List[str]) -> Path:
    """The cache file of one edit: readable name plus a hash of everything that changes its result."""
    key = json.dumps([kind, str(Path(source).resolve()), target, guidance, steps, sorted(extra)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return cache / f"{kind}-{'_'.join(target.split())}-{guidance}-{steps}-{digest}.json"


def cached_edit(cache: Path, kind, source, target, guidance, steps, out_dir, prior, extra) -> Optional[Dict[str, Any]]:
    """The row of one edit: from the cache, or by running it here (then cached); None while another
    process sharing the cache runs it (it holds the row's claim, :func:`text3d.core.io.try_claim`)."""
    from text3d.core.io import release_claim, try_claim, write_json

    path = row_path(cache, kind, source, target, guidance, steps, extra)
    if path.is_file():
        return json.loads(path.read_text())
    if not try_claim(path):
        return None
    try:
        if path.is_file():  # finished by another process between the two checks
            return json.loads(path.read_text())
        _, metrics, timing = one_edit(kind, source, target, guidance, steps, out_dir, prior, extra)
        result = {**row(kind, "a red cube", target, guidance, metrics, timing), "steps": steps, "set": list(extra)}
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
        while rows[i] is None:
            time.sleep(poll_s)
            rows[i] = jobs[i]()
        report(rows[i])
    return rows


def row(kind, source_prompt, target, guidance, metrics, timing) -> Dict[str, Any]:
    tgt, idn = metrics.get("target") or {}, metrics["identity"]
    colour_edit = target.split()[-1] == source_prompt.split()[-1]
    reached = bool(tgt.get("colour_ok")) if colour_edit else bool(tgt.get("shape_ok"))
    return {"scene": kind, "target": target, "kind": "colour" if colour_edit else "shape", "guidance": guidance,
            "reached": reached, "colour_found": tgt.get("colour_found"), "shape_found": tgt.get("shape_found"),
            "target_iou": tgt.get("silhouette_iou"), "identity_iou": idn["silhouette_iou"],
            "colour_change": idn["mean_colour_change"], "wall_s": metrics["wall_time_s"], "step_split_s": timing}


def print_table(rows: List[Dict[str, Any]]) -> None:
    head = f"{'scene':<9} {'target':<15} {'kind':<6} {'guidance':<8} {'reached':<7} {'colour':<7} {'shape':<9} " \
           f"{'IoU tgt':>7} {'IoU src':>7} {'dRGB':>6} {'wall s':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['scene']:<9} {r['target']:<15} {r['kind']:<6} {r['guidance']:<8} {str(r['reached']):<7} "
              f"{str(r['colour_found']):<7} {str(r['shape_found']):<9} {r['target_iou'] or 0:>7.3f} "
              f"{r['identity_iou']:>7.3f} {r['colour_change']:>6.3f} {r['wall_s']:>7.1f}")
    sys.stdout.flush()


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """The rows as the markdown table of docs/editing.md."""
    out = ["| scene | target | guidance | steps | reached | colour found | shape found | IoU to target shape | "
           "IoU to source | dRGB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        held = " (held out)" if r["target"] == "a blue cube" else ""
        out.append(f"| {'NeRF' if r['scene'] == 'nerf' else 'Gaussians'} | {r['target']}{held} | {r['guidance']} | "
                   f"{r.get('steps', '')} | {'yes' if r['reached'] else 'no'} | {r['colour_found']} | {r['shape_found']} | "
                   f"{r['target_iou'] or 0:.3f} | {r['identity_iou']:.3f} | {r['colour_change']:.3f} |")
    return "\n".join(out) + "\n"


def summary(rows: List[Dict[str, Any]]) -> None:
    print("\nper guidance: target reached / edits, mean silhouette IoU to the source, mean colour change")
    for g in GUIDANCES:
        rs = [r for r in rows if r["guidance"] == g]
        if rs:
            n_ok = sum(r["reached"] for r in rs)
            iou = sum(r["identity_iou"] for r in rs) / len(rs)
            dc = sum(r["colour_change"] for r in rs) / len(rs)
            print(f"  {g:<8} {n_ok}/{len(rs)}  IoU {iou:.3f}  dRGB {dc:.3f}")
    print("\nPDS vs SDS-edit at equal steps where both reach the target (IoU to source, dRGB):")
    by_key = {(r["scene"], r["target"], r.get("steps"), r["guidance"]): r for r in rows}
    for (scene, target, steps, g), pds in by_key.items():
        sds = by_key.get((scene, target, steps, "sds-edit"))
        if g == "pds" and sds is not None and pds["reached"] and sds["reached"]:
            keeps = pds["identity_iou"] >= sds["identity_iou"] and pds["colour_change"] <= sds["colour_change"]
            print(f"  {scene:<9} {target:<15} PDS {pds['identity_iou']:.3f} / {pds['colour_change']:.3f}   "
                  f"SDS-edit {sds['identity_iou']:.3f} / {sds['colour_change']:.3f}   PDS keeps more: {keeps}")
    colour_pds = [r for r in rows if r["guidance"] == "pds" and r["kind"] == "colour"]
    if colour_pds:
        ok = sum(r["reached"] and r["identity_iou"] >= 0.9 for r in colour_pds)
        print(f"  goal, PDS colour edits reaching the colour with IoU >= 0.9: {ok}/{len(colour_pds)}")


def build_parser() -> argparse.ArgumentParser:
    """This script's options (the docs test parses the documented command lines with it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nerf-source", default=None, help="a quickstart NeRF run folder of 'a red cube'")
    p.add_argument("--gs-source", default=None, help="a quickstart-gaussians run folder of 'a red cube'")
    p.add_argument("--steps", type=int, default=100, help="edit steps (equal for every guidance)")
    p.add_argument("--colour", nargs="*", default=COLOUR_EDITS, help="colour-edit target prompts")
    p.add_argument("--shape", nargs="*", default=SHAPE_EDITS, help="shape-edit target prompts")
    p.add_argument("--guidances", nargs="*", default=GUIDANCES, choices=GUIDANCES)
    p.add_argument("--compare-on", nargs="*", default=None,
                   help="targets on which every guidance runs (default: all); other targets run PDS only")
    p.add_argument("--out", default="outputs/eval_edit", help="where the edit folders go")
    p.add_argument("--json", default=None, help="write every row here")
    p.add_argument("--markdown", default=None, help="write the table of every row here (markdown)")
    p.add_argument("--cache", default=None, help="per-edit row cache (default: <out>/rows); cached rows are not rerun")
    p.add_argument("--set", nargs="*", default=[], help="extra key=value overrides of every edit")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig

    prior = PixelPrior(PixelPriorConfig(), torch.device("cpu"))  # loaded once, shared by every edit
    sources = {k: v for k, v in (("nerf", args.nerf_source), ("gaussians", args.gs_source)) if v}
    cache = Path(args.cache or Path(args.out) / "rows")
    jobs = [functools.partial(cached_edit, cache, kind, source, target, guidance, args.steps, Path(args.out), prior,
                              args.set)
            for kind, source in sources.items() for target in [*args.colour, *args.shape]
            for guidance in (args.guidances if args.compare_on is None or target in args.compare_on else ["pds"])]
    done: List[Dict[str, Any]] = []

    def report(r: Dict[str, Any]) -> None:
        done.append(r)
        print_table([r]) if len(done) > 1 else print_table(done)
        if args.json:
            Path(args.json).write_text(json.dumps(done, indent=1))

    rows = collect_rows(jobs, report)
    if args.json:  # in the table's order
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.markdown:
        from text3d.core.io import write_text

        write_text(Path(args.markdown), markdown_table(rows))
    print("\nall edits:")
    print_table(rows)
    summary(rows)
    print("\nper-step time split (s), mean over edits:")
    for kind in sources:
        rs = [r["step_split_s"] for r in rows if r["scene"] == kind]
        mean = {k: round(sum(r[k] for r in rs) / len(rs), 4) for k in rs[0]}
        print(f"  {kind}: {mean}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process (all edits, prior loaded once): {peak_mb:.0f} MB; "
          f"torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
