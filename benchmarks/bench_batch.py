"""text3d batch against a shell loop: throughput and Ray's overhead per run, measured in one go.

Three ways to make the same 4 quickstart assets, each timed end to end as a user starts it:

1. ``loop``:     4 x ``text3d run CONFIG prompt=...`` one after another (what a shell loop does);
2. ``serial``:   ``text3d batch CONFIG prompts.txt --cpus-per-run N`` (N = all cores: one run at a
                 time, like the loop, but scheduled by Ray);
3. ``parallel``: ``text3d batch CONFIG prompts.txt --cpus-per-run 1`` (one run per core).

Printed: throughput ratio = loop / parallel wall time, and the parallel batch's slot time spent outside
the runs, (wall x slots - sum of in-worker times) / 4; Ray's overhead per run, two ways: (a) within
the serial batch, (batch wall - sum of the runs' in-worker times from batch.json) / 4 -- Ray's
start-up and shutdown, scheduling, worker processes and their imports, summary files -- and (b)
(serial - loop) / 4 against the shell loop; each as a share of one run (target <= 5 % of a
quickstart run); and a paper estimate of 1,000 prompts on 8 GPUs from these per-run figures.

    python benchmarks/bench_batch.py [--config configs/quickstart.yaml] [--set steps=200 ...] [--out outputs/bench-batch]
        [--only loop,serial,parallel] [--gpu-run-s 3600] [--json report.json]

Takes ~3 x 4 quickstart runs (~25 min on the 2-core development CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

PROMPTS = ["a red cube", "a blue sphere", "a green cone", "a purple cylinder"]


def timed(cmd: list, log: Path) -> tuple[float, str, float, float]:
    """Run ``cmd``: wall seconds, its last stdout line, and the epoch seconds it started and ended."""
    launched = time.time()
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    ended = time.time()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return wall, proc.stdout.strip().splitlines()[-1], launched, ended


def run_loop(config: str, extra: list, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    walls = []
    for k, prompt in enumerate(PROMPTS):
        wall, *_ = timed([sys.executable, "-m", "text3d", "run", config, f"prompt={prompt}", f"output_dir={out}",
                         "--no-progress", *extra], out / f"loop-{k}.log")
        walls.append(wall)
        print(f"  loop run {k + 1}/{len(PROMPTS)}: {wall:.1f} s", flush=True)
    return {"wall_s": sum(walls), "runs_s": walls}


def run_batch(config: str, extra: list, out: Path, cpus: int, label: str) -> dict:
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    wall, batch_dir, launched, ended = timed([sys.executable, "-m", "text3d", "batch", config, str(prompts), f"output_dir={out / label}",
                             "--cpus-per-run", str(cpus), "--no-progress", *extra], out / f"{label}.log")
    items = json.loads((Path(batch_dir) / "batch.json").read_text())["items"]
    assert all(it["status"] == "done" for it in items), [it["error"] for it in items]
    worker = [it["history"][-1]["worker_s"] for it in items]
    task = [it["history"][-1]["task_s"] for it in items]
    parts = decompose(items, launched, ended)
    print(f"  {label} batch (--cpus-per-run {cpus}): {wall:.1f} s; in-worker per run "
          f"{', '.join(f'{w:.0f}' for w in worker)} s; start-up {parts['startup_s']:.1f} s, wind-down "
          f"{parts['winddown_s']:.1f} s (once per batch), slots idle at the end {parts['tail_idle_s']:.1f} s, "
          f"per run on a warm worker {parts['warm_gap_s']:.2f} s", flush=True)
    return {"wall_s": wall, "worker_s": worker, "task_s": task, "batch_dir": batch_dir, "cpus_per_run": cpus, **parts}


def decompose(items: list, launched: float, ended: float) -> dict:
    """Where a batch's time outside the runs goes, from batch.json's attempt history (epoch seconds).

    ``startup_s``: command start -> first run starts in a worker (imports, Ray start, worker start);
    ``winddown_s``: last run finished -> command exits (summary, contact sheet, Ray shutdown);
    ``tail_idle_s``: sum over workers of the time between their own last run and the batch's last run
    (load imbalance: nothing left to schedule); ``warm_gap_s``: mean time between one run's end and
    the next start on the same worker process (Ray's per-run scheduling once warm).
    """
    runs = sorted((h["pid"], h["started"], h["started"] + h["worker_s"]) for it in items for h in it["history"][-1:])
    by_worker: dict = {}
    for pid, start, end in runs:
        by_worker.setdefault(pid, []).append((start, end))
    gaps = [b[0] - a[1] for spans in by_worker.values() for a, b in zip(spans, spans[1:])]
    last = max(end for _, _, end in runs)
    return {"startup_s": round(min(start for _, start, _ in runs) - launched, 2),
            "winddown_s": round(ended - last, 2),
            "tail_idle_s": round(sum(last - spans[-1][1] for spans in by_worker.values()), 2),
            "warm_gap_s": round(sum(gaps) / len(gaps), 3) if gaps else 0.0}


def estimate(run_s: float, overhead_s: float, prompts: int = 1000, gpus: int = 8) -> float:
    """Wall seconds for ``prompts`` runs of ``run_s`` each on ``gpus`` GPUs, one run per GPU."""
    return math.ceil(prompts / gpus) * (run_s + max(overhead_s, 0.0))


def report(results: dict, gpu_run_s: float) -> dict:
    n = len(PROMPTS)
    summary: dict = {}
    if "loop" not in results:
        return summary
    per_run = results["loop"]["wall_s"] / n
    overheads = []
    summary["loop_run_s"] = round(per_run, 1)
    print(f"\nloop of {n} 'text3d run': {results['loop']['wall_s']:.1f} s ({per_run:.1f} s per run)")
    if "parallel" in results:
        par = results["parallel"]
        ratio = results["loop"]["wall_s"] / par["wall_s"]
        slots = (os.cpu_count() or 1) / par["cpus_per_run"]
        idle = (par["wall_s"] * slots - sum(par["worker_s"])) / n
        overheads.append(idle)
        summary.update(throughput_ratio=round(ratio, 2), slot_time_outside_runs_s=round(idle, 2))
        print(f"batch --cpus-per-run 1: {par['wall_s']:.1f} s -> throughput x{ratio:.2f}; slot time outside "
              f"the runs {idle:.1f} s per run = {100 * idle / per_run:.1f} % of a loop run")
    if "serial" in results:
        serial = results["serial"]
        inside = (serial["wall_s"] - sum(serial["worker_s"])) / n
        run_in_worker = sum(serial["worker_s"]) / n
        against_loop = (serial["wall_s"] - results["loop"]["wall_s"]) / n
        overheads += [inside, against_loop]
        summary.update(overhead_in_batch_s=round(inside, 2), overhead_vs_loop_s=round(against_loop, 2))
        print(f"batch one run at a time: {serial['wall_s']:.1f} s, of which runs {sum(serial['worker_s']):.1f} s -> "
              f"overhead per run {inside:.1f} s = {100 * inside / run_in_worker:.1f} % of a run ({run_in_worker:.1f} s); "
              f"against the shell loop {against_loop:+.1f} s per run = {100 * against_loop / per_run:+.1f} %")
    if overheads:
        overhead = max(max(overheads), 0.0)
        for label, run_s in (("runs of this size", per_run), (f"{gpu_run_s / 60:.0f}-min GPU runs", gpu_run_s)):
            hours = estimate(run_s, overhead) / 3600
            print(f"paper estimate, 1,000 {label} on 8 GPUs: {math.ceil(1000 / 8)} rounds x "
                  f"({run_s:.0f} s + {overhead:.1f} s overhead) = {hours:.1f} h")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--set", nargs="*", default=[], metavar="key.path=value", help="overrides for every run")
    ap.add_argument("--out", default="outputs/bench-batch")
    ap.add_argument("--only", default="loop,parallel,serial")
    ap.add_argument("--loop-json", default=None, help="reuse the loop figures of an earlier --json report")
    ap.add_argument("--gpu-run-s", type=float, default=3600.0, help="GPU run length for the paper estimate")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    print(f"{len(PROMPTS)} runs of {args.config} {' '.join(args.set)} on {cores} cores", flush=True)
    results = {}
    if args.loop_json:
        results["loop"] = json.loads(Path(args.loop_json).read_text())["results"]["loop"]
    for label in args.only.split(","):
        if label == "loop" and "loop" not in results:
            results[label] = run_loop(args.config, args.set, out / "loop")
        elif label != "loop":
            results[label] = run_batch(args.config, args.set, out, cores if label == "serial" else 1, label)
    summary = report(results, args.gpu_run_s)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
