"""Ctrl-C and SIGTERM that stop a training loop only at a step boundary.

A signal that lands in the middle of a step (after the optimizer moved, before the step counter did;
while the generator is half way through a draw) would make a checkpoint written on interrupt
inconsistent, and a run resumed from it would differ from an uninterrupted one. So inside
:class:`StepBoundaryStop` the first SIGINT/SIGTERM only sets a flag; the loop checks it between
steps, saves a consistent checkpoint and stops. A second signal stops at once (no checkpoint then:
the last consistent one stays the newest).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StepBoundaryStop:
    """Context manager: ``requested`` turns true after the first SIGINT/SIGTERM.

    Outside the main thread (where Python cannot install handlers) it does nothing and signals
    behave as usual.
    """

    def __init__(self, message: str = "stopping after this step and saving a checkpoint (again to stop at once)") -> None:
        self.requested: Optional[int] = None
        self.message = message
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested is not None:  # the user insists: stop now
            self._restore()
            raise KeyboardInterrupt
        self.requested = signum
        logger.warning("%s received: %s", signal.Signals(signum).name, self.message)

    def __enter__(self) -> "StepBoundaryStop":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc: Any) -> None:
        self._restore()
