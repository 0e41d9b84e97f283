"""The batch driver: submit every unfinished item to the engine, retry a failed attempt from the
run's last checkpoint up to ``max_retries`` times, record results in the batch directory as they
come, and stop cleanly on Ctrl-C. The driver keeps nothing that a restart needs outside the batch
directory (``text3d batch --resume BATCH_DIR`` rebuilds everything from it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from text3d.core.errors import Text3DError
from text3d.core.interrupt import StepBoundaryStop
from .state import LOST, BatchState, ItemState, is_lost, refresh_item
from .summary import write_summary

logger = logging.getLogger(__name__)


@dataclass
class BatchProgress:
    """What a progress display needs, sent after every poll.

    Attributes:
        counts: items per status (``done``, ``running``, ``failed``, ``pending``, ``interrupted``).
        steps_done: optimisation steps finished over the batch (a finished or failed item counts whole).
        steps_total: all the steps of the batch.
        running: the latest report of each running item (``step``, ``total``, ``attempt``, ``pid``).
    """

    counts: Dict[str, int]
    steps_done: int
    steps_total: int
    running: Dict[str, Dict[str, Any]] = field(default_factory=dict)


class BatchInterrupted(Text3DError):
    """Ctrl-C: running runs saved a checkpoint and stopped; the batch can be resumed."""


ProgressCallback = Callable[[BatchProgress], None]


class BatchDriver:
    """Runs the unfinished items of ``state`` on ``engine`` (a started :class:`RayEngine`).

    Args:
        state: the batch (its items' folders already written, see :func:`~.state.write_item_configs`).
        engine: submits attempts and reports their results and progress.
        on_progress: called after every poll with a :class:`BatchProgress` (the CLI draws a bar).
        poll_s: seconds between polls of results and progress.
        grace_s: on Ctrl-C, seconds the runs get to save a checkpoint before they are killed.
    """

    def __init__(self, state: BatchState, engine: Any, on_progress: Optional[ProgressCallback] = None,
                 poll_s: float = 0.5, grace_s: float = 60.0):
        self.state, self.engine, self.on_progress = state, engine, on_progress
        self.poll_s, self.grace_s = poll_s, grace_s
        self.running: Dict[Any, ItemState] = {}
        self.submitted: Dict[str, float] = {}
        self.tries: Dict[str, int] = {}

    def todo(self) -> List[ItemState]:
        """Items to run: not finished, and with a run folder (an item its config rejected has none)."""
        return [it for it in self.state.items
                if it.status != "done" and (self.state.batch_dir / it.item / "config.yaml").is_file()]

    def run(self) -> BatchState:
        """Run to the end; raises :class:`BatchInterrupted` after a clean stop on Ctrl-C."""
        # The first Ctrl-C/SIGTERM only sets a flag that the loop checks: a KeyboardInterrupt raised
        # inside Ray's client code could be swallowed there, and the batch would then run on.
        try:
            with StepBoundaryStop("stopping the batch: the runs save a checkpoint (again to stop at once)") as stop:
                for item in self.todo():
                    self._submit(item)
                self._save(contact_sheet=False)
                while self.running:
                    for ref in self.engine.wait(list(self.running), self.poll_s):
                        self._collect(ref, retry=True)
                    self._report()
                    if stop.requested is not None:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self._stop()
            raise BatchInterrupted(self._interrupted_message()) from None
        self._save(contact_sheet=True)
        return self.state

    def _submit(self, item: ItemState) -> None:
        self.tries[item.item] = self.tries.get(item.item, 0) + 1
        item.attempts += 1
        item.status = "pending"  # queued until its worker reports (see _report)
        ref = self.engine.submit(str(self.state.run_dir(item)), item.item, item.attempts)
        self.running[ref] = item
        self.submitted[item.item] = time.time()

    def _collect(self, ref: Any, retry: bool) -> None:
        item = self.running.pop(ref)
        figures, error = self.engine.result(ref)
        finished = time.time()
        entry = {"attempt": item.attempts, "submitted": round(self.submitted[item.item], 3),
                 "finished": round(finished, 3), "task_s": round(finished - self.submitted[item.item], 3),
                 "outcome": "done" if error is None else ("failed" if retry else "interrupted"), **(figures or {}), "error": error}
        item.history.append(entry)
        if error is None:
            refresh_item(self.state, item)
            if item.status != "done":  # the worker returned but left no metrics.json: count it as a failure
                error = entry["error"] = f"the run ended without writing metrics.json in {self.state.run_dir(item)}"
                entry["outcome"] = "failed"
        if error is not None:
            self._failed(item, error, retry)
        self._save(contact_sheet=True)

    def _failed(self, item: ItemState, error: str, retry: bool) -> None:
        item.error = error
        if is_lost(self.state, item):  # no retry can continue a run whose folder is gone
            item.error, retry = LOST, True
            self.tries[item.item] = self.state.options.max_retries + 1
        if retry and self.tries[item.item] <= self.state.options.max_retries:
            logger.warning("item %s, attempt %d failed (%s); retrying from its last checkpoint",
                           item.item, item.attempts, error)
            self._submit(item)
        else:
            item.status = "failed" if retry else "interrupted"
            if retry:
                logger.warning("item %s failed after %d attempt(s): %s", item.item, item.attempts, error)
            else:
                logger.info("item %s interrupted (%s); it resumes with --resume", item.item, error)

    def _report(self) -> None:
        snapshot = self.engine.snapshot()
        for item in self.running.values():
            report = snapshot.get(item.item)
            if report is not None and report["attempt"] == item.attempts:
                item.steps, item.status = int(report["step"]), "running"
        if self.on_progress is not None:
            self.on_progress(self.progress(snapshot))

    def progress(self, snapshot: Optional[Dict[str, Dict[str, Any]]] = None) -> BatchProgress:
        done = sum(it.total_steps if it.status in ("done", "failed") else it.steps for it in self.state.items)
        running = {it.item: (snapshot or {}).get(it.item, {}) for it in self.running.values()}
        return BatchProgress(counts=self.state.counts(), steps_done=done,
                             steps_total=sum(it.total_steps for it in self.state.items), running=running)

    def _stop(self) -> None:
        """Ctrl-C: ask every running run to stop (it saves a checkpoint), wait, then kill the rest."""
        refs = list(self.running)
        self.engine.cancel(refs)
        try:
            deadline = time.time() + self.grace_s
            while self.running and time.time() < deadline:
                for ref in self.engine.wait(list(self.running), self.poll_s):
                    self._collect(ref, retry=False)
        except KeyboardInterrupt:  # a second Ctrl-C: do not wait any longer
            pass
        self.engine.cancel(list(self.running), force=True)
        for item in self.running.values():
            item.status = "interrupted"
            item.history.append({"attempt": item.attempts, "outcome": "interrupted", "error": "killed after Ctrl-C"})
        self.running.clear()
        for item in self.state.items:
            if item.status in ("running", "pending"):
                item.status = "interrupted"
        self._save(contact_sheet=True)

    def _interrupted_message(self) -> str:
        counts = self.state.counts()
        left = counts["interrupted"] + counts["pending"]
        return (f"interrupted: {counts['done']} done, {counts['failed']} failed, {left} unfinished; continue with: "
                f"text3d batch --resume {self.state.batch_dir}")

    def _save(self, contact_sheet: bool) -> None:
        write_summary(self.state, contact_sheet=contact_sheet)
