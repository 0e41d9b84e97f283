"""Checkpoints: safetensors for tensors + JSON for everything else, written atomically.

Layout inside a run directory::

    ckpts/step-000500/state.safetensors   model, optimizer and RNG tensors
    ckpts/step-000500/state.json          step, optimizer hyper-parameters, counters, versions
    ckpts/last -> step-000500             always the newest complete checkpoint

A checkpoint directory is assembled under a temporary name and renamed into place, then ``last``
is re-pointed, so a run killed at any instant leaves only complete checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors.torch import load_file, save_file

from .errors import RunDirError
from .io import _fsync, replace_symlink

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    tensors: Dict[str, torch.Tensor]
    meta: Dict[str, Any]
    path: Path


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[Dict[str, torch.Tensor], list]:
    """Split an optimizer's state into tensors (``optim.<param index>.<name>``) and JSON groups."""
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{idx}.{name}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], groups: list) -> None:
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in groups]
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(ckpt_dir: Path, step: int, tensors: Dict[str, torch.Tensor], meta: Dict[str, Any],
                    keep: int = 2) -> Path:
    """Write ``ckpt_dir/step-XXXXXX`` atomically, re-point ``last``, prune old ones."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    final = ckpt_dir / name
    tmp = ckpt_dir / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "step": step, **meta}, indent=2))
    for f in tmp.iterdir():
        _fsync(f)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    replace_symlink(ckpt_dir / "last", name)
    _prune(ckpt_dir, keep)
    return final


def _prune(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints, and the leftovers of killed writers/pruners.

    ``rmtree`` is not atomic: a run killed while it deletes would leave a visible, half-deleted
    ``step-*`` folder that a reader (or resume) could take for a checkpoint. So each old folder is
    first renamed to a hidden name (atomic), then deleted; a leftover hidden folder is removed by
    the next prune.
    """
    done = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
    for old in done[: max(0, len(done) - max(keep, 1))]:
        doomed = ckpt_dir / f".{old.name}.del-{os.getpid()}"
        try:
            os.replace(old, doomed)
        except OSError:  # vanished meanwhile, or a leftover of the same name: try again next time
            continue
        shutil.rmtree(doomed, ignore_errors=True)
    for stale in ckpt_dir.glob(".step-*.del-*"):  # a prune killed mid-delete; never in use
        shutil.rmtree(stale, ignore_errors=True)
    for stale in ckpt_dir.glob(".step-*.tmp-*"):  # left by a killed writer
        if stale.is_dir() and str(os.getpid()) not in stale.name:
            shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    last = run_dir / "ckpts" / "last"
    if last.exists():
        return last.resolve()
    # hidden names (.step-*.tmp-*, .step-*.del-*) are being written or deleted: never candidates
    done = sorted(p for p in (run_dir / "ckpts").glob("step-*")
                  if not p.name.startswith(".") and (p / "state.json").is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path) -> Checkpoint:
    st, js = path / "state.safetensors", path / "state.json"
    if not (st.is_file() and js.is_file()):
        raise RunDirError(f"checkpoint {path} is incomplete (needs state.safetensors and state.json)")
    return Checkpoint(load_file(str(st)), json.loads(js.read_text()), path)
