"""The CUDA pieces of ``benchmarks/gpu_check.sh``, one per sub-command, each printing ``RESULT name:
value`` lines that the shell script gathers into its report.

    python benchmarks/gpu_check.py env | fp16-prior | sd-run | guidance | quickstart | batch [--dry-run]

``--dry-run`` (what the script does on a machine without CUDA) runs the same code on the CPU at
toy sizes (tiny random Stable Diffusion, bfloat16 instead of float16, 2 steps), so every piece is
exercised anywhere; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def result(name: str, value) -> None:
    print(f"RESULT {name}: {value}", flush=True)


def device(dry: bool) -> str:
    if not dry and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or pass --dry-run")
    return "cpu" if dry else "cuda"


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def peak_gb(dev: str) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GB" if dev == "cuda" else "n/a (cpu)"


def cmd_env(dry: bool) -> None:
    import importlib.metadata as md

    result("torch", f"{torch.__version__} (CUDA build {torch.version.cuda})")
    result("cuda_available", torch.cuda.is_available())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        result("device", f"{props.name}, {props.total_memory / 2**30:.0f} GB, sm_{props.major}{props.minor}")
    for pkg in ("nerfacc", "gsplat", "diffusers", "ray"):
        try:
            result(pkg, md.version(pkg))
        except md.PackageNotFoundError:
            result(pkg, "not installed")
    if dry:
        return
    dev = device(dry)
    # the first fused call builds the CUDA extensions (cached in ~/.cache/torch_extensions): time it apart
    t0 = time.perf_counter()
    import gsplat
    means = torch.zeros(1, 3, device=dev)
    gsplat.rasterization(means + torch.tensor([0.0, 0.0, 2.0], device=dev), torch.tensor([[1.0, 0, 0, 0]], device=dev),
                         torch.full((1, 3), 0.1, device=dev), torch.ones(1, device=dev), torch.ones(1, 3, device=dev),
                         torch.eye(4, device=dev)[None], torch.tensor([[[32.0, 0, 16], [0, 32, 16], [0, 0, 1]]], device=dev),
                         32, 32)
    sync(dev)
    result("gsplat_first_call_s", f"{time.perf_counter() - t0:.1f}")
    t0 = time.perf_counter()
    import nerfacc
    nerfacc.OccGridEstimator(roi_aabb=[-1, -1, -1, 1, 1, 1], resolution=32).to(dev).sampling(
        torch.zeros(4, 3, device=dev), torch.tensor([[0.0, 0.0, 1.0]] * 4, device=dev), render_step_size=0.05)
    sync(dev)
    result("nerfacc_first_call_s", f"{time.perf_counter() - t0:.1f}")


def _guidance_grad(run, dev: str):
    gen = torch.Generator().manual_seed(0)
    cams = run.sampler.sample(gen, step=0).to(run.device)
    out = run.system.render(cams, mode="albedo", generator=gen, train=True)
    rgb = out["rgb"].detach().requires_grad_()
    cond, uncond = run.prompts(cams.elevation, cams.azimuth)
    sync(dev)
    t0 = time.perf_counter()
    g = run.guidance(rgb, cond, uncond, step=0, generator=torch.Generator().manual_seed(1), cameras=cams)
    g["loss"].backward()
    sync(dev)
    return rgb.grad.float().cpu(), time.perf_counter() - t0


def cmd_fp16_prior(dry: bool) -> None:
    """The shipped prior and an SD-2.1-size UNet in half precision against float32."""
    from text3d.run import open_run

    dev = device(dry)
    half = "bfloat16" if dry else "float16"
    grads, times = {}, {}
    for dtype in ("float32", half):
        run = open_run(REPO / "configs" / "quickstart.yaml", [f"device={dev}", f"prior.dtype={dtype}",
                                                              f"output_dir={tempfile.mkdtemp()}"])
        _guidance_grad(run, dev)  # warm-up
        grads[dtype], times[dtype] = _guidance_grad(run, dev)
    rel = (grads[half] - grads["float32"]).norm() / grads["float32"].norm().clamp_min(1e-12)
    result(f"shapes_prior_sds_grad_rel_err_{half}_vs_fp32", f"{rel:.2e}")
    result("shapes_prior_sds_s_fp32/half", f"{times['float32'] * 1e3:.1f} ms / {times[half] * 1e3:.1f} ms")
    _sd_unet_forward(dev, torch.bfloat16 if dry else torch.float16, dry)


def _sd_unet_forward(dev: str, dtype: torch.dtype, dry: bool) -> None:
    from bench_foundation import sd21_size_components

    from text3d.guidance.tiny import build_tiny_sd_pipeline

    unet = (build_tiny_sd_pipeline().unet if dry else sd21_size_components()["unet"]).to(dev, dtype)
    size, ctx = (8, unet.config.cross_attention_dim) if dry else (64, 1024)
    x = torch.randn(2, 4, size, size, device=dev, dtype=dtype)
    enc = torch.randn(2, 77, ctx, device=dev, dtype=dtype)
    t = torch.tensor([500, 500], device=dev)
    with torch.no_grad():
        unet(x, t, enc)
        sync(dev)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(5):
            out = unet(x, t, enc).sample
        sync(dev)
    result(f"{'tiny' if dry else 'sd21-size'}_unet_forward_batch2_{str(dtype).split('.')[-1]}",
           f"{(time.perf_counter() - t0) / 5 * 1e3:.1f} ms, finite {bool(torch.isfinite(out).all())}, peak {peak_gb(dev)}")


def cmd_sd_run(dry: bool) -> None:
    """A short DreamFusion run shaped like Stable Diffusion 2.1-base (random weights): fp16 prior,
    64x64 renders, the preset's 512 samples per ray on the nerfacc path."""
    from text3d.run import open_run

    dev = device(dry)
    steps = 2 if dry else 30
    overrides = [f"device={dev}", f"steps={steps}", f"output_dir={tempfile.mkdtemp()}", "trainer.val_every=0",
                 "trainer.turntable_frames=0", "trainer.checkpoint_every=0", "export.enabled=false",
                 "trainer.log_every=0"]
    if dry:
        overrides += ["cameras.width=32", "cameras.height=32", "renderer.num_samples_per_ray=16"]
    prior = _sd_prior(dev, dry)
    run = open_run(REPO / "configs" / "dreamfusion-sd.yaml", overrides, prior=prior)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run.fit()
    sync(dev)
    wall = time.perf_counter() - t0
    result("sd_shaped_run", f"{steps} steps in {wall:.1f} s ({wall / steps * 1e3:.0f} ms/step incl. the final "
           f"outputs), final loss {run.last_losses.get('loss', float('nan')):.4g}, skipped {len(run.skipped_steps)}, "
           f"peak {peak_gb(dev)}, renderer {run.system.renderer.__class__.__name__}")


