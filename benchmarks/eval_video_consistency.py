"""Temporal consistency of `text3d video`: warp error and colour flips, i.i.d. vs warped noise.

For each quickstart run (its turntable rendered with depth) and each of three target prompts — the
run's own prompt, the same shape in another colour, and the colour-free "a cube" — and for one input
video file (DIS flow), the frames are restyled with SDEdit twice at the same seed: with i.i.d. noise
and with correspondence-guided (warped) noise, the initial and the per-step noise alike. Printed per
case and on average: warp error (Lai et al.), its ratio warped / i.i.d. (goal <= 0.5), colour flip
rate, and seconds per frame. Keyframe attention (the multi-view issue) is reported as not available
until it is merged.

    python benchmarks/eval_video_consistency.py --runs RUN_DIR [RUN_DIR ...] [--video clip.mp4]
        [--frames 16] [--steps 30] [--strength 0.6] [--json out.json]

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

from text3d.shapes import COLOUR_NAMES, parse_prompt, with_article  # noqa: E402
from text3d.video import VideoConfig, metrics_for, restyle  # noqa: E402
from text3d.video_source import run_clip, video_clip  # noqa: E402


def target_prompts(prompt: str) -> list[str]:
    """The run's prompt, the same shape in another colour, and "a cube"."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        return [prompt, "a cube"]
    shape, colour = parsed
    other = COLOUR_NAMES[(COLOUR_NAMES.index(colour) + 3) % len(COLOUR_NAMES)]
    return [prompt, with_article(f"{other} {shape}"), "a cube"]


def checker_video(folder: Path, frames: int) -> Path:
    from text3d.cameras import turntable
    from text3d.media import save_video
    from text3d.shapes import render_checker

    cams = turntable(frames * 4, 15.0, 3.0, 32.0, 128, 128)  # 3.75 degrees per frame
    rgb, _ = render_checker(["cube"] * frames, cams.index(slice(0, frames)))
    return save_video(folder / "checker_cube.mp4", list(rgb), fps=12)


def evaluate(prior, clip, cfg: VideoConfig) -> dict:
    import torch.nn.functional as F

    source = F.interpolate(clip.frames.permute(0, 3, 1, 2), size=(prior.image_size,) * 2, mode="area")
    row = {"source_warp_error": metrics_for(source.permute(0, 2, 3, 1), clip)["warp_error"]}
    for kind in ("iid", "warped"):
        frames, seconds = restyle(prior, clip, cfg, kind)
        row[kind] = {**metrics_for(frames, clip), "seconds_per_frame": seconds / len(frames)}
    row["ratio"] = row["warped"]["warp_error"] / row["iid"]["warp_error"]
    floor = row["source_warp_error"]
    row["excess_ratio"] = (row["warped"]["warp_error"] - floor) / (row["iid"]["warp_error"] - floor)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="quickstart run folders")
    ap.add_argument("--video", default=None, help="an input video (default: an analytic checker-cube turntable)")
    ap.add_argument("--video-prompt", default="a red cube")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--strength", type=float, default=0.8)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a shared 2-core machine)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig

    prior = PixelPrior(PixelPriorConfig(), torch.device("cpu"))
    base = VideoConfig(frames=args.frames, steps=args.steps, strength=args.strength, alpha=args.alpha,
                       resolution=128, warp="nearest", seed=0, background="static")
    rows = []
    print(f"{'source':<22} {'prompt':<16} {'src err':>7} {'iid err':>8} {'warped':>8} {'ratio':>6} {'excess':>6} "
          f"{'flip iid':>8} {'flip w':>7} {'s/frame':>7}")
    cases = [(Path(r), None) for r in args.runs]
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(args.video) if args.video else checker_video(Path(tmp), args.frames)
        cases.append((video, args.video_prompt))
        for source, prompt in cases:
            t0 = time.perf_counter()
            clip = (run_clip(source, args.frames, 128) if prompt is None
                    else video_clip(source, args.frames, 128, base.flow_preset))
            prepare = time.perf_counter() - t0
            for target in ([prompt] if prompt else target_prompts(clip.prompt)):
                cfg = dataclasses.replace(base, prompt=target)
                row = {"source": str(source), "kind": clip.kind, "prompt": target, "prepare_s": prepare,
                       **evaluate(prior, clip, cfg), "keyframe_attention": "not available in this branch"}
                rows.append(row)
                print(f"{source.name[:22]:<22} {target[:16]:<16} {row['source_warp_error']:7.4f} "
                      f"{row['iid']['warp_error']:8.4f} {row['warped']['warp_error']:8.4f} {row['ratio']:6.2f} "
                      f"{row['excess_ratio']:6.2f} {row['iid']['colour_flip_rate']:8.2f} "
                      f"{row['warped']['colour_flip_rate']:7.2f} {row['warped']['seconds_per_frame']:7.2f}", flush=True)
    ratios = torch.tensor([r["ratio"] for r in rows])
    excess = torch.tensor([r["excess_ratio"] for r in rows])
    mean = lambda key, kind: sum(r[kind][key] for r in rows) / len(rows)  # noqa: E731
    print(f"mean ratio warped/iid {float(ratios.mean()):.3f} (median {float(ratios.median()):.3f}; goal <= 0.5); "
          f"above the source's own warp error: {float(excess.mean()):.3f} (median {float(excess.median()):.3f}); "
          f"flip rate iid {mean('colour_flip_rate', 'iid'):.3f}, warped {mean('colour_flip_rate', 'warped'):.3f}; "
          f"s/frame iid {mean('seconds_per_frame', 'iid'):.2f}, warped {mean('seconds_per_frame', 'warped'):.2f} "
          f"({torch.get_num_threads()} thread(s), shared CPU)")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
