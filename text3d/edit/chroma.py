"""Chroma smoothness of an edit's renders: neighbouring object pixels keep one colour.

A colour edit of a Gaussian scene ends with the right mean hue but in patches: measured on the
seed-0 blue pyramid -> "an orange pyramid", 20 % of the object's pixels are red at the apex and
yellow in the middle, and on the cyan torus -> "a yellow torus" 17 % are orange underneath. The
patches are low-frequency (PDS here samples t >= 0.5 T) and the pixels are opaque, so they are
neither speckle nor see-through edges; the 3D neighbour term of :mod:`text3d.edit.smoothness`
does not remove them, because a pixel blends many Gaussians and only the blend is seen.

This term acts where the patches are seen: on each training render, the total variation of the
chromaticity ``rgb / (r + g + b)`` between 4-neighbouring pixels that are both object (opacity
above ``threshold``), summed over pixels and averaged over views, the scale of the guidances'
losses. Chromaticity is unchanged by a factor on the colour, so the training renders' diffuse
shading (``albedo * (ambient + (1 - ambient) n.l)``) costs nothing and is not flattened; only a
change of hue or saturation between neighbours is. The term draws no random numbers.

The term reads the object's own colour (:func:`object_colour`): a fuzzy edge pixel blends the object
with the white background, and its chromaticity is greyer; on the composited render the term pulled the
whole object towards those edges (blue pyramid -> "an orange pyramid": saturation of the opaque pixels
0.84; 0.90 on the object's own colour; 0.89 with no term at all, docs/editing.md).
"""

from __future__ import annotations

from typing import Dict

from torch import Tensor

from .metrics import OPACITY_THRESHOLD


def chromaticity(rgb: Tensor, eps: float = 1e-3) -> Tensor:
    """``rgb / (r + g + b)`` of ``[..., 3]`` colours (a colour and any positive multiple of it agree)."""
    return rgb / rgb.sum(-1, keepdim=True).clamp(min=eps)


def object_colour(out: Dict[str, Tensor]) -> Tensor:
    """The object's own colour in a render ``out``: its ``rgb`` less the ``background`` seen through
    (``rgb - (1 - opacity) background``, the premultiplied colour), whose chromaticity is the object's
    at any opacity. A render that does not report its background gives its ``rgb``."""
    if "background" not in out:
        return out["rgb"]
    return out["rgb"] - (1 - out["opacity"]) * out["background"]


def chroma_variation(rgb: Tensor, opacity: Tensor, threshold: float = OPACITY_THRESHOLD) -> Tensor:
    """Total variation of the chromaticity of ``[B, H, W, 3]`` renders over pairs of horizontally or
    vertically adjacent pixels whose ``[B, H, W, 1]`` opacity both exceed ``threshold`` (by default the
    edit metrics' silhouette threshold): the L1 difference summed over channels and pairs, divided by ``B``."""
    chroma = chromaticity(rgb)
    inside = (opacity[..., 0] > threshold).to(rgb.dtype)
    across = (chroma[:, :, 1:] - chroma[:, :, :-1]).abs().sum(-1) * inside[:, :, 1:] * inside[:, :, :-1]
    down = (chroma[:, 1:] - chroma[:, :-1]).abs().sum(-1) * inside[:, 1:] * inside[:, :-1]
    return (across.sum() + down.sum()) / rgb.shape[0]
