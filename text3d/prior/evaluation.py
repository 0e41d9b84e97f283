"""Sample competence of the shapes prior, judged against the analytic renderer.

For each prompt ``"a <colour> <shape>"`` and camera, a sample is judged on three counts:

- **colour**: the background is estimated from the image border (median, so a tinted or speckled
  background is still found), pixels far from it are the object (:func:`object_mask`); among the object's saturated
  pixels each votes for the palette colour nearest in hue, and the majority wins. Hue is what
  shading and anti-aliasing on white leave untouched (see :mod:`text3d.prior.shapes`).
- **shape**: the object mask (largest connected component) is compared by IoU with the true
  silhouettes of *every* shape at that camera; the nearest one is the sample's shape.
- **background**: clean when the border median is within ``0.05`` of white and fewer than 2 % of the
  pixels are non-white specks outside the (slightly dilated) object.

Applied to the analytic renders themselves, the judge is right on every sample (a test checks it).

Striped prompts (``"a red cube with a blue stripe"``) are judged by :func:`judge_stripes`: the exact
render at the sample's camera says which pixels are stripe and which are base, and each region's
colour is voted on as above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.scene.cameras import Cameras, orbit_cameras
from .model import DEFAULT_SAMPLER
from .shapes import COLOUR_NAMES, COLOURS, SHAPES, prompt_for, render_shading, render_shapes


@dataclass
class JudgeSettings:
    """Thresholds of the judge (images in [0, 1])."""

    border: int = 2
    """Width in pixels of the border the background is estimated from."""
    object_threshold: float = 0.15
    """Noise floor: object pixels differ from the background by more than this in some channel."""
    min_saturation: float = 0.3
    """HSV saturation of the pixels that vote on colour."""
    min_value: float = 0.15
    """HSV value of the pixels that vote on colour."""
    white_tolerance: float = 0.05
    """Largest allowed difference (any channel) of the background estimate from white."""
    speck_threshold: float = 0.1
    """A pixel is a speck when a channel differs from white by more than this, outside the object."""
    max_speck_fraction: float = 0.02
    """A clean background has fewer specks than this fraction of the image."""


def estimate_background(images: Tensor, border: int = 2) -> Tensor:
    """``[B, 3]`` per-channel median of the border pixels of ``[B, 3, H, W]`` images."""
    B, C, H, W = images.shape
    ring = torch.ones(H, W, dtype=torch.bool, device=images.device)
    ring[border:H - border, border:W - border] = False
    return images[:, :, ring].median(dim=-1).values


def largest_component(mask: Tensor) -> Tensor:
    """The largest 8-connected component of each ``[B, H, W]`` bool mask (all False where the mask is empty)."""
    B, H, W = mask.shape
    ids = torch.arange(1, H * W + 1, dtype=torch.float32, device=mask.device).view(1, H, W).expand(B, H, W)
    labels = torch.where(mask, ids, torch.zeros_like(ids))
    for _ in range(H * W):  # propagate the largest id through each component; stops early
        grown = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    flat = labels.view(B, -1).long()
    counts = torch.zeros(B, H * W + 1, dtype=torch.long, device=mask.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    counts[:, 0] = 0
    best = counts.argmax(dim=1)
    return (labels == best.view(B, 1, 1)) & mask & (counts.amax(dim=1) > 0).view(B, 1, 1)


def rgb_to_hue_sat_val(images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """HSV of ``[B, 3, H, W]`` images in [0, 1]: hue in degrees [0, 360), saturation and value in [0, 1]."""
    r, g, b = images.unbind(1)
    mx, mn = images.amax(1), images.amin(1)
    delta = (mx - mn).clamp(min=1e-8)
    hue = torch.where(mx == r, ((g - b) / delta) % 6, torch.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4))
    return (hue * 60.0) % 360.0, (mx - mn) / mx.clamp(min=1e-8), mx


def palette_hues(names: Sequence[str] = COLOUR_NAMES) -> Tensor:
    """``[C]`` hue in degrees of each named colour."""
    rgb = torch.tensor([COLOURS[n] for n in names], dtype=torch.float32).view(-1, 3, 1, 1)
    return rgb_to_hue_sat_val(rgb)[0].view(-1)


def colour_voters(images: Tensor, mask: Tensor, settings: JudgeSettings = JudgeSettings()) -> Tuple[Tensor, Tensor, Tensor]:
    """``(hue, saturation, voters)`` of ``[B, 3, H, W]`` images: the pixels inside ``[B, H, W]`` masks
    saturated and bright enough to say a colour (``[B, H, W]`` each)."""
    hue, sat, val = rgb_to_hue_sat_val(images)
    return hue, sat, mask & (sat > settings.min_saturation) & (val > settings.min_value)


def palette_votes(images: Tensor, mask: Tensor, settings: JudgeSettings = JudgeSettings()) -> Tensor:
    """``[B, C]`` count of each image's voters (:func:`colour_voters`) nearest in hue to each palette colour."""
    hue, _, voters = colour_voters(images, mask, settings)
    ref = palette_hues().to(images.device)
    diff = (hue[..., None] - ref).abs() % 360.0
    nearest = torch.minimum(diff, 360.0 - diff).argmin(dim=-1)  # [B, H, W]
    return (F.one_hot(nearest, len(ref)) * voters[..., None]).sum(dim=(1, 2))


