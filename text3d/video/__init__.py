"""``text3d video``: restyle a run's turntable or a video with SDEdit, the noise following
correspondences. :mod:`.config`, :mod:`.source` (frames and their correspondences),
:mod:`.correspondence` (depth + cameras, optical flow), :mod:`.noise` (i.i.d., shared, mixed,
progressive and warped noise; a registry), :mod:`.pipeline` (restyle, measure, write).

May import: everything below the commands (``core`` ... ``run``).
"""

from .config import VIDEO_SCHEMA, VideoConfig, load_video_config
from .pipeline import run_video

__all__ = ["VIDEO_SCHEMA", "VideoConfig", "load_video_config", "run_video"]
