"""What the pixel shapes prior is trained on (``text3d train-prior``, ``type: pixel``).

Images come on the fly from the analytic renderer of :mod:`text3d.prior.shapes`: a random allowed
(shape, colour) pair, a random camera over the full azimuth circle and a range of elevations,
prompt ``"a <colour> <shape>"`` (sometimes with the DreamFusion view suffix, sometimes naming only
the shape or only the colour). Shading does not depend on the colour, so :class:`ShapesDataset`
keeps a bank of colour-free renders per shape (:func:`text3d.prior.shapes.render_shading`), colours
them per sample and re-renders a few bank views every step; the data stream is thus endless yet
costs little. The latent prior's striped world (:mod:`text3d.prior.latent_data`) builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError
from text3d.scene.cameras import orbit_cameras
from .model import camera_features
from .shapes import COLOUR_NAMES, COLOURS, SHAPES, colourize, parse_prompt, prompt_for, render_shading, with_article

@dataclass
class ShapesDataConfig:
    """What the prior is trained on."""

    shapes: List[str] = field(default_factory=lambda: list(SHAPES))
    """Shapes of :mod:`text3d.prior.shapes` to train on."""
    colours: List[str] = field(default_factory=lambda: list(COLOUR_NAMES))
    """Colour names of :mod:`text3d.prior.shapes` to train on."""
    held_out: List[str] = field(default_factory=lambda: ["blue cube", "yellow torus"])
    """``"<colour> <shape>"`` pairs never shown in training (to measure generalisation)."""
    azimuth_range: List[float] = field(default_factory=lambda: [-180.0, 180.0])
    """Camera azimuth range, degrees (uniform)."""
    elevation_range: List[float] = bounded(default_factory=lambda: [-10.0, 70.0], lo=-90, hi=90)
    """Camera elevation range, degrees (uniform); above 60 the view suffix is "overhead view"."""
    distance: float = bounded(3.0, lo=0, lo_open=True)
    """Camera distance from the origin (world units); the objects fill about two thirds of the frame."""
    fovy: float = bounded(32.0, lo=0, hi=180, lo_open=True, hi_open=True)
    """Vertical field of view, degrees."""
    supersample: int = bounded(2, lo=1, hi=8)
    """Anti-aliasing: rays per pixel side."""
    view_suffix_prob: float = bounded(0.5, lo=0, hi=1)
    """Probability that a prompt gets the view suffix of its camera (``", side view"``), as SDS prompts do."""
    partial_prompt_prob: float = bounded(0.1, lo=0, hi=1)
    """Probability of a prompt naming only the shape (``"a cube"``) or only the colour (``"an orange object"``)."""
    bank_views_per_shape: int = bounded(1024, lo=1)
    """Colour-free renders kept per shape; 0 renders every batch from scratch instead."""
    bank_refresh_per_step: int = bounded(8, lo=0)
    """Bank views replaced by fresh random views after every iteration (round-robin over shapes)."""


def held_out_pairs(data: ShapesDataConfig) -> List[Tuple[str, str]]:
    """``data.held_out`` as ``(shape, colour)`` pairs.

    Raises:
        ConfigError: an entry is not ``"<colour> <shape>"`` with a known shape and colour.
    """
    pairs = []
    for text in data.held_out:
        parsed = parse_prompt(text)
        if parsed is None or text.strip().lower() != f"{parsed[1]} {parsed[0]}":
            raise ConfigError(f"data.held_out: {text!r} is not '<colour> <shape>' (e.g. 'blue cube'); "
                              f"shapes: {', '.join(SHAPES)}; colours: {', '.join(COLOUR_NAMES)}")
        pairs.append(parsed)
    return pairs


# --------------------------------------------------------------------------------------------
# Prompts
def view_label(azimuth_deg: float, elevation_deg: float) -> str:
    """DreamFusion's view of a camera with text3d's default thresholds (``prompting`` section):
    overhead above 60 degrees elevation, else front within 45 degrees of azimuth 0, back within 45
    degrees of 180, side otherwise."""
    az = 180.0 - (180.0 - azimuth_deg) % 360.0  # wrapped to (-180, 180]
    if elevation_deg > 60.0:
        return "overhead"
    if abs(az) <= 45.0:
        return "front"
    return "back" if abs(az) >= 135.0 else "side"


def training_prompt(shape: str, colour: str, azimuth_deg: float, elevation_deg: float, u: Sequence[float],
                    data: ShapesDataConfig) -> str:
    """The prompt of one training image; ``u`` holds three uniform random numbers in [0, 1)."""
    if u[0] < data.partial_prompt_prob:
        return with_article(shape) if u[1] < 0.5 else with_article(f"{colour} object")
    return with_view_suffix(prompt_for(shape, colour), azimuth_deg, elevation_deg, u, data)


def with_view_suffix(prompt: str, azimuth_deg: float, elevation_deg: float, u: Sequence[float],
                     data: ShapesDataConfig) -> str:
    """``prompt`` with its camera's view suffix (``", side view"``) when ``u[2] < data.view_suffix_prob``."""
    if u[2] < data.view_suffix_prob:
        return f"{prompt}, {view_label(azimuth_deg, elevation_deg)} view"
    return prompt


