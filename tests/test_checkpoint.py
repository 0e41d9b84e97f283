"""Checkpoint folders: a process killed while pruning never leaves a visible, half-deleted checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import text3d.core.checkpoint as checkpoint
from text3d.core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even ``ignore_errors``)."""


def _rmtree_killed_midway(path, ignore_errors=False, onerror=None):
    """Delete one file of the folder, then 'die' (what a SIGKILL during rmtree leaves)."""
    first = sorted(Path(path).iterdir())[-1]  # state.safetensors or state.json: either breaks it
    first.unlink()
    raise Killed


def _save(run_dir: Path, step: int) -> Path:
    return save_checkpoint(run_dir / "ckpts", step, {"w": torch.full((3,), float(step))}, {}, keep=2)


def test_a_prune_killed_midway_leaves_only_complete_visible_checkpoints(tmp_path, monkeypatch):
    for step in (1, 2):
        _save(tmp_path, step)
    with monkeypatch.context() as m:
        m.setattr(checkpoint.shutil, "rmtree", _rmtree_killed_midway)
        with pytest.raises(Killed):
            _save(tmp_path, 3)  # written, then pruning step 1 dies half-way
    visible = sorted(p.name for p in (tmp_path / "ckpts").glob("step-*"))
    assert visible == ["step-000002", "step-000003"]
    for name in visible:
        load_checkpoint(tmp_path / "ckpts" / name)  # complete
    (tmp_path / "ckpts" / "last").unlink()  # the fallback scan must skip the hidden leftover too
    assert latest_checkpoint(tmp_path).name == "step-000003"
    _save(tmp_path, 4)  # the next prune removes the leftover
    names = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert names == ["last", "step-000003", "step-000004"]
    assert load_checkpoint(latest_checkpoint(tmp_path)).meta["step"] == 4
    assert shutil.rmtree is not _rmtree_killed_midway
