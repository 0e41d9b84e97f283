"""Sources of ``text3d video``: a run's turntable (depth + cameras) or a video file / frame folder (flow).

Each gives a :class:`Clip`: the frames at the working resolution, the cameras where they are known,
and the correspondences between consecutive frames in both directions, from which the noise
(backward: frame ``i`` into ``i - 1``) and the warp error (forward: frame ``t`` into ``t + 1``) follow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from text3d.scene.cameras import Cameras, orbit_cameras, turntable
from .correspondence import depth_correspondence, flow_correspondence, z_depth
from text3d.core.errors import ConfigError, Text3DError
from text3d.core.folders import folder_kind
from text3d.scene.rundir import load_system
from .noise import Correspondence

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class Clip:
    """Frames of one scene with their correspondences.

    Attributes:
        frames: ``[N, R, R, 3]`` float in [0, 1].
        cameras: ``N`` cameras (a run's turntable; for a video, the fixed view a camera-conditioned
            prior is told: azimuth 0, elevation 15).
        backward: ``N - 1`` correspondences, ``backward[i - 1]``: frame ``i`` -> frame ``i - 1``.
        forward: ``N - 1`` correspondences, ``forward[t]``: frame ``t`` -> frame ``t + 1``.
        kind: ``run`` or ``video``.
        prompt: the run's prompt (empty for a video).
    """

    frames: Tensor
    cameras: Cameras
    backward: List[Correspondence]
    forward: List[Correspondence]
    kind: str
    prompt: str = ""


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file()


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif", ".mpg", ".mpeg", ".wmv", ".flv")
"""Files read as videos (through imageio's ffmpeg); any other file is refused up front."""


def check_source(source: str) -> Path:
    """The source path, or :class:`ConfigError` naming what is wrong with it (before any model loads)."""
    if not source:
        raise ConfigError("source: missing; pass source=RUN_DIR (a text3d run folder) or source=VIDEO_FILE")
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"source: {source!r} does not exist; pass a run folder or a video file")
    kind = folder_kind(path)
    if kind is not None:
        raise ConfigError(f"source: {source!r} is a {kind} folder, not a run; pass a run folder, a folder of frames "
                          "or a video file")
    if path.is_dir() and not is_run_dir(path) and not _image_files(path):
        raise ConfigError(f"source: {source!r} is neither a run folder (no config.yaml) nor a folder of frames "
                          f"({', '.join(IMAGE_SUFFIXES)})")
    if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"source: {source!r} is a {path.suffix or 'suffix-less'} file, not a video; pass a run "
                          f"folder, a folder of frames or a video ({', '.join(VIDEO_SUFFIXES[:6])}, ...)")
    return path


