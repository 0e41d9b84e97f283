"""Starting viser: the optional extra, a free port, the URL printed, serving until Ctrl-C, and the
scene as one self-contained HTML page."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any, Tuple

from text3d.core.errors import Text3DError
from text3d.core.io import write_text

logger = logging.getLogger(__name__)

PORT_TRIES = 20
"""A port in use moves to the next one, this many times at most."""


def require_viser() -> Any:
    """The viser module, or one line saying how to install it."""
    try:
        import viser
    except ImportError:
        raise Text3DError('the viewer needs viser: pip install -e ".[viewer]" (or pip install viser)') from None
    return viser


def free_port(host: str, port: int) -> int:
    """``port`` if it can be bound on ``host``, else the next free one (a line says which)."""
    for candidate in range(port, min(port + PORT_TRIES, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, candidate))
            except OSError:
                continue
        if candidate != port:
            logger.warning("port %d is in use; serving on %d", port, candidate)
        return candidate
    raise Text3DError(f"port: {port} to {port + PORT_TRIES - 1} are all in use; pass port=N")


def start_server(host: str, port: int) -> Tuple[Any, str]:
    """A started :class:`viser.ViserServer` and its URL (viser's banner goes to stderr: stdout holds only
    what the command prints last)."""
    viser = require_viser()
    port = free_port(host, port)
    with contextlib.redirect_stdout(sys.stderr):
        server = viser.ViserServer(host=host, port=port, verbose=False)
    shown = "localhost" if host in ("0.0.0.0", "127.0.0.1") else host
    return server, f"http://{shown}:{server.get_port()}"


def stop_server(server: Any) -> None:
    with contextlib.redirect_stdout(sys.stderr):
        server.stop()


def serve_forever(server: Any) -> None:
    """Serve until Ctrl-C (then stop the server cleanly)."""
    try:
        while True:
            time.sleep(0.5)
    finally:
        stop_server(server)


def write_html(server: Any, path: str | Path) -> Path:
    """The scene as one self-contained HTML file (viser's client with the scene inside)."""
    path = Path(path)
    write_text(path, server.get_scene_serializer().as_html())
    return path
