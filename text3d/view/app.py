"""``text3d view``: open the folder's view, then serve it until Ctrl-C or write it as one HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from .config import ViewConfig
from .server import serve_forever, start_server, stop_server, write_html
from .sources import open_view_source


def view(cfg: ViewConfig, ready: Callable[[str], None] = print) -> Optional[Path]:
    """Show ``cfg.path``: serve it (``ready`` is told the URL; returns after Ctrl-C, None) or, with
    ``cfg.html``, write the HTML page and return its path."""
    source = open_view_source(cfg)  # a folder it cannot show is refused before a server starts
    server, url = start_server(cfg.host, cfg.port)
    try:
        source.show(server, static=cfg.html is not None)
        if cfg.html is not None:
            path = write_html(server, cfg.html)
            stop_server(server)
            return path
    except BaseException:
        stop_server(server)
        raise
    ready(url)
    serve_forever(server)
    return None
