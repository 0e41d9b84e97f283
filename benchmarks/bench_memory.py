"""Resident memory over a long run: does a quickstart run keep its memory flat?

Runs the quickstart preset in this process for N steps (default 3000), reads the resident set size
(VmRSS) every ``--every`` steps, and prints it at the start (after ``--warmup`` steps, once the
allocator has settled), at the end, the growth in per cent and the peak. Goal (issue 10): growth <= 5 %.

    python benchmarks/bench_memory.py                 # 3000 steps (~10-15 min on 2 free cores)
    python benchmarks/bench_memory.py --steps 300     # a quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=50, help="steps before the 'start' reading")
    parser.add_argument("--every", type=int, default=100, help="read RSS every N steps")
    parser.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides")
    args = parser.parse_args()

    from text3d.run import open_run

    with tempfile.TemporaryDirectory() as out:
        run = open_run(args.config, [f"steps={args.steps}", f"output_dir={out}", "trainer.turntable_frames=0",
                                     "export.enabled=false", "trainer.log_every=0", *args.set])
        readings = {0: rss_mb()}
        t0 = time.perf_counter()

        def progress(step: int, losses: dict) -> None:
            if step == args.warmup or step % args.every == 0 or step == args.steps:
                readings[step] = rss_mb()
                print(f"step {step:5d}  rss {readings[step]:7.1f} MB  loss {losses['loss']:.4g}  "
                      f"{time.perf_counter() - t0:6.0f} s", flush=True)

        run.fit(progress=progress)
    start, end = readings[args.warmup], readings[args.steps]
    later = sorted((s, r) for s, r in readings.items() if s >= max(args.warmup, args.every))
    if len(later) >= 3:  # a leak shows as a steady slope; allocator churn as scatter around a level
        import numpy as np

        slope = np.polyfit([s for s, _ in later], [r for _, r in later], 1)[0] * 1000
        values = [r for _, r in later]
        print(f"trend over the readings from step {later[0][0]}: {slope:+.1f} MB per 1000 steps; "
              f"mean {np.mean(values):.1f} MB, spread (std) {np.std(values):.1f} MB")
    print(f"\nsteps {args.steps}: rss after {args.warmup} steps {start:.1f} MB, at the end {end:.1f} MB, "
          f"growth {100 * (end - start) / start:+.2f} % (goal <= 5 %), peak of readings {max(readings.values()):.1f} MB, "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
