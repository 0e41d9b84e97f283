"""Throughput of the noise warps and seconds per frame of `text3d video` with the embedded prior.

Warps (text3d.video.noise) at 64^2 and 512^2 under a small rotation + zoom, frames per second, against
bilinear resampling (F.grid_sample, the non-white foil) and against the first (materialising)
implementations in tests/reference/noise_warp.py, all measured in the same run. Goals on 2 cores:
nearest >= 100 fps at 512^2, integral with k = 4 >= 10 fps at 512^2. Then seconds per video frame of
SDEdit with i.i.d. vs warped noise (initial + per-step) on a 16-frame analytic turntable (DIS flow
correspondences at 128 px, the shapes prior at 32 px).

    OMP_NUM_THREADS=2 python benchmarks/bench_noise_warp.py [--threads 2] [--channels 4] [--no-video]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference warps

import torch  # noqa: E402

from text3d.video.noise import identity_coords, warp_bilinear, warp_integral, warp_nearest  # noqa: E402
from reference.noise_warp import warp_integral_subpixel, warp_nearest_pull  # noqa: E402


def rotation_zoom(res: int, angle_deg: float = 3.0, scale: float = 0.98) -> torch.Tensor:
    p = identity_coords(res, res, torch.float64)
    c = torch.tensor([res / 2, res / 2], dtype=torch.float64)
    a = math.radians(angle_deg)
    R = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    return ((p - c) @ R.T * scale + c).float()


def fps(fn, min_time: float = 1.0, max_reps: int = 200) -> float:
    fn()  # warm-up
    reps, t0 = 0, time.perf_counter()
    while reps < max_reps and (reps == 0 or time.perf_counter() - t0 < min_time):
        fn()
        reps += 1
    return reps / (time.perf_counter() - t0)


def bench_warps(channels: int, sizes=(64, 512)) -> None:
    goals = {("nearest", 512): 100.0, ("integral k=4", 512): 10.0}
    print(f"{'size':>6} {'warp':<14} {'fps':>9} {'x bilinear':>10} {'first impl.':>11} {'x first':>8}  goal")
    for res in sizes:
        noise = torch.randn(channels, res, res, generator=torch.Generator().manual_seed(0))
        coords = rotation_zoom(res)
        valid = torch.ones(res, res, dtype=torch.bool)
        g = torch.Generator().manual_seed(1)
        base = fps(lambda: warp_bilinear(noise, coords, valid, g))
        rows = [("bilinear (foil)", base, None),
                ("nearest", fps(lambda: warp_nearest(noise, coords, valid, g)),
                 fps(lambda: warp_nearest_pull(noise, coords, valid, g))),
                ("integral k=2", fps(lambda: warp_integral(noise, coords, valid, 2, g)),
                 fps(lambda: warp_integral_subpixel(noise, coords, valid, 2, g))),
                ("integral k=4", fps(lambda: warp_integral(noise, coords, valid, 4, g)),
                 fps(lambda: warp_integral_subpixel(noise, coords, valid, 4, g), min_time=0.5, max_reps=5))]
        for name, value, first in rows:
            goal = goals.get((name, res))
            verdict = "" if goal is None else f">= {goal:g} fps: {'met' if value >= goal else 'NOT met'}"
            old = f"{first:11.1f} {value / first:8.2f}" if first else f"{'':11} {'':8}"
            print(f"{res:>5}² {name:<14} {value:9.1f} {value / base:10.2f} {old}  {verdict}", flush=True)


def bench_video(frames: int = 16, steps: int = 30, strength: float = 0.8) -> None:
    import dataclasses
    import tempfile

    from benchmarks.eval_video_consistency import checker_video
    from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig
    from text3d.video.pipeline import VideoConfig, restyle
    from text3d.video.source import video_clip

    prior = PixelPrior(PixelPriorConfig(), torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        clip = video_clip(checker_video(Path(tmp), frames), frames, 128, "medium")
        prep = time.perf_counter() - t0
    cfg = VideoConfig(frames=frames, steps=steps, strength=strength, prompt="a red cube", warp="nearest")
    restyle(prior, clip, dataclasses.replace(cfg, steps=2), "iid")  # warm-up
    seconds = {kind: restyle(prior, clip, cfg, kind)[1] / frames for kind in ("iid", "warped")}
    print(f"video, {frames} frames, {int(round(steps * strength))} ancestral steps, shapes prior 32 px, flow at 128 px: "
          f"flow {prep / frames:.2f} s/frame; SDEdit i.i.d. {seconds['iid']:.2f} s/frame, warped "
          f"{seconds['warped']:.2f} s/frame (x{seconds['warped'] / seconds['iid']:.2f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels", type=int, default=4, help="noise channels (4: SD latents' noise warped at image size)")
    ap.add_argument("--no-video", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.channels} channel(s)")
    bench_warps(args.channels)
    if not args.no_video:
        bench_video()
    return 0


if __name__ == "__main__":
    sys.exit(main())
