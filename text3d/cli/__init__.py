"""The ``text3d`` command: one sub-command per verb (:mod:`.run`, :mod:`.export`, :mod:`.edit`,
:mod:`.multiview`, :mod:`.video`, :mod:`.batch`, :mod:`.train_prior`), each a registered
:class:`~text3d.cli.verbs.Verb` with one set of conventions (:mod:`.common`): ``CONFIG [key=value ...]``,
the flags ``-h``, ``--no-progress`` and ``--print-config``, one ``error:`` line and exit status 2 for
bad input, the output directory printed last.

May import: every other package, but only inside functions, so that ``import text3d.cli`` and
``text3d --help`` load no model code (no torch, ray or opencv).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from text3d.core.errors import Text3DError

from . import run, export, edit, multiview, video, batch, train_prior  # noqa: F401,E402  (register the verbs, in --help order)
from .common import OneLineParser, add_common_flags, print_config
from .verbs import VERBS


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="text3d",
        description="Text to 3D with a frozen diffusion prior (SDS on a NeRF), on CPU or GPU. Every verb takes "
                    "CONFIG [key.path=value ...] and the common flags below.",
        epilog="Start with: text3d run configs/quickstart.yaml   (see 'text3d run --help')",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_common_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for verb in VERBS.values():
        p = sub.add_parser(verb.name, help=verb.help, description=verb.description, epilog=verb.epilog or None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("items", nargs="*", metavar=verb.items_metavar, help=verb.items_help)
        add_common_flags(p)
        verb.add_arguments(p)
        p.set_defaults(verb=verb)
    return parser


def _quiet_libraries() -> None:
    """transformers/diffusers print import-time notices that are not about the user's run."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def _version() -> str:
    from text3d import __version__

    return __version__


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    # Overrides may come after options (``run cfg.yaml --no-progress steps=5``): argparse leaves
    # them over, and they join the positional items.
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or not hasattr(args, "items")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.items = list(args.items) + extra
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("text3d").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    _quiet_libraries()
    verb = getattr(args, "verb", None)
    if verb is None:
        parser.print_help()
        return 2
    try:
        return print_config(verb.config(args)) if args.print_config else verb.run(args)
    except Text3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before any work started (loading models): nothing to save
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
