"""Speed and memory of an offline edit: the per-step time split and one whole colour edit.

1. Per-step split: ``--split-steps`` steps of a PDS edit and of an SDS-edit (the baseline, same
   preset, same scene) in this process, timed into source render, edited render, prior passes
   and rest (backward, Adam); prints seconds per step and the PDS / SDS-edit ratio.
2. A whole colour edit exactly as a user runs it, in a child process:
   ``text3d edit configs/edit-quickstart.yaml source=SOURCE target_prompt="a blue cube" --no-progress``
   (the preset's 200 steps plus its outputs: validation, turntable, before|after, mesh, metrics),
   with its wall time and peak resident memory (the child's ru_maxrss). Goal (issue 11): <= 2 min and
   <= 1.5 GB on 2 cores.

    python benchmarks/bench_edit.py --source outputs/src/quickstart/a_red_cube@...        # both parts
    python benchmarks/bench_edit.py --source RUN --skip-split                           # part 2 only

Timings are wall-clock: on a machine whose cores are shared they are several times slower; say so.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "edit-quickstart.yaml"
GOAL_S, GOAL_MB = 120.0, 1536.0


def split_per_step(source: str, steps: int, out: Path) -> None:
    """Part 1: the per-step split of PDS and SDS-edit on the preset, and their ratio."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from eval_edit import one_edit

    from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig

    import torch

    prior = PixelPrior(PixelPriorConfig(), torch.device("cpu"))
    splits = {}
    for guidance in ("pds", "sds-edit"):
        _, _, splits[guidance] = one_edit("nerf", source, "a blue cube", guidance, steps, out, prior,
                                          ["trainer.turntable_frames=0", "edit.metric_views=2"])
        print(f"{guidance:<9} s/step: " + "  ".join(f"{k} {v:.3f}" for k, v in splits[guidance].items()), flush=True)
    print(f"PDS / SDS-edit step time: {splits['pds']['total'] / splits['sds-edit']['total']:.2f}x "
          f"(prior passes {splits['pds']['prior'] / max(splits['sds-edit']['prior'], 1e-9):.2f}x)")


def whole_edit(source: str, out: Path, threads: int, extra: list) -> None:
    """Part 2: one whole colour edit through the CLI in a child process: wall time and peak memory."""
    cmd = [sys.executable, "-m", "text3d", "edit", str(PRESET), f"source={source}", "target_prompt=a blue cube",
           f"output_dir={out}", *extra, "--no-progress"]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"the edit failed ({done.returncode}):\n{done.stderr[-2000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"whole colour edit ({PRESET.name} {' '.join(extra)}, steps + outputs): wall {wall:.1f} s (goal <= {GOAL_S:.0f}), "
          f"peak RSS {peak_mb:.0f} MB (goal <= {GOAL_MB:.0f}); threads {threads or 'default'}")
    print(f"edit folder: {done.stdout.strip().splitlines()[-1]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="a quickstart NeRF run folder of 'a red cube'")
    p.add_argument("--split-steps", type=int, default=20, help="steps timed per guidance in part 1")
    p.add_argument("--skip-split", action="store_true", help="only the whole edit (part 2)")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of the whole edit (0: default)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the whole edit (a smoke test: steps=4)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_split:
            split_per_step(args.source, args.split_steps, Path(tmp) / "split")
        whole_edit(args.source, Path(tmp) / "whole", args.threads, args.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
