"""The body of one batch run, executed by Ray in a worker process.

It always opens the item's run folder the same way: continue from its newest checkpoint if it has
one, else start the run from step 0 with the ``config.yaml`` the driver wrote there. So a retry
after a crash, a killed worker or a lost node, and a ``--resume`` of the whole batch, all continue
where the run's last checkpoint left it (on CPU bit-identically to an uninterrupted run).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict

from text3d.core.errors import RunDirError
from .progress import Reporter


def open_item_run(run_dir: Path):
    """The run of a batch item: resumed from its newest checkpoint, or new in ``run_dir``."""
    from text3d.core.checkpoint import latest_checkpoint
    from text3d.run.trainer import open_run

    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{str(run_dir)!r} has no config.yaml on node {socket.gethostname()}: the batch directory "
                          "must be on a filesystem that every node of the Ray cluster mounts at the same path")
    if latest_checkpoint(run_dir) is not None:
        return open_run(None, [f"resume={run_dir}"])
    return open_run(run_dir / "config.yaml", [], run_dir=run_dir)


def _log_to(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "batch.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("text3d")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def assigned_resources() -> Dict[str, float]:
    """What Ray reserved for this task (``{"CPU": 1.0, "GPU": 1.0}``); empty outside a Ray worker."""
    import ray

    if not ray.is_initialized():
        return {}
    return {k: float(v) for k, v in ray.get_runtime_context().get_assigned_resources().items()}


def run_item(run_dir: str, item: str, attempt: int, board: Any) -> Dict[str, Any]:
    """Open (or continue) one item's run, train it to its last step and write its outputs.

    Args:
        run_dir: the item's run folder (absolute; on a cluster, on a shared filesystem).
        item: the item's name, used in progress reports.
        attempt: 1 for the first try of this item, 2 for its first retry, ...
        board: the :class:`~text3d.batch.progress.ProgressBoard` actor handle.

    Returns:
        figures of the attempt: step resumed from, steps reached, seconds spent, pid, host.
    """
    import torch

    started = time.time()
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir}: its run folder was removed (or is not on this node's filesystem); "
                          "--resume runs it again from the start")
    resources = assigned_resources()
    if resources.get("CPU"):  # as many torch threads as reserved cores
        torch.set_num_threads(max(1, int(resources["CPU"])))
    handler = _log_to(run_dir)
    try:
        logging.getLogger(__name__).info("batch item %s, attempt %d, pid %d", item, attempt, os.getpid())
        run = open_item_run(run_dir)
        resumed_from, opened = run.step, time.time()
        reporter = Reporter(board, item, attempt, run.cfg.steps, os.getpid())
        reporter(run.step)  # running now (the driver counts it as running, not queued)
        run.fit(progress=reporter)
    finally:
        logging.getLogger("text3d").removeHandler(handler)
        handler.close()
    return {"resumed_from": resumed_from, "steps": run.step, "pid": os.getpid(), "host": socket.gethostname(),
            "resources": resources,
            "open_s": round(opened - started, 3), "worker_s": round(time.time() - started, 3), "started": started}