def object_hue(images: Tensor, mask: Tensor, settings: JudgeSettings = JudgeSettings()) -> Optional[float]:
    """Circular mean hue in degrees of the voters (:func:`colour_voters`) of ``[B, 3, H, W]`` images
    inside ``[B, H, W]`` masks, each weighted by its saturation; None when none votes."""
    hue, sat, voters = colour_voters(images, mask, settings)
    if not bool(voters.any()):
        return None
    rad, w = torch.deg2rad(hue[voters]), sat[voters]
    return float(torch.rad2deg(torch.atan2((w * rad.sin()).sum(), (w * rad.cos()).sum())) % 360.0)


def object_saturation(images: Tensor, mask: Tensor) -> Optional[float]:
    """Mean HSV saturation of every pixel of ``[B, 3, H, W]`` images inside ``[B, H, W]`` masks (not only
    the voters: a dull object counts its dull pixels); None for an empty mask."""
    _, sat, _ = rgb_to_hue_sat_val(images)
    inside = mask.bool()
    return float(sat[inside].mean()) if bool(inside.any()) else None


def colour_shares(images: Tensor, mask: Tensor, settings: JudgeSettings = JudgeSettings()) -> Dict[str, float]:
    """Share of the voters (:func:`colour_voters`) of ``[B, 3, H, W]`` images inside ``[B, H, W]`` masks,
    all images together, nearest to each palette colour (empty when none votes)."""
    counts = palette_votes(images, mask, settings).sum(dim=0)
    total = int(counts.sum())
    return {name: float(c) / total for name, c in zip(COLOUR_NAMES, counts)} if total else {}


def hue_distance(a: float, b: float) -> float:
    """Angular distance of two hues in degrees, in [0, 180]."""
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def object_mask(images: Tensor, settings: JudgeSettings = JudgeSettings()) -> Tensor:
    """``[B, H, W]`` bool: the largest blob of pixels that are mostly object.

    A pixel's contrast is its largest channel difference from the estimated background. An
    anti-aliased edge pixel has ``coverage x`` the contrast of the object next to it, so a pixel is
    object when its contrast exceeds half the largest contrast in its 3x3 neighbourhood (and the
    noise floor ``object_threshold``): the mask then follows ``coverage > 0.5`` as the true
    silhouettes do.
    """
    bg = estimate_background(images, settings.border)
    contrast = (images - bg[:, :, None, None]).abs().amax(dim=1)
    local = F.max_pool2d(contrast[:, None], 3, stride=1, padding=1)[:, 0]
    return largest_component((contrast > settings.object_threshold) & (contrast > 0.5 * local))