GUIDANCE_ROWS = {  # name -> overrides of configs/dreamfusion-sd.yaml (each guidance at its own defaults)
    "sds": [],
    "sds+perp-neg": ["prompting.perp_neg=true"],
    "csd": ["guidance.type=csd"],
    "nfsd": ["guidance.type=nfsd"],
    "ism": ["guidance.type=ism"],
    "vsd": ["guidance.type=vsd"],
}


def _sd_prior(dev: str, dry: bool):
    """Stable Diffusion 2.1-base-shaped random weights in float16 (dry: the tiny pipeline in float32)."""
    from bench_foundation import sd21_size_components

    from text3d.guidance.stable_diffusion import StableDiffusionPrior, StableDiffusionPriorConfig

    cfg = StableDiffusionPriorConfig(model="tiny-random-sd", dtype="float32" if dry else "float16")
    if dry:
        return StableDiffusionPrior(cfg, torch.device(dev))
    return StableDiffusionPrior(cfg, torch.device(dev), components=sd21_size_components())


def cmd_guidance(dry: bool) -> None:
    """Cost of one training step of each guidance on an SD-2.1-size prior (random weights, fp16):
    the DreamFusion preset's NeRF at 64 px, batch 1; the median of the timed steps after one warm-up
    step, the peak GPU memory of each, and the ratio to SDS's step in the same process."""
    from text3d.run import open_run

    dev = device(dry)
    steps = 2 if dry else 10
    prior = _sd_prior(dev, dry)
    base = ["device=" + dev, f"steps={steps + 1}", f"output_dir={tempfile.mkdtemp()}"]
    if dry:
        base += ["cameras.width=32", "cameras.height=32", "renderer.num_samples_per_ray=16"]
    sds_ms = None
    for name, extra in GUIDANCE_ROWS.items():
        run = open_run(REPO / "configs" / "dreamfusion-sd.yaml", [*extra, *base], prior=prior)
        run.train_step()  # warm-up (and VSD's LoRA copy made)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            sync(dev)
            t0 = time.perf_counter()
            run.train_step()
            sync(dev)
            times.append(time.perf_counter() - t0)
        ms = sorted(times)[len(times) // 2] * 1e3
        sds_ms = ms if name == "sds" else sds_ms
        result(f"guidance_{name}_step", f"{ms:.0f} ms ({ms / sds_ms:.2f}x SDS), peak {peak_gb(dev)}, "
               f"loss finite {all(v == v for v in run.last_losses.values())}")
        del run
        if dev == "cuda":
            torch.cuda.empty_cache()


def cmd_quickstart(dry: bool) -> None:
    """The quickstart on CUDA (nerfacc path, shipped prior) through the CLI, as a user runs it."""
    dev = device(dry)
    steps = 2 if dry else 400
    out = tempfile.mkdtemp()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "text3d", "run", str(REPO / "configs" / "quickstart.yaml"),
                           f"device={dev}", f"steps={steps}", f"output_dir={out}", "--no-progress"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    metrics = json.loads((Path(proc.stdout.strip().splitlines()[-1]) / "metrics.json").read_text())
    result("quickstart_cli", f"{steps} steps, {wall:.1f} s wall, silhouette IoU {metrics.get('silhouette_iou')}, "
           f"colour {metrics.get('colour_found')}, device {metrics.get('device')}")


def cmd_batch(dry: bool) -> None:
    """text3d batch with --gpus-per-run 0.5: two quickstart runs share the GPU; Ray's reservation is checked."""
    dev = device(dry)
    steps = 2 if dry else 100
    work = Path(tempfile.mkdtemp())
    (work / "prompts.txt").write_text("a red cube\na blue sphere\n")
    gpu_args = [] if dry else ["--gpus-per-run", "0.5"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "text3d", "batch", str(REPO / "configs" / "quickstart.yaml"),
                           str(work / "prompts.txt"), f"steps={steps}", f"device={dev}", f"output_dir={work}",
                           "--cpus-per-run", "1", *gpu_args, "--no-progress"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    data = json.loads((Path(proc.stdout.strip().splitlines()[-1]) / "batch.json").read_text())
    resources = [it["history"][-1].get("resources") for it in data["items"]]
    result("batch_2_runs", f"{data['counts']['done']}/2 done in {wall:.1f} s, resources {resources}, "
           f"IoU {[it['metrics'].get('silhouette_iou') for it in data['items']]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("piece", choices=["env", "fp16-prior", "sd-run", "guidance", "quickstart", "batch"])
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: checks the code, not the GPU")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    {"env": cmd_env, "fp16-prior": cmd_fp16_prior, "sd-run": cmd_sd_run, "guidance": cmd_guidance, "quickstart": cmd_quickstart,
     "batch": cmd_batch}[args.piece](args.dry_run)


if __name__ == "__main__":
    main()
