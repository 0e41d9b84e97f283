"""``text3d multiview``: N consistent views of one prompt from a diffusion prior. :mod:`.config` (the
command's config), :mod:`.modes` (independent, shared / StyleAligned, full attention, grid; a
registry of modes), :mod:`.pipeline` (sample and write the folder a run can reconstruct from).

May import: everything below the commands (``core`` ... ``run``).
"""

from .config import MULTIVIEW_SCHEMA, MultiviewConfig, load_multiview_config
from .pipeline import run_multiview

__all__ = ["MULTIVIEW_SCHEMA", "MultiviewConfig", "load_multiview_config", "run_multiview"]
