"""Temporal consistency of `text3d video`: warp error and colour flips, i.i.d. vs warped vs warped + keyframe attention.

For each quickstart run (its turntable rendered with depth) and each of three target prompts — the
run's own prompt, the same shape in another colour, and the colour-free "a cube" — and for one input
video file (DIS flow), the frames are restyled with SDEdit at the same seeds with i.i.d. noise, with
correspondence-guided (warped) noise (the initial and the per-step noise alike), and with warped
noise plus keyframe self-attention (every frame attends to the first frame's keys/values). Printed
per case and on average: warp error (Lai et al.), its ratio to i.i.d. (goal <= 0.5), colour flip rate
(goal near 0 with keyframe attention; the JSON also holds the flip rate of the (base, stripe-band)
colour pair judged in the exact render's regions), seconds per frame. ``--prior latent`` runs the
miniature Stable Diffusion (noise warped onto its latent grid) and adds the target "a striped <shape>".

Why a ratio stays near 1, measured: the warp error of frames restyled with i.i.d. noise splits into a
part that depends on the noise and a part that does not (the source's own warp error at the prior's
resolution, and what the prior draws differently from each camera whatever the noise). The second
is the warp error of the expected frames, estimated from the mean of the i.i.d. frames over
``--floor-seeds`` seeds (unbiased: ``(S e_mean - e_iid) / (S - 1)``); no noise, however well it
follows the correspondences, goes below it. Printed as "floor" and "best ratio" (floor / i.i.d.),
and "removed": the share of the noise-driven part that warped noise removes.

    OMP_NUM_THREADS=1 python benchmarks/eval_video_consistency.py --runs RUN_DIR [RUN_DIR ...] [--video clip.mp4]
        [--frames 16] [--steps 20] [--strength 0.8] [--seeds 2] [--floor-seeds 4] [--json out.json]

Without --video, a 3D-checkered cube turntable is rendered analytically and encoded to mp4 first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from text3d.prior.shapes import COLOUR_NAMES, parse_prompt, parse_shape, with_article  # noqa: E402
from text3d.video.pipeline import VideoConfig, metrics_for, restyle, warp_error  # noqa: E402
from text3d.video.noise import downsample_correspondence  # noqa: E402
from text3d.video.source import run_clip, video_clip  # noqa: E402


def target_prompts(prompt: str, patterns: bool = False) -> list[str]:
    """The run's prompt, the same shape in another colour, and "a cube"; with ``patterns`` (the latent
    prior's striped world) also the run's shape with its stripe colour open, "a striped <shape>"."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        return [prompt, "a cube"]
    shape, colour = parsed
    other = COLOUR_NAMES[(COLOUR_NAMES.index(colour) + 3) % len(COLOUR_NAMES)]
    return [prompt, with_article(f"{other} {shape}"), "a cube"] + ([f"a striped {shape}"] if patterns else [])


def pattern_flip_rate(frames, clip, shape: str) -> float:
    """Share of consecutive frame pairs whose (base colour, stripe-band colour) differ, each judged in the
    exact render's regions of ``shape`` at the frame's camera (pairs where either is not found are left
    out): the colour flips of a patterned object, its stripe included."""
    from text3d.prior.evaluation import region_colours

    size = frames.shape[1]
    cams = dataclasses.replace(clip.cameras, width=size, height=size)
    base, stripe = region_colours(frames.permute(0, 3, 1, 2).float(), cams, [shape] * len(frames))
    pairs = list(zip(base.tolist(), stripe.tolist()))
    found = [(a, b) for a, b in zip(pairs, pairs[1:]) if min(a) >= 0 and min(b) >= 0]
    return sum(a != b for a, b in found) / len(found) if found else float("nan")


def target_shape(prompt: str) -> str:
    return parse_shape(prompt) or "cube"


def checker_video(folder: Path, frames: int) -> Path:
    from text3d.scene.cameras import turntable
    from text3d.core.media import save_video
    from text3d.prior.shapes import render_checker

    cams = turntable(frames * 4, 15.0, 3.0, 32.0, 128, 128)  # 3.75 degrees per frame
    rgb, _ = render_checker(["cube"] * frames, cams.index(slice(0, frames)))
    return save_video(folder / "checker_cube.mp4", list(rgb), fps=12)


