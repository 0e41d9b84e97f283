"""The score-distillation family side by side on the embedded prior: every guidance at its preset.

For each guidance (SDS, SDS + Perp-Neg, CSD, NFSD, ISM, VSD; on request SDS at DreamFusion's CFG 100
and the Gaussian pair SDS / ISM), every prompt x seed is trained from its preset as `text3d run`
would, in one child process per guidance (the prior is loaded once per child; the child's peak
resident memory, ``ru_maxrss`` via ``os.wait4``, is that guidance's peak memory; on CUDA the peak
allocated GPU memory is reported too).
Every ``--eval-every`` steps the scene is scored against the analytic shape of its prompt (8 views,
64 px, the run's own ``metrics.json`` score), which gives:

- final silhouette IoU (mean over runs, and the worst run), and whether the prompted colour is found;
- steps to IoU 0.9: the first scored step at or above 0.9 (median over the runs that reach it;
  ``n/N`` says how many did);
- saturation: mean HSV saturation of the scene's pixels divided by that of the prior's own picture
  of the same shape and colour from the same cameras (the analytic renderer the prior was trained
  on). 1.0 = the prior's palette; above 1 = oversaturated, below = washed out;
- haze: floaters and halos that the IoU (opacity > 0.5) misses: the mean darkness of the final
  view's pixels more than 2 px away from the true silhouette, in percent (0 = clean white);
- time per training step (the step alone, not the scoring), and its ratio to SDS's in the same
  benchmark run.

    python benchmarks/eval_guidance.py [--guidances sds vsd ...] [--prompts "a red cube" ...]
        [--seeds 0 1] [--steps N] [--eval-every 25] [--out outputs/eval-guidance] [--json report.json]
        [--grid guidance-grid.png]

--grid writes one picture: a row per guidance, a column per prompt (seed 0), each the final scene
from the scoring camera at azimuth 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

GUIDANCES = {  # name -> (preset, overrides); the presets are the offline ones in configs/
    "sds": ("configs/quickstart.yaml", []),
    "sds-cfg100": ("configs/quickstart.yaml", ["guidance.guidance_scale=100"]),  # DreamFusion's CFG
    "sds+perp-neg": ("configs/perpneg-quickstart.yaml", []),
    "csd": ("configs/csd-quickstart.yaml", []),
    "nfsd": ("configs/nfsd-quickstart.yaml", []),
    "ism": ("configs/ism-quickstart.yaml", []),
    "vsd": ("configs/prolificdreamer-quickstart.yaml", []),
    "sds-gaussians": ("configs/quickstart-gaussians.yaml", []),
    "ism-gaussians": ("configs/luciddreamer-quickstart.yaml", []),
}
DEFAULT_GUIDANCES = ["sds", "sds+perp-neg", "csd", "nfsd", "ism", "vsd"]
DEFAULT_PROMPTS = ["a red cube", "a blue sphere", "a green cone", "a purple cylinder", "an orange pyramid",
                   "a pink capsule", "a cyan torus", "a blue cube", "a yellow torus"]
IOU_TARGET = 0.9


# ----------------------------------------------------------------------------- one guidance (child)
def saturation_ratio(run, n_views: int = 8, resolution: int = 64) -> float:
    """Mean saturation of the scene's pixels / that of the prior's picture of the prompt, same cameras."""
    import torch

    from text3d.prior.evaluation import rgb_to_hue_sat_val
    from text3d.prior.shapes import parse_prompt, render_shapes
    from text3d.scene.cameras import turntable

    shape, colour = parse_prompt(run.cfg.prompt)
    cams = turntable(n_views, 15.0, run.cfg.cameras.eval_distance, run.cfg.cameras.eval_fovy, resolution, resolution)
    views = run.render_views(cams, mode="albedo")
    rgb = torch.stack([v["rgb"] for v in views]).permute(0, 3, 1, 2).clamp(0, 1)
    mask = torch.stack([v["opacity"][..., 0] for v in views]) > 0.5
    ref_rgb, coverage = render_shapes([shape] * n_views, [colour] * n_views, cams, supersample=2)
    ref_sat = rgb_to_hue_sat_val(ref_rgb.permute(0, 3, 1, 2))[1][coverage > 0.5].mean()
    sat = rgb_to_hue_sat_val(rgb)[1][mask]
    return float(sat.mean() / ref_sat) if sat.numel() else float("nan")


def train_scored(run, eval_every: int, device: str) -> dict:
    """Train ``run`` to its steps, scoring every ``eval_every``; the figures of one run."""
    import torch

    from text3d.prior.scene_eval import analytic_scores

    step_s, curve, reached = [], [], None
    while run.step < run.cfg.steps:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run.last_losses = run.train_step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - t0)
        run.step += 1
        if run.step % eval_every == 0 or run.step == run.cfg.steps:
            iou = analytic_scores(run)["silhouette_iou"]
            curve.append([run.step, iou])
            if reached is None and iou >= IOU_TARGET:
                reached = run.step
    scores = analytic_scores(run)
    return {"iou": scores["silhouette_iou"], "colour_found": scores["colour_found"], "colour": scores["colour"],
            "steps_to_target": reached, "saturation": round(saturation_ratio(run), 3),
            "step_s": round(statistics.median(step_s[1:] or step_s), 4), "steps": run.step, "curve": curve}


VIEW_PX = 96
"""Side of the saved final view (azimuth 0, elevation 15, the eval distance and field of view)."""


def view_camera(cfg):
    from text3d.scene.cameras import turntable

    return turntable(1, 15.0, cfg.cameras.eval_distance, cfg.cameras.eval_fovy, VIEW_PX, VIEW_PX)


def haze_percent(image, prompt: str, cameras) -> float:
    """What SDS-family floaters and halos leave: the mean darkness (1 - mean RGB; white = 0) of the
    pixels of ``image`` (``[H, W, 3]`` in [0, 1], on white) farther than 2 px from the true silhouette
    of the prompt's shape, in percent. The silhouette IoU (opacity > 0.5) misses faint haze; this does not."""
    import torch
    import torch.nn.functional as F

    from text3d.prior.shapes import parse_prompt, render_shapes

    shape, colour = parse_prompt(prompt)
    _, coverage = render_shapes([shape], [colour], cameras, supersample=2)
    near = F.max_pool2d((coverage > 0.01).float()[None], 5, stride=1, padding=2)[0, 0] > 0
    darkness = 1.0 - torch.as_tensor(image, dtype=torch.float32).mean(-1)
    return round(float(darkness[~near].mean()) * 100, 3)


