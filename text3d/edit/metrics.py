"""Figures of an edit: how much of the source it kept (identity) and whether it reached the target.

Identity compares the source and edited renders from the same fixed views: the IoU of their
silhouettes (opacity > 0.5) and the mean colour change inside either silhouette. Target attainment
uses the analytic judge of :mod:`text3d.prior.evaluation` for prompts it understands (``"a blue cube"``):
the shape whose true silhouette fits best, the colour and mean hue of the object, and the IoU to the
target shape. Cleanliness says whether the edit kept a solid, single object: the share of the object's
pixels that are see-through (opacity in ``SEMI_TRANSPARENT``), against the source's, and the opacity
outside the object (floaters), against the source's silhouette and against the edit's own.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.prior.evaluation import (colour_shares, hue_distance, largest_component, mask_iou,
                                       object_hue, object_saturation, palette_hues, silhouettes_all_shapes)
from text3d.prior.scene_eval import stripe_scores
from text3d.prior.shapes import SHAPES, parse_pattern, parse_prompt
from text3d.scene.cameras import Cameras

OPACITY_THRESHOLD = 0.5
"""A pixel belongs to a silhouette above this opacity."""
SEMI_TRANSPARENT = (0.05, 0.95)
"""A pixel of the object is see-through when its opacity lies strictly inside this range."""
FLOATER_MARGIN = 2
"""Pixels a silhouette is grown by before opacity outside it counts as floaters (edges, small shifts)."""
HUE_TOLERANCE = 20.0
"""A colour target is reached when the object's mean hue lies within this many degrees of the colour's."""


def _masks(views: List[Dict[str, Tensor]]) -> Tensor:
    return torch.stack([v["opacity"][..., 0] for v in views]) > OPACITY_THRESHOLD


def identity_scores(source: List[Dict[str, Tensor]], edited: List[Dict[str, Tensor]]) -> Dict[str, Any]:
    """Silhouette IoU and mean colour change between source and edited views of the same cameras.

    Args:
        source, edited: per view, ``rgb`` ``[H, W, 3]`` in [0, 1] and ``opacity`` ``[H, W, 1]``.

    Returns:
        ``silhouette_iou`` (mean over views), ``silhouette_iou_per_view``, ``mean_colour_change``
        (mean over pixels inside either silhouette of the per-channel mean ``|rgb_edit - rgb_src|``, in [0, 1]).
    """
    ms, me = _masks(source), _masks(edited)
    union = ms | me
    iou = (ms & me).sum(dim=(1, 2)).float() / union.sum(dim=(1, 2)).clamp(min=1).float()
    diff = (torch.stack([v["rgb"] for v in edited]) - torch.stack([v["rgb"] for v in source])).abs().mean(-1)
    change = float(diff[union].mean()) if bool(union.any()) else 0.0
    return {"silhouette_iou": round(float(iou.mean()), 4), "silhouette_iou_per_view": [round(float(x), 4) for x in iou],
            "mean_colour_change": round(change, 4), "views": len(source)}


def target_scores(prompt: str, views: List[Dict[str, Tensor]], cameras: Cameras) -> Optional[Dict[str, Any]]:
    """Whether the edited views show the shape and colour the target prompt names.

    Returns:
        ``None`` when the analytic judge does not know the prompt; else ``shape``, ``colour`` (asked),
        ``shape_found`` (best-fitting shape), ``silhouette_iou`` (to the asked shape), ``colour_found``
        (the palette colour most object pixels are nearest to), ``colour_share`` (the share of them
        nearest to the asked colour: patches left in another colour lower it), ``hue`` (the object's mean hue, degrees),
        ``hue_error`` (to the asked colour's), ``shape_ok``, ``colour_ok`` (``colour_found`` is the asked
        colour), ``hue_ok`` (``hue_error <= HUE_TOLERANCE``) and ``saturation`` (mean HSV saturation of
        the object's pixels: the judge counts colour from saturation 0.3, so it misses a dull edit).
    """
    parsed = parse_prompt(prompt)
    if parsed is None:
        return None
    shape, colour = parsed
    masks = _masks(views)
    iou = mask_iou(masks, silhouettes_all_shapes(cameras.to("cpu"))).mean(dim=0)  # [S]
    names = list(SHAPES)
    n, h, w = masks.shape  # every view side by side in one image: one vote over all of them
    image = torch.stack([v["rgb"] for v in views]).reshape(n * h, w, 3).permute(2, 0, 1)[None]
    mask = masks.reshape(1, n * h, w)
    shares = colour_shares(image, mask)
    colour_found = max(shares, key=shares.get) if shares else None  # the vote's winner (classify_colour)
    shape_found = names[int(iou.argmax())]
    hue = object_hue(image, mask)
    error = None if hue is None else hue_distance(hue, float(palette_hues([colour])[0]))
    saturation = object_saturation(image, mask)
    scores = {"shape": shape, "colour": colour, "shape_found": shape_found, "colour_found": colour_found,
              "colour_share": round(shares.get(colour, 0.0), 4),
              "hue": None if hue is None else round(hue, 1), "hue_error": None if error is None else round(error, 1),
              "silhouette_iou": round(float(iou[names.index(shape)]), 4), "shape_ok": shape_found == shape,
              "colour_ok": colour_found == colour, "hue_ok": error is not None and error <= HUE_TOLERANCE,
              "saturation": None if saturation is None else round(saturation, 4)}
    pattern = parse_pattern(prompt)
    if pattern is not None and pattern[2] is not None:
        images = torch.stack([v["rgb"] for v in views]).permute(0, 3, 1, 2)
        scores.update(stripe_scores(images, cameras.to("cpu"), shape, colour, pattern[2]))
    return scores


def _grown(mask: Tensor, pixels: int) -> Tensor:
    return F.max_pool2d(mask[:, None].float(), 2 * pixels + 1, stride=1, padding=pixels)[:, 0] > 0


def semi_transparent_share(opacity: Tensor) -> float:
    """Share of the object's pixels (opacity above the range's low end) that are see-through."""
    lo, hi = SEMI_TRANSPARENT
    seen = opacity > lo
    return float((seen & (opacity < hi)).sum()) / max(int(seen.sum()), 1)


def cleanliness_scores(source: List[Dict[str, Tensor]], edited: List[Dict[str, Tensor]]) -> Dict[str, Any]:
    """How solid and floater-free the edit is, beside the source (the same views).

    Returns:
        ``semi_transparent`` and ``semi_transparent_source``: share of the object's pixels that are
        see-through (:func:`semi_transparent_share`); ``semi_transparent_excess``: their difference.
        ``floaters``: the edit's opacity outside the source's silhouette (grown by ``FLOATER_MARGIN``
        pixels) over the source's opacity mass (0 = none; a colour edit should stay near 0).
        ``stray_opacity``: the edit's opacity outside its own largest silhouette piece (grown the
        same), over its opacity mass: floaters of any edit, a shape edit's included;
        ``stray_opacity_source`` the same of the source.
    """
    a_src, a_edit = (torch.stack([v["opacity"][..., 0] for v in views]).float() for views in (source, edited))
    outside_source = ~_grown(a_src > OPACITY_THRESHOLD, FLOATER_MARGIN)
    floaters = float((a_edit * outside_source).sum() / a_src.sum().clamp(min=1e-6))
    semi, semi_src = semi_transparent_share(a_edit), semi_transparent_share(a_src)
    return {"semi_transparent": round(semi, 4), "semi_transparent_source": round(semi_src, 4),
            "semi_transparent_excess": round(semi - semi_src, 4), "floaters": round(floaters, 4),
            "stray_opacity": round(stray_opacity(a_edit), 4), "stray_opacity_source": round(stray_opacity(a_src), 4)}


def stray_opacity(opacity: Tensor) -> float:
    """Opacity of ``[V, H, W]`` views outside each view's largest silhouette piece (grown by
    ``FLOATER_MARGIN`` pixels), over their whole opacity mass."""
    main = _grown(largest_component(opacity > OPACITY_THRESHOLD), FLOATER_MARGIN)
    return float((opacity * ~main).sum() / opacity.sum().clamp(min=1e-6))
