"""User-given pieces of output paths, made safe: one function for every name, tag, prompt slug and
batch / edit / multiview / video item name, so that no output can land outside ``output_dir``.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Callable

from .errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_component(text: str, fallback: str = "run", max_len: int = 48) -> str:
    """One path component made of ``[A-Za-z0-9._-]`` only: other runs of characters (``/``, spaces,
    ``:``, non-ASCII) become ``_``; leading dots, dashes and underscores are dropped, so the result is
    never ``..``, hidden, or an option; empty results give ``fallback``.

    ``"a red cube"`` -> ``a_red_cube``; ``"../esc"`` -> ``esc``; ``"/tmp/x"`` -> ``tmp_x``.
    """
    slug = _UNSAFE.sub("_", str(text)).lstrip("._-").rstrip("_")
    slug = slug[:max_len].rstrip("._-")
    return slug or fallback


def inside(root: str | Path, *parts: str) -> Path:
    """``root / part / ...`` for parts built from :func:`safe_component` pieces (``tag@stamp``);
    raises :class:`ConfigError` if a part is not one plain component, or the result resolves
    outside ``root`` (through a symlink inside it)."""
    root = Path(root)
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise ConfigError(f"output path piece {part!r} is not a plain folder name")
    path = root.joinpath(*parts)
    real_root, real = root.resolve(), path.resolve()
    if real != real_root and real_root not in real.parents:
        raise ConfigError(f"output path {str(path)!r} resolves to {str(real)!r}, outside output_dir {str(root)!r}; "
                          "pick another name/tag or remove the symlink")
    return path


def claim_output(path: str | Path, is_ours: Callable[[Path], bool], replace: bool, key: str,
                 what: str = "output") -> None:
    """Refuse an output location that holds anything but this command's own earlier output.

    A path that does not exist or is an empty folder is free. A folder that ``is_ours`` recognises
    (an earlier output of the same command) may be replaced only with ``replace`` (the caller
    then swaps it atomically). Anything else — a file, a link, a folder with other files — is
    refused with one line, and nothing is touched.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise ConfigError(f"{key}: {str(path)!r} is a file; the {what} is written as a folder and the file "
                          "is left alone — pick a new folder name")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    if is_ours(path):
        if not replace:
            raise ConfigError(f"{key}: {str(path)!r} holds an earlier {what}; add --replace to overwrite it "
                              "(atomically), or pick a new folder")
        return
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise ConfigError(f"{key}: {str(path)!r} holds other files ({len(entries)} entries: {shown}); "
                      f"it is not an earlier {what}, so it is left alone — pick a new or empty folder")


def check_writable(path: str | Path, key: str) -> None:
    """Raise :class:`ConfigError` unless a folder can be created at or under ``path``: checked before
    any model loads or work starts, by making (and removing) a probe folder in the nearest existing
    ancestor, so a file in the way, ``/proc`` or a read-only mount is found at once."""
    path = Path(path)
    probe_in = path
    while not probe_in.exists() and not probe_in.is_symlink() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise ConfigError(f"{key}: cannot write under {str(path)!r}: {str(probe_in)!r} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".text3d-probe-", dir=probe_in))
    except OSError as e:
        raise ConfigError(f"{key}: cannot write under {str(path)!r} ({e.strerror or type(e).__name__} in "
                          f"{str(probe_in)!r}); pick a writable folder") from None


def stamped_dir(root: str | Path, name: str, tag: str, name_fallback: str = "text3d") -> Path:
    """``<root>/<name>/<tag>@<YYYYmmdd-HHMMSS>`` (name sanitised, ``tag`` already a safe component), made
    unique with a ``-k`` counter if the name is taken; not created (see :func:`claim_new_dir`)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = inside(root, safe_component(name, fallback=name_fallback), f"{tag}@{stamp}")
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def claim_new_dir(path: str | Path) -> Path:
    """Create ``path`` as a new folder, or ``path-1``, ``path-2``, ... if another process took the name
    first (``mkdir`` without ``exist_ok`` is atomic: two runs started in the same second never share
    a folder)."""
    base, k = Path(path), 1
    candidate = base
    base.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, k = base.with_name(f"{base.name}-{k}"), k + 1