def _image_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------------------------
# A run's turntable
@torch.no_grad()
def render_turntable(system, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """``rgb [N, R, R, 3]`` and z-depth ``[N, R, R]`` (inf where the render is less than half opaque)."""
    rgbs, depths = [], []
    for i in range(len(cameras)):
        cam = cameras.index(slice(i, i + 1))
        out = system.render(cam, mode="albedo", train=False)
        if "depth" not in out:
            raise Text3DError("source: the run's renderer gives no depth, which text3d video needs for correspondences")
        opacity = out["opacity"][0, ..., 0]
        distance = out["depth"][0, ..., 0] / opacity.clamp(min=1e-6)  # the renderer's depth is opacity-weighted
        distance = torch.where(opacity > 0.5, distance, torch.full_like(distance, float("inf")))
        rgbs.append(out["rgb"][0].clamp(0, 1))
        depths.append(z_depth(distance[None], cam)[0])
    rgb, depth = torch.stack(rgbs), torch.stack(depths)
    if torch.isnan(depth).any() or torch.isnan(rgb).any():
        raise Text3DError("source: the run renders NaN depth or colour (a diverged run?); pick another checkpoint/run")
    return rgb, depth


def run_clip(run_dir: Path, n_frames: int, resolution: int, background: str = "static",
             degrees_per_frame: float = 0.0) -> Clip:
    """The turntable of a run at its validation elevation, distance and field of view, with depth
    correspondences (``background``: see :data:`text3d.video.correspondence.BACKGROUND_MODES`);
    ``degrees_per_frame`` apart in azimuth from 0 (0 = a full turn, ``360 / n_frames``)."""
    cfg, system, _ = load_system(run_dir)
    c = cfg.cameras
    cameras = turntable(n_frames, c.eval_elevation, c.eval_distance, c.eval_fovy, resolution, resolution,
                        degrees_per_view=degrees_per_frame)
    rgb, depth = render_turntable(system, cameras)
    one = lambda i: cameras.index([i])  # noqa: E731
    corr = lambda a, b: depth_correspondence(depth[a], one(a), depth[b], one(b), background=background)  # noqa: E731
    backward = [corr(i, i - 1) for i in range(1, n_frames)]
    forward = [corr(t, t + 1) for t in range(n_frames - 1)]
    return Clip(rgb, cameras, backward, forward, "run", cfg.prompt)


# --------------------------------------------------------------------------------------------
# A video file or a folder of frames
def read_frames(path: Path, max_frames: int) -> List[np.ndarray]:
    """Up to ``max_frames`` RGB uint8 frames of a video file or an image folder, one clear error otherwise."""
    frames = _read_folder(path, max_frames) if path.is_dir() else _read_video(path, max_frames)
    if len(frames) < 2:
        raise Text3DError(f"source: {str(path)!r} has {len(frames)} frame(s); a video needs at least 2")
    sizes = sorted({f.shape[:2] for f in frames})
    if len(sizes) > 1:
        raise Text3DError(f"source: frames of mismatched sizes {sizes[:3]} in {str(path)!r}; give frames of one size")
    return [_to_rgb(f) for f in frames]


def _read_folder(folder: Path, max_frames: int) -> List[np.ndarray]:
    import imageio.v2 as imageio

    frames = []
    for f in _image_files(folder)[:max_frames]:
        try:
            frames.append(np.asarray(imageio.imread(f)))
        except Exception as e:  # PIL/imageio raise many types for a damaged image
            raise Text3DError(f"source: frame {str(f)!r} cannot be read ({_reason(f, e)}); replace or remove it") from None
    return frames


def _read_video(path: Path, max_frames: int) -> List[np.ndarray]:
    import imageio.v2 as imageio

    frames: List[np.ndarray] = []
    try:
        with imageio.get_reader(str(path)) as reader:
            for frame in reader:
                frames.append(np.asarray(frame))
                if len(frames) >= max_frames:
                    break
    except Exception as e:  # imageio/ffmpeg raise many types for an unreadable file
        raise Text3DError(f"source: cannot read {str(path)!r} as a video ({_reason(path, e)})") from None
    return frames


def _reason(path: Path, error: BaseException) -> str:
    """Why a file could not be read, in words: empty, text, a truncated MP4, or the decoder's own last line
    (ffmpeg's version banner and configuration left out, cut at a word)."""
    head = path.read_bytes()[:4096] if path.is_file() else b""
    if not head:
        return "the file is empty"
    if b"\0" not in head[:512]:
        try:
            head[:512].decode("utf-8")
            return "it is a text file, not a video or an image"
        except UnicodeDecodeError:
            pass
    if head[4:8] == b"ftyp":
        return f"an MP4 that is damaged or cut short ({path.stat().st_size} bytes); export it again"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("ffmpeg version", "built with", "configuration:", "lib"))]
    text = lines[-1] if lines else type(error).__name__
    return text if len(text) <= 160 else text[:160].rsplit(" ", 1)[0] + " ..."


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    return frame[..., :3]


def square_resize(frames: List[np.ndarray], resolution: int) -> Tensor:
    """Centre-crop to a square and resize (area-averaged when shrinking): ``[N, R, R, 3]`` float in [0, 1]."""
    x = torch.from_numpy(np.stack(frames)).float().permute(0, 3, 1, 2) / 255.0
    H, W = x.shape[-2:]
    side = min(H, W)
    x = x[..., (H - side) // 2:(H - side) // 2 + side, (W - side) // 2:(W - side) // 2 + side]
    mode = "area" if side > resolution else "bilinear"
    x = F.interpolate(x, size=(resolution, resolution), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return x.clamp(0, 1).permute(0, 2, 3, 1)


def video_clip(path: Path, n_frames: int, resolution: int, preset: str, view: Optional[tuple] = None) -> Clip:
    """Frames of a video with DIS-flow correspondences; cameras are one fixed view (``view = (azimuth, elevation)``)."""
    frames = square_resize(read_frames(path, n_frames), resolution)
    n = frames.shape[0]
    az, el = view or (0.0, 15.0)
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    cameras = orbit_cameras(full(az), full(el), full(3.0), full(32.0), resolution, resolution)
    backward = [flow_correspondence(frames[i], frames[i - 1], preset) for i in range(1, n)]
    forward = [flow_correspondence(frames[t], frames[t + 1], preset) for t in range(n - 1)]
    return Clip(frames, cameras, backward, forward, "video")


def open_clip(path: Path, n_frames: int, resolution: int, preset: str, background: str = "static",
              degrees_per_frame: float = 0.0) -> Clip:
    """A :class:`Clip` from a run folder (turntable ``degrees_per_frame`` apart), a video file or a frame folder."""
    if is_run_dir(path):
        return run_clip(path, n_frames, resolution, background, degrees_per_frame)
    return video_clip(path, n_frames, resolution, preset)
