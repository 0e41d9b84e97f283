"""Score a trained scene against the analytic shape its prompt names (``"a red cube"``).

For prompts that :func:`text3d.prior.shapes.parse_prompt` understands, the exact renderer of the
primitives gives the true silhouette at any camera, so a run can measure what it made: the mean
silhouette IoU over evenly spaced views and the colour of the object's albedo.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from text3d.scene.cameras import turntable
from .evaluation import classify_colour, judge_stripes
from .shapes import COLOUR_NAMES, parse_pattern, parse_prompt, render_shapes


@torch.no_grad()
def analytic_scores(run: Any, n_views: int = 8, resolution: int = 64, elevation: float = 15.0,
                    opacity_threshold: float = 0.5) -> Optional[Dict[str, Any]]:
    """Silhouette IoU and colour of ``run``'s scene against the analytic shape of its prompt.

    Args:
        run: a :class:`text3d.run.Run` (its ``render_views`` and camera settings are used).
        n_views: views evenly spaced in azimuth at ``elevation`` degrees, at the run's eval
            distance and field of view.
        resolution: side of each view in pixels.
        opacity_threshold: a pixel belongs to the scene's silhouette above this opacity.

    Returns:
        ``None`` when the prompt names no single known shape and colour; else ``shape``,
        ``colour`` (prompted), ``silhouette_iou`` (mean), ``silhouette_iou_per_view``,
        ``colour_found`` (a colour name or ``None``) and ``colour_ok``; for a striped prompt
        (``"a red cube with a blue stripe"``) also :func:`stripe_scores`.
    """
    parsed = parse_prompt(run.cfg.prompt)
    if parsed is None:
        return None
    shape, colour = parsed
    cams = turntable(n_views, elevation, run.cfg.cameras.eval_distance, run.cfg.cameras.eval_fovy,
                     resolution, resolution)
    views = run.render_views(cams, mode="albedo")
    mask = torch.stack([v["opacity"][..., 0] for v in views]) > opacity_threshold
    _, coverage = render_shapes([shape] * n_views, [colour] * n_views, cams, supersample=4)
    truth = coverage > 0.5
    iou = (mask & truth).sum(dim=(1, 2)).float() / (mask | truth).sum(dim=(1, 2)).clamp(min=1).float()
    # one vote over all views: stack them vertically into one image [1, 3, n*H, W]
    rgb = torch.stack([v["rgb"] for v in views]).reshape(n_views * resolution, resolution, 3)
    found = classify_colour(rgb.permute(2, 0, 1)[None], mask.reshape(1, n_views * resolution, resolution))[0].item()
    colour_found = COLOUR_NAMES[found] if found >= 0 else None
    scores = {"shape": shape, "colour": colour, "silhouette_iou": round(float(iou.mean()), 4),
              "silhouette_iou_per_view": [round(float(x), 4) for x in iou], "colour_found": colour_found,
              "colour_ok": colour_found == colour, "views": n_views, "resolution": resolution}
    pattern = parse_pattern(run.cfg.prompt)
    if pattern is not None and pattern[2] is not None:
        scores.update(stripe_scores(torch.stack([v["rgb"] for v in views]).permute(0, 3, 1, 2), cams, shape, colour,
                                    pattern[2]))
    return scores


def _mode(ids: torch.Tensor) -> Optional[str]:
    ids = ids[ids >= 0]
    return COLOUR_NAMES[int(ids.mode().values)] if ids.numel() else None


def stripe_scores(images: torch.Tensor, cams: Any, shape: str, colour: str, stripe: str,
                  min_share: float = 0.75) -> Dict[str, Any]:
    """The pattern of a striped prompt judged in each view (:func:`judge_stripes`; views where the
    stripe is not fully seen are left out): the base and stripe colours found (the most frequent over
    the views; the base replaces the whole-object ``colour_found``), the share of views with both
    right, and ``pattern_ok`` when that share is at least ``min_share``."""
    n = images.shape[0]
    verdict = judge_stripes(images, cams, [shape] * n, [colour] * n, [stripe] * n)
    seen = verdict["stripe_pixels"] > 0
    share = float(verdict["pattern_ok"][seen].float().mean()) if seen.any() else 0.0
    base_found = _mode(verdict["pred_base"][seen])
    return {"stripe": stripe, "stripe_found": _mode(verdict["pred_stripe"][seen]), "colour_found": base_found,
            "colour_ok": base_found == colour, "pattern_views": int(seen.sum()),
            "pattern_ok_share": round(share, 4), "pattern_ok": share >= min_share}
