"""Start or resume a batch: plan it, connect to Ray, write the batch directory, drive the runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from text3d.core.checkpoint import latest_checkpoint
from text3d.core.config_files import parse_overrides
from text3d.core.errors import ConfigError
from text3d.core.writer import hold_folder, refuse_if_in_use
from text3d.run.config import RUN_SCHEMA, Config, check_resume_overrides

from .driver import BatchDriver, ProgressCallback
from .engine import RayEngine, import_ray
from .state import BatchOptions, BatchState, load_batch, plan_batch, replan_lost, write_item_configs
from .summary import write_summary


def start_batch(config_path: str | Path, prompts_path: str | Path, overrides: List[str], options: BatchOptions,
                on_progress: Optional[ProgressCallback] = None, **driver_kwargs: Any) -> BatchState:
    """Plan a batch, connect to Ray, write the batch directory and run every item.

    Everything that can be wrong with the input (Ray missing, CONFIG, PROMPTS, command-line
    overrides, the address, resources no node has) raises :class:`~text3d.core.errors.Text3DError`
    before anything is written; an item whose own overrides the config rejects fails alone.
    """
    import_ray()
    state, configs = plan_batch(config_path, prompts_path, overrides, options)
    return _run(state, lambda: write_item_configs(state, configs), on_progress, driver_kwargs)


def resume_batch(batch_dir: str | Path, option_changes: Optional[Dict[str, Any]] = None,
                 overrides: Sequence[str] = (), on_progress: Optional[ProgressCallback] = None,
                 **driver_kwargs: Any) -> BatchState:
    """Continue a batch from its directory: finished runs are skipped, the others continue from their
    last checkpoints (failed ones get ``max_retries`` more retries).

    Args:
        batch_dir: the folder ``text3d batch`` printed.
        option_changes: stored options to replace (``{"cpus_per_run": 2}``; None values are ignored).
        overrides: ``key=value`` applied to every unfinished item's config (``steps=800``), as
            ``text3d run resume=DIR steps=800`` does for one run; checked before anything runs.
    """
    refuse_if_in_use(batch_dir, "batch folder")
    import_ray()
    state = load_batch(batch_dir)
    changes = {k: v for k, v in (option_changes or {}).items() if v is not None}
    state.options = dataclasses.replace(state.options, **changes)
    configs = {**unfinished_configs(state, overrides), **replan_lost(state, list(overrides))}

    def write_first() -> None:
        write_item_configs(state, configs)
        state.overrides = state.overrides + [o for o in overrides if o not in state.overrides]

    return _run(state, write_first, on_progress, driver_kwargs)


def unfinished_configs(state: BatchState, overrides: Sequence[str]) -> Dict[str, Config]:
    """Each unfinished item's saved config with ``overrides`` applied (validated; none when no overrides).
    The overrides follow the resume rule of a run (:func:`~text3d.run.config.check_resume_overrides`),
    and ``steps`` stays at or above the step each item continues from."""
    if not overrides:
        return {}
    check_resume_overrides(parse_overrides(overrides), "batch")
    out = {}
    for item in state.items:
        saved = state.batch_dir / item.item / "config.yaml"
        if item.status != "done" and saved.is_file():
            try:
                out[item.item] = RUN_SCHEMA.load(saved, overrides, saved=True)
            except ConfigError as e:
                raise ConfigError(f"item {item.item!r}: {e}") from None
            _check_steps(item.item, saved.parent, out[item.item].steps)
            item.total_steps = out[item.item].steps
    return out


def _check_steps(item: str, run_dir: Path, steps: int) -> None:
    last = latest_checkpoint(run_dir)
    reached = int(last.name.split("-")[-1]) if last is not None and last.name.startswith("step-") else 0
    if steps < reached:
        raise ConfigError(f"steps: {steps} is below step {reached}, where item {item!r} continues from; a resume may "
                          f"keep or raise steps (steps >= {reached})")


def _run(state: BatchState, write_first, on_progress: Optional[ProgressCallback],
         driver_kwargs: Dict[str, Any]) -> BatchState:
    engine = RayEngine(state.options)
    engine.start()
    try:
        write_first()
        write_summary(state, contact_sheet=False)
        with hold_folder(state.batch_dir, "batch folder"):  # one driver per batch; runs hold their own folders
            return BatchDriver(state, engine, on_progress=on_progress, **driver_kwargs).run()
    finally:
        engine.stop()
