"""``text3d view``: a run, an edit, a multi-view set or a batch in the browser (viser), live while a
run trains, or as one self-contained HTML page.

:mod:`.config` (the command's settings), :mod:`.server` (starting viser, the port, the HTML page),
:mod:`.sources` (what a folder shows: a registered class per kind of folder), :mod:`.scene` (Gaussians
as splats, meshes, cameras), :mod:`.render` (a NeRF or Gaussians rendered from the browser's
camera), :mod:`.live` (the viewer of a run that trains: pause, loss curves, renders between steps).

viser is an optional extra (``pip install -e ".[viewer]"``); it is imported only when a viewer starts.

May import: everything below the CLI (``core`` ... ``batch``).
"""

from .config import VIEW_SCHEMA, ViewConfig, load_view_config

__all__ = ["VIEW_SCHEMA", "ViewConfig", "load_view_config"]
