"""Silencing third-party progress output in library code (the CLI draws the only progress bars)."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def no_transformers_progress_bars() -> Iterator[None]:
    """Silence transformers' per-call progress bars ("Loading weights", "Writing model shards").

    Library code draws no progress bars; transformers offers only a process-wide switch, so it
    is turned off for the duration and restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