# --------------------------------------------------------------------------------------------
# Data
@dataclass
class TrainingBatch:
    images: Tensor
    """``[B, 3, R, R]`` in [-1, 1]."""
    prompts: List[str]
    camera: Tensor
    """``[B, 12]`` :func:`camera_features`."""
    shape_ids: Tensor
    """``[B]`` indices into :data:`text3d.prior.shapes.SHAPES`."""
    colour_ids: Tensor
    """``[B]`` indices into :data:`text3d.prior.shapes.COLOUR_NAMES`."""


def uniform_draw(lo_hi: Sequence[float], n: int, generator: torch.Generator) -> Tensor:
    """``[n]`` draws uniform in ``[lo_hi[0], lo_hi[1])``."""
    return float(lo_hi[0]) + (float(lo_hi[1]) - float(lo_hi[0])) * torch.rand(n, generator=generator)


class ShapesDataset:
    """An endless stream of rendered primitives with prompts and camera features.

    Args:
        data: what to render.
        resolution: image side in pixels.
        generator: CPU generator for every random choice (bank cameras included).
        device: where renders and batches live.
    """

    def __init__(self, data: ShapesDataConfig, resolution: int, generator: torch.Generator,
                 device: torch.device | str = "cpu"):
        self.data, self.resolution, self.device = data, int(resolution), torch.device(device)
        held = set(held_out_pairs(data))
        self.pairs = torch.tensor([(SHAPES.index(s), COLOUR_NAMES.index(c)) for s in data.shapes
                                   for c in data.colours if (s, c) not in held], dtype=torch.long)
        self.palette = torch.tensor([COLOURS[c] for c in COLOUR_NAMES], dtype=torch.float32, device=self.device)
        self.shape_ids = [SHAPES.index(s) for s in data.shapes]
        self._refresh_cursor = 0
        n = data.bank_views_per_shape
        self.bank: Optional[Dict[str, Tensor]] = None
        if n > 0:
            views = [self.render_views(torch.full((n,), sid), generator) for sid in self.shape_ids]
            self.bank = {k: torch.stack([v[k] for v in views]) for k in views[0]}  # [S, n, ...]

    def render_views(self, shape_ids: Tensor, generator: torch.Generator) -> Dict[str, Tensor]:
        """Colour-free renders of the given shapes from fresh random cameras."""
        n, d, R = len(shape_ids), self.data, self.resolution
        az, el = uniform_draw(d.azimuth_range, n, generator), uniform_draw(d.elevation_range, n, generator)
        cams = orbit_cameras(az, el, torch.full((n,), d.distance), torch.full((n,), d.fovy), R, R).to(self.device)
        shading, coverage = render_shading(shape_ids, cams, d.supersample)
        return {"shading": shading.half(), "coverage": coverage.half(), "azimuth": az, "elevation": el}

    def refresh(self, generator: torch.Generator) -> None:
        """Replace ``bank_refresh_per_step`` bank views of the next shape (round-robin) by new views."""
        k = self.data.bank_refresh_per_step
        if self.bank is None or k <= 0:
            return
        n_views = self.bank["shading"].shape[1]
        slot = self._refresh_cursor % len(self.shape_ids)
        start = (self._refresh_cursor // len(self.shape_ids)) * k % n_views
        idx = (start + torch.arange(min(k, n_views))) % n_views
        fresh = self.render_views(torch.full((len(idx),), self.shape_ids[slot]), generator)
        for key, value in fresh.items():
            self.bank[key][slot, idx] = value
        self._refresh_cursor += 1

    def sample(self, batch_size: int, generator: torch.Generator) -> TrainingBatch:
        """A batch of random allowed (shape, colour) pairs, each from a random view."""
        pairs = self.pairs[torch.randint(len(self.pairs), (batch_size,), generator=generator)]
        shape_ids, colour_ids = pairs[:, 0], pairs[:, 1]
        if self.bank is None:
            views = self.render_views(shape_ids, generator)
        else:
            slot = torch.tensor([self.shape_ids.index(int(s)) for s in shape_ids])
            view = torch.randint(self.bank["shading"].shape[1], (batch_size,), generator=generator)
            views = {k: v[slot, view] for k, v in self.bank.items()}
        rgb = colourize(views["shading"].float(), views["coverage"].float(), self.palette[colour_ids.to(self.device)])
        u = torch.rand(batch_size, 3, generator=generator).tolist()
        prompts = [training_prompt(SHAPES[s], COLOUR_NAMES[c], float(a), float(e), uu, self.data)
                   for s, c, a, e, uu in zip(shape_ids.tolist(), colour_ids.tolist(), views["azimuth"].tolist(),
                                             views["elevation"].tolist(), u)]
        return TrainingBatch(images=rgb.permute(0, 3, 1, 2) * 2 - 1, prompts=prompts,
                             camera=camera_features(views["azimuth"], views["elevation"]).to(self.device),
                             shape_ids=shape_ids, colour_ids=colour_ids)
