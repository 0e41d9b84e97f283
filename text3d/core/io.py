"""Atomic file writing: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Type

from .errors import Text3DError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension); on success it replaces ``path``.

    The temporary name keeps the suffix so that writers that pick a format by extension
    (imageio, trimesh) work. On an exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def staged_folder(final: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``final``; when the block succeeds it takes the place of
    ``final`` (the previous folder is renamed aside, then deleted), so a reader sees either the whole
    old set of files or the whole new one. A writer killed half way leaves only hidden folders, which
    the next call cleans up (:func:`recover_folder`), putting back a previous folder that a kill
    between the two renames left aside."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp makes it private
    try:
        yield staging
        aside = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, aside)
        os.replace(staging, final)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def recover_folder(final: str | Path) -> None:
    """Undo what killed :func:`staged_folder` calls left beside ``final``: put back a folder left aside
    whose final folder is missing, and delete the hidden staging / aside folders of processes that no
    longer run (of any final folder in the same parent: a killed command's timestamped output too)."""
    parent = Path(final).parent
    if not parent.is_dir():
        return
    asides = sorted((p for p in parent.glob(".*.old-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for aside in reversed(asides):  # the newest first
        target = parent / aside.name[1:].rsplit(".old-", 1)[0]
        if not target.exists():
            os.replace(aside, target)
    for path in [*parent.glob(".*.old-*"), *parent.glob(".*.tmp-*")]:
        if path.is_dir() and not _pid_alive(path.name):
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(name: str) -> bool:
    """Whether the process whose id is in a hidden temporary's name (``.x.tmp-PID-...``) still runs."""
    try:
        pid = int(name.rsplit(".", 1)[-1].split("-")[1])
    except (IndexError, ValueError):
        return False
    return pid != os.getpid() and pid_running(pid)


def pid_running(pid: int) -> bool:
    """Whether a process with id ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


CLAIM_GRACE_S = 60.0
"""A claim file still empty after this long was left by a process killed while creating it."""


def try_claim(result: str | Path) -> bool:
    """Take the work whose result will be written at ``result`` for this process.

    The claim is ``<result>.claim``, created exclusively (``O_EXCL``) and holding this process's id,
    so of several processes sharing a folder exactly one does each piece of work. Returns True when
    this process now holds the claim, False while another running process (or this one, already)
    holds it. A claim whose process no longer runs is taken over. :func:`release_claim` ends it.
    """
    return create_claim(Path(f"{result}.claim"))


def release_claim(result: str | Path) -> None:
    """End this process's claim on ``result`` (see :func:`try_claim`)."""
    Path(f"{result}.claim").unlink(missing_ok=True)


def create_claim(lock: Path) -> bool:
    """Create ``lock`` exclusively with this process's id in it; a lock whose process no longer runs
    is taken over. False while a running process (this one included) holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _claim_held(lock):
                return False
            lock.unlink(missing_ok=True)  # its process died: take the work over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def claim_holder(lock: Path) -> Optional[int]:
    """The id of the running process that holds ``lock``, or None (no lock, or its process died)."""
    try:
        text = lock.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid_running(pid) else None


def _claim_held(lock: Path) -> bool:
    try:
        text, age = lock.read_text().strip(), time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if not text:  # being written this instant, or its writer was killed before it wrote
        return age < CLAIM_GRACE_S
    try:
        return pid_running(int(text))
    except ValueError:
        return False


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json_object(path: str | Path, error: Type[Text3DError] = Text3DError, fix: str = "") -> Dict[str, Any]:
    """A JSON object from a file; a missing, non-UTF-8, truncated or non-object file raises ``error``
    with one line naming the file (and ``fix``, what to do about it)."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise error(f"{path} is missing{'; ' + fix if fix else ''}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        what = e.strerror if isinstance(e, OSError) else ("not UTF-8" if isinstance(e, UnicodeDecodeError)
                                                          else f"not valid JSON: {e.msg} at line {e.lineno}")
        raise error(f"{path} is damaged ({what}){'; ' + fix if fix else ''}") from None
    if not isinstance(data, dict):
        raise error(f"{path} is damaged (expected a JSON object, got {type(data).__name__}){'; ' + fix if fix else ''}")
    return data


def replace_symlink(link: str | Path, target: str) -> None:
    """Point ``link`` at ``target`` (relative), replacing any old link atomically."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
