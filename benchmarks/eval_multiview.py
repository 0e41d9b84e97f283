"""Multi-view consistency and cost of every mode on the embedded prior, judged by the analytic renderer.

For each setting (views ``N``, noise, mode, attention variant) it samples one set of ``N`` views per
under-specified prompt (``"a cube"``, ``"a red object"``, ...) and seed, at evenly spaced azimuths,
and reports

- **set agreement**: the fraction of sets whose views all have the same judged colour and shape;
- **per-view IoU**: each view's silhouette IoU with the analytic render of the set's (majority)
  shape *at that view's own camera* (sharing must not paste the reference's pose), and its
  difference to independent sampling of fully specified prompts (``"a red cube"``, ...);
- **pose pasted**: the fraction of non-reference views of cubes and pyramids (shapes whose
  silhouette changes with azimuth) that match the reference camera's silhouette better than their own;
- **time**: summed sampling time of the setting and its ratio to ``independent`` at the same ``N``
  and noise (equal steps; contended machines inflate both alike only roughly).

The work is split into units (one set: setting x prompt x seed, seeded by its seed alone). Each
unit's per-view judgements go to ``--cache`` (a JSON file rewritten atomically after every unit),
and a unit already present in any ``multiview_cache*.json`` beside it is skipped, so a restarted or
second process (``--reverse``: takes the queue from its end) does only what is left.

    python benchmarks/eval_multiview.py                     # 6 prompts x 5 seeds, N = 4 and 8, every mode, refcam 0 and 0.4
    python benchmarks/eval_multiview.py --views 8 --noise shared --modes shared --variants default,shift
    python benchmarks/eval_multiview.py --report-only       # print the table from the caches
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import torch

from text3d.scene.cameras import turntable
from text3d.guidance.attention import SharedAttentionConfig
from text3d.multiview.modes import MultiviewSettings, SamplerConfig, sample_multiview
from text3d.prior.evaluation import classify_colour, mask_iou, object_mask, region_colours, silhouettes_all_shapes
from text3d.prior.shapes import SHAPES, parse_prompt

UNDER_SPECIFIED = ["a cube", "a torus", "a cone", "a red object", "a blue object", "a green object"]
SPECIFIED = ["a red cube", "a green torus", "an orange cone", "a red sphere", "a blue cylinder", "a green pyramid"]
LATENT_UNDER_SPECIFIED = ["a cube", "a cylinder", "a striped capsule", "a red cube with a stripe",
                          "a sphere with a blue stripe", "a striped cone"]   # colour or pattern open
LATENT_SPECIFIED = ["a red cube", "a green cylinder", "a pink capsule with a cyan stripe",
                    "a red cube with a blue stripe", "an orange sphere with a blue stripe", "a yellow cone with a purple stripe"]
POSED = ("cube", "pyramid")
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {  # settings tried against the agreement goal: StyleAligned's knobs (mode=shared), camera schedule
    "default": {},
    "shift": {"shared_score_shift": 0.6931471805599453},       # log 2, StyleAligned's transfer demo
    "shift8": {"shared_score_shift": 2.0794415416798357},      # log 8: the reference weighs as 8 views' keys
    "noadain": {"adain_queries": False, "adain_keys": False},
    "shift-kv": {"shared_score_shift": 0.6931471805599453, "adain_values": True},
    "refcam20": {"reference_camera": 0.2},                      # reference camera for the first 20 % of steps
    "refcam40": {"reference_camera": 0.4},
}


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
    base, stripe = region_colours(images, cams, [SHAPES[int(i)] for i in set_shape_v])
    return {"colour": colour.view(S, n), "shape": shape.view(S, n), "iou": own.view(S, n),
            "iou_at_ref": at_ref.view(S, n), "set_shape": set_shape, "base": base.view(S, n),
            "stripe": stripe.view(S, n)}


def figures(units: List[dict]) -> Dict[str, float]:
    """Set agreement, mean per-view IoU and pose pasted over cached units (one set each)."""
    agree, ious, pasted = [], [], []
    for u in units:
        shp = u["shape"]
        col = list(zip(u["base"], u["stripe"])) if "stripe" in u else u["colour"]  # latent world: pattern too
        found = min(col[0]) >= 0 if "stripe" in u else col[0] >= 0
        agree.append(all(c == col[0] for c in col) and all(s == shp[0] for s in shp) and found)
        ious += u["iou"]
        if u["set_shape"] >= 0 and SHAPES[u["set_shape"]] in POSED:
            pasted += [r > o + 0.05 for r, o in zip(u["iou_at_ref"][1:], u["iou"][1:])]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"set_agreement": mean(agree), "iou": mean(ious), "pose_pasted": mean(pasted),
            "seconds": sum(u["seconds"] for u in units), "sets": len(units)}


def unit_key(n: int, noise: str, mode: str, variant: str, steps: int, prompt: str, seed: int, prior: str = "pixel") -> str:
    key = f"N={n}|noise={noise}|mode={mode}|variant={variant}|steps={steps}|prompt={prompt}|seed={seed}"
    return key if prior == "pixel" else f"{key}|prior={prior}"


def settings_of(mode: str, noise: str, variant: str, steps: int) -> MultiviewSettings:
    attn = {k: v for k, v in VARIANTS[variant].items() if k != "reference_camera"}
    return MultiviewSettings(mode=mode, noise=noise, sampler=SamplerConfig(steps=steps),
                             reference_camera=VARIANTS[variant].get("reference_camera", 0.0),
                             attention=SharedAttentionConfig(**attn))


def sample_unit(prior, prompt: str, n: int, settings: MultiviewSettings, seed: int) -> Tuple[torch.Tensor, object, float]:
    cams = turntable(n, 15.0, 3.0, 32.0, 32, 32)
    t0 = time.perf_counter()
    images = sample_multiview(prior, [prompt] * n, cams, n, settings, torch.Generator().manual_seed(seed))
    return images, cams, time.perf_counter() - t0


def run_unit(prior, prompt: str, n: int, noise: str, mode: str, variant: str, steps: int, seed: int) -> dict:
    """Sample and judge one set; the per-view record the cache holds."""
    sampled = "independent" if mode == "specified" else mode
    images, cams, sec = sample_unit(prior, prompt, n, settings_of(sampled, noise, variant, steps), seed)
    if mode == "specified":
        shape_id = SHAPES.index(parse_prompt(prompt)[0])
        iou = mask_iou(object_mask(images), silhouettes_all_shapes(cams))[:, shape_id]
        return {"iou": iou.tolist(), "seconds": sec}
    j = judge_sets(images, cams, n)
    return {"colour": j["colour"][0].tolist(), "shape": j["shape"][0].tolist(), "iou": j["iou"][0].tolist(),
            "iou_at_ref": j["iou_at_ref"][0].tolist(), "set_shape": int(j["set_shape"][0]), "seconds": sec,
            "base": j["base"][0].tolist(), "stripe": j["stripe"][0].tolist()}


def read_caches(folder: Path) -> Dict[str, dict]:
    done: Dict[str, dict] = {}
    for path in sorted(folder.glob("multiview_cache*.json")):
        try:
            done.update(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # a file being replaced; its units are picked up on the next read
    return done


def queue(args) -> Iterator[Tuple[int, str, str, str, str, int]]:
    """``(n, noise, mode, variant, prompt, seed)`` of every unit asked for, baseline first per ``N``."""
    seeds = range(args.seed, args.seed + args.seeds)
    specified, under = (LATENT_SPECIFIED, LATENT_UNDER_SPECIFIED) if args.prior == "latent" else (SPECIFIED, UNDER_SPECIFIED)
    for n in [int(v) for v in args.views.split(",")]:
        if not args.no_baseline:
            yield from ((n, "independent", "specified", "default", p, s) for p in specified for s in seeds)
        for noise in args.noise.split(","):
            for mode in args.modes.split(","):
                for variant in args.variants.split(","):
                    if mode != "shared" and set(VARIANTS[variant]) - {"reference_camera"}:
                        continue  # attention knobs mean something only to mode=shared
                    yield from ((n, noise, mode, variant, p, s) for p in under for s in seeds)


def report(done: Dict[str, dict], steps: int, prior: str = "pixel") -> List[dict]:
    """Print one line per setting found in the caches (of ``prior``); return the rows."""
    groups: Dict[Tuple, List[dict]] = {}
    for key, unit in done.items():
        f = dict(part.split("=", 1) for part in key.split("|"))
        if int(f["steps"]) == steps and f.get("prior", "pixel") == prior:
            groups.setdefault((int(f["N"]), f["noise"], f["mode"], f["variant"]), []).append(unit)
    rows = []
    for (n, noise, mode, variant), units in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "independent", kv[0])):
        if mode == "specified":
            continue
        base = groups.get((n, "independent", "specified", "default"))
        base_iou = sum(sum(u["iou"]) for u in base) / sum(len(u["iou"]) for u in base) if base else float("nan")
        ind = groups.get((n, noise, "independent", "default"))
        fig = figures(units)
        ratio = fig["seconds"] / figures(ind)["seconds"] * figures(ind)["sets"] / fig["sets"] if ind else float("nan")
        rows.append({"views": n, "noise": noise, "mode": mode, "variant": variant, **fig, "specified_iou": base_iou,
                     "iou_minus_specified": fig["iou"] - base_iou, "time_ratio": ratio})
        print(f"N={n} noise={noise:11s} mode={mode:11s} {variant:8s} sets {fig['sets']:2d}  set agreement "
              f"{fig['set_agreement']:6.1%}  per-view IoU {fig['iou']:.3f} ({fig['iou'] - base_iou:+.3f} vs specified "
              f"{base_iou:.3f})  pose pasted {fig['pose_pasted']:5.1%}  time x{ratio:.2f} vs independent", flush=True)
    return rows


def picture(prior, path: str, steps: int, n: int) -> None:
    """``"a cube"``, 3 seeds x ``n`` views per block: independent sampling (top) vs the quickstart preset's
    settings (bottom: shared attention, shared noise, reference camera for the first 40 % of the steps)."""
    from text3d.core.media import image_grid, save_image

    tiles = []
    for mode, noise, variant in (("independent", "independent", "default"), ("shared", "shared", "refcam40")):
        for seed in range(3):
            images, _, _ = sample_unit(prior, "a cube", n, settings_of(mode, noise, variant, steps), seed)
            tiles += [im.permute(1, 2, 0) for im in images]
    save_image(path, image_grid(tiles, cols=n))


def load_prior(kind: str, model: str):
    """The embedded prior of ``kind`` (``pixel`` or ``latent``) from ``model`` (``builtin`` or a folder)."""
    from text3d.guidance.registry import PRIORS

    return PRIORS.build(PRIORS.get(kind).config_cls(model=model), torch.device("cpu"))


def build_parser() -> argparse.ArgumentParser:
    """This script's options (the docs test parses the documented command lines with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", default="4,8", help="comma-separated N (default 4,8)")
    ap.add_argument("--modes", default="independent,shared,full,grid")
    ap.add_argument("--noise", default="shared,independent", help="noise settings to run (default both)")
    ap.add_argument("--variants", default="default,refcam40",
                    help=f"settings variants (default: default,refcam40 -- the quickstart preset's schedule): {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", type=int, default=5, help="seeds (sets) per prompt (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--steps", type=int, default=50, help="sampler steps (documented sampler: 50)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the fully specified prompts")
    ap.add_argument("--reverse", action="store_true", help="take the queue from its end (a second process)")
    ap.add_argument("--cache", default=str(RESULTS / "multiview_cache.json"), help="this process's unit cache")
    ap.add_argument("--json", default=None, help="write the summary rows to this file")
    ap.add_argument("--report-only", action="store_true", help="sample nothing, print the caches' figures")
    ap.add_argument("--picture", default=None, help="save independent vs shared views of 'a cube' here")
    ap.add_argument("--prior", choices=["pixel", "latent"], default="pixel",
                    help="the embedded prior: pixel, or latent (the miniature SD; its prompts leave colour or pattern open)")
    ap.add_argument("--prior-model", default="builtin", help="the prior's folder (default: the shipped one)")
    return ap


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_grad_enabled(False)
    from text3d.core.io import write_json

    cache_path = Path(args.cache)
    if not args.report_only:
        prior = load_prior(args.prior, args.prior_model)
        mine = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        units = list(queue(args))
        for n, noise, mode, variant, prompt, seed in (reversed(units) if args.reverse else units):
            key = unit_key(n, noise, mode, variant, args.steps, prompt, seed, args.prior)
            if key in mine or key in read_caches(cache_path.parent):
                continue
            mine[key] = run_unit(prior, prompt, n, noise, mode, variant, args.steps, seed)
            write_json(cache_path, mine)
            print(f"{key}: {mine[key]['seconds']:.1f} s", flush=True)
        if args.picture:
            picture(prior, args.picture, args.steps, int(args.views.split(",")[-1]))
    rows = report(read_caches(cache_path.parent), args.steps, args.prior)
    if args.json:
        write_json(args.json, rows)


if __name__ == "__main__":
    main()