def classify_colour(images: Tensor, mask: Tensor, settings: JudgeSettings = JudgeSettings()) -> Tensor:
    """``[B]`` index into :data:`COLOUR_NAMES` by a hue vote of the saturated object pixels; -1 when none votes."""
    counts = palette_votes(images, mask, settings)
    return torch.where(counts.sum(dim=1) > 0, counts.argmax(dim=1), torch.full_like(counts[:, 0], -1))


def silhouettes_all_shapes(cameras: Cameras, supersample: int = 4) -> Tensor:
    """``[B, S, H, W]`` bool true silhouettes (coverage > 0.5) of every shape of :data:`SHAPES` at each camera.

    Supersampling 4 (coverage in 1/16 steps): at 2, pixels that edges cut near the middle read exactly 0.5.
    """
    B, S = len(cameras), len(SHAPES)
    rep = cameras.index(torch.arange(B).repeat_interleave(S))
    _, coverage = render_shading(torch.arange(S).repeat(B), rep, supersample)
    return (coverage > 0.5).view(B, S, cameras.height, cameras.width)


def mask_iou(mask: Tensor, references: Tensor) -> Tensor:
    """IoU of ``[B, H, W]`` masks with ``[B, S, H, W]`` reference masks -> ``[B, S]``."""
    m = mask[:, None]
    inter = (m & references).sum(dim=(2, 3)).float()
    union = (m | references).sum(dim=(2, 3)).float()
    return inter / union.clamp(min=1)


def background_clean(images: Tensor, mask: Tensor, settings: JudgeSettings = JudgeSettings()) -> Tensor:
    """``[B]`` bool: the background is white (border median) and almost free of specks outside the object."""
    bg = estimate_background(images, settings.border)
    white = (1 - bg).abs().amax(dim=1) <= settings.white_tolerance
    grown = F.max_pool2d(mask[:, None].float(), 5, stride=1, padding=2)[:, 0] > 0
    specks = ((1 - images).abs().amax(dim=1) > settings.speck_threshold) & ~grown
    return white & (specks.float().mean(dim=(1, 2)) < settings.max_speck_fraction)


def area_ratio(mask: Tensor, cameras: Cameras, shapes: Sequence[str], colours: Sequence[str],
               settings: JudgeSettings = JudgeSettings()) -> Tensor:
    """``[B]`` object-mask area of each sample over that of the true render of its prompt at its camera
    (the same mask rule on both, so the rule's own bias cancels; 1 = the prompted size)."""
    truth, _ = render_shapes(list(shapes), list(colours), cameras.to("cpu"))
    reference = object_mask(truth.permute(0, 3, 1, 2), settings)
    return mask.sum(dim=(1, 2)).float() / reference.sum(dim=(1, 2)).clamp(min=1).float()


def nearest_pose(mask: Tensor, cameras: Cameras, shape: str, colour: str,
                 azimuth_offsets: Sequence[float] = tuple(range(-30, 31, 5)),
                 elevation_offsets: Sequence[float] = tuple(range(-20, 21, 5)),
                 settings: JudgeSettings = JudgeSettings()) -> Dict[str, Tensor]:
    """Is a sample's shape wrong, or only its pose? Compares each ``[B, H, W]`` object mask with the
    true render of ``shape`` at its own camera and at cameras turned by every azimuth / elevation
    offset (degrees), the same mask rule on both.

    Returns ``[B]`` tensors: ``iou`` at the asked camera, ``best_iou`` over all offsets, and the best
    offsets ``azimuth_offset`` / ``elevation_offset`` (of equally good ones, the smallest turn: a
    torus seen from any azimuth is found at azimuth offset 0).
    """
    cams = cameras.to("cpu")
    n, res = mask.shape[0], mask.shape[-1]
    fovy = torch.rad2deg(cams.fovy)
    best = torch.full((n,), -1.0)
    best_az, best_el, at_camera = torch.zeros(n), torch.zeros(n), torch.zeros(n)
    offsets = sorted(((float(a), float(e)) for a in azimuth_offsets for e in elevation_offsets),
                     key=lambda o: (abs(o[0]) + abs(o[1]), o))  # ties go to the smallest turn
    for da, de in offsets:
        turned = orbit_cameras(cams.azimuth + da, cams.elevation + de, cams.distance, fovy, res, res)
        truth, _ = render_shapes([shape] * n, [colour] * n, turned)
        iou = mask_iou(mask, object_mask(truth.permute(0, 3, 1, 2), settings)[:, None])[:, 0]
        if da == 0 and de == 0:
            at_camera = iou
        better = iou > best
        best = torch.where(better, iou, best)
        best_az = torch.where(better, torch.tensor(da), best_az)
        best_el = torch.where(better, torch.tensor(de), best_el)
    return {"iou": at_camera, "best_iou": best, "azimuth_offset": best_az, "elevation_offset": best_el}