def pose_check(frames, clip, shape: str) -> dict:
    """Per-frame silhouette IoU with the analytic ``shape`` at the frame's own camera, and whether frame 0's
    camera fits better (pose pasted: IoU at frame 0's camera > own + 0.05), as the multi-view eval judges views."""
    from text3d.prior.evaluation import mask_iou, object_mask, silhouettes_all_shapes
    from text3d.prior.shapes import SHAPES

    n, size = frames.shape[0], frames.shape[1]
    cams = dataclasses.replace(clip.cameras, width=size, height=size)
    sil = silhouettes_all_shapes(cams)[:, SHAPES.index(shape)]
    mask = object_mask(frames.permute(0, 3, 1, 2).float())
    own = mask_iou(mask, sil[:, None])[:, 0]
    at_ref = mask_iou(mask, sil[:1].expand(n, -1, -1)[:, None])[:, 0]
    return {"iou": float(own.mean()), "pasted": float((at_ref[1:] > own[1:] + 0.05).float().mean())}


ROWS = {"iid": ("iid", "none"), "warped": ("warped", "none"), "warped+keyframe": ("warped", "keyframe")}
GUIDED = ("warped", "warped+keyframe", "warped+refcam")


def evaluate(prior, clip, cfg: VideoConfig, seeds: int, floor_seeds: int, reference_camera: float = 0.0) -> dict:
    """Warp error / flips per row (mean over ``seeds`` seeds), the source's own warp error, and the
    noise-independent floor from the mean of ``floor_seeds`` i.i.d. restylings."""
    import torch.nn.functional as F

    source = F.interpolate(clip.frames.permute(0, 3, 1, 2), size=(prior.image_size,) * 2, mode="area")
    row = {"source_warp_error": metrics_for(source.permute(0, 2, 3, 1), clip)["warp_error"]}
    iid_frames = []
    rows = dict(ROWS, **({"warped+refcam": ("warped", "none")} if reference_camera > 0 else {}))
    for name, (kind, attention) in rows.items():
        runs = []
        refcam = reference_camera if name == "warped+refcam" else 0.0
        for seed in range(max(seeds, floor_seeds) if kind == "iid" else seeds):
            frames, seconds = restyle(prior, clip, dataclasses.replace(cfg, seed=seed, attention=attention,
                                                                       reference_camera=refcam), kind)
            if kind == "iid":
                iid_frames.append(frames)
            if seed < seeds:
                runs.append({**metrics_for(frames, clip), "seconds_per_frame": seconds / len(frames),
                             **pose_check(frames, clip, target_shape(cfg.prompt)),
                             "pattern_flip_rate": pattern_flip_rate(frames, clip, target_shape(cfg.prompt))})
        row[name] = {key: sum(r[key] for r in runs) / len(runs)
                     for key in ("warp_error", "colour_flip_rate", "pattern_flip_rate", "seconds_per_frame")}
        row[name]["colours"] = ["".join(c[0] for c in r["colours"]) for r in runs]
        for key in ("iou", "pasted"):
            row[name][key] = sum(r[key] for r in runs) / len(runs)
    s = clip.frames.shape[1] // prior.image_size
    forward = [downsample_correspondence(c, s, min_valid=1.0) for c in clip.forward]
    S = len(iid_frames)
    e_each = sum(warp_error(f, forward) for f in iid_frames) / S
    e_mean = warp_error(torch.stack(iid_frames).mean(0), forward)
    row["floor"] = (S * e_mean - e_each) / (S - 1)
    base = row["iid"]["warp_error"]
    for name in [n for n in GUIDED if n in row]:
        row[name]["ratio"] = row[name]["warp_error"] / base
        row[name]["removed"] = (base - row[name]["warp_error"]) / max(base - row["floor"], 1e-12)
    row["best_ratio"] = row["floor"] / base
    return row


def print_header() -> None:
    print(f"{'source':<16} {'prompt':<16} {'src err':>7} {'floor':>7} {'best':>5} | {'iid err':>7} {'flip':>5} | "
          f"{'warped':>7} {'ratio':>5} {'remov':>5} {'flip':>5} | {'+keyfr':>7} {'ratio':>5} {'remov':>5} {'flip':>5} "
          f"| {'+refcam':>7} {'ratio':>5} {'flip':>5} {'iou':>4} {'paste':>5} | {'s/frame':>7}")


def print_row(source: Path, target: str, row: dict) -> None:
    w, k, i = row["warped"], row["warped+keyframe"], row["iid"]
    print(f"{source.name[:16]:<16} {target[:16]:<16} {row['source_warp_error']:7.4f} {row['floor']:7.4f} "
          f"{row['best_ratio']:5.2f} | {i['warp_error']:7.4f} {i['colour_flip_rate']:5.2f} | {w['warp_error']:7.4f} "
          f"{w['ratio']:5.2f} {w['removed']:5.2f} {w['colour_flip_rate']:5.2f} | {k['warp_error']:7.4f} {k['ratio']:5.2f} "
          f"{k['removed']:5.2f} {k['colour_flip_rate']:5.2f} | {refcam_cells(row)} | {w['seconds_per_frame']:7.2f}",
          flush=True)


