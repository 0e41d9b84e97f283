"""The settings of ``text3d view PATH [key=value ...]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from text3d.core.bounds import bounded
from text3d.core.config_files import literal_layer
from text3d.core.errors import ConfigError
from text3d.core.schema import Schema


@dataclass
class ViewConfig:
    """What to show and where."""

    path: str = ""
    """A run or edit folder, a ``text3d multiview`` folder or a batch folder."""
    port: int = bounded(8080, lo=1, hi=65535)
    """The port to serve on; a port in use moves to the next free one (the URL is printed)."""
    host: str = "127.0.0.1"
    """The interface to listen on; ``0.0.0.0`` serves other machines too (a cluster node, say)."""
    resolution: int = bounded(256, lo=16, hi=2048)
    """Longest side, pixels, of a NeRF rendered from the browser's camera when it rests (a quarter
    while it moves)."""
    html: Optional[str] = None
    """Write the scene to this self-contained HTML file and exit, instead of serving."""


def check_view_config(cfg: ViewConfig) -> None:
    if not cfg.path:
        raise ConfigError("path: missing; text3d view RUN_DIR (a run, edit, multiview or batch folder)")
    if not Path(cfg.path).is_dir():
        raise ConfigError(f"path: {cfg.path!r} is not a folder; pass a folder that text3d run, edit, multiview or "
                          "batch printed")
    if cfg.html is not None and Path(cfg.html).is_dir():
        raise ConfigError(f"html: {cfg.html!r} is a folder; give the HTML file to write, e.g. scene.html")


VIEW_SCHEMA = Schema("view", ViewConfig, check=check_view_config)


def load_view_config(path: str, overrides: Sequence[str] = ()) -> ViewConfig:
    """The settings: the folder, then ``key=value`` overrides (``port=8081``)."""
    return VIEW_SCHEMA.load(None, overrides, below=[literal_layer({"path": str(path)}, "the command line")])
