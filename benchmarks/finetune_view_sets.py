"""Fine-tune a latent prior on sets of views of one object, with self-attention reading across the set.

Issue 27's experiment on why StyleAligned shared attention barely moves what the views of a set
decide (docs/latent-prior.md, "Training the attention across views"). Nothing in the shapes world
teaches self-attention to copy appearance from other tokens, so this teaches it: a share of the
batches (``--set-share``) are ``B / --views`` sets of ``--views`` bank views of one object (same shape,
colours and prompt text, each with its own view suffix; classifier-free dropout per set; independent
noise at independent timesteps), with every self-attention layer in ``--attention`` mode:
``full`` (MVDream: every view reads all of its set), ``shared`` (StyleAligned: views 1.. read their own
and view 0's keys/values, AdaIN of queries and keys) or ``shared-plain`` (the same without AdaIN).
The other batches are the recipe's plain ones. AdamW at ``--lr`` after a 50-iteration warm-up,
constant or (``--lr-min``) cosine-decayed to ``--lr-min``; with ``--ema-decay`` the written weights are
the exponential moving average (as the recipe's), else the last ones. The text encoder and the VAE stay
frozen. The result is a latent prior folder (written
atomically) for ``benchmarks/probe_shared_attention.py --prior-model``.

    OMP_NUM_THREADS=1 python benchmarks/finetune_view_sets.py --out outputs/prior_view_sets \\
        --iterations 1200 --attention shared --views 4 --lr 5e-4 --set-share 0.75
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from text3d.core.io import staged_folder
from text3d.guidance.attention import AttentionInstall, FullAttnProcessor, SharedAttnProcessor, self_attention_layers
from text3d.prior.latent_data import PatternBatch, PatternDataConfig, PatternDataset
from text3d.prior.latent_model import encode_latents, load_latent_prior, save_latent_prior
from text3d.prior.model import encode_prompts
from text3d.prior.train_state import EMA
from text3d.prior.training import diffusion_loss

BUILTIN = Path(__file__).resolve().parents[1] / "text3d" / "data" / "latent_prior"
ATTENTION = {
    "full": lambda n: FullAttnProcessor(num_views=n),
    "shared": lambda n: SharedAttnProcessor(num_views=n),
    "shared-plain": lambda n: SharedAttnProcessor(num_views=n, adain_queries=False, adain_keys=False),
}


def view_sets(ds: PatternDataset, sets: int, n: int, dropout: float, gen: torch.Generator) -> PatternBatch:
    """``sets`` groups of ``n`` bank views of one random object each, group-major; prompts dropped per set."""
    batch = ds.sample(sets * n, gen, views=n)
    drop = (torch.rand(sets, generator=gen) < dropout).repeat_interleave(n).tolist()
    batch.prompts = ["" if d else p for p, d in zip(batch.prompts, drop)]
    return batch


def plain_batch(ds: PatternDataset, size: int, dropout: float, gen: torch.Generator) -> PatternBatch:
    """The recipe's batch of ``size`` random objects, prompts dropped with probability ``dropout``."""
    batch = ds.sample(size, gen)
    drop = (torch.rand(size, generator=gen) < dropout).tolist()
    batch.prompts = ["" if d else p for p, d in zip(batch.prompts, drop)]
    return batch


def learning_rate(args: argparse.Namespace, it: int, warmup: int = 50) -> float:
    """``--lr`` after a linear warm-up; then constant, or cosine-decayed to ``--lr-min`` at the last iteration."""
    if it < warmup:
        return args.lr * (it + 1) / warmup
    if args.lr_min is None:
        return args.lr
    frac = (it - warmup) / max(1, args.iterations - 1 - warmup)
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * min(1.0, frac)))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior-model", default=str(BUILTIN), help="the latent prior folder to start from")
    ap.add_argument("--out", required=True, help="the fine-tuned prior folder (replaced atomically)")
    ap.add_argument("--iterations", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--lr-min", type=float, default=None, help="cosine decay to this after the warm-up (default: constant)")
    ap.add_argument("--ema-decay", type=float, default=0.0, help="write the EMA of the weights (0: the last weights)")
    ap.add_argument("--attention", choices=sorted(ATTENTION), default="shared")
    ap.add_argument("--views", type=int, default=4, help="views per set")
    ap.add_argument("--set-share", type=float, default=0.75, help="share of the batches that are sets")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bank", default=None, help="cache of the recipe's bank of views (safetensors)")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    prior = load_latent_prior(args.prior_model)
    recipe = prior.meta["recipe"]
    ds = PatternDataset(PatternDataConfig(**recipe["data"]), recipe["model"]["resolution"], recipe["seed"] + 7919,
                        Path(args.bank) if args.bank else None)
    prior.unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(prior.unet.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    dropout, gamma, layers = recipe["cond_dropout"], recipe["min_snr_gamma"], self_attention_layers(prior.unet)
    t0, recent = time.perf_counter(), {True: [], False: []}
    ema = EMA([prior.unet], args.ema_decay) if args.ema_decay > 0 else None
    for it in range(args.iterations):
        is_set = torch.rand(1, generator=gen).item() < args.set_share
        batch = (view_sets(ds, args.batch_size // args.views, args.views, dropout, gen) if is_set
                 else plain_batch(ds, args.batch_size, dropout, gen))
        with torch.no_grad():
            x0 = encode_latents(prior.vae, batch.images, gen) * prior.scaling_factor
            unique = list(dict.fromkeys(batch.prompts))
            emb = encode_prompts(prior, unique)[torch.tensor([unique.index(p) for p in batch.prompts])]
        for group in opt.param_groups:
            group["lr"] = learning_rate(args, it)
        factory = ATTENTION[args.attention]
        with AttentionInstall(prior.unet, lambda _name: factory(args.views), layers) if is_set else contextlib.nullcontext():
            loss = diffusion_loss(prior, x0, emb, batch.camera, gen, gamma)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.unet.parameters(), 1.0)
        opt.step()
        if ema is not None:
            ema.update()
        recent[is_set].append(loss.item())
        if (it + 1) % 50 == 0:
            mean = {k: sum(v[-50:]) / max(1, len(v[-50:])) for k, v in recent.items()}
            print(f"iteration {it + 1}: loss sets {mean[True]:.4f} plain {mean[False]:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if ema is not None:
        ema.copy_to([prior.unet])
    prior.unet.eval().requires_grad_(False)
    meta = {k: v for k, v in prior.meta.items() if k not in ("format_version", "type", "camera_features")}
    meta["version"] = f"{meta['version']}-viewsets-{args.attention}{args.views}-{args.iterations}"
    meta["view_set_finetune"] = vars(args)
    with staged_folder(Path(args.out)) as tmp:
        save_latent_prior(prior, tmp, meta)
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
