"""A verb of the ``text3d`` command as a registered class: its texts, its own flags, the typed config
it runs with (what ``--print-config`` prints) and what it does. :func:`register` adds one to
:data:`VERBS`; the command line is built from that table, so every verb gets the common flags."""

from __future__ import annotations

import argparse
from typing import Any, Dict, Type

from .common import split_items


class Verb:
    """One sub-command (``text3d NAME ...``); subclasses set the texts and implement the methods."""

    name = ""
    help = ""
    description = ""
    epilog = ""
    items_metavar = "CONFIG [key.path=value ...]"
    items_help = "a YAML preset followed by key.path=value overrides"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The verb's own flags (the common ones are added for every verb)."""

    def config(self, args: argparse.Namespace) -> Any:
        """The typed config this command would run with; loads no model and writes nothing."""
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        """Do the work; print the output directory last; return the exit status."""
        raise NotImplementedError

    @staticmethod
    def items(args: argparse.Namespace):
        """``(config path or None, overrides)`` of the command line."""
        return split_items(args.items)


VERBS: Dict[str, Verb] = {}
"""The verbs, in the order ``text3d --help`` lists them."""


def register(cls: Type[Verb]) -> Type[Verb]:
    """Class decorator: add a verb to :data:`VERBS` (once)."""
    if cls.name in VERBS:
        raise ValueError(f"verb {cls.name!r} registered twice")
    VERBS[cls.name] = cls()
    return cls
