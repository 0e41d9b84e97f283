"""What every verb shares: the :class:`Verb` base class and its registry (:data:`VERBS`), the parser
with the one-line error convention, the common flags, the ``CONFIG [key=value ...]`` items,
progress bars, and printing a config.

The conventions, the same for every verb:

- ``text3d VERB CONFIG [key.path=value ...]`` (``export`` takes a run folder instead of a config);
- common flags: ``-h``, ``--no-progress``, ``--print-config`` (validate, print the resolved config,
  load no model, write nothing);
- a user mistake is one ``error:`` line on stderr and exit status 2, with nothing written;
- on success the output directory (or file) is the last line printed; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

COMMON_FLAGS = ("-h", "--no-progress", "--print-config")
"""Flags every verb (and ``text3d`` itself) accepts."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with the project's error convention: one ``error:`` line (no usage block), exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """A one-paragraph text (a verb's description) is wrapped to the terminal; a text with line
    breaks (an epilog of examples) is kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def add_common_flags(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``--no-progress`` and ``--print-config`` (``-h`` is argparse's). On a verb's parser the flags
    default to "not given" so that they may also come before the verb (``text3d --no-progress run``)."""
    default = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--no-progress", action="store_true", help="no progress bars", **default)
    parser.add_argument("--print-config", action="store_true",
                        help="validate the config (no model loads, nothing is written), print it resolved, and exit",
                        **default)


def split_items(items: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """``CONFIG key=value ...`` -> (the config path or None, the overrides)."""
    if items and "=" not in items[0]:
        return items[0], list(items[1:])
    return None, list(items)


class Bars:
    """Progress bars made on first use (so a refused input leaves no empty bar), one per label, all
    closed on exit; while a bar is shown, log lines print above it. With ``enabled=False``
    (``--no-progress``) every report is ignored; when stderr is not a terminal no bar is drawn."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bars: Dict[str, Any] = {}
        self._logging = ExitStack()

    def update(self, label: str, step: int, total: Optional[int], unit: str = "step", **postfix: Any) -> None:
        """Move bar ``label`` to ``step`` of ``total`` (None: unknown total), showing ``postfix``."""
        if not self.enabled:
            return
        bar = self._bars.get(label)
        if bar is None:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # disable=None: no bar when stderr is not a terminal (a log file, a pipe), as tqdm does
            bar = self._bars[label] = tqdm(total=total, desc=label, unit=unit, dynamic_ncols=True, disable=None)
            if not bar.disable and len(self._bars) == 1:
                self._logging.enter_context(logging_redirect_tqdm())
        bar.update(step - bar.n)
        if postfix:
            bar.set_postfix(refresh=False, **postfix)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self._logging.close()


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Bars]:
    """:class:`Bars` for the duration of a command."""
    bars = Bars(enabled)
    try:
        yield bars
    finally:
        bars.close()


def print_config(cfg: Any) -> int:
    """``--print-config``: the resolved config as YAML on stdout."""
    from text3d.core.schema import to_yaml

    print(to_yaml(cfg), end="")
    return 0


def fit_and_print(run: Any, no_progress: bool, verb: str) -> int:
    """Train ``run`` with a progress bar (and the live viewer with ``viewer=true``); print its folder
    last (0), or the resume command on Ctrl-C (130)."""
    viewer = _live_viewer(run) if getattr(run.cfg, "viewer", False) else None
    try:
        with progress_bars(not no_progress) as bars:
            def progress(step: int, losses: Dict[str, float]) -> None:
                bars.update(run.cfg.name, step, run.cfg.steps, loss=f"{losses['loss']:.4g}")
                if viewer is not None:
                    viewer(step, losses)

            try:
                run.fit(progress=progress)
            except KeyboardInterrupt:
                bars.close()
                print(f"interrupted at step {run.step}; continue with: text3d {verb} resume={run.run_dir}",
                      file=sys.stderr)
                return 130
    finally:
        if viewer is not None:
            viewer.close()
    print(run.run_dir)
    return 0


def _live_viewer(run: Any) -> Any:
    from text3d.view.live import LiveViewer

    viewer = LiveViewer(run, port=run.cfg.viewer_port)
    print(f"viewer: {viewer.url} (while the run trains)", file=sys.stderr, flush=True)
    return viewer


ProgressFn = Callable[..., None]


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

    def schema(self) -> Any:
        """The :class:`~text3d.core.schema.Schema` of this verb's CONFIG file (None: it takes none)."""
        return None

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


class TrainingVerb(Verb):
    """A verb that trains a scene (``run``, ``edit``): ``--viewer`` opens the live viewer."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--viewer", action="store_true",
                            help="open the live viewer while training (= viewer=true; port: viewer_port=8080)")

    @staticmethod
    def items(args: argparse.Namespace):
        config_path, overrides = Verb.items(args)
        return config_path, [*overrides, *(["viewer=true"] if getattr(args, "viewer", False) else [])]


VERBS: Dict[str, Verb] = {}
"""The verbs, in the order ``text3d --help`` lists them."""


def register(cls: Type[Verb]) -> Type[Verb]:
    """Class decorator: add a verb to :data:`VERBS` (once)."""
    if cls.name in VERBS:
        raise ValueError(f"verb {cls.name!r} registered twice")
    VERBS[cls.name] = cls()
    return cls


def other_command(verb: Verb, config_path: str, all_verbs: Callable[[], Sequence[Verb]]) -> Optional[str]:
    """When ``config_path`` (a YAML file given to ``verb``) sets keys ``verb`` does not take but another
    verb does, one line naming the file and that command; None otherwise (``all_verbs`` is called only
    then, so a good config costs one read of its keys)."""
    from text3d.core.config_files import file_layers, merge_layers

    if verb.schema() is None or not Path(config_path).is_file():
        return None
    try:
        keys = set(merge_layers(file_layers(config_path)))
    except Exception:  # the file's own error is the better message, given when the verb reads it
        return None
    foreign = keys - _known(verb.schema())
    if not foreign:
        return None
    owners = [v for v in all_verbs() if v.schema() is not None and keys <= _known(v.schema())]
    if not owners:
        return None
    smallest = min(len(_known(v.schema())) for v in owners)  # a run preset is run's, not edit's (a superset)
    names = " / ".join(f"text3d {v.name}" for v in owners if len(_known(v.schema())) == smallest)
    return (f"{config_path} is a config of '{names}' (it sets {', '.join(sorted(foreign)[:4])}, which "
            f"'text3d {verb.name}' does not take); run it with {names.split(' / ')[0]}, or give "
            f"'text3d {verb.name}' one of its own presets")


def _known(schema: Any) -> set:
    return {*schema.top_keys(), *schema.sections, *schema.shorthands, "base"}
