"""Render benchmark: forward + backward of one 64x64 training render, 64 samples per ray.

The scene is the CPU preset of the implicit-volume field at its blob initialisation, a neural
environment background and a warmed-up occupancy grid (updated as in training), seen by one
camera at distance 2. Prints the median time over several repeats after a warm-up; the target on
the 2-core development CPU is 0.2 s for the ``albedo`` mode. When CUDA is available the nerfacc
path is timed too.

    python benchmarks/bench_render.py [--repeats 7]

Importable: :func:`bench_render` returns the figures and prints nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

from text3d.scene.background import NeuralEnvironment, NeuralEnvironmentConfig
from text3d.scene.cameras import turntable
from text3d.scene.geometry import ImplicitVolume, ImplicitVolumeConfig
from text3d.renderers import (
    DiffuseWithPointLight,
    DiffuseWithPointLightConfig,
    VolumeRenderer,
    VolumeRendererConfig,
)

TARGET_CPU_SECONDS = 0.2
RESOLUTION = 64
SAMPLES_PER_RAY = 64


def _timed(fn: Callable[[], None], repeats: int, warmup: int, sync: Callable[[], None]) -> List[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _scene(device: torch.device, backend: str, field_cfg: Optional[ImplicitVolumeConfig] = None,
           occupancy_grid: bool = True):
    field = ImplicitVolume(field_cfg or ImplicitVolumeConfig.cpu_preset()).to(device)
    background = NeuralEnvironment(NeuralEnvironmentConfig()).to(device)
    material = DiffuseWithPointLight(DiffuseWithPointLightConfig())
    renderer = VolumeRenderer(VolumeRendererConfig(num_samples_per_ray=SAMPLES_PER_RAY, backend=backend,
                                                    occupancy_grid=occupancy_grid)).to(device)
    gen = torch.Generator().manual_seed(0)
    for step in range(2 * renderer.cfg.grid_update_every):  # two updates, as after 17 training steps
        renderer.update_occupancy(field, step, gen)
    cams = turntable(1, 15.0, 2.0, 45.0, RESOLUTION, RESOLUTION).to(device)
    return field, material, background, renderer, cams, gen


def _bench_device(device: torch.device, backend: str, modes: List[str], repeats: int,
                  field_cfg: Optional[ImplicitVolumeConfig] = None, occupancy_grid: bool = True) -> Dict[str, float]:
    field, material, background, renderer, cams, gen = _scene(device, backend, field_cfg, occupancy_grid)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    figures: Dict[str, float] = {}
    for mode in modes:
        def step() -> None:
            out = renderer(field, material, background, cams, mode=mode, generator=gen, train=True)
            loss = out["rgb"].mean() + out.get("orient_loss", torch.zeros((), device=device))
            loss.backward()
            field.zero_grad(set_to_none=True)
            background.zero_grad(set_to_none=True)

        times = _timed(step, repeats, warmup=2, sync=sync)
        figures[f"{mode}_median_s"] = statistics.median(times)
        figures[f"{mode}_min_s"] = min(times)
    with torch.no_grad():
        out = renderer(field, material, background, cams, mode="albedo", generator=gen, train=True)
        probe = _count_field_points(field, lambda: renderer(field, material, background, cams, generator=gen))
    figures["mean_opacity"] = float(out["opacity"].mean())
    figures["field_points_per_render"] = float(probe)
    return figures


def _count_field_points(field: torch.nn.Module, render: Callable[[], object]) -> int:
    counted = []
    handle = field.register_forward_pre_hook(lambda _m, args, *rest: counted.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            render()
    finally:
        handle.remove()
    return sum(counted)


def bench_render(repeats: int = 7, modes: Optional[List[str]] = None,
                 threads: Optional[int] = None) -> Dict[str, object]:
    """Time forward + backward of a 64x64 x 64-sample training render.

    Args:
        repeats: timed repeats per mode (after 2 warm-up renders); the median is reported.
        modes: shading modes to time (default ``albedo`` and ``textureless``).
        threads: CPU threads for the CPU run (default: leave PyTorch's setting).

    Returns:
        ``{"cpu": {...}, "cuda": {...} (when available), "target_cpu_s": 0.2, "threads": n}``;
        each device dict has ``<mode>_median_s``, ``<mode>_min_s``, ``mean_opacity`` and
        ``field_points_per_render`` (samples left after occupancy culling).
    """
    modes = modes or ["albedo", "textureless"]
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result: Dict[str, object] = {"target_cpu_s": TARGET_CPU_SECONDS, "threads": torch.get_num_threads(),
                                     "cpu": _bench_device(torch.device("cpu"), "torch", modes, repeats)}
        # baseline in the same run: every sample goes through the field (no occupancy grid)
        result["cpu_no_grid"] = _bench_device(torch.device("cpu"), "torch", ["albedo"], repeats, occupancy_grid=False)
    finally:
        torch.set_num_threads(previous)
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        result["cuda"] = _bench_device(dev, "nerfacc", modes, repeats, ImplicitVolumeConfig())
        result["cuda_torch_path"] = _bench_device(dev, "torch", modes, repeats, ImplicitVolumeConfig())
    return result


def _print(result: Dict[str, object]) -> None:
    print(f"render {RESOLUTION}x{RESOLUTION} rays x {SAMPLES_PER_RAY} samples, forward + backward "
          f"(CPU threads: {result['threads']}; CUDA rows use the full default field)")
    for key in ("cpu", "cpu_no_grid", "cuda", "cuda_torch_path"):
        if key not in result:
            continue
        figures = result[key]
        for name, value in figures.items():
            if name.endswith("_median_s"):
                mode = name[: -len("_median_s")]
                print(f"  {key:16s} {mode:12s} median {value:.3f} s  min {figures[mode + '_min_s']:.3f} s")
        print(f"  {key:16s} field points per render: {int(figures['field_points_per_render'])} "
              f"(of {RESOLUTION * RESOLUTION * SAMPLES_PER_RAY}); mean opacity {figures['mean_opacity']:.3f}")
    cpu = result["cpu"]["albedo_median_s"]
    print(f"occupancy grid speed-up over evaluating every sample (same run): "
          f"{result['cpu_no_grid']['albedo_median_s'] / cpu:.2f}x")
    verdict = "meets" if cpu <= result["target_cpu_s"] else "misses"
    print(f"CPU albedo render {cpu:.3f} s {verdict} the target of {result['target_cpu_s']} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    _print(bench_render(repeats=args.repeats, threads=args.threads))