def save_view(run, path: Path) -> float:
    """Save the final view; returns its haze (:func:`haze_percent`)."""
    from text3d.core.media import save_image

    cams = view_camera(run.cfg)
    rgb = run.render_views(cams)[0]["rgb"].clamp(0, 1)
    save_image(path, rgb)
    return haze_percent(rgb, run.cfg.prompt, cams)


def worker(args) -> int:
    """Run every prompt x seed of one guidance in this process; one JSON line per run on stdout."""
    import torch

    from text3d.run import open_run

    config, extra = GUIDANCES[args.worker]
    out = Path(args.out) / args.worker.replace("+", "-")
    prior = None
    for prompt in args.prompts:
        for seed in args.seeds:
            overrides = [*extra, f"prompt={prompt}", f"seed={seed}", f"device={args.device}", *args.overrides]
            if args.steps:
                overrides.append(f"steps={args.steps}")
            run_dir = out / f"{prompt.replace(' ', '_')}-seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            run = open_run(config, overrides, prior=prior, run_dir=run_dir)
            prior = run.prior
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            row = {"guidance": args.worker, "prompt": prompt, "seed": seed, **train_scored(run, args.eval_every, args.device)}
            if args.device.startswith("cuda"):
                row["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            row["haze"] = save_view(run, run_dir / "final.png")
            row["image"] = str(run_dir / "final.png")
            print(json.dumps(row), flush=True)
    return 0


# ----------------------------------------------------------------------------- the table (parent)
def run_guidance(name: str, args) -> dict:
    """One child process for guidance ``name``: its runs and its peak memory."""
    cmd = [sys.executable, __file__, "--worker", name, "--prompts", *args.prompts, "--seeds", *map(str, args.seeds),
           "--eval-every", str(args.eval_every), "--out", args.out, "--device", args.device]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.overrides:
        cmd += ["--set", *args.overrides]
    log_path = Path(args.out) / f"{name.replace('+', '-')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        runs = [json.loads(line) for line in proc.stdout if line.startswith("{")]
        _, status, usage = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    return {"guidance": name, "rc": rc, "log": str(log_path), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "runs": runs}


def summarise(result: dict) -> dict:
    runs = result["runs"]
    if not runs:
        return {"guidance": result["guidance"], "error": f"no run finished (exit {result['rc']}); see {result['log']}"}
    reached = [r["steps_to_target"] for r in runs if r["steps_to_target"] is not None]
    s = {"guidance": result["guidance"], "runs": len(runs), "mean_iou": round(statistics.mean(r["iou"] for r in runs), 3),
         "min_iou": min(r["iou"] for r in runs), "colour_ok": sum(r["colour_found"] == r["colour"] for r in runs),
         "reached": len(reached), "median_steps_to_target": statistics.median(reached) if reached else None,
         "saturation": round(statistics.mean(r["saturation"] for r in runs), 3),
         "haze": round(statistics.mean(r["haze"] for r in runs), 2) if all("haze" in r for r in runs) else None,
         "step_s": round(statistics.median(r["step_s"] for r in runs), 4), "peak_rss_mb": result["peak_rss_mb"]}
    if "gpu_peak_mb" in runs[0]:
        s["gpu_peak_mb"] = max(r["gpu_peak_mb"] for r in runs)
    return s


def print_row(s: dict, base_step_s) -> None:
    if "error" in s:
        print(f"{s['guidance']:<15} {s['error']}", flush=True)
        return
    to_target = "-" if s["median_steps_to_target"] is None else f"{s['median_steps_to_target']:.0f}"
    ratio = f"{s['step_s'] / base_step_s:.2f}x" if base_step_s else "-"
    gpu = f" {s['gpu_peak_mb']:>8.0f}" if "gpu_peak_mb" in s else ""
    haze = "-" if s["haze"] is None else f"{s['haze']:.2f}"
    print(f"{s['guidance']:<15} {s['mean_iou']:>6.3f} {s['min_iou']:>6.3f} {s['colour_ok']:>3}/{s['runs']:<3} "
          f"{to_target:>6} {s['reached']:>3}/{s['runs']:<3} {s['saturation']:>6.2f} {haze:>6} {s['step_s']:>7.3f} {ratio:>6} "
          f"{s['peak_rss_mb']:>8.0f}{gpu}", flush=True)


def image_grid(results: list, prompts: list, seed: int, path: str) -> None:
    """A row per guidance, a column per prompt: the final scene of seed ``seed``."""
    import imageio.v2 as imageio
    import numpy as np

    rows = []
    for result in results:
        by_prompt = {r["prompt"]: r for r in result["runs"] if r["seed"] == seed}
        tiles = [imageio.imread(by_prompt[p]["image"])[..., :3] if p in by_prompt else np.full((96, 96, 3), 255, np.uint8)
                 for p in prompts]
        rows.append(np.concatenate(tiles, axis=1))
    if rows:
        imageio.imwrite(path, np.concatenate(rows, axis=0))


def build_parser() -> argparse.ArgumentParser:
    """This script's options (the docs test parses the documented command lines with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidances", nargs="+", default=DEFAULT_GUIDANCES, choices=sorted(GUIDANCES))
    parser.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=None, help="train every run this long (default: its preset's)")
    parser.add_argument("--eval-every", type=int, default=25, help="score the scene every N steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="outputs/eval-guidance")
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--grid", default=None, help="write a picture: a row per guidance, a column per prompt (.png)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="config overrides passed to every run (key.path=value)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"{len(args.prompts)} prompts x {len(args.seeds)} seeds on {args.device} ({os.cpu_count()} CPUs); "
          f"IoU scored every {args.eval_every} steps")
    gpu = " GPU MB" if args.device.startswith("cuda") else ""
    print(f"{'guidance':<15} {'IoU':>6} {'worst':>6} {'colour':>7} {'to 0.9':>6} {'reached':>7} {'satur.':>6} {'haze %':>6} "
          f"{'s/step':>7} {'x SDS':>6} {'peak MB':>8}{gpu}")
    results, summaries, base = [], [], None
    for name in args.guidances:
        result = run_guidance(name, args)
        results.append(result)
        summaries.append(summarise(result))
        if name == "sds" and "error" not in summaries[-1]:
            base = summaries[-1]["step_s"]
        print_row(summaries[-1], base)
        if args.json:  # after every guidance: a stopped benchmark keeps what it measured
            Path(args.json).write_text(json.dumps({"summary": summaries, "results": results}, indent=2))
    if args.grid:
        image_grid(results, args.prompts, args.seeds[0], args.grid)
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
