"""The analytic world of the embedded prior: primitives, colours, prompts and an exact renderer.

Seven primitives in a canonical pose (z up, centred at the origin, each inside a ball of radius
about 0.55–0.6) are given as signed distance functions, and :func:`render_shapes` sphere-traces
them in PyTorch. The renderer is the source of the prior's training images and the ground truth of
tests: for any prompt and :class:`~text3d.scene.cameras.Cameras` it gives the true image and silhouette,
pixel-aligned with every other renderer because its rays come from :meth:`Cameras.rays`.

Shading is Lambertian plus ambient, ``colour * (ambient + (1 - ambient) * max(0, n . l))``, with
``ambient = 0.35`` and a light fixed **relative to the camera**: it comes from the camera's upper
left, ``l = normalize(-0.4, 0.6, 1.0)`` in OpenGL camera coordinates (x right, y up, z towards the
viewer). So a shape looks the same from every azimuth where it is symmetric, and shading never
changes hue: a lit pixel has exactly the hue of its colour. The background is pure white and
anti-aliasing (``supersample``) blends towards white, which does not change hue either.

Prompts are ``"a <colour> <shape>"`` (``"an orange cone"``), optionally with a view suffix
(``", front view"``), see :func:`prompt_for` and :func:`parse_prompt`.

**Stripes.** An object may carry one two-colour pattern fixed to it: its vertical extent
(:attr:`Primitive.z_extent`, canonical pose) is cut into :data:`STRIPE_BANDS` equal horizontal bands,
and surface points in the middle band (:func:`stripe_mask`) have the stripe colour, the rest the base
colour. Prompts say ``"a red cube with a blue stripe"`` (:func:`parse_pattern`), and
``render_shading(..., stripes=True)`` also returns the shading of the stripe alone, from which any
pair of colours follows exactly (:func:`colourize`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.scene.cameras import Cameras

SdfFn = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# Signed distance functions. Each takes points [..., 3] and returns [...]; exact unless noted.
def _box2(q: Tensor) -> Tensor:
    """Exact SDF of an axis-aligned box centred at 0 from ``q = |p| - half_size`` (any trailing size)."""
    return q.clamp(min=0).norm(dim=-1) + q.amax(dim=-1).clamp(max=0)


def _segment_distance(p: Tensor, a: Tuple[float, float], b: Tuple[float, float]) -> Tensor:
    """Distance from 2D points ``p [..., 2]`` to the segment ``a``–``b``."""
    a_t = torch.tensor(a, dtype=p.dtype, device=p.device)
    ba = torch.tensor(b, dtype=p.dtype, device=p.device) - a_t
    pa = p - a_t
    h = ((pa * ba).sum(-1) / (ba * ba).sum()).clamp(0, 1)
    return (pa - h[..., None] * ba).norm(dim=-1)


def sdf_sphere(p: Tensor, radius: float = 0.45) -> Tensor:
    return p.norm(dim=-1) - radius


def sdf_cube(p: Tensor, half: float = 0.33) -> Tensor:
    return _box2(p.abs() - half)


def sdf_cylinder(p: Tensor, radius: float = 0.3, half_height: float = 0.45) -> Tensor:
    q = torch.stack([p[..., :2].norm(dim=-1) - radius, p[..., 2].abs() - half_height], dim=-1)
    return _box2(q)


def sdf_capsule(p: Tensor, radius: float = 0.25, half_length: float = 0.3) -> Tensor:
    """A vertical capsule: the segment z in [-half_length, half_length], thickened by ``radius``."""
    axis = torch.zeros_like(p)
    axis[..., 2] = p[..., 2].clamp(-half_length, half_length)
    return (p - axis).norm(dim=-1) - radius


def sdf_torus(p: Tensor, major: float = 0.35, minor: float = 0.14) -> Tensor:
    """A torus lying flat (its axis is z)."""
    q = torch.stack([p[..., :2].norm(dim=-1) - major, p[..., 2]], dim=-1)
    return q.norm(dim=-1) - minor


def sdf_cone(p: Tensor, radius: float = 0.32, height: float = 0.9) -> Tensor:
    """A solid cone, base disk of ``radius`` at ``z = -height/2``, apex at ``z = +height/2``.

    Exact: the distance to a solid of revolution that meets its axis is the 2D distance to its
    half cross-section, here the triangle apex / base rim / base centre in the (rho, z) plane.
    """
    h2 = 0.5 * height
    rho, z = p[..., :2].norm(dim=-1), p[..., 2]
    q = torch.stack([rho, z], dim=-1)
    dist = torch.minimum(_segment_distance(q, (0.0, h2), (radius, -h2)),
                         _segment_distance(q, (0.0, -h2), (radius, -h2)))
    inside = (z >= -h2) & (z <= h2) & (rho * height <= radius * (h2 - z))
    return torch.where(inside, -dist, dist)


def sdf_pyramid(p: Tensor, half_base: float = 0.35, height: float = 0.7) -> Tensor:
    """A square pyramid, base ``2 half_base`` wide at ``z = -height/2``, apex at ``z = +height/2``.

    The maximum of the signed distances to its five face planes: exact inside, a lower bound
    outside (a convex body lies in each face's half-space), which is all sphere tracing needs.
    """
    h2 = 0.5 * height
    norm = math.hypot(height, half_base)
    z = p[..., 2]
    side = lambda u: (height * u.abs() + half_base * (z - h2)) / norm  # noqa: E731
    return torch.stack([-z - h2, side(p[..., 0]), side(p[..., 1])], dim=-1).amax(dim=-1)


@dataclass(frozen=True)
class Primitive:
    """One shape of the analytic world."""

    name: str
    sdf: SdfFn
    """Signed distance, points ``[..., 3]`` (world units) -> ``[...]``."""
    bound: float
    """Radius of a ball around the origin that contains the shape (for ray culling)."""
    z_extent: Tuple[float, float]
    """``(z_lo, z_hi)``: the shape's lowest and highest z (world units), from its SDF parameters; the
    stripe bands (:func:`stripe_mask`) divide this range."""


PRIMITIVES: Dict[str, Primitive] = {
    prim.name: prim
    for prim in (
        Primitive("cube", sdf_cube, 0.33 * math.sqrt(3), (-0.33, 0.33)),
        Primitive("sphere", sdf_sphere, 0.45, (-0.45, 0.45)),
        Primitive("cone", sdf_cone, math.hypot(0.32, 0.45), (-0.45, 0.45)),
        Primitive("cylinder", sdf_cylinder, math.hypot(0.3, 0.45), (-0.45, 0.45)),
        Primitive("torus", sdf_torus, 0.35 + 0.14, (-0.14, 0.14)),
        Primitive("pyramid", sdf_pyramid, math.sqrt(2 * 0.35**2 + 0.35**2), (-0.35, 0.35)),
        Primitive("capsule", sdf_capsule, 0.3 + 0.25, (-0.55, 0.55)),
    )
}


def _measures() -> Dict[str, Tuple[float, float, int]]:
    """Closed-form volume, surface area and genus of each primitive at its default size."""
    pi = math.pi
    cone_r, cone_h = 0.32, 0.9
    pyr_b, pyr_h = 0.7, 0.7  # base side and height
    slant = math.hypot(pyr_h, pyr_b / 2)  # height of a side triangle
    return {
        "cube": (0.66 ** 3, 6 * 0.66 ** 2, 0),
        "sphere": (4 / 3 * pi * 0.45 ** 3, 4 * pi * 0.45 ** 2, 0),
        "cone": (pi * cone_r ** 2 * cone_h / 3, pi * cone_r ** 2 + pi * cone_r * math.hypot(cone_r, cone_h), 0),
        "cylinder": (pi * 0.3 ** 2 * 0.9, 2 * pi * 0.3 ** 2 + 2 * pi * 0.3 * 0.9, 0),
        "torus": (2 * pi ** 2 * 0.35 * 0.14 ** 2, 4 * pi ** 2 * 0.35 * 0.14, 1),
        "pyramid": (pyr_b ** 2 * pyr_h / 3, pyr_b ** 2 + 2 * pyr_b * slant, 0),
        "capsule": (pi * 0.25 ** 2 * 0.6 + 4 / 3 * pi * 0.25 ** 3, 2 * pi * 0.25 * 0.6 + 4 * pi * 0.25 ** 2, 0),
    }


MEASURES: Dict[str, Tuple[float, float, int]] = _measures()
"""``shape -> (volume, surface area, genus)`` of each primitive, closed form (world units): what an
exported mesh of the shape should enclose, cover and be (a torus has genus 1, the rest 0)."""

SHAPES: Tuple[str, ...] = tuple(PRIMITIVES)
"""Shape names in their canonical order (indices into this tuple are shape ids)."""

COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.86, 0.08, 0.08),
    "orange": (1.0, 0.5, 0.0),
    "yellow": (0.95, 0.85, 0.05),
    "green": (0.1, 0.7, 0.15),
    "cyan": (0.0, 0.75, 0.85),
    "blue": (0.1, 0.2, 0.9),
    "purple": (0.55, 0.1, 0.8),
    "pink": (1.0, 0.35, 0.7),
}
"""Named colours, linear RGB in [0, 1]; their hues are at least ~25 degrees apart."""
COLOUR_NAMES: Tuple[str, ...] = tuple(COLOURS)

SHAPE_SYNONYMS: Dict[str, str] = {"box": "cube", "ball": "sphere", "donut": "torus", "doughnut": "torus",
                                  "ring": "torus", "pill": "capsule", "tube": "cylinder"}
COLOUR_SYNONYMS: Dict[str, str] = {"violet": "purple", "magenta": "pink", "turquoise": "cyan"}

VIEW_SUFFIXES: Tuple[str, ...] = ("front view", "side view", "back view", "overhead view")

PATTERN_WORDS: Tuple[str, ...] = ("with", "stripe")
"""The words of the pattern phrase of :func:`prompt_for` (``"... with a blue stripe"``)."""
STRIPE_WORDS: Tuple[str, ...] = ("stripe", "stripes", "striped")
"""Words that name the stripe pattern in a prompt (:func:`parse_pattern`)."""


def vocabulary() -> List[str]:
    """Every word the prompts of the prior's training set use (tests check each one tokenizes)."""
    words = {"a", "an", "view", "object"} | set(SHAPES) | set(COLOUR_NAMES) | set(PATTERN_WORDS)
    words |= {suffix.split()[0] for suffix in VIEW_SUFFIXES}
    return sorted(words)


def with_article(words: str) -> str:
    """``"a red cube"``, ``"an orange cone"``."""
    return ("an " if words[:1] in "aeiou" else "a ") + words


def prompt_for(shape: str, colour: str, stripe: Optional[str] = None) -> str:
    """The canonical prompt of a shape and colour: ``"a red cube"``, ``"an orange cone"``; with a
    ``stripe`` colour, ``"a red cube with a blue stripe"``."""
    plain = with_article(f"{colour} {shape}")
    return plain if stripe is None else f"{plain} with {with_article(stripe)} stripe"


_WORD = re.compile(r"[a-z]+")


def _names(words: Sequence[str]) -> Tuple[set, set]:
    """The canonical shapes and colours ``words`` name (synonyms and plurals accepted)."""
    shapes, colours = set(), set()
    for word in words:
        candidates = [word, word[:-1]] if word.endswith("s") else [word]
        for w in candidates:
            shape = w if w in PRIMITIVES else SHAPE_SYNONYMS.get(w)
            colour = w if w in COLOURS else COLOUR_SYNONYMS.get(w)
            if shape or colour:
                shapes |= {shape} - {None}
                colours |= {colour} - {None}
                break
    return shapes, colours


def _split_stripe(words: List[str]) -> Tuple[List[str], Optional[List[str]]]:
    """Split a prompt's words into the object's and the stripe phrase's (None: no single stripe phrase).

    The stripe phrase is ``"with ... stripe(s)"`` (from the last ``"with"`` before the stripe word)
    or the one word before ``"striped"`` (``"blue-striped"``, ``"blue striped"``).
    """
    at = [i for i, w in enumerate(words) if w in STRIPE_WORDS]
    if len(at) != 1:
        return words, None
    i = at[0]
    if words[i] == "striped":
        start = i - 1 if i > 0 and _names(words[i - 1:i])[1] else i
    else:
        withs = [j for j in range(i) if words[j] == "with"]
        start = withs[-1] if withs else i
    return words[:start] + words[i + 1:], words[start:i]


def parse_pattern(text: str) -> Optional[Tuple[str, str, Optional[str]]]:
    """Find the shape, base colour and stripe colour a prompt asks for.

    Accepts what :func:`parse_prompt` does, plus one stripe phrase: ``"a red cube with a blue stripe"``,
    ``"... with blue stripes"``, ``"a blue-striped red cube"`` / ``"a blue striped red cube"``.

    Returns:
        ``(shape, base colour, stripe colour)`` with canonical names (stripe ``None`` for a plain
        prompt), or ``None`` unless the prompt names exactly one shape and one base colour, and, when it
        mentions stripes, exactly one stripe colour.
    """
    words = _WORD.findall(text.lower())
    rest, phrase = _split_stripe(words)
    shapes, colours = _names(rest)
    if len(shapes) != 1 or len(colours) != 1:
        return None
    if phrase is None:
        if any(w in STRIPE_WORDS for w in words):
            return None  # several stripe words
        return shapes.pop(), colours.pop(), None
    stripe_shapes, stripe_colours = _names(phrase)
    if stripe_shapes or len(stripe_colours) != 1:
        return None
    return shapes.pop(), colours.pop(), stripe_colours.pop()


def parse_shape(text: str) -> Optional[str]:
    """The one shape a prompt names, its colours and stripe colour named or left open (``"a cube"``,
    ``"a striped cone"``, ``"a red cube with a blue stripe"``); ``None`` unless exactly one."""
    shapes, _ = _names(_split_stripe(_WORD.findall(text.lower()))[0])
    return shapes.pop() if len(shapes) == 1 else None


def parse_prompt(text: str) -> Optional[Tuple[str, str]]:
    """Find the shape and colour a prompt asks for.

    Case, punctuation, articles, a view suffix (``"a red cube, front view"``), a plural and the
    synonyms in :data:`SHAPE_SYNONYMS` / :data:`COLOUR_SYNONYMS` are accepted. A stripe phrase
    (:func:`parse_pattern`) is set aside: ``"a red cube with a blue stripe"`` gives ``("cube", "red")``,
    the base colour.

    Returns:
        ``(shape, colour)`` with canonical names, or ``None`` unless the prompt names exactly one
        shape and one colour (outside its stripe phrase).
    """
    rest, _ = _split_stripe(_WORD.findall(text.lower()))
    shapes, colours = _names(rest)
    if len(shapes) != 1 or len(colours) != 1:
        return None
    return shapes.pop(), colours.pop()


# --------------------------------------------------------------------------------------------
# Rendering
@dataclass(frozen=True)
class TraceSettings:
    """Sphere-tracing tolerances (world units)."""

    max_steps: int = 64
    """Steps per ray; rays still marching after this are judged by their last distance."""
    hit_eps: float = 1e-3
    """A ray whose distance falls below this has hit the surface."""
    accept_eps: float = 5e-3
    """After ``max_steps``, a ray within this distance counts as a hit (grazing rays)."""
    normal_eps: float = 1e-3
    """Step of the finite-difference normals."""


AMBIENT = 0.35
"""Ambient share of the shading."""
LIGHT_DIR_CAMERA = (-0.4, 0.6, 1.0)
"""Direction towards the light in OpenGL camera coordinates (normalised before use): from the camera's
upper left."""


def _ray_sphere(origins: Tensor, dirs: Tensor, radius: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances of unit rays ``[N, 3]`` through a ball at the origin, and which rays meet it."""
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    disc = b * b - c
    root = disc.clamp(min=0).sqrt()
    return (-b - root).clamp(min=0), -b + root, disc > 0


def sphere_trace(sdf: SdfFn, origins: Tensor, dirs: Tensor, bound: float,
                 settings: TraceSettings = TraceSettings()) -> Tuple[Tensor, Tensor]:
    """March rays to the zero level set of ``sdf``.

    Rays are culled against the shape's bounding ball, and rays that hit or leave it are dropped
    from the working set as they finish, so cost goes where the rays are still marching.

    Args:
        sdf: signed distance (or a lower bound of it), points ``[N, 3]`` -> ``[N]``.
        origins, dirs: ``[N, 3]`` ray origins and unit directions.
        bound: radius of a ball at the origin containing the surface.

    Returns:
        ``t [N]`` the distance along each ray of its hit, and ``hit [N]`` bool.
    """
    t_in, t_out, meets = _ray_sphere(origins, dirs, bound + 1e-3)
    t = t_in.clone()
    hit = torch.zeros_like(meets)
    idx = meets.nonzero().squeeze(1)
    o, d, t_a, t_end = origins[idx], dirs[idx], t_in[idx], t_out[idx]
    for _ in range(settings.max_steps):
        if idx.numel() == 0:
            break
        dist = sdf(o + t_a[:, None] * d)
        t_a = t_a + dist
        done_hit = dist < settings.hit_eps
        running = ~done_hit & (t_a < t_end)
        t[idx], hit[idx] = t_a, done_hit
        idx, o, d, t_a, t_end = idx[running], o[running], d[running], t_a[running], t_end[running]
    if idx.numel():  # out of steps: accept rays that are close to the surface
        hit[idx] = sdf(o + t_a[:, None] * d).abs() < settings.accept_eps
    return t, hit


def sdf_normals(sdf: SdfFn, points: Tensor, eps: float = 1e-3) -> Tensor:
    """Unit normals ``[N, 3]`` by the tetrahedral finite difference of the SDF (4 evaluations)."""
    k = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], dtype=points.dtype, device=points.device)
    values = sdf(points[:, None, :] + eps * k[None])  # [N, 4]
    return F.normalize(values @ k, dim=-1)


def _shape_indices(shapes: Union[Sequence[str], Tensor], batch: int) -> Tensor:
    if isinstance(shapes, Tensor):
        idx = shapes.long().cpu()
    else:
        unknown = [s for s in shapes if s not in PRIMITIVES]
        if unknown:
            raise ValueError(f"unknown shape(s) {unknown}; valid: {', '.join(SHAPES)}")
        idx = torch.tensor([SHAPES.index(s) for s in shapes], dtype=torch.long)
    if idx.shape != (batch,):
        raise ValueError(f"expected {batch} shapes (one per camera), got {tuple(idx.shape)}")
    return idx


def colour_tensor(colours: Union[Sequence[str], Tensor], batch: int) -> Tensor:
    """``[B, 3]`` RGB from colour names (or a ``[B, 3]`` tensor, returned as is)."""
    if isinstance(colours, Tensor):
        rgb = colours.float()
    else:
        unknown = [c for c in colours if c not in COLOURS]
        if unknown:
            raise ValueError(f"unknown colour(s) {unknown}; valid: {', '.join(COLOUR_NAMES)}")
        rgb = torch.tensor([COLOURS[c] for c in colours], dtype=torch.float32)
    if rgb.shape != (batch, 3):
        raise ValueError(f"expected colours of shape ({batch}, 3), got {tuple(rgb.shape)}")
    return rgb


def _supersampled(cameras: Cameras, factor: int) -> Cameras:
    # Same poses and field of view, factor x the pixels: sub-pixel centres average to pixel centres.
    return Cameras(cameras.c2w, cameras.fovy, cameras.width * factor, cameras.height * factor, cameras.azimuth,
                   cameras.elevation, cameras.distance, cameras.light_positions)


STRIPE_BANDS = 3
"""Equal horizontal bands a primitive's vertical extent is cut into; the middle one is the stripe."""


def stripe_bounds(shape: str) -> Tuple[float, float]:
    """``(z0, z1)``: the world z range of ``shape``'s stripe, the middle of :data:`STRIPE_BANDS` bands."""
    if shape not in PRIMITIVES:
        raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
    lo, hi = PRIMITIVES[shape].z_extent
    band = (hi - lo) / STRIPE_BANDS
    mid = STRIPE_BANDS // 2
    return lo + mid * band, lo + (mid + 1) * band


def stripe_mask(shapes: Union[Sequence[str], Tensor], points: Tensor) -> Tensor:
    """Which world points ``[B, ..., 3]`` (on shape ``b``'s surface, canonical pose) lie in its stripe.

    Args:
        shapes: ``B`` shape names or ``[B]`` indices into :data:`SHAPES`, one per leading entry of ``points``.
        points: ``[B, ..., 3]`` world points (NaN points are outside).

    Returns:
        ``[B, ...]`` bool: ``z0 <= z <= z1`` with :func:`stripe_bounds` of each point's shape.
    """
    idx = _shape_indices(shapes, points.shape[0])
    bounds = torch.tensor([stripe_bounds(SHAPES[i]) for i in idx.tolist()], dtype=points.dtype,
                          device=points.device).view(-1, *([1] * (points.dim() - 2)), 2)
    z = points[..., 2]
    return (z >= bounds[..., 0]) & (z <= bounds[..., 1])


def _trace_shape(shape: str, origins: Tensor, dirs: Tensor, light: Tensor, settings: TraceSettings,
                 stripes: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Trace rays ``[N, 3]`` at one shape lit from ``light [N, 3]``: ``shade``, ``hit`` and (with
    ``stripes``) ``shade`` where the hit lies in the stripe, else None; each ``[N]``."""
    prim = PRIMITIVES[shape]
    t, hit = sphere_trace(prim.sdf, origins, dirs, prim.bound, settings)
    lit = torch.zeros_like(t)
    band = torch.zeros_like(t) if stripes else None
    if hit.any():
        points = origins[hit] + t[hit, None] * dirs[hit]
        normals = sdf_normals(prim.sdf, points, settings.normal_eps)
        lit[hit] = AMBIENT + (1 - AMBIENT) * (normals * light[hit]).sum(-1).clamp(min=0)
        if stripes:
            lo, hi = stripe_bounds(shape)
            band[hit] = lit[hit] * ((points[:, 2] >= lo) & (points[:, 2] <= hi)).to(lit.dtype)
    return lit, hit, band


def render_shading(shapes: Union[Sequence[str], Tensor], cameras: Cameras, supersample: int = 2,
                   settings: TraceSettings = TraceSettings(), stripes: bool = False) -> Tuple[Tensor, ...]:
    """Colour-independent renders: shading and coverage, from which any colour follows exactly.

    A pixel's colour is ``rgb = colour * shading + (1 - coverage)`` (see :func:`colourize`), since
    each sub-pixel is either ``colour * shade`` or white and the pixel is their mean.

    Args:
        shapes: ``B`` shape names, or ``[B]`` indices into :data:`SHAPES`.
        cameras: ``B`` cameras (any device; rendering runs on ``cameras.device``).
        supersample: sub-pixels per pixel side (anti-aliasing); 1 = one ray per pixel.
        stripes: also return the shading of the stripe (:func:`stripe_mask`) alone, from the same trace.

    Returns:
        ``shading [B, H, W]``: the mean over sub-pixels of ``hit * shade``;
        ``coverage [B, H, W]``: the fraction of sub-pixels that hit the shape (the silhouette); and
        with ``stripes`` a third, ``stripe_shading [B, H, W]``: the mean of ``hit * shade * in_stripe``
        (so ``0 <= stripe_shading <= shading``).
    """
    B, H, W, s = len(cameras), cameras.height, cameras.width, int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    idx = _shape_indices(shapes, B)
    origins, dirs = _supersampled(cameras, s).rays()  # [B, sH, sW, 3]
    light = F.normalize(torch.tensor(LIGHT_DIR_CAMERA, dtype=dirs.dtype, device=dirs.device), dim=0)
    light_world = cameras.c2w[:, :3, :3] @ light  # [B, 3]
    planes = torch.zeros(3 if stripes else 2, B, H * s, W * s, dtype=dirs.dtype, device=dirs.device)
    for shape_id in idx.unique().tolist():
        views = (idx == shape_id).nonzero().squeeze(1).to(dirs.device)
        o, d = origins[views].reshape(-1, 3), dirs[views].reshape(-1, 3)
        l = light_world[views].repeat_interleave(H * s * W * s, dim=0)
        lit, hit, band = _trace_shape(SHAPES[shape_id], o, d, l, settings, stripes)
        for k, plane in enumerate((lit, hit.to(lit.dtype), band)[:len(planes)]):
            planes[k, views] = plane.view(-1, H * s, W * s)
    pool = lambda x: F.avg_pool2d(x[:, None], s)[:, 0] if s > 1 else x  # noqa: E731
    return tuple(pool(p) for p in planes)


def colourize(shading: Tensor, coverage: Tensor, colours: Tensor, stripe_shading: Optional[Tensor] = None,
              stripe_colours: Optional[Tensor] = None) -> Tensor:
    """``rgb [B, H, W, 3] = colour * shading + (1 - coverage)`` on a white background, in [0, 1].

    With ``stripe_shading`` and ``stripe_colours``, ``rgb = colour * (shading - stripe_shading) +
    stripe_colour * stripe_shading + (1 - coverage)``, computed as ``colour * shading + (stripe_colour -
    colour) * stripe_shading + (1 - coverage)``: a sample whose stripe colour equals its colour (a plain
    sample in a striped batch) is then bit-for-bit the plain render.

    Args:
        shading, coverage: ``[B, H, W]`` from :func:`render_shading`.
        colours: ``[B, 3]`` RGB in [0, 1].
        stripe_shading: ``[B, H, W]`` from ``render_shading(..., stripes=True)``.
        stripe_colours: ``[B, 3]`` RGB in [0, 1] of the stripes (given with ``stripe_shading``).
    """
    if (stripe_shading is None) != (stripe_colours is None):
        raise ValueError("stripe_shading and stripe_colours go together; got only one of them")
    colours = colours.to(shading)
    rgb = colours[:, None, None, :] * shading[..., None]
    if stripe_shading is not None:
        delta = stripe_colours.to(shading) - colours
        rgb = rgb + delta[:, None, None, :] * stripe_shading[..., None]
    return (rgb + (1 - coverage)[..., None]).clamp(0, 1)


def stripe_colour_tensor(stripe_colours: Union[Sequence[Optional[str]], Tensor], colours: Tensor) -> Tensor:
    """``[B, 3]`` stripe RGB from ``B`` colour names, where a ``None`` entry (a plain sample) takes
    its row of the base ``colours [B, 3]`` (or a ``[B, 3]`` tensor, returned as is)."""
    if isinstance(stripe_colours, Tensor):
        return colour_tensor(stripe_colours, len(colours))
    names = list(stripe_colours)
    if len(names) != len(colours):
        raise ValueError(f"expected {len(colours)} stripe colours (one per camera), got {len(names)}")
    plain = torch.tensor([c is None for c in names], dtype=torch.bool, device=colours.device)
    named = colour_tensor([COLOUR_NAMES[0] if c is None else c for c in names], len(names))
    return torch.where(plain[:, None], colours.float(), named.to(colours.device))


def render_shapes(shapes: Union[Sequence[str], Tensor], colours: Union[Sequence[str], Tensor], cameras: Cameras,
                  supersample: int = 2, settings: TraceSettings = TraceSettings(),
                  stripe_colours: Union[Sequence[Optional[str]], Tensor, None] = None) -> Tuple[Tensor, Tensor]:
    """Render coloured primitives on white, exactly (up to anti-aliasing), one per camera.

    Args:
        shapes: ``B`` shape names (:data:`SHAPES`) or ``[B]`` shape indices.
        colours: ``B`` colour names (:data:`COLOURS`) or ``[B, 3]`` RGB in [0, 1].
        cameras: ``B`` cameras; rays come from :meth:`Cameras.rays`, so pixels line up with
            every renderer that uses the same cameras.
        supersample: sub-pixels per pixel side; 2 renders 4 rays per pixel and averages them.
        stripe_colours: paint a stripe (:func:`stripe_mask`) of these colours: ``B`` colour names (a
            ``None`` entry leaves that sample plain) or ``[B, 3]`` RGB; ``None``: all plain.

    Returns:
        ``rgb [B, H, W, 3]`` in [0, 1] on a white background, and
        ``silhouette [B, H, W]`` in [0, 1]: the covered fraction of each pixel (``> 0.5`` for a mask).
    """
    rgb = colour_tensor(colours, len(cameras))
    if stripe_colours is None:
        shading, coverage = render_shading(shapes, cameras, supersample, settings)
        return colourize(shading, coverage, rgb), coverage
    stripe_rgb = stripe_colour_tensor(stripe_colours, rgb)
    shading, coverage, stripe_shading = render_shading(shapes, cameras, supersample, settings, stripes=True)
    return colourize(shading, coverage, rgb, stripe_shading, stripe_rgb), coverage


def render_depth(shapes: Union[Sequence[str], Tensor], cameras: Cameras,
                 settings: TraceSettings = TraceSettings()) -> Tuple[Tensor, Tensor]:
    """Exact depth of the primitives at the pixel centres (one ray per pixel), for correspondences.

    Args:
        shapes: ``B`` shape names or ``[B]`` indices.
        cameras: ``B`` cameras.

    Returns:
        ``depth [B, H, W]``: z-depth (distance along the optical axis, world units), ``inf`` where
        the ray misses; and ``points [B, H, W, 3]``: the world position of each hit (NaN on misses).
    """
    B, H, W = len(cameras), cameras.height, cameras.width
    idx = _shape_indices(shapes, B)
    origins, dirs = cameras.rays()
    forward = -cameras.c2w[:, :3, 2]
    depth = torch.full((B, H, W), float("inf"), dtype=dirs.dtype, device=dirs.device)
    points = torch.full((B, H, W, 3), float("nan"), dtype=dirs.dtype, device=dirs.device)
    for b in range(B):
        prim = PRIMITIVES[SHAPES[int(idx[b])]]
        o, d = origins[b].reshape(-1, 3), dirs[b].reshape(-1, 3)
        t, hit = sphere_trace(prim.sdf, o, d, prim.bound, settings)
        p = o + t[:, None] * d
        z = (d @ forward[b]) * t
        depth[b] = torch.where(hit, z, torch.full_like(z, float("inf"))).view(H, W)
        points[b] = torch.where(hit[:, None], p, torch.full_like(p, float("nan"))).view(H, W, 3)
    return depth, points


def render_checker(shapes: Union[Sequence[str], Tensor], cameras: Cameras, cell: float = 0.2,
                   colours: Tuple[Tuple[float, float, float], Tuple[float, float, float]] = ((0.9, 0.2, 0.1), (0.1, 0.3, 0.9)),
                   settings: TraceSettings = TraceSettings()) -> Tuple[Tensor, Tensor]:
    """Primitives painted with a solid 3D checkerboard (cells of ``cell`` world units) on white.

    The texture is fixed to the object, so a turntable of it has well-defined optical flow (the
    plain renders of :func:`render_shapes` are uniform and shaded relative to the camera). Shaded
    like :func:`render_shapes` (camera-relative light).

    Returns:
        ``rgb [B, H, W, 3]`` in [0, 1] and ``depth [B, H, W]`` (as :func:`render_depth`).
    """
    depth, points = render_depth(shapes, cameras, settings)
    hit = torch.isfinite(depth)
    parity = torch.floor(torch.nan_to_num(points, nan=0.0) / cell).long().sum(-1) % 2
    c0, c1 = (torch.tensor(c, dtype=points.dtype, device=points.device) for c in colours)
    albedo = torch.where(parity[..., None] == 0, c0, c1)
    idx = _shape_indices(shapes, len(cameras))
    light = F.normalize(torch.tensor(LIGHT_DIR_CAMERA, dtype=points.dtype, device=points.device), dim=0)
    shade = torch.zeros_like(depth)
    for b in range(len(cameras)):
        if hit[b].any():
            prim = PRIMITIVES[SHAPES[int(idx[b])]]
            normals = sdf_normals(prim.sdf, points[b][hit[b]], settings.normal_eps)
            lam = (normals * (cameras.c2w[b, :3, :3] @ light)).sum(-1).clamp(min=0)
            shade[b][hit[b]] = AMBIENT + (1 - AMBIENT) * lam
    rgb = torch.where(hit[..., None], albedo * shade[..., None], torch.ones_like(albedo))
    return rgb.clamp(0, 1), depth
