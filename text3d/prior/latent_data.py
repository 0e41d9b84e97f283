"""Training images of the latent prior: plain and striped primitives from a fixed bank of views.

The bank holds colour-free renders of every shape (shading, coverage and the stripe band's
shading, :func:`text3d.prior.shapes.render_shading` with ``stripes=True``) from cameras drawn once
from the recipe's seed; any base and stripe colour then follows exactly
(:func:`text3d.prior.shapes.colourize`). Because the bank never changes during training, every
batch is a function of the generator state alone, so a resumed run draws bit-identically the
batches an uninterrupted run would. The bank is cached in the work folder (safetensors).

Prompts: ``"a red cube"``, ``"a red cube with a blue stripe"``, optionally with a view suffix; a
share of them leave the colours or the pattern open (``"a cube"``, ``"a striped cube"``,
``"a cube with a blue stripe"``, ``"a red cube with a stripe"``), which is what the under-specified
prompts of the multi-view and video benchmarks ask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError
from text3d.core.io import atomic_path
from text3d.scene.cameras import orbit_cameras
from .model import camera_features
from .shapes import COLOUR_NAMES, COLOURS, SHAPES, colourize, parse_pattern, prompt_for, render_shading, with_article
from .pixel_data import ShapesDataConfig, held_out_pairs, training_prompt, uniform_draw, with_view_suffix

logger = logging.getLogger(__name__)


@dataclass
class PatternDataConfig(ShapesDataConfig):
    """What the latent prior is trained on: the plain world of the pixel prior plus striped objects."""

    stripe_prob: float = bounded(0.35, lo=0, hi=1)
    """Share of training images with a stripe (a second colour on the middle third of the height)."""
    held_out_striped: List[str] = field(default_factory=lambda: ["purple sphere with a yellow stripe"])
    """``"<colour> <shape> with a <colour> stripe"`` combinations never shown in training."""
    bank_views_per_shape: int = bounded(512, lo=1)
    """Colour-free views rendered once per shape (cached in the work folder)."""


def held_out_striped(data: PatternDataConfig) -> List[Tuple[str, str, str]]:
    """``data.held_out_striped`` as ``(shape, base colour, stripe colour)``.

    Raises:
        ConfigError: an entry is not ``"<colour> <shape> with a <colour> stripe"``.
    """
    out = []
    for text in data.held_out_striped:
        parsed = parse_pattern(text)
        if parsed is None or parsed[2] is None or parsed[1] == parsed[2]:
            raise ConfigError(f"data.held_out_striped: {text!r} is not '<colour> <shape> with a <colour> stripe' "
                              f"with two different colours (e.g. 'red cube with a blue stripe')")
        out.append(parsed)
    return out


def pattern_prompt(shape: str, colour: str, stripe: Optional[str], azimuth: float, elevation: float,
                   u: Sequence[float], data: PatternDataConfig) -> str:
    """The prompt of one training image; ``u`` holds four uniform numbers in [0, 1). A plain object's
    prompt is the pixel prior's (:func:`text3d.prior.pixel_data.training_prompt`)."""
    if stripe is None:
        return training_prompt(shape, colour, azimuth, elevation, u, data)
    if u[0] < data.partial_prompt_prob:
        options = [with_article(shape), f"a striped {shape}", f"{with_article(shape)} with a {stripe} stripe",
                   f"{with_article(f'{colour} {shape}')} with a stripe"]
        return options[min(int(u[1] * len(options)), len(options) - 1)]
    return with_view_suffix(prompt_for(shape, colour, stripe), azimuth, elevation, u, data)


@dataclass
class PatternBatch:
    images: Tensor
    """``[B, 3, R, R]`` in [-1, 1]."""
    prompts: List[str]
    camera: Tensor
    """``[B, 12]`` camera features."""
    shape_ids: Tensor
    colour_ids: Tensor
    stripe_ids: Tensor
    """``[B]`` stripe colour indices, -1 for plain objects."""


def render_bank(data: PatternDataConfig, resolution: int, seed: int) -> Dict[str, Tensor]:
    """Colour-free renders ``[S, n, R, R]`` (shading, coverage, stripe) and their cameras ``[S, n]``."""
    gen = torch.Generator().manual_seed(seed)
    n, views = data.bank_views_per_shape, []
    for name in data.shapes:
        az, el = uniform_draw(data.azimuth_range, n, gen), uniform_draw(data.elevation_range, n, gen)
        cams = orbit_cameras(az, el, torch.full((n,), data.distance), torch.full((n,), data.fovy), resolution, resolution)
        shading, coverage, stripe = render_shading([name] * n, cams, data.supersample, stripes=True)
        views.append({"shading": shading, "coverage": coverage, "stripe": stripe, "azimuth": az, "elevation": el})
    return {k: torch.stack([v[k] for v in views]) for k in views[0]}


