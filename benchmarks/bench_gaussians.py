"""Speed and memory of the CPU Gaussian rasteriser (forward + backward), against the dense reference.

Scenes are DreamGaussian-like: N Gaussians in a ball of radius 0.5 (scales 0.01-0.03, random
rotations, opacities 0.1-1, random colours) seen from a camera 2.5 away with a 49 degree field of
view. Each case runs in its own subprocess so its peak memory (RSS growth over the loaded scene) is
its own. The dense reference (every Gaussian x every pixel) is timed forward-only in the same run,
on the same scene, and the ratio printed; with a GPU, gsplat's time for the same scene is shown too.

    python benchmarks/bench_gaussians.py [--cases 2000x128,10000x256,50000x512] [--repeats 3] [--tile-size 8]

Target of issue 4 (2-core CPU): 10k Gaussians at 256^2 forward+backward <= 0.5 s and <= 1 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time


def _scene(n: int, res: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    means = d / d.norm(dim=1, keepdim=True) * 0.5 * torch.rand(n, 1, generator=g) ** (1 / 3)
    quats = torch.randn(n, 4, generator=g)
    scales = 0.01 + 0.02 * torch.rand(n, 3, generator=g)
    opac = 0.1 + 0.9 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    f = 0.5 * res / math.tan(math.radians(49.0) / 2)
    V = torch.eye(4)
    V[:3, :3] = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])  # camera at +x looking at -x
    V[:3, 3] = torch.tensor([0.0, 0.0, 2.5])
    K = torch.tensor([[f, 0, res / 2], [0, f, res / 2], [0, 0, 1]])
    return means, quats, scales, opac, colors, V[None], K[None]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _case(n: int, res: int, repeats: int, tile_size: int, dense: bool) -> dict:
    import torch

    from text3d.renderers.gaussians import rasterize_gaussians, rasterize_gaussians_dense

    scene = _scene(n, res)
    params = [t.clone().requires_grad_() for t in scene[:5]]
    up = torch.randn(1, res, res, 3, generator=torch.Generator().manual_seed(1))
    base = _rss_mb()
    times, fwd_times = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        img, _, meta = rasterize_gaussians(*params, scene[5], scene[6], res, res, tile_size=tile_size)
        t1 = time.perf_counter()
        torch.autograd.backward(img, up)
        t2 = time.perf_counter()
        if i:  # the first call warms up allocators
            times.append(t2 - t0)
            fwd_times.append(t1 - t0)
        for p in params:
            p.grad = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    out = {"n": n, "res": res, "fwd_bwd_s": min(times), "fwd_s": min(fwd_times), "peak_mb": peak,
           "visible": int((meta["radii"] > 0).all(-1).sum())}
    if dense:
        with torch.no_grad():
            t0 = time.perf_counter()
            ref, _ = rasterize_gaussians_dense(*scene, res, res)
            out["dense_fwd_s"] = time.perf_counter() - t0
            img, _, _ = rasterize_gaussians(*scene, res, res, tile_size=tile_size)
            out["max_abs_diff"] = float((img - ref).abs().max())
    if torch.cuda.is_available():
        cuda = [t.cuda().requires_grad_() for t in scene[:5]]
        V, K = scene[5].cuda(), scene[6].cuda()
        upc = up.cuda()
        best = float("inf")
        for _ in range(repeats + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            img, _, _ = rasterize_gaussians(*cuda, V, K, res, res, backend="gsplat")
            torch.autograd.backward(img, upc)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        out["gsplat_fwd_bwd_s"] = best
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="2000x128,10000x256,50000x512", help="NxRES,... Gaussians x image side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile-size", type=int, default=8)
    parser.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    parser.add_argument("--dense-limit", type=float, default=1e9,
                        help="skip the dense reference above this many Gaussian x pixel pairs (50k@512^2 is 1.3e10)")
    parser.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._one:
        n, res = map(int, args._one.split("x"))
        print(json.dumps(_case(n, res, args.repeats, args.tile_size, not args.no_dense)))
        return 0
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tile {args.tile_size}")
    print(f"{'scene':>12s} {'visible':>8s} {'fwd+bwd s':>10s} {'fwd s':>7s} {'peak MB':>8s} {'Gauss/s':>10s} "
          f"{'dense fwd s':>12s} {'speed-up':>9s} {'max |diff|':>10s} {'gsplat s':>9s}")
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--_one", case, "--repeats", str(args.repeats), "--tile-size",
               str(args.tile_size)]
        n, res = map(int, case.split("x"))
        if args.no_dense or n * res * res > args.dense_limit:
            cmd.append("--no-dense")
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        dense = r.get("dense_fwd_s")
        ratio = f"{dense / r['fwd_s']:8.1f}x" if dense else "        -"
        print(f"{r['n']:>7d}@{r['res']:<4d} {r['visible']:>8d} {r['fwd_bwd_s']:>10.3f} {r['fwd_s']:>7.3f} "
              f"{r['peak_mb']:>8.0f} {r['n'] / r['fwd_bwd_s']:>10.0f} "
              f"{(f'{dense:.2f}' if dense else '-'):>12s} {ratio} {r.get('max_abs_diff', float('nan')):>10.1e} "
              f"{r.get('gsplat_fwd_bwd_s', float('nan')):>9.4f}")
    print("speed-up = dense reference forward / tile path forward, same scene, same run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
