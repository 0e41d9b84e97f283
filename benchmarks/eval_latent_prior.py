"""The latent prior's VAE and samples, judged against the analytic renderer (issue 27's figures).

``--vae``: reconstruction PSNR of held-out renders (cameras the training bank never drew, every shape
x colour, plain and striped, the held-out combinations included) through the posterior mean, and the
std of the scaled latents (goal: PSNR >= 30 dB, std within 10 % of 1).

``--samples``: the documented sampler (50 ancestral DDIM steps, CFG 2) on every plain pair and a
striped combination per pair, at random cameras; colour and shape judged as the pixel prior's
(:func:`text3d.prior.evaluation.judge`), the pattern by :func:`text3d.prior.evaluation.judge_stripes`
(goals: colour and shape >= 97 %, pattern >= 90 %, held-out combinations right).

    python benchmarks/eval_latent_prior.py --vae [--prior FOLDER | --work-dir DIR] [--per-combo 2] [--picture vae.png]
    python benchmarks/eval_latent_prior.py --samples [--prior FOLDER] [--per-pair 2] [--picture samples.png]
    python benchmarks/eval_latent_prior.py --outlines "a pink capsule with a cyan stripe" ...

``--outlines``: how exactly the prior draws an outline. Samples at 8 azimuths and elevations -10, 15, 35
and 60 (32 px), as a mask (a pixel more than 0.15 from white in any channel) against the true coverage;
the true render, masked the same way, gives the best a 32-px image can reach.

``--work-dir`` reads the VAE of a training run still in progress (``<out>.train``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from torch import Tensor

import torch

from text3d.core.checkpoint import load_latest_checkpoint
from text3d.core.media import save_image
from text3d.prior.evaluation import evaluation_cameras, image_grid, judge, judge_stripes
from text3d.prior.latent_model import BUILTIN_LATENT_PRIOR_DIR, build_vae, encode_latents, load_latent_prior, \
    sample_latent
from text3d.prior.latent_training import TRAIN_LATENT_PRIOR_SCHEMA
from text3d.prior.shapes import COLOUR_NAMES, SHAPES, prompt_for, render_shapes

Combo = Tuple[str, str, Optional[str]]


def vae_from_work_dir(work_dir: Path) -> Tuple[torch.nn.Module, Dict]:
    """The newest VAE checkpoint of a training run, and its recipe."""
    ckpt = load_latest_checkpoint(work_dir / "vae")
    if ckpt is None:
        sys.exit(f"no VAE checkpoint in {work_dir}/vae")
    recipe = ckpt.meta["recipe"]
    cfg = TRAIN_LATENT_PRIOR_SCHEMA.resolve({"type": "latent", "model": recipe["model"], "data": recipe["data"]})
    vae = build_vae(cfg.model)
    vae.load_state_dict({k[4:]: v for k, v in ckpt.tensors.items() if k.startswith("vae.")})
    print(f"VAE of {work_dir} at iteration {ckpt.meta['step']}")
    return vae.eval().requires_grad_(False), recipe


def combos(shapes=SHAPES, colours=COLOUR_NAMES, stripe_offset: int = 3) -> List[Combo]:
    """Every plain pair, and each pair with the stripe colour ``stripe_offset`` palette places on."""
    out: List[Combo] = [(s, c, None) for s in shapes for c in colours]
    out += [(s, c, colours[(i + stripe_offset) % len(colours)]) for s in shapes for i, c in enumerate(colours)]
    return out


def renders(items: List[Combo], per: int, seed: int, resolution: int = 32):
    cases = [c for c in items for _ in range(per)]
    cams = evaluation_cameras(len(cases), torch.Generator().manual_seed(seed), elevation_range=(-10.0, 70.0),
                              resolution=resolution)
    rgb, _ = render_shapes([c[0] for c in cases], [c[1] for c in cases], cams,
                           stripe_colours=[c[2] for c in cases])
    return cases, cams, rgb.permute(0, 3, 1, 2)


@torch.no_grad()
def eval_vae(vae, scaling_factor: Optional[float], per: int, seed: int, picture: Optional[str]) -> Dict:
    cases, _, images = renders(combos(), per, seed)
    recon, latents = [], []
    gen = torch.Generator().manual_seed(seed + 1)
    for chunk in images.split(128):
        z = encode_latents(vae, chunk * 2 - 1)
        recon.append((vae.decode(z).sample * 0.5 + 0.5).clamp(0, 1))
        latents.append(encode_latents(vae, chunk * 2 - 1, gen))
    recon = torch.cat(recon)
    mse = (recon - images).pow(2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1 / mse.clamp(min=1e-10))
    striped = torch.tensor([c[2] is not None for c in cases])
    std = float(torch.cat(latents).std())
    report = {"images": len(cases), "psnr_mean_db": round(float(psnr.mean()), 2),
              "psnr_pooled_db": round(float(10 * math.log10(1 / mse.mean())), 2),
              "psnr_min_db": round(float(psnr.min()), 2),
              "psnr_plain_db": round(float(psnr[~striped].mean()), 2),
              "psnr_striped_db": round(float(psnr[striped].mean()), 2),
              "psnr_per_shape_db": {s: round(float(psnr[[c[0] == s for c in cases]].mean()), 2) for s in SHAPES},
              "latent_std_unscaled": round(std, 4)}
    if scaling_factor is not None:
        report["scaling_factor"] = round(scaling_factor, 4)
        report["latent_std_scaled"] = round(std * scaling_factor, 4)
    if picture:
        idx = torch.linspace(0, len(cases) - 1, 16).long()
        big = torch.nn.functional.interpolate(torch.cat([images[idx], recon[idx]]), scale_factor=4, mode="nearest")
        save_image(picture, image_grid(big, 16))
    return report


def held_out_combos(meta: Dict) -> List[Combo]:
    """The plain pairs and striped combinations the prior never saw in training (from its metadata)."""
    from text3d.prior.shapes import parse_pattern

    texts = [*meta.get("held_out", []), *meta.get("held_out_striped", [])]
    return [parse_pattern(t) for t in texts if parse_pattern(t) is not None]


def sample_images(prior, cases: List[Combo], seed: int, batch: int = 64):
    """One sample per case at random training-range cameras, with the documented sampler."""
    gen = torch.Generator().manual_seed(seed)
    size = int(prior.unet.config.sample_size) * 2 ** (len(prior.vae.config.block_out_channels) - 1)
    cams = evaluation_cameras(len(cases), gen, resolution=size)
    images = torch.cat([sample_latent(prior, [prompt_for(*c) for c in cases[i:i + batch]], cams.index(slice(i, i + batch)),
                                      generator=gen) for i in range(0, len(cases), batch)])
    return cams, images


def rate(values: Tensor) -> float:
    return round(float(values.float().mean()), 4) if values.numel() else float("nan")


@torch.no_grad()
def eval_samples(prior, per: int, seed: int, picture: Optional[str]) -> Dict:
    """Colour (plain samples), shape (all), pattern (striped samples: base and stripe colour in their regions)."""
    held = held_out_combos(prior.meta)
    cases = [c for c in combos() if c not in held for _ in range(per)] + [c for c in held for _ in range(4)]
    cams, images = sample_images(prior, cases, seed)
    verdict = judge(images, cams, [c[0] for c in cases], [c[1] for c in cases])
    plain = torch.tensor([c[2] is None for c in cases])
    idx = [i for i, c in enumerate(cases) if c[2] is not None]
    pattern = torch.zeros(len(cases), dtype=torch.bool)
    stripes = judge_stripes(images[idx], cams.index(idx), [cases[i][0] for i in idx], [cases[i][1] for i in idx],
                            [cases[i][2] for i in idx])
    pattern[idx] = stripes["pattern_ok"]
    is_held = torch.tensor([c in held for c in cases])
    right = torch.where(plain, verdict["colour_ok"], pattern) & verdict["shape_ok"]
    report = {"samples": len(cases), "colour_ok_plain": rate(verdict["colour_ok"][plain & ~is_held]),
              "shape_ok": rate(verdict["shape_ok"][~is_held]), "pattern_ok_striped": rate(pattern[~plain & ~is_held]),
              "background_ok": rate(verdict["background_ok"][~is_held]),
              "held_out": {prompt_for(*c): f"{int(right[[k == c for k in cases]].sum())}/4" for c in held}}
    if picture:
        big = torch.nn.functional.interpolate(images[:: max(1, per)][:128], scale_factor=4, mode="nearest")
        save_image(picture, image_grid(big, 16))
    return report


@torch.no_grad()
def eval_outlines(prior, prompts: List[str], seed: int) -> Dict:
    """Per prompt and elevation: silhouette IoU of samples and of the true render against the coverage."""
    from text3d.prior.shapes import parse_prompt
    from text3d.scene.cameras import turntable

    report: Dict = {}
    for prompt in prompts:
        shape, colour = parse_prompt(prompt)
        rows = {}
        for elevation in (-10.0, 15.0, 35.0, 60.0):
            cams = turntable(8, elevation, 3.0, 32.0, 32, 32)
            true, coverage = render_shapes([shape] * 8, [colour] * 8, cams, supersample=4)
            drawn = sample_latent(prior, [prompt] * 8, cams, generator=torch.Generator().manual_seed(seed))
            truth = coverage > 0.5
            iou = {name: rate(((m & truth).sum((1, 2)) / (m | truth).sum((1, 2)).clamp(min=1)))
                   for name, m in (("samples", _mask(drawn)), ("true_render", _mask(true.permute(0, 3, 1, 2))))}
            rows[f"{elevation:g}"] = iou
        report[prompt] = rows
    return report


def _mask(images: Tensor) -> Tensor:
    """``[B, H, W]`` pixels more than 0.15 from white in some channel of ``[B, 3, H, W]`` images."""
    return (1 - images).abs().amax(1) > 0.15


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", action="store_true")
    ap.add_argument("--samples", action="store_true")
    ap.add_argument("--outlines", nargs="+", default=None, metavar="PROMPT")
    ap.add_argument("--prior", default=str(BUILTIN_LATENT_PRIOR_DIR))
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--per-combo", type=int, default=2)
    ap.add_argument("--per-pair", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--picture", default=None)
    ap.add_argument("--json", default=None)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    report: Dict = {}
    if args.vae:
        if args.work_dir:
            vae, _ = vae_from_work_dir(Path(args.work_dir))
            scale = None
        else:
            prior = load_latent_prior(args.prior)
            vae, scale = prior.vae, prior.scaling_factor
        report["vae"] = eval_vae(vae, scale, args.per_combo, args.seed, args.picture)
    if args.samples:
        report["samples"] = eval_samples(load_latent_prior(args.prior), args.per_pair, args.seed, args.picture)
    if args.outlines:
        report["outlines"] = eval_outlines(load_latent_prior(args.prior), args.outlines, args.seed)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