def cached_bank(data: PatternDataConfig, resolution: int, seed: int, cache: Optional[Path]) -> Dict[str, Tensor]:
    """:func:`render_bank`, read from / written to ``cache`` (safetensors, atomically) when given."""
    if cache is not None and Path(cache).is_file():
        return load_file(str(cache))
    bank = render_bank(data, resolution, seed)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            save_file({k: v.contiguous() for k, v in bank.items()}, str(tmp))
    return bank


class PatternDataset:
    """An endless, seed-determined stream of plain and striped primitives with prompts and cameras.

    Args:
        data: what to render; resolution: image side; seed: the bank's cameras;
        cache: where the bank is kept between sittings (None: in memory only).
    """

    def __init__(self, data: PatternDataConfig, resolution: int, seed: int, cache: Optional[Path] = None):
        self.data = data
        held, held_striped = set(held_out_pairs(data)), set(held_out_striped(data))
        colours = [COLOUR_NAMES.index(c) for c in data.colours]
        self.plain = torch.tensor([(SHAPES.index(s), COLOUR_NAMES.index(c), -1) for s in data.shapes
                                   for c in data.colours if (s, c) not in held], dtype=torch.long)
        self.striped = torch.tensor([(SHAPES.index(s), c, k) for s in data.shapes for c in colours for k in colours
                                     if c != k and (s, COLOUR_NAMES[c], COLOUR_NAMES[k]) not in held_striped],
                                    dtype=torch.long)
        self.palette = torch.tensor([COLOURS[c] for c in COLOUR_NAMES], dtype=torch.float32)
        self.slot = {SHAPES.index(s): i for i, s in enumerate(data.shapes)}
        self.bank = cached_bank(data, resolution, seed, cache)

    def _combos(self, batch_size: int, generator: torch.Generator) -> Tensor:
        striped = torch.rand(batch_size, generator=generator) < self.data.stripe_prob
        plain = self.plain[torch.randint(len(self.plain), (batch_size,), generator=generator)]
        stripe = self.striped[torch.randint(len(self.striped), (batch_size,), generator=generator)]
        return torch.where(striped[:, None], stripe, plain)

    def sample(self, batch_size: int, generator: torch.Generator, views: int = 1) -> PatternBatch:
        """A batch of random allowed combinations, each from a random bank view.

        ``views > 1``: ``batch_size / views`` sets of ``views`` images of one object each (same shape,
        colours and prompt text, each from its own random bank view, the view suffix its own), set-major
        (the view-set stage of the recipe). ``views = 1`` draws exactly what it always did."""
        if batch_size % views:
            raise ValueError(f"batch_size {batch_size} is not a multiple of views {views}")
        combos = self._combos(batch_size // views, generator).repeat_interleave(views, 0)
        slot = torch.tensor([self.slot[int(s)] for s in combos[:, 0]])
        view = torch.randint(self.bank["shading"].shape[1], (batch_size,), generator=generator)
        v = {k: t[slot, view] for k, t in self.bank.items()}
        base = self.palette[combos[:, 1]]
        stripe = torch.where((combos[:, 2] >= 0)[:, None], self.palette[combos[:, 2].clamp(min=0)], base)
        rgb = colourize(v["shading"].float(), v["coverage"].float(), base, v["stripe"].float(), stripe)
        u = torch.rand(batch_size // views, 4, generator=generator).repeat_interleave(views, 0).tolist()
        prompts = [pattern_prompt(SHAPES[s], COLOUR_NAMES[c], COLOUR_NAMES[k] if k >= 0 else None, float(a), float(e),
                                  uu, self.data)
                   for (s, c, k), a, e, uu in zip(combos.tolist(), v["azimuth"].tolist(), v["elevation"].tolist(), u)]
        return PatternBatch(images=rgb.permute(0, 3, 1, 2) * 2 - 1, prompts=prompts,
                            camera=camera_features(v["azimuth"], v["elevation"]), shape_ids=combos[:, 0],
                            colour_ids=combos[:, 1], stripe_ids=combos[:, 2])
