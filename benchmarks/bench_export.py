"""Mesh export benchmark: 256³ density grid + marching cubes + decimation to 50k faces + 1024²
albedo bake of a CPU-preset NeRF field, split by stage.

The field is the run's ``implicit-volume`` (CPU preset hash grid) with its initial density blob
and hash tables drawn with a large amplitude (``--bumps``), so the surface is a bumpy, multi-coloured
blob with a few times a sphere's area, like a trained object, instead of a smooth sphere.

    python benchmarks/bench_export.py [--resolution 256 --faces 50000 --texture-size 1024 --threads 2]

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
    from text3d.geometry import ImplicitVolume, ImplicitVolumeConfig

    torch.manual_seed(seed)
    field = ImplicitVolume(ImplicitVolumeConfig.cpu_preset(seed=seed))
    with torch.no_grad():
        table = field.encoding.table
        table.uniform_(-bumps, bumps, generator=torch.Generator().manual_seed(seed))
    return field.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--faces", type=int, default=50000)
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bumps", type=float, default=1.0, help="hash-table amplitude (0 = smooth blob)")
    parser.add_argument("--out", default=None, help="folder for the GLB (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from text3d.config import ExportConfig
    from text3d.export import export_geometry

    field = bumpy_field(args.bumps)
    settings = ExportConfig(formats=["glb"], resolution=args.resolution, faces=args.faces,
                            texture_size=args.texture_size)
    out = Path(args.out or tempfile.mkdtemp(prefix="text3d-bench-export-"))
    wall, cpu = time.perf_counter(), time.process_time()
    result = export_geometry(field, settings, out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"export {args.resolution}^3, {args.faces} faces, {args.texture_size}^2 texture, "
          f"{args.threads} threads: level {result.level:.4g} ({result.level_source}), "
          f"{result.vertices} vertices, {result.faces} faces")
    for stage, seconds in result.timings.items():
        print(f"  {stage:<28s} {seconds:7.2f} s")
    print(f"  {'total':<28s} {wall:7.2f} s wall, {cpu:.2f} s CPU  -> {result.paths[0]}")


if __name__ == "__main__":
    main()
