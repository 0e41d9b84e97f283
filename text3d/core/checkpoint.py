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
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from safetensors.torch import load_file, save_file

from .errors import RunDirError
from .io import _fsync, replace_symlink

FORMAT_VERSION = 1

logger = logging.getLogger(__name__)


class CorruptCheckpointError(RunDirError):
    """A checkpoint file is missing, truncated or malformed; the message names the file."""


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


def checkpoint_candidates(run_dir: Path) -> List[Path]:
    """Complete-looking checkpoints of a run, newest first: ``ckpts/last`` then the other
    ``step-*`` folders (hidden names are being written or deleted: never candidates)."""
    ckpts = Path(run_dir) / "ckpts"
    found = sorted((p for p in ckpts.glob("step-*") if p.is_dir() and not p.name.startswith(".")), reverse=True)
    last = ckpts / "last"
    if last.exists():
        target = last.resolve()
        found = [target] + [p for p in found if p.resolve() != target]
    return found


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest checkpoint folder of a run, unread (see :func:`load_latest_checkpoint`)."""
    candidates = [p for p in checkpoint_candidates(run_dir) if (p / "state.json").is_file()]
    return candidates[0] if candidates else None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read one checkpoint; a missing, truncated or malformed file raises :class:`CorruptCheckpointError`
    naming that file."""
    path = Path(path)
    st, js = path / "state.safetensors", path / "state.json"
    for f in (st, js):
        if not f.is_file():
            raise CorruptCheckpointError(f"checkpoint {path} is incomplete: {f.name} is missing")
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"{js} is damaged (not valid JSON: {e.msg if hasattr(e, 'msg') else e})") from None
    problem = _meta_problem(meta)
    if problem:
        raise CorruptCheckpointError(f"{js} is damaged ({problem})")
    try:
        tensors = load_file(str(st))
    except Exception as e:  # safetensors raises its own error types for truncated/garbled headers
        raise CorruptCheckpointError(f"{st} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    return Checkpoint(tensors, meta, path)


def _meta_problem(meta: Any) -> Optional[str]:
    if not isinstance(meta, dict):
        return f"expected a JSON object, got {type(meta).__name__}"
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"'step' must be a non-negative integer, got {step!r}"
    for key, kind in (("optimizer_param_groups", list), ("skipped_steps", list), ("last_losses", dict)):
        if key in meta and not isinstance(meta[key], kind):
            return f"{key!r} must be a {kind.__name__}, got {type(meta[key]).__name__}"
    if "elapsed_s" in meta and not isinstance(meta["elapsed_s"], (int, float)):
        return f"'elapsed_s' must be a number, got {meta['elapsed_s']!r}"
    return None


def load_latest_checkpoint(run_dir: Path, check: Optional[Callable[[Checkpoint], None]] = None) -> Optional[Checkpoint]:
    """The newest intact checkpoint of a run: a damaged one is reported with a warning naming the
    file, and the next older one is tried. ``check`` may raise :class:`CorruptCheckpointError` to
    reject a checkpoint that reads but cannot be used. Returns None when the run has no checkpoint;
    raises :class:`RunDirError` when it has some and every one is damaged."""
    candidates = checkpoint_candidates(run_dir)
    problems = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
            if check is not None:
                check(ckpt)
        except CorruptCheckpointError as e:
            problems.append(str(e))
            logger.warning("%s; trying an older checkpoint", e)
            continue
        if problems:
            logger.warning("using the older intact checkpoint %s (step %d)", path, ckpt.meta["step"])
        return ckpt
    if problems:
        raise RunDirError(f"every checkpoint of {run_dir} is damaged ({problems[0]}"
                          f"{f'; and {len(problems) - 1} more' if len(problems) > 1 else ''}); "
                          "the run cannot continue from them: start it again")
    return None
