"""What a text3d output folder is, read from the file each command leaves in it, so that a folder
given to the wrong command is named for what it is ("a text3d multiview folder") instead of failing
on a missing checkpoint or an unknown config key."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

MARKERS = (
    ("multiview.json", "text3d multiview"),
    ("batch.json", "text3d batch"),
    ("text3d_prior.json", "text3d train-prior"),
    ("export.json", "text3d export"),
    ("side_by_side.mp4", "text3d video"),
)
"""A file only one command's output folder holds, and that command (a run folder has none of them)."""


def folder_kind(path: str | Path) -> Optional[str]:
    """The command whose output folder ``path`` is (``"text3d multiview"``, ...), or None for a run or
    edit folder, or anything else."""
    path = Path(path)
    if not path.is_dir():
        return None
    for marker, command in MARKERS:
        if (path / marker).exists():
            return command
    if (path / "frames").is_dir() and (path / "video.mp4").is_file():  # a video folder without the comparison
        return "text3d video"
    return None