def judge(images: Tensor, cameras: Cameras, shapes: Sequence[str], colours: Sequence[str],
          settings: JudgeSettings = JudgeSettings()) -> Dict[str, Tensor]:
    """Judge ``[B, 3, H, W]`` samples (in [0, 1]) of ``"a <colour> <shape>"`` taken at ``cameras``.

    Returns:
        ``colour_ok``, ``shape_ok``, ``background_ok`` ``[B]`` bool; ``pred_colour``, ``pred_shape``
        ``[B]`` indices (-1: no object or no colour found); ``iou`` ``[B]`` with the prompted shape's
        silhouette; ``area`` ``[B]`` (:func:`area_ratio`).
    """
    images = images.float().cpu()
    mask = object_mask(images, settings)
    pred_colour = classify_colour(images, mask, settings)
    ious = mask_iou(mask, silhouettes_all_shapes(cameras.to("cpu")))
    shape_ids = torch.tensor([SHAPES.index(s) for s in shapes])
    colour_ids = torch.tensor([COLOUR_NAMES.index(c) for c in colours])
    pred_shape = torch.where(ious.amax(dim=1) > 0, ious.argmax(dim=1), torch.full_like(shape_ids, -1))
    return {
        "colour_ok": pred_colour == colour_ids,
        "shape_ok": pred_shape == shape_ids,
        "background_ok": background_clean(images, mask, settings),
        "pred_colour": pred_colour,
        "pred_shape": pred_shape,
        "iou": ious.gather(1, shape_ids[:, None])[:, 0],
        "area": area_ratio(mask, cameras, shapes, colours, settings),
    }


def stripe_regions(cameras: Cameras, shapes: Sequence[str], supersample: int = 4,
                   pure: float = 0.9) -> Tuple[Tensor, Tensor]:
    """``(base, stripe)`` ``[B, H, W]`` bool masks of each shape's base bands and stripe at its camera:
    the pixels the shape fully covers whose shading is at least ``pure`` stripe (stripe) or less than
    ``1 - pure`` stripe (base), from the exact render (:func:`render_shading` with ``stripes=True``)."""
    shading, coverage, stripe = render_shading(list(shapes), cameras.to("cpu"), supersample, stripes=True)
    share = stripe / shading.clamp(min=1e-8)
    full = coverage == 1
    return full & (share < 1 - pure), full & (share > pure)


def region_colours(images: Tensor, cameras: Cameras, shapes: Sequence[str]) -> Tuple[Tensor, Tensor]:
    """``(base, stripe)`` ``[B]`` palette indices (-1: no voter) each image's object pixels
    (:func:`object_mask`) vote on in the base bands and in the stripe band of its shape at its camera
    (:func:`stripe_regions`); a plain object has the same in both."""
    base_region, stripe_region = stripe_regions(cameras, shapes)
    mask = object_mask(images)
    return classify_colour(images, base_region & mask), classify_colour(images, stripe_region & mask)


def _colour_ids(names: Sequence[str]) -> Tensor:
    """``[B]`` indices into :data:`COLOUR_NAMES`; ValueError naming unknown colours."""
    unknown = [c for c in names if c not in COLOURS]
    if unknown:
        raise ValueError(f"unknown colour(s) {unknown}; valid: {', '.join(COLOUR_NAMES)}")
    return torch.tensor([COLOUR_NAMES.index(c) for c in names], dtype=torch.long)


