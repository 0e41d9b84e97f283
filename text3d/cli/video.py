"""``text3d video CONFIG source=... [key=value ...]``: restyle frames with correspondence-guided noise."""

from __future__ import annotations

import argparse
from typing import Any

from .common import progress_bars
from .common import Verb, register

EPILOG = """\
examples:
  text3d video configs/video-quickstart.yaml source=outputs/quickstart/a_red_cube@20260101-120000 prompt="a blue cube"
  text3d video configs/video-quickstart.yaml source=clip.mp4 prompt="a red cube" noise=iid
  Keys: source, prompt, noise (iid|shared|mixed|progressive|warped), alpha, warp (nearest|integral|bilinear),
  strength, steps, seed, frames, resolution, flow_preset, attention, prior.*; see text3d/video/config.py.

outputs:
  outputs/video/<tag>@<time>/  frames/  video.mp4  video.gif  side_by_side.mp4  metrics.json  config.yaml
  The last line printed is that folder.
"""


@register
class VideoVerb(Verb):
    name = "video"
    help = "restyle a run's turntable or a video with SDEdit, the noise following correspondences"
    description = ("SDEdit every frame of a run's turntable (correspondences from rendered depth and cameras) or "
                   "of a video file (DIS optical flow) with correspondence-guided noise, and the same with "
                   "i.i.d. noise for comparison; measures warp error and colour flips.")
    epilog = EPILOG
    items_help = "a YAML preset (configs/video-*.yaml) followed by overrides"

    def schema(self) -> Any:
        from text3d.video.config import VIDEO_SCHEMA

        return VIDEO_SCHEMA

    def config(self, args: argparse.Namespace) -> Any:
        from text3d.video import load_video_config

        return load_video_config(*self.items(args))

    def run(self, args: argparse.Namespace) -> int:
        from text3d.video import run_video

        cfg = self.config(args)
        with progress_bars(not args.no_progress) as bars:
            out = run_video(cfg, progress=lambda label, step, total: bars.update(f"video ({label} noise)", step, total))
        print(out)
        return 0
