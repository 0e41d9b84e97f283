"""Figures of an edit: how much of the source it kept (identity) and whether it reached the target.

Identity compares the source and edited renders from the same fixed views: the IoU of their
silhouettes (opacity > 0.5) and the mean colour change inside either silhouette. Target attainment
uses the analytic judge of :mod:`text3d.prior.evaluation` for prompts it understands (``"a blue cube"``):
the shape whose true silhouette fits best, the colour of the object, and the IoU to the target shape.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from text3d.scene.cameras import Cameras
from text3d.prior.evaluation import classify_colour, mask_iou, silhouettes_all_shapes
from text3d.prior.shapes import COLOUR_NAMES, SHAPES, parse_prompt

OPACITY_THRESHOLD = 0.5
"""A pixel belongs to a silhouette above this opacity."""


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
        ``shape_found`` (best-fitting shape), ``silhouette_iou`` (to the asked shape), ``colour_found``,
        ``shape_ok``, ``colour_ok``.
    """
    parsed = parse_prompt(prompt)
    if parsed is None:
        return None
    shape, colour = parsed
    masks = _masks(views)
    iou = mask_iou(masks, silhouettes_all_shapes(cameras.to("cpu"))).mean(dim=0)  # [S]
    names = list(SHAPES)
    n, h, w = masks.shape
    rgb = torch.stack([v["rgb"] for v in views]).reshape(n * h, w, 3)
    found = int(classify_colour(rgb.permute(2, 0, 1)[None], masks.reshape(1, n * h, w))[0])
    colour_found = COLOUR_NAMES[found] if found >= 0 else None
    shape_found = names[int(iou.argmax())]
    return {"shape": shape, "colour": colour, "shape_found": shape_found, "colour_found": colour_found,
            "silhouette_iou": round(float(iou[names.index(shape)]), 4), "shape_ok": shape_found == shape,
            "colour_ok": colour_found == colour}
