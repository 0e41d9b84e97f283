"""``text3d view PATH [key=value ...]``: a run, an edit, a multi-view set or a batch in the browser."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import Verb, register

FLAGS = ("port", "host", "html", "resolution")
"""Options that set the setting of the same name (``--port 8081`` = ``port=8081``)."""


@register
class ViewVerb(Verb):
    name = "view"
    help = "look at a run, edit, multi-view set or batch in the browser (viser), or save it as HTML"
    description = ("Serve PATH in the browser with viser: Gaussians as splats, a NeRF rendered from your camera "
                   "(and its exported mesh), a checkpoint menu, the prompt, metrics, validation views and loss "
                   "curves; a multiview folder as images on their cameras; a batch as a gallery. Prints the URL "
                   "last and serves until Ctrl-C. With --html FILE, writes one self-contained HTML page instead. "
                   "Needs the viewer extra: pip install -e \".[viewer]\".")
    epilog = ("examples:\n"
              "  text3d view outputs/quickstart/a_red_cube@20260101-120000\n"
              "  text3d view outputs/quickstart/batch@20260101-120000 --port 8081\n"
              "  text3d view RUN_DIR --html scene.html\n"
              "settings: port (8080; a port in use moves to the next free one), host (127.0.0.1), resolution "
              "(256), html")
    items_metavar = "PATH [key=value ...]"
    items_help = "a run, edit, multiview or batch folder, then settings"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, help="port to serve on (default: 8080, or the next free one)")
        parser.add_argument("--host", help="interface to listen on (default: 127.0.0.1; 0.0.0.0 for other machines)")
        parser.add_argument("--html", metavar="FILE", help="write the scene as one self-contained HTML file and exit")
        parser.add_argument("--resolution", type=int, help="NeRF frames' longest side at rest, pixels (default: 256)")

    def config(self, args: argparse.Namespace) -> Any:
        from text3d.core.errors import Text3DError
        from text3d.view import load_view_config

        items = list(args.items)
        if not items or "=" in items[0]:
            raise Text3DError("view: give the folder first: text3d view PATH [key=value ...]")
        flags = [f"{name}={getattr(args, name)}" for name in FLAGS if getattr(args, name, None) is not None]
        return load_view_config(items[0], [*flags, *items[1:]])

    def run(self, args: argparse.Namespace) -> int:
        from text3d.view.app import view

        cfg = self.config(args)
        try:
            written = view(cfg, ready=lambda url: print(url, flush=True))
        except KeyboardInterrupt:
            print("viewer stopped", file=sys.stderr)
            return 0
        if written is not None:
            print(written)
        return 0
