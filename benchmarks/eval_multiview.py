"""Multi-view consistency and cost of every mode on the embedded prior, judged by the analytic renderer.

For each setting (views ``N``, mode, noise) it samples sets of ``N`` views of under-specified prompts
(``"a cube"``, ``"a red object"``, ...) at evenly spaced azimuths and reports

- **set agreement**: the fraction of sets whose views all have the same judged colour and shape;
- **per-view IoU**: each view's silhouette IoU with the analytic render of the set's (majority)
  shape *at that view's own camera* (sharing must not paste the reference's pose);
- **pose pasted**: the fraction of non-reference views of cubes and pyramids (shapes whose
  silhouette changes with azimuth) that match the reference camera's silhouette better than their own;
- **time** per setting and its ratio to ``independent`` at the same ``N`` and noise (equal steps).

The baseline for IoU is independent sampling of fully specified prompts (``"a red cube"``, ...).
All sets of a setting are sampled in one batch (each is its own group in the attention processors),
from one generator seeded by ``--seed``; ``--sets`` sets per prompt.

    python benchmarks/eval_multiview.py                     # 6 prompts x 5 sets, N = 4 and 8, every mode
    python benchmarks/eval_multiview.py --views 4 --modes independent,shared --noise shared
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Dict, List

import torch

from text3d.cameras import turntable
from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig
from text3d.multiview import MultiviewSettings, SamplerConfig, sample_multiview
from text3d.prior_eval import classify_colour, mask_iou, object_mask, silhouettes_all_shapes
from text3d.shapes import SHAPES, parse_prompt

UNDER_SPECIFIED = ["a cube", "a torus", "a cone", "a red object", "a blue object", "a green object"]
SPECIFIED = ["a red cube", "a green torus", "an orange cone", "a red sphere", "a blue cylinder", "a green pyramid"]
POSED = ("cube", "pyramid")


def judge_sets(images: torch.Tensor, cams, n: int) -> Dict[str, torch.Tensor]:
    """Per-view colour/shape and IoU with the set's majority shape at the view's own and the reference camera."""
    mask = object_mask(images)
    colour = classify_colour(images, mask)
    sil = silhouettes_all_shapes(cams)  # [B, S, H, W]
    ious = mask_iou(mask, sil)
    shape = torch.where(ious.amax(1) > 0, ious.argmax(1), torch.full_like(colour, -1))
    S = images.shape[0] // n
    set_shape = torch.tensor([Counter(shape[i * n:(i + 1) * n].tolist()).most_common(1)[0][0] for i in range(S)])
    set_shape_v = set_shape.repeat_interleave(n).clamp(min=0)
    own = ious.gather(1, set_shape_v[:, None])[:, 0]
    ref_sil = sil.view(S, n, *sil.shape[1:])[:, :1].expand(-1, n, -1, -1, -1).reshape_as(sil)
    at_ref = mask_iou(mask, ref_sil).gather(1, set_shape_v[:, None])[:, 0]
    return {"colour": colour.view(S, n), "shape": shape.view(S, n), "iou": own.view(S, n),
            "iou_at_ref": at_ref.view(S, n), "set_shape": set_shape}


def figures(j: Dict[str, torch.Tensor]) -> Dict[str, float]:
    col, shp = j["colour"], j["shape"]
    agree = ((col == col[:, :1]).all(1) & (shp == shp[:, :1]).all(1) & (col[:, :1] >= 0).all(1)).float()
    posed = torch.tensor([SHAPES[s] in POSED if s >= 0 else False for s in j["set_shape"].tolist()])
    pasted = (j["iou_at_ref"][:, 1:] > j["iou"][:, 1:] + 0.05)[posed]
    return {"set_agreement": float(agree.mean()), "iou": float(j["iou"].mean()),
            "pose_pasted": float(pasted.float().mean()) if pasted.numel() else float("nan")}


def run_setting(prior, prompts: List[str], sets: int, n: int, settings: MultiviewSettings, seed: int):
    cams = turntable(n, 15.0, 3.0, 32.0, 32, 32)
    all_prompts = [p for p in prompts for _ in range(sets * n)]
    all_cams = cams.index(torch.arange(n).repeat(len(prompts) * sets))
    t0 = time.perf_counter()
    images = sample_multiview(prior, all_prompts, all_cams, n, settings, torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - t0
    return images, all_cams, seconds


def specified_iou(images: torch.Tensor, cams, prompts: List[str]) -> float:
    shape_ids = torch.tensor([SHAPES.index(parse_prompt(p)[0]) for p in prompts])
    ious = mask_iou(object_mask(images), silhouettes_all_shapes(cams))
    return float(ious.gather(1, shape_ids[:, None]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", default="4,8", help="comma-separated N (default 4,8)")
    ap.add_argument("--modes", default="independent,shared,full,grid")
    ap.add_argument("--noise", default="independent,shared", help="noise settings to run (default both)")
    ap.add_argument("--sets", type=int, default=5, help="sets per prompt (default 5)")
    ap.add_argument("--steps", type=int, default=50, help="sampler steps (documented sampler: 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--grid-image", default=None, help="save independent vs shared views of the first prompts here")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    prior = PixelPrior(PixelPriorConfig(), torch.device("cpu"))
    sampler = SamplerConfig(steps=args.steps)
    rows, pictures = [], {}
    for mode in args.modes.split(","):  # warm-up: text encodings cached, kernels loaded, before any timing
        run_setting(prior, UNDER_SPECIFIED + SPECIFIED, 1, 4, MultiviewSettings(mode=mode, sampler=SamplerConfig(steps=1)), 0)
    for n in [int(v) for v in args.views.split(",")]:
        images, cams, sec = run_setting(prior, SPECIFIED, args.sets, n, MultiviewSettings(mode="independent", sampler=sampler), args.seed)
        base = specified_iou(images, cams, [p for p in SPECIFIED for _ in range(args.sets * n)])
        print(f"N={n} baseline: independent sampling of fully specified prompts: per-view IoU {base:.3f} ({sec:.0f} s)", flush=True)
        rows.append({"views": n, "mode": "specified-independent", "noise": "independent", "iou": base, "seconds": sec})
        for noise in args.noise.split(","):
            ref_time = None
            for mode in args.modes.split(","):
                settings = MultiviewSettings(mode=mode, noise=noise, sampler=sampler)
                images, cams, sec = run_setting(prior, UNDER_SPECIFIED, args.sets, n, settings, args.seed)
                fig = figures(judge_sets(images, cams, n))
                ref_time = sec if mode == "independent" else ref_time
                ratio = sec / ref_time if ref_time else float("nan")
                rows.append({"views": n, "mode": mode, "noise": noise, **fig, "seconds": sec, "time_ratio": ratio,
                             "iou_minus_baseline": fig["iou"] - base})
                print(f"N={n} noise={noise:11s} mode={mode:11s} set agreement {fig['set_agreement']:6.1%}  "
                      f"per-view IoU {fig['iou']:.3f} ({fig['iou'] - base:+.3f} vs specified)  pose pasted "
                      f"{fig['pose_pasted']:.1%}  time {sec:6.0f} s  x{ratio:.2f} vs independent", flush=True)
                if n == int(args.views.split(",")[0]) and mode in ("independent", "shared"):
                    pictures[(mode, noise)] = images[: 3 * n]
    if args.grid_image and pictures:
        from text3d.media import image_grid, save_image

        n = int(args.views.split(",")[0])
        tiles = [im.permute(1, 2, 0) for key in sorted(pictures) for im in pictures[key]]
        save_image(args.grid_image, image_grid(tiles, cols=n))
        print("picture rows (3 sets each):", ", ".join(f"{m}/noise={z}" for m, z in sorted(pictures)))
    if args.json:
        from text3d.io import write_json

        write_json(args.json, rows)


if __name__ == "__main__":
    main()
