"""Foundation benchmark: the CPU NeRF render and one SDS step split by stage.

1. The NeRF render (64x64 rays x 64 samples, forward + backward) from ``bench_render.py``;
   target <= 0.2 s on 2 CPU cores.
2. One SDS training step of :class:`text3d.run.Run`, unchanged, timed by stage with hooks:
   render forward, VAE encode forward, UNet forward (CFG batch of 2), VAE backward (until the
   render's gradient exists), render backward, and the rest (camera sampling, prompts, noise,
   optimizer, ...). The prior is Stable Diffusion 2.1-base at full size with random weights (the
   architecture is what costs time; no download needed), or ``--prior tiny``. Target: the share
   outside the prior forward and the VAE <= 10 %.

    python benchmarks/bench_foundation.py [--prior sd21-size|tiny] [--steps 2] [--skip-render]

Figures are for the machine at hand; run the baseline and the change in the same invocation.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]


def sd21_size_components(seed: int = 0) -> dict:
    """UNet + VAE with Stable Diffusion 2.1-base's architecture and random weights.

    The text encoder is a one-layer CLIP of the right width: text embeddings are computed once
    per prompt and cached, so its size does not matter for the step time.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from text3d.guidance.tiny import build_tiny_sd_pipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
            block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215)
        tokenizer = build_tiny_sd_pipeline().tokenizer
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=1024, intermediate_size=1024, num_hidden_layers=1,
            num_attention_heads=16, max_position_embeddings=77))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


class StageTimer:
    """Accumulates wall time per stage; hooks call :meth:`mark`."""

    def __init__(self):
        self.totals: Dict[str, float] = defaultdict(float)
        self._t = {}

    def start(self, name: str) -> None:
        self._t[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        self.totals[name] += time.perf_counter() - self._t.pop(name)


def instrument(run, timer: StageTimer) -> None:
    """Wrap the run's render, VAE encode, UNet and backward with timers (the step code is untouched)."""
    prior, system = run.prior, run.system
    render, encode = system.render, prior.encode_images

    def timed_render(*a, **k):
        timer.start("render forward")
        out = render(*a, **k)
        timer.stop("render forward")
        if out["rgb"].requires_grad:  # the gradient reaches the render when the VAE backward ends
            out["rgb"].register_hook(lambda g: (timer.stop("VAE backward"), timer.start("render backward"), g)[-1])
        return out

    def timed_encode(*a, **k):
        timer.start("VAE encode forward")
        out = encode(*a, **k)
        timer.stop("VAE encode forward")
        return out

    system.render, prior.encode_images = timed_render, timed_encode
    prior.unet.register_forward_pre_hook(lambda *_: timer.start("UNet forward"))
    prior.unet.register_forward_hook(lambda *_: timer.stop("UNet forward"))
    backward = torch.Tensor.backward

    def timed_backward(tensor, *a, **k):
        timer.start("VAE backward")
        backward(tensor, *a, **k)
        timer.stop("render backward")

    torch.Tensor.backward = timed_backward  # benchmark only: restored by the caller


def bench_sds_step(prior_kind: str, steps: int) -> Dict[str, float]:
    import tempfile

    from text3d.run import open_run

    overrides = ["steps=1000", f"output_dir={tempfile.mkdtemp()}", "cameras.width=64", "cameras.height=64",
                 "renderer.num_samples_per_ray=64"]
    prior = None
    if prior_kind == "sd21-size":
        from text3d.guidance.stable_diffusion import StableDiffusionPrior, StableDiffusionPriorConfig

        cfg = StableDiffusionPriorConfig(model="tiny-random-sd", dtype="float32")  # model name unused here
        prior = StableDiffusionPrior(cfg, torch.device("cpu"), components=sd21_size_components())
    run = open_run(REPO / "configs" / "smoke-tiny-sd.yaml", overrides, prior=prior)
    timer = StageTimer()
    original_backward = torch.Tensor.backward
    try:
        run.train_step()  # warm-up
        run.step += 1
        instrument(run, timer)
        t0 = time.perf_counter()
        for _ in range(steps):
            run.train_step()
            run.step += 1
        total = (time.perf_counter() - t0) / steps
    finally:
        torch.Tensor.backward = original_backward
    figures = {name: value / steps for name, value in timer.totals.items()}
    figures["rest"] = total - sum(figures.values())
    figures["total"] = total
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="text3d foundation benchmark")
    parser.add_argument("--prior", choices=["sd21-size", "tiny"], default="sd21-size")
    parser.add_argument("--steps", type=int, default=2, help="timed SDS steps (after one warm-up)")
    parser.add_argument("--skip-render", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CUDA: {torch.cuda.is_available()}")
    if not args.skip_render:
        from bench_render import _print, bench_render

        _print(bench_render())
    figures = bench_sds_step(args.prior, args.steps)
    total = figures["total"]
    print(f"\nSDS step, prior {args.prior}, 64x64 render, 64 samples/ray (mean of {args.steps}):")
    for name in ("render forward", "VAE encode forward", "UNet forward", "VAE backward", "render backward", "rest"):
        print(f"  {name:20s} {figures.get(name, 0.0):8.3f} s  {100 * figures.get(name, 0.0) / total:5.1f} %")
    print(f"  {'total':20s} {total:8.3f} s")
    prior_share = sum(figures.get(k, 0.0) for k in ("VAE encode forward", "UNet forward", "VAE backward"))
    outside = 1.0 - prior_share / total
    verdict = "meets" if outside <= 0.10 else "misses"
    print(f"share outside the prior forward and the VAE: {100 * outside:.1f} % ({verdict} the 10 % target)")


if __name__ == "__main__":
    main()
