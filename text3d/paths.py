"""User-given pieces of output paths, made safe: one function for every name, tag, prompt slug and
batch / edit / multiview / video item name, so that no output can land outside ``output_dir``.
"""

from __future__ import annotations

import re
from pathlib import Path

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
