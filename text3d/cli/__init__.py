"""The ``text3d`` command: one sub-command per verb (:mod:`.run`, :mod:`.export`, :mod:`.edit`,
:mod:`.multiview`, :mod:`.video`, :mod:`.batch`, :mod:`.view`, :mod:`.train_prior`), each a registered
:class:`~text3d.cli.common.Verb` with one set of conventions (:mod:`.common`): ``CONFIG [key=value ...]``,
the flags ``-h``, ``--no-progress`` and ``--print-config``, one ``error:`` line and exit status 2 for
bad input, the output directory printed last.

May import: every other package, but only inside functions, so that ``import text3d.cli`` and
``text3d --help`` load no model code (no torch, ray or opencv).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Iterable, List, Optional, Sequence

from text3d.core.errors import ConfigError, Text3DError

from .common import VERBS, HelpFormatter, OneLineParser, Verb, add_common_flags, other_command, print_config


VERB_MODULES = {"run": "run", "export": "export", "edit": "edit", "multiview": "multiview", "video": "video",
                "batch": "batch", "view": "view", "train-prior": "train_prior"}
"""Each verb's module, in ``--help`` order. A command imports only its own verb's module (its class
registers itself there); ``text3d --help`` imports them all."""


def load_verbs(names: Iterable[str] = tuple(VERB_MODULES)) -> List[Verb]:
    """The registered verbs called ``names``, in ``--help`` order (their modules imported on first use)."""
    names = set(names)
    for name in names:
        __import__(f"{__name__}.{VERB_MODULES[name]}")
    return [VERBS[name] for name in VERB_MODULES if name in names]


def chosen_verb(argv: Sequence[str]) -> Optional[str]:
    """The verb a command line names: its first word that is not an option (None if it names none)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in VERB_MODULES else None
    return None


def build_parser(verbs: Optional[Iterable[str]] = None) -> argparse.ArgumentParser:
    """The ``text3d`` parser with the sub-commands ``verbs`` (default: all)."""
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
    for verb in load_verbs(VERB_MODULES if verbs is None else verbs):
        p = sub.add_parser(verb.name, help=verb.help, description=verb.description, epilog=verb.epilog or None,
                           formatter_class=HelpFormatter)
        p.add_argument("items", nargs="*", metavar=verb.items_metavar, help=verb.items_help)
        add_common_flags(p)
        verb.add_arguments(p)
        p.set_defaults(verb=verb)
    return parser


def _refuse_other_commands_config(verb: Verb, args: argparse.Namespace) -> None:
    """A CONFIG that sets keys this verb does not take but another verb does is refused first, naming
    that command (see :func:`~text3d.cli.common.other_command`)."""
    items = getattr(args, "items", None) or []
    if not items or "=" in items[0] or getattr(args, "resume", None):
        return
    message = other_command(verb, items[0], load_verbs)
    if message is not None:
        raise ConfigError(message)


def _quiet_libraries() -> None:
    """transformers/diffusers print import-time notices that are not about the user's run."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def _version() -> str:
    from text3d import __version__

    return __version__


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb_name = chosen_verb(argv)
    parser = build_parser(None if verb_name is None else [verb_name])
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
        _refuse_other_commands_config(verb, args)
        return print_config(verb.config(args)) if args.print_config else verb.run(args)
    except Text3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before any work started (loading models): nothing to save
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
