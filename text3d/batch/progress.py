"""Progress of the runs of a batch, reported by the workers to one small Ray actor that the driver
reads (the driver draws nothing itself: the CLI turns snapshots into one bar). Imports nothing
heavy, so the actor's process starts quickly.
"""

from __future__ import annotations

import time
from typing import Any, Dict


class ProgressBoard:
    """The latest report of every running item: ``{item: {"attempt", "step", "total", "pid", "time"}}``."""

    def __init__(self) -> None:
        self._reports: Dict[str, Dict[str, Any]] = {}

    def report(self, item: str, attempt: int, step: int, total: int, pid: int) -> None:
        self._reports[item] = {"attempt": attempt, "step": step, "total": total, "pid": pid, "time": time.time()}

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        return dict(self._reports)


class Reporter:
    """The ``progress`` callback of a run inside a worker: sends at most one report per ``every_s``
    seconds (and always the last step) to the board, without waiting for an answer."""

    def __init__(self, board: Any, item: str, attempt: int, total: int, pid: int, every_s: float = 0.5):
        self.board, self.item, self.attempt, self.total, self.pid = board, item, attempt, total, pid
        self.every_s, self._last = every_s, 0.0

    def __call__(self, step: int, losses: Dict[str, float] | None = None) -> None:
        now = time.monotonic()
        if step >= self.total or now - self._last >= self.every_s:
            self._last = now
            self.board.report.remote(self.item, self.attempt, step, self.total, self.pid)
