"""``text3d train-prior [CONFIG] [key=value ...]``: train the embedded shapes prior."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import progress_bars
from .common import Verb, register


@register
class TrainPriorVerb(Verb):
    name = "train-prior"
    help = "train an embedded shapes prior (pixel, or the miniature SD) from scratch (CPU or GPU)"
    description = ("Train an embedded shapes prior from a recipe: configs/train-prior.yaml (a small pixel-space "
                   "diffusion model of primitives) or configs/train-latent-prior.yaml (type: latent, a miniature "
                   "Stable Diffusion: VAE, then UNet, then optionally the UNet on sets of views with shared attention). A stopped run continues from its work "
                   "folder when started again with the same recipe.")
    epilog = "example: text3d train-prior configs/train-prior.yaml iterations=6000 --out /tmp/my-prior"
    items_metavar = "[CONFIG] [key.path=value ...]"
    items_help = "a recipe YAML (default: the built-in recipe) followed by overrides"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", default=None, help="prior folder to write (default: the package's built-in prior)")
        parser.add_argument("--replace", action="store_true",
                            help="overwrite --out if it holds an earlier prior (atomically); any other content is "
                                 "never touched")
        parser.add_argument("--work-dir", default=None, help="resumable state folder (default: <out>.train)")

    def schema(self) -> Any:
        from text3d.prior.training import TRAIN_PRIOR_SCHEMA

        return TRAIN_PRIOR_SCHEMA

    def config(self, args: argparse.Namespace) -> Any:
        from text3d.prior.recipes import load_recipe

        return load_recipe(*self.items(args))

    def run(self, args: argparse.Namespace) -> int:
        from text3d.guidance.attention import shared_attention
        from text3d.prior.recipes import default_out, train

        cfg = self.config(args)
        with progress_bars(not args.no_progress) as bars:
            def progress(step: int, total: int, figures: dict) -> None:
                extra = {"lr": f"{figures['lr']:.1e}"} if "lr" in figures else {"stage": figures.get("stage", "")}
                bars.update("train-prior", step, total, unit="it", loss=f"{figures['loss']:.4f}", **extra)

            try:
                folder = train(cfg, args.out or default_out(cfg), progress=progress, work_dir=args.work_dir,
                               replace=args.replace, view_attention=shared_attention)
            except KeyboardInterrupt:
                bars.close()
                print("interrupted; run the same command again to continue from the last state", file=sys.stderr)
                return 130
        print(folder)
        return 0
