"""Images, grids and videos, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import imageio.v2 as imageio
import numpy as np
import torch
from torch import Tensor

from .io import atomic_path


def to_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """``[H, W, C]`` float in [0, 1] (tensor or array) → uint8 array; NaN becomes 0."""
    if torch.is_tensor(image):
        image = image.detach().float().cpu().numpy()
    image = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_grid(images: Sequence[Tensor | np.ndarray], cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``[H, W, C]`` images (same size) into one uint8 image with white gutters."""
    tiles = [to_uint8(im) for im in images]
    if not tiles:
        raise ValueError("image_grid needs at least one image")
    h, w, c = tiles[0].shape
    cols = cols or len(tiles)
    rows = (len(tiles) + cols - 1) // cols
    grid = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, q = divmod(k, cols)
        grid[r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = tile
    return grid


def save_image(path: str | Path, image: Tensor | np.ndarray) -> Path:
    """Save one image (float in [0, 1] or uint8) as PNG, atomically."""
    array = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    with atomic_path(path) as tmp:
        imageio.imwrite(tmp, array)
    return Path(path)


def save_video(path: str | Path, frames: Sequence[Tensor | np.ndarray], fps: int = 30) -> Path:
    """Save frames as ``.mp4`` (H.264 via imageio-ffmpeg) or ``.gif``, chosen by the suffix."""
    path = Path(path)
    arrays = [f if isinstance(f, np.ndarray) and f.dtype == np.uint8 else to_uint8(f) for f in frames]
    with atomic_path(path) as tmp:
        if path.suffix == ".gif":
            imageio.mimsave(tmp, arrays, duration=1000.0 / fps, loop=0)
        else:
            # imageio-ffmpeg writes H.264 in yuv420p (what every player opens), which needs even sizes.
            imageio.mimsave(tmp, arrays, fps=fps, macro_block_size=2, quality=8)
    return path


CAPTION_LINE_PX = 12
"""Height of one caption line (PIL's default bitmap font is ~11 px tall)."""


def add_caption(frames: Sequence[Tensor | np.ndarray], lines: Sequence[str]) -> List[np.ndarray]:
    """The frames (``[H, W, 3]``) with a white band below holding ``lines`` of black text (uint8)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    band_h = CAPTION_LINE_PX * len(lines) + 4
    out = []
    for frame in frames:
        array = frame if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 else to_uint8(frame)
        h, w = array.shape[:2]
        canvas = Image.new("RGB", (w, h + band_h + (h + band_h) % 2), "white")  # even height (H.264)
        canvas.paste(Image.fromarray(array), (0, 0))
        draw = ImageDraw.Draw(canvas)
        for i, text in enumerate(lines):
            draw.text((3, h + 2 + i * CAPTION_LINE_PX), text, fill=(0, 0, 0), font=font)
        out.append(np.asarray(canvas))
    return out
