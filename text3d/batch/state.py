"""A batch directory and what is known about its items: the plan (``batch.json``) and each item's
run folder. Everything a restarted driver needs is on disk here: ``batch.json`` holds the options
and the item list, each valid item's folder holds its resolved ``config.yaml`` (written before any
run starts), its checkpoints and, once finished, its ``metrics.json``.

::

    outputs/<name>/batch@<YYYYmmdd-HHMMSS>/
      batch.json  batch.csv  contact_sheet.png
      <item>/     an ordinary run directory (config.yaml, ckpts/, turntable.*, metrics.json, batch.log)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from text3d.core.config_files import literal_layer
from text3d.core.errors import RunDirError, Text3DError
from text3d.core.io import read_json_object, write_text
from text3d.core.paths import inside, stamped_dir
from text3d.run.config import RUN_SCHEMA, Config, to_yaml

from .items import BatchItem, read_items

FORMAT_VERSION = 1
logger = logging.getLogger(__name__)

STATUSES = ("pending", "running", "done", "failed", "interrupted")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class BatchOptions:
    """How runs are scheduled (the ``text3d batch`` options)."""

    gpus_per_run: float = 0.0
    """GPUs Ray reserves for each run (``num_gpus`` of its task)."""
    cpus_per_run: float = 1.0
    """CPU cores Ray reserves for each run (``num_cpus``; also torch's thread count in the run)."""
    max_retries: int = 2
    """Retries of a failed run (from its last checkpoint) before it is recorded as failed."""
    address: Optional[str] = None
    """Ray cluster address (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); None = a local instance."""


@dataclass
class ItemState:
    """One item of the batch and what happened to it (one row of ``batch.json`` / ``batch.csv``)."""

    item: str
    line: int
    prompt: str
    overrides: Dict[str, Any]
    config: str
    status: str = "pending"
    attempts: int = 0
    error: Optional[str] = None
    steps: int = 0
    total_steps: int = 0
    wall_time_s: Optional[float] = None
    metrics: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    """One entry per attempt: start/end times, step resumed from, outcome, worker pid, node, resources."""
    rejected: bool = False
    """The config rejected this item when the batch was planned: it has no run folder, and never runs."""


@dataclass
class BatchState:
    """The batch: where it lives, how it was asked for, and its items."""

    batch_dir: Path
    config: str
    overrides: List[str]
    prompts: str
    options: BatchOptions
    items: List[ItemState]
    created: str = field(default_factory=now_iso)

    def run_dir(self, item: ItemState) -> Path:
        return inside(self.batch_dir, item.item)

    def counts(self) -> Dict[str, int]:
        return {s: sum(1 for it in self.items if it.status == s) for s in STATUSES}

    def to_json(self) -> Dict[str, Any]:
        items = []
        for it in self.items:
            row = dataclasses.asdict(it)
            row["run_dir"] = str(self.run_dir(it)) if (self.batch_dir / it.item / "config.yaml").is_file() else None
            items.append(row)
        return {"format_version": FORMAT_VERSION, "batch_dir": str(self.batch_dir), "config": self.config,
                "overrides": self.overrides, "prompts": self.prompts, "options": dataclasses.asdict(self.options),
                "created": self.created, "updated": now_iso(), "counts": self.counts(), "items": items}


def new_batch_dir(cfg: Config) -> Path:
    """``<output_dir>/<name>/batch@<YYYYmmdd-HHMMSS>``, made unique with a counter if needed (not created)."""
    return stamped_dir(cfg.output_dir, cfg.name, "batch")


def plan_batch(config_path: str | Path, prompts_path: str | Path, overrides: List[str],
               options: BatchOptions) -> Tuple[BatchState, Dict[str, Config]]:
    """Read the items and validate every item's config; nothing is written.

    A bad CONFIG or a bad command-line override raises :class:`ConfigError` (the whole batch is
    wrong); an item whose own overrides the config rejects is marked failed with the reason.

    Returns:
        the batch state (failed items marked) and the resolved config of each valid item, by name.
    """
    items = read_items(prompts_path)
    base = RUN_SCHEMA.load(config_path, overrides)
    state = BatchState(batch_dir=new_batch_dir(base).absolute(), config=str(Path(config_path).absolute()),
                       overrides=list(overrides), prompts=str(Path(prompts_path).absolute()), options=options, items=[])
    configs: Dict[str, Config] = {}
    for item in items:
        record, cfg = _plan_item(item, config_path, overrides)
        state.items.append(record)
        if cfg is not None:
            configs[item.name] = cfg
    return state, configs


LOST = "its run folder was removed; --resume runs it again from the start"
"""The error of an item whose run folder went missing."""


def is_rejected(item: ItemState) -> bool:
    """Whether the config rejected the item at planning (a batch.json of before ``rejected``: a failed
    item that never ran)."""
    return item.rejected or (item.status == "failed" and item.attempts == 0 and not item.history
                             and item.error != LOST and (item.error or "").startswith("item "))


def is_lost(state: "BatchState", item: ItemState) -> bool:
    """Whether a planned item's run folder is gone (removed by hand, or with the batch folder)."""
    return not is_rejected(item) and not (state.batch_dir / item.item / "config.yaml").is_file()


def _plan_item(item: BatchItem, config_path: str | Path, overrides: List[str]) -> Tuple[ItemState, Optional[Config]]:
    preset = item.config or str(config_path)
    record = ItemState(item=item.name, line=item.line, prompt=item.prompt or "", overrides=item.overrides,
                       config=str(Path(preset).absolute()))
    try:
        cfg = RUN_SCHEMA.load(preset, overrides, above=[literal_layer(item.nested_overrides(), f"item {item.name!r}")])
    except Text3DError as e:
        record.status, record.error, record.rejected = "failed", f"item {item.name!r} (line {item.line}): {e}", True
        return record, None
    record.prompt, record.total_steps = cfg.prompt, cfg.steps
    return record, cfg


def write_item_configs(state: BatchState, configs: Dict[str, Config]) -> None:
    """Write each valid item's resolved ``config.yaml`` into its run folder (before any run starts); what a
    lost item's run left in a folder without config.yaml is cleared first (it starts again)."""
    for name, cfg in configs.items():
        folder = inside(state.batch_dir, name)
        if folder.is_dir() and not (folder / "config.yaml").is_file():
            shutil.rmtree(folder)
        cfg = dataclasses.replace(cfg, resume=None)
        write_text(folder / "config.yaml", to_yaml(cfg))


def replan_lost(state: BatchState, overrides: List[str]) -> Dict[str, Config]:
    """The configs of the items whose run folder was removed, planned again from the batch's CONFIG, its
    overrides, ``overrides`` and the item's own (they run again from the start)."""
    configs: Dict[str, Config] = {}
    for item in state.items:
        if not is_lost(state, item):
            continue
        preset = item.config if item.config != state.config else None
        batch_item = BatchItem(name=item.item, line=item.line, overrides=item.overrides, config=preset)
        record, cfg = _plan_item(batch_item, state.config, [*state.overrides, *overrides])
        if cfg is None:
            item.error = record.error
            continue
        logger.warning("item %s: its run folder was removed; it runs again from the start", item.item)
        item.status, item.error, item.steps, item.total_steps = "pending", None, 0, cfg.steps
        configs[item.item] = cfg
    return configs


def load_batch(batch_dir: str | Path) -> BatchState:
    """Read ``batch_dir/batch.json`` and bring each item's status up to date from its run folder:
    ``done`` when it has ``metrics.json``; else ``pending`` (to run or continue), unless the config
    rejected it (no run folder)."""
    batch_dir = Path(batch_dir).absolute()
    data = _read_batch_json(batch_dir)
    try:
        options = BatchOptions(**data["options"])
        items = [ItemState(**{k: v for k, v in row.items() if k != "run_dir"}) for row in data["items"]]
        state = BatchState(batch_dir=batch_dir, config=data["config"], overrides=list(data["overrides"]),
                           prompts=data["prompts"], options=options, items=items, created=data["created"])
    except (KeyError, TypeError) as e:
        raise RunDirError(f"{batch_dir / 'batch.json'}: not a text3d batch summary ({e})") from None
    for item in state.items:
        refresh_item(state, item)
    return state


def _read_batch_json(batch_dir: Path) -> Dict[str, Any]:
    path = batch_dir / "batch.json"
    if not path.is_file():
        raise RunDirError(f"--resume: {str(batch_dir)!r} is not a batch directory (no batch.json); pass the folder "
                          "that 'text3d batch' printed on its last line")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise RunDirError(f"{path}: not a text3d batch summary (format_version {FORMAT_VERSION} expected)")
    return data


def refresh_item(state: BatchState, item: ItemState) -> None:
    """Set an item's status and figures from its run folder (the truth, whatever batch.json said). An
    item whose run folder was removed is failed (``--resume`` runs it again from the start); a damaged
    ``metrics.json`` means the run is not done (it continues from its last checkpoint)."""
    run_dir = state.batch_dir / item.item
    if is_rejected(item):
        return
    if not (run_dir / "config.yaml").is_file():
        item.status, item.error = "failed", LOST
        return
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        try:
            item.metrics = read_json_object(metrics_path, RunDirError)
        except RunDirError as e:
            logger.warning("item %s: %s; it continues from its last checkpoint and writes it again", item.item, e)
            item.metrics, item.status = {}, "pending"
            return
        item.status, item.error = "done", None
        item.steps = int(item.metrics.get("steps", item.total_steps))
        item.wall_time_s = item.metrics.get("wall_time_s")
    elif item.status in ("done", "running"):
        item.status = "pending"