def judge_stripes(images: Tensor, cameras: Cameras, shapes: Sequence[str], base_colours: Sequence[str],
                  stripe_colours: Sequence[str], settings: JudgeSettings = JudgeSettings()) -> Dict[str, Tensor]:
    """Judge ``[B, 3, H, W]`` samples (in [0, 1]) of ``"a <base> <shape> with a <stripe> stripe"`` at ``cameras``.

    The exact render of each shape at its camera gives the stripe and base regions
    (:func:`stripe_regions`); the image's pixels in each region vote on its palette colour
    (:func:`classify_colour`, the majority wins), which is robust to a sample whose pose is right but
    not pixel-perfect. A region without a voter (say the stripe seen edge-on) is judged wrong.

    Returns:
        ``base_ok``, ``stripe_ok``, ``pattern_ok = base_ok & stripe_ok`` ``[B]`` bool; ``pred_base``,
        ``pred_stripe`` ``[B]`` indices into :data:`COLOUR_NAMES` (-1: no voter); ``base_pixels``,
        ``stripe_pixels`` ``[B]`` the size of each region.
    """
    images = images.float().cpu()
    base_ids, stripe_ids = _colour_ids(base_colours), _colour_ids(stripe_colours)
    base_region, stripe_region = stripe_regions(cameras, shapes)
    pred_base = classify_colour(images, base_region, settings)
    pred_stripe = classify_colour(images, stripe_region, settings)
    base_ok, stripe_ok = pred_base == base_ids, pred_stripe == stripe_ids
    return {"base_ok": base_ok, "stripe_ok": stripe_ok, "pattern_ok": base_ok & stripe_ok,
            "pred_base": pred_base, "pred_stripe": pred_stripe,
            "base_pixels": base_region.sum(dim=(1, 2)), "stripe_pixels": stripe_region.sum(dim=(1, 2))}


def evaluation_cameras(n: int, generator: torch.Generator, elevation_range: Sequence[float] = (-10.0, 60.0),
                       distance: float = 3.0, fovy: float = 32.0, resolution: int = 32) -> Cameras:
    """``n`` cameras at uniformly random azimuths and elevations (the training camera model)."""
    az = 360.0 * torch.rand(n, generator=generator) - 180.0
    lo, hi = elevation_range
    el = lo + (hi - lo) * torch.rand(n, generator=generator)
    return orbit_cameras(az, el, torch.full((n,), distance), torch.full((n,), fovy), resolution, resolution)


def prior_camera_model(prior, elevation_range: Optional[Sequence[float]] = None) -> Dict[str, object]:
    """The keyword arguments of :func:`evaluation_cameras` for ``prior`` (a loaded
    :class:`text3d.prior.model.PriorModules`): its recipe's camera distance, fovy and resolution, and
    ``elevation_range`` or by default the training range capped at 60 degrees."""
    data = prior.meta.get("recipe", {}).get("data", {})
    if elevation_range is None:
        lo, hi = data.get("elevation_range", [-10.0, 60.0])
        elevation_range = (lo, min(hi, 60.0))
    return {"elevation_range": tuple(elevation_range), "distance": data.get("distance", 3.0),
            "fovy": data.get("fovy", 32.0), "resolution": int(prior.unet.config.sample_size)}


def summarize(results: Dict[str, Tensor], shapes: Sequence[str], colours: Sequence[str],
              held_out: Sequence[Tuple[str, str]] = ()) -> Dict[str, object]:
    """Accuracies overall, on held-out pairs, on trained pairs, and per pair."""
    held = torch.tensor([(s, c) in set(held_out) for s, c in zip(shapes, colours)])

    def rates(sel: Tensor) -> Dict[str, float]:
        if not sel.any():
            return {}
        return {"n": int(sel.sum()),
                **{k.replace("_ok", ""): round(float(results[k][sel].float().mean()), 4)
                   for k in ("colour_ok", "shape_ok", "background_ok")},
                "mean_iou": round(float(results["iou"][sel].mean()), 4),
                "mean_area": round(float(results["area"][sel].mean()), 4)}

    per_pair = {}
    for s, c in dict.fromkeys(zip(shapes, colours)):
        sel = torch.tensor([(a, b) == (s, c) for a, b in zip(shapes, colours)])
        per_pair[prompt_for(s, c)] = rates(sel)
    per_shape = {s: rates(torch.tensor([a == s for a in shapes])) for s in dict.fromkeys(shapes)}
    return {"all": rates(torch.ones_like(held)), "trained_pairs": rates(~held), "held_out_pairs": rates(held),
            "per_pair": per_pair, "per_shape": per_shape}


