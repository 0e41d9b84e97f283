"""Mesh export benchmark: 256³ density grid + marching cubes + decimation to 50k faces + 1024²
albedo bake of a CPU-preset NeRF field, split by stage.

The field is the run's ``implicit-volume`` (CPU preset hash grid) with its initial density blob
and hash tables drawn with a large amplitude (``--bumps``), so the surface is a bumpy, multi-coloured
blob with a few times a sphere's area, like a trained object, instead of a smooth sphere.

    python benchmarks/bench_export.py [--resolution 256 --faces 50000 --texture-size 1024 --threads 2]
    python benchmarks/bench_export.py --gaussians 20000     # the Gaussian path instead (see gaussian_scene)
    python benchmarks/bench_export.py --run RUN_DIR         # a trained run (NeRF or Gaussians), as text3d export

Every path goes through the whole chain of ``text3d export``, space carving included (its stage is
``carve``; with ``--run`` the pore size is read from the run's training pixel as ``text3d export``
does, else 1/40 of the grid's side; ``--pore-size`` sets it, e.g. to time an older default).

Prints the seconds of each stage (wall clock, and the process's CPU time, which is what to compare
when the machine is busy) and writes the GLB into a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def bumpy_field(bumps: float, seed: int = 0):
    from text3d.scene.geometry import ImplicitVolume, ImplicitVolumeConfig

    torch.manual_seed(seed)
    field = ImplicitVolume(ImplicitVolumeConfig.cpu_preset(seed=seed))
    with torch.no_grad():
        table = field.encoding.table
        table.uniform_(-bumps, bumps, generator=torch.Generator().manual_seed(seed))
    return field.eval()


def gaussian_scene(n: int, seed: int = 0):
    """``n`` flat Gaussians (discs, 3:1, in the tangent plane) tiling a bumpy blob's surface, 0.8 opaque,
    in colour bands: what DreamGaussian-style training leaves (a surface layer), with a known layout."""
    import math

    from text3d.export.gaussians import GaussianCloud, fibonacci_directions

    g = torch.Generator().manual_seed(seed)
    d = fibonacci_directions(n)

    def radius(u: torch.Tensor) -> torch.Tensor:  # of unit directions; smooth everywhere, poles included
        return 0.5 * (1 + 0.12 * torch.sin(7 * u[:, 0] + 1) * torch.sin(6 * u[:, 1] + 2) * torch.sin(5 * u[:, 2] + 3))

    means = d * radius(d)[:, None]
    p = means.clone().requires_grad_(True)  # the discs lie in the tangent plane of |p| - radius(p / |p|) = 0
    implicit = p.norm(dim=1) - radius(p / p.norm(dim=1, keepdim=True))
    normal = torch.nn.functional.normalize(torch.autograd.grad(implicit.sum(), p)[0], dim=1)
    theta, phi = torch.acos(d[:, 2].clamp(-1, 1)), torch.atan2(d[:, 1], d[:, 0])
    spacing = math.sqrt(4 * math.pi * 0.5 ** 2 / n)
    # wxyz rotation taking +z to the normal: (1 + z.n, z x n), normalised
    quats = torch.nn.functional.normalize(
        torch.stack([1 + normal[:, 2], -normal[:, 1], normal[:, 0], torch.zeros(n)], 1), dim=1)
    scales = torch.tensor([1.0, 1.0, 0.33]) * spacing * (0.8 + 0.4 * torch.rand(n, 1, generator=g))
    hue = (phi / (2 * math.pi) + theta / math.pi) % 1.0
    colors = torch.stack([0.5 + 0.4 * torch.cos(2 * math.pi * (hue + k / 3)) for k in range(3)], 1)
    return GaussianCloud(means, quats, scales, torch.full((n,), 0.8), colors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--faces", type=int, default=50000)
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bumps", type=float, default=1.0, help="hash-table amplitude (0 = smooth blob)")
    parser.add_argument("--out", default=None, help="folder for the GLB (default: a temporary one)")
    parser.add_argument("--run", default=None, help="export this trained run folder (NeRF or Gaussians)")
    parser.add_argument("--gaussians", type=int, default=0,
                        help="export this many 3D Gaussians (gaussian_scene) instead of the NeRF field")
    parser.add_argument("--pore-size", type=float, default=None,
                        help="carving pore size, world units (default: as text3d export)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from text3d.export.config import ExportConfig
    from text3d.export import export_geometry, export_run_dir
    from text3d.export.gaussians import export_gaussians

    settings = ExportConfig(formats=["glb"], resolution=args.resolution, faces=args.faces,
                            texture_size=args.texture_size, pore_size=args.pore_size)
    out = Path(args.out or tempfile.mkdtemp(prefix="text3d-bench-export-"))
    if args.run:
        what = f"run {Path(args.run).name}"
        wall, cpu = time.perf_counter(), time.process_time()
        result = export_run_dir(Path(args.run), settings, out_dir=out)
    elif args.gaussians:
        scene, what = gaussian_scene(args.gaussians), f"{args.gaussians} Gaussians"
        wall, cpu = time.perf_counter(), time.process_time()
        result = export_gaussians(scene, settings, out)
    else:
        field, what = bumpy_field(args.bumps), "NeRF field"
        wall, cpu = time.perf_counter(), time.process_time()
        result = export_geometry(field, settings, out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"export of a {what}: {args.resolution}^3, {args.faces} faces, {args.texture_size}^2 texture, "
          f"{args.threads} threads: level {result.level:.4g} ({result.level_source}), "
          f"{result.vertices} vertices, {result.faces} faces")
    for stage, seconds in result.timings.items():
        print(f"  {stage:<28s} {seconds:7.2f} s")
    print(f"  {'total':<28s} {wall:7.2f} s wall, {cpu:.2f} s CPU  -> {result.paths[0]}")


if __name__ == "__main__":
    main()
