"""Benchmark runs trained once and found again: the newest finished run of a prompt, preset and seed
under a root folder (``<root>/<config name>/<prompt slug>@<time>/``), trained there when missing.

Used by the benchmarks that measure many quickstart runs (``eval_export_topology.py``, ``eval_edit.py``):
a run counts only when it was trained with the current preset (every config key but :data:`RUN_KEYS`
equal) and reached its last step, so a changed preset retrains instead of measuring stale runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


RUN_KEYS = ("prompt", "seed", "output_dir", "resume", "export", "device", "trainer")
"""Config keys a planned run may differ in from its preset: what it is, where it went, and what it
wrote besides the model (the rest must match, or the run is stale)."""


def trained_with(saved: Dict[str, Any], preset: Dict[str, Any], seed: Optional[int] = None) -> bool:
    """Whether a run's ``saved`` config was the resolved ``preset`` (every key but :data:`RUN_KEYS`
    equal) and, if given, had ``seed``."""
    same = all(preset.get(k) == saved.get(k) for k in set(preset) | set(saved) if k not in RUN_KEYS)
    return same and (seed is None or saved["seed"] == seed)


def finished(run: Path, saved: Dict[str, Any]) -> bool:
    """Whether ``run`` holds a checkpoint of its ``saved`` config's last step (trained to the end)."""
    return (run / "ckpts" / f"step-{saved['steps']:06d}").is_dir()


def find_run(root: Path, config: str, prompt: str, seed: Optional[int] = None) -> Optional[Path]:
    """The newest finished run (a checkpoint of its last step) of ``prompt`` under ``root`` trained with
    the current ``config`` (and ``seed``), or None; other runs are passed over, with a line. Each
    run's config is read once."""
    from text3d.run.config import load_config, to_dict
    from text3d.core.paths import safe_component

    preset = to_dict(load_config(REPO / config))
    runs = sorted((root / safe_component(preset["name"])).glob(safe_component(prompt) + "@*"), reverse=True)
    for run in runs:
        if not (run / "config.yaml").is_file():
            continue
        saved = to_dict(load_config(run / "config.yaml"))
        if not finished(run, saved):
            continue
        if trained_with(saved, preset, seed):
            return run
        print(f"passed over: {run} was trained with another {config} or seed", flush=True)
    return None


def train_run(root: Path, config: str, prompt: str, seed: int,
              extra: Sequence[str] = ("export.enabled=false",)) -> Path:
    """Train ``prompt`` with ``config`` into ``root`` (one thread: the machine may be shared); ``extra``
    overrides may only touch :data:`RUN_KEYS` (the default skips the mesh export)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "text3d", "run", str(REPO / config), f"prompt={prompt}", f"seed={seed}",
            f"output_dir={root}", *extra]
    print(f"training {prompt!r} ({config}, seed {seed})", flush=True)
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    found = find_run(root, config, prompt, seed)
    if found is None:
        raise RuntimeError(f"no run of {prompt!r} under {root} after training")
    return found