def evaluate_prior(prior, samples_per_pair: int = 8, steps: int = DEFAULT_SAMPLER["steps"],
                   cfg_scale: float = DEFAULT_SAMPLER["cfg_scale"], seed: int = 0,
                   pairs: Optional[Sequence[Tuple[str, str]]] = None, batch_size: int = 64,
                   elevation_range: Optional[Sequence[float]] = None,
                   eta: float = DEFAULT_SAMPLER["eta"]) -> Tuple[Dict[str, object], Tensor]:
    """Sample every (shape, colour) pair at random cameras and judge the samples.

    Args:
        prior: :class:`text3d.prior.model.PriorModules` (or a folder).
        samples_per_pair: samples of each pair, each at its own random camera.
        steps, cfg_scale: the DDIM sampler's settings.
        pairs: ``(shape, colour)`` pairs; default: every pair of the prior's recipe.
        elevation_range: camera elevations; default: the prior's training range capped at 60 degrees.
        eta: DDIM stochasticity (0 = deterministic DDIM, 1 = DDPM-like ancestral steps).

    Returns:
        The summary of :func:`summarize` (plus the sampler settings) and the ``[N, 3, R, R]`` samples.
    """
    from .model import PriorModules, load_prior, sample

    prior = prior if isinstance(prior, PriorModules) else load_prior(prior)
    data = prior.meta.get("recipe", {}).get("data", {})
    if pairs is None:
        pairs = [(s, c) for s in data.get("shapes", SHAPES) for c in data.get("colours", COLOUR_NAMES)]
    camera_model = prior_camera_model(prior, elevation_range)
    held = [tuple(reversed(p.split())) for p in prior.meta.get("held_out", [])]
    shapes = [s for s, _ in pairs for _ in range(samples_per_pair)]
    colours = [c for _, c in pairs for _ in range(samples_per_pair)]
    gen = torch.Generator().manual_seed(seed)
    cams = evaluation_cameras(len(shapes), gen, **camera_model)
    images, results = [], []
    for start in range(0, len(shapes), batch_size):
        idx = slice(start, start + batch_size)
        sub = cams.index(torch.arange(len(shapes))[idx])
        prompts = [prompt_for(s, c) for s, c in zip(shapes[idx], colours[idx])]
        x = sample(prior, prompts, sub, steps=steps, cfg_scale=cfg_scale, generator=gen, eta=eta).cpu()
        images.append(x)
        results.append(judge(x, sub, shapes[idx], colours[idx]))
    merged = {k: torch.cat([r[k] for r in results]) for k in results[0]}
    report = summarize(merged, shapes, colours, held)
    report["sampler"] = {"type": "ddim", "steps": steps, "cfg_scale": cfg_scale, "eta": eta, "seed": seed,
                         "samples_per_pair": samples_per_pair,
                         "elevation_range": list(camera_model["elevation_range"])}
    return report, torch.cat(images)


def image_grid(images: Tensor, columns: int) -> Tensor:
    """Tile ``[N, 3, H, W]`` images into one ``[rows * H, columns * W, 3]`` image (white padding)."""
    N, C, H, W = images.shape
    rows = math.ceil(N / columns)
    pad = torch.ones(rows * columns - N, C, H, W, dtype=images.dtype)
    tiles = torch.cat([images.cpu(), pad]).view(rows, columns, C, H, W)
    return tiles.permute(0, 3, 1, 4, 2).reshape(rows * H, columns * W, C)

