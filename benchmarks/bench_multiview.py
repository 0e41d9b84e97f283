"""Sampling time of each multi-view mode against independent sampling, equal steps, same process.

    python benchmarks/bench_multiview.py                    # embedded prior, CPU, N = 4 and 8
    OMP_NUM_THREADS=1 python benchmarks/bench_multiview.py --steps 50 --repeats 3 --json out.json

Modes are timed interleaved (independent, shared, full, grid, independent, ...) and the median of
``--repeats`` runs is reported, so a change of machine load hits every mode alike. Goal: sharing
costs at most 1.3x independent sampling on the CPU with the embedded prior.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from text3d.scene.cameras import turntable
from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig
from text3d.multiview.modes import MultiviewSettings, SamplerConfig, sample_multiview


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", default="4,8")
    ap.add_argument("--modes", default="independent,shared,full,grid")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--noise", default="shared", help="independent | shared (the quickstart's setting)")
    ap.add_argument("--json", default=None, help="also write the medians and ratios to this file")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    prior = PixelPrior(PixelPriorConfig(), torch.device("cpu"))
    modes, rows = args.modes.split(","), []
    print(f"torch threads {torch.get_num_threads()}, {args.steps} steps, median of {args.repeats}")
    for n in [int(v) for v in args.views.split(",")]:
        cams = turntable(n, 15.0, 3.0, 32.0, 32, 32)
        times = {m: [] for m in modes}
        for rep in range(args.repeats + 1):  # the first round warms up and is not counted
            for mode in modes:
                settings = MultiviewSettings(mode=mode, noise=args.noise, sampler=SamplerConfig(steps=args.steps))
                t0 = time.perf_counter()
                sample_multiview(prior, ["a cube"] * n, cams, n, settings, torch.Generator().manual_seed(rep))
                if rep:
                    times[mode].append(time.perf_counter() - t0)
        base = statistics.median(times["independent"])
        for mode in modes:
            med = statistics.median(times[mode])
            print(f"N={n} {mode:11s} {med:7.2f} s  x{med / base:.2f} vs independent", flush=True)
            rows.append({"views": n, "mode": mode, "steps": args.steps, "median_s": med, "ratio": med / base,
                         "times_s": times[mode], "threads": torch.get_num_threads()})
    if args.json:
        from text3d.core.io import write_json

        write_json(args.json, rows)


if __name__ == "__main__":
    main()
