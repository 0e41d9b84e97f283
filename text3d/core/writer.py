"""One writer per folder: a run folder (a run, an edit, a batch item, a batch directory) is written by
one process at a time.

The writer holds ``FOLDER/.writer``, a file created exclusively (``O_EXCL``) that holds its process
id. A second process that wants to write the folder is refused with one line naming that pid; a
lock whose process no longer runs (killed, crashed, its machine rebooted) is taken over. Because the
lock lives inside the folder, a writer also notices when the folder is removed or taken over under
it (:meth:`FolderWriter.check`) and stops instead of re-creating half a folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Optional

from .errors import RunDirError
from .io import claim_holder, create_claim

logger = logging.getLogger(__name__)

LOCK_NAME = ".writer"
"""The lock file inside a folder that a process writes."""


class FolderInUse(RunDirError):
    """Another live process writes the folder."""


def writer_of(folder: str | Path) -> Optional[int]:
    """The id of the live process that writes ``folder``, or None (no writer, or its process died)."""
    return claim_holder(Path(folder) / LOCK_NAME)


def refuse_if_in_use(folder: str | Path, what: str = "run folder") -> None:
    """Raise :class:`FolderInUse` when another live process writes ``folder`` (checked before any model
    loads, so a second writer stops at once)."""
    pid = writer_of(folder)
    if pid is not None and pid != os.getpid():
        raise FolderInUse(f"{what} {str(folder)!r} is being written by process {pid}; wait for it to finish "
                          f"(or stop it: kill -INT {pid}) before writing it again")


class FolderWriter:
    """This process's hold on a folder (see :func:`hold_folder`)."""

    def __init__(self, folder: Path, what: str):
        self.folder, self.what = folder, what

    def check(self) -> None:
        """Raise :class:`RunDirError` if the folder was removed, or another process took it, since this
        process started writing it (call before writing into it)."""
        if writer_of(self.folder) != os.getpid():
            raise RunDirError(f"{self.what} {str(self.folder)!r} was removed or taken over by another process "
                              "while this one wrote it; stopping without writing more")


@contextlib.contextmanager
def hold_folder(folder: str | Path, what: str = "run folder") -> Iterator[FolderWriter]:
    """Be the one writer of an existing ``folder`` for the duration of the block.

    Raises:
        FolderInUse: another live process writes it.
        RunDirError: the folder does not exist (it was removed).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunDirError(f"{what} {str(folder)!r} does not exist (was it removed?)")
    lock = folder / LOCK_NAME
    if not create_claim(lock):
        refuse_if_in_use(folder, what)
        raise FolderInUse(f"{what} {str(folder)!r}: could not take {lock}; try again")
    try:
        yield FolderWriter(folder, what)
    finally:
        if claim_holder(lock) == os.getpid():
            lock.unlink(missing_ok=True)