def refcam_cells(row: dict) -> str:
    r = row.get("warped+refcam")
    if r is None:
        return f"{'-':>7} {'-':>5} {'-':>5} {'-':>4} {'-':>5}"
    return f"{r['warp_error']:7.4f} {r['ratio']:5.2f} {r['colour_flip_rate']:5.2f} {r['iou']:4.2f} {r['pasted']:5.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="quickstart run folders")
    ap.add_argument("--video", default=None, help="an input video (default: an analytic checker-cube turntable)")
    ap.add_argument("--video-prompt", default="a red cube")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--strength", type=float, default=0.8)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--degrees-per-frame", type=float, default=0.0,
                    help="turntable step of the run sources (0 = a full turn over --frames)")
    ap.add_argument("--reference-camera", type=float, default=0.0,
                    help="> 0: add a row 'warped + refcam' (reference_camera = this fraction of the steps)")
    ap.add_argument("--no-video", action="store_true", help="run sources only (skip the input-video row)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per row (figures are their mean)")
    ap.add_argument("--floor-seeds", type=int, default=4, help="i.i.d. seeds for the noise-independent floor")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a shared 2-core machine)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--prior", choices=["pixel", "latent"], default="pixel",
                    help="the embedded prior: pixel (32 px RGB) or latent (the miniature Stable Diffusion: "
                         "noise warped on its latent grid)")
    ap.add_argument("--prior-model", default="builtin", help="the prior's folder (default: the shipped one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from text3d.guidance.registry import PRIORS

    prior = PRIORS.build(PRIORS.get(args.prior).config_cls(model=args.prior_model), torch.device("cpu"))
    base = VideoConfig(frames=args.frames, steps=args.steps, strength=args.strength, alpha=args.alpha,
                       degrees_per_frame=args.degrees_per_frame,
                       resolution=128, warp="nearest", background="static", batch_size=max(16, args.frames))
    rows = []
    print_header()
    cases = [(Path(r), None) for r in args.runs]
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(args.video) if args.video else checker_video(Path(tmp), args.frames)
        cases += [] if args.no_video else [(video, args.video_prompt)]
        for source, prompt in cases:
            t0 = time.perf_counter()
            clip = (run_clip(source, args.frames, 128, degrees_per_frame=args.degrees_per_frame) if prompt is None
                    else video_clip(source, args.frames, 128, base.flow_preset))
            prepare = time.perf_counter() - t0
            for target in ([prompt] if prompt else target_prompts(clip.prompt, args.prior == "latent")):
                cfg = dataclasses.replace(base, prompt=target)
                row = {"source": str(source), "kind": clip.kind, "prompt": target, "prepare_s": prepare,
                       **evaluate(prior, clip, cfg, args.seeds, args.floor_seeds, args.reference_camera)}
                rows.append(row)
                print_row(source, target, row)
    summarise(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    return 0


def nanmean(values: list) -> float:
    kept = [v for v in values if v == v]
    return sum(kept) / len(kept) if kept else float("nan")


def summarise(rows: list) -> None:
    mean = lambda f: sum(f(r) for r in rows) / len(rows)  # noqa: E731
    median = lambda f: float(torch.tensor([f(r) for r in rows]).median())  # noqa: E731
    for name in [n for n in GUIDED if n in rows[0]]:
        print(f"{name}: ratio to i.i.d. mean {mean(lambda r: r[name]['ratio']):.3f} (median "
              f"{median(lambda r: r[name]['ratio']):.3f}; goal <= 0.5), noise-driven part removed "
              f"{mean(lambda r: r[name]['removed']):.2f} (median {median(lambda r: r[name]['removed']):.2f}), "
              f"flip rate {mean(lambda r: r[name]['colour_flip_rate']):.3f} (colour and stripe: "
              f"{nanmean([r[name]['pattern_flip_rate'] for r in rows]):.3f}), own-camera IoU "
              f"{mean(lambda r: r[name]['iou']):.2f}, pose pasted {mean(lambda r: r[name]['pasted']):.2f}")
    print(f"iid: flip rate {mean(lambda r: r['iid']['colour_flip_rate']):.3f} (colour and stripe: "
          f"{nanmean([r['iid']['pattern_flip_rate'] for r in rows]):.3f}); best ratio any noise could reach "
          f"(floor / i.i.d.) mean {mean(lambda r: r['best_ratio']):.3f} (median {median(lambda r: r['best_ratio']):.3f}); "
          f"s/frame iid {mean(lambda r: r['iid']['seconds_per_frame']):.2f}, warped "
          f"{mean(lambda r: r['warped']['seconds_per_frame']):.2f}, +keyframe "
          f"{mean(lambda r: r['warped+keyframe']['seconds_per_frame']):.2f} ({torch.get_num_threads()} thread(s), shared CPU)")


if __name__ == "__main__":
    sys.exit(main())
