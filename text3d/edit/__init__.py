"""``text3d edit``: move an existing scene towards a target prompt with an editing guidance (PDS,
DDS, SDS-edit). :mod:`.config` (the edit's config, loaded over its source's scene), :mod:`.source`
(a run folder or a 3DGS ``.ply``), :mod:`.trainer` (:class:`EditRun`), :mod:`.refine` (the PDS
refinement stage), :mod:`.metrics` and :mod:`.clip_metric` (identity and target figures).

May import: everything below the commands (``core`` ... ``run``).
"""

from .config import EDIT_SCHEMA, EditConfig, EditRunConfig, edit_config, load_edit_config, load_edit_run_config
from .source import SCENE_SECTIONS, EditSource, open_source
from .trainer import EditRun, open_edit

__all__ = ["EDIT_SCHEMA", "EditConfig", "EditRun", "EditRunConfig", "EditSource", "SCENE_SECTIONS", "edit_config",
           "load_edit_config", "load_edit_run_config", "open_edit", "open_source"]
