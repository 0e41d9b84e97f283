"""The viewer of a run that trains (``viewer=true``): the scene rendered from the browser's camera at a
reduced resolution, pause / resume, the loss curve live.

It is the run's progress hook, called by the training loop after each step, so the model is never
rendered while a step changes it (nerfview puts a lock around each step; here the step and the
render simply take turns in one thread). Rendering takes at most ``1 - train_util`` of the time
(nerfview's "train util", 0.9): a browser that moves its camera never starves training; while paused,
frames are rendered at once. With no browser open the hook costs a few comparisons per step.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

import numpy as np

from .render import FrameRequests, system_renderer
from .server import start_server, stop_server

PLOT_EVERY_S = 1.0
"""Seconds between updates of the loss curve and the status line."""


class LiveViewer:
    """``viewer(step, losses)`` after each training step (see the module docstring).

    Args:
        run: the :class:`~text3d.run.trainer.Run` (its ``system``, ``cfg.steps``, ``cfg.prompt``).
        host, port: where to serve (a port in use moves to the next free one).
        resolution: longest side of a frame at rest, pixels (a quarter while the camera moves).
        train_util: the share of time kept for training while a browser asks for frames.
    """

    def __init__(self, run: Any, host: str = "127.0.0.1", port: int = 8080, resolution: int = 128,
                 train_util: float = 0.9):
        self.run, self.train_util = run, train_util
        self.server, self.url = start_server(host, port)
        self.server.scene.set_up_direction("+z")
        self.requests = FrameRequests(self.server, resolution)
        self.render = system_renderer(run.system)
        self.paused, self.render_s, self.train_s = False, 0.0, 0.0
        self.steps: List[float] = []
        self.losses: List[float] = []
        self._last_hook, self._last_plot = time.perf_counter(), 0.0
        self._panel()

    def _panel(self) -> None:
        gui = self.server.gui
        self.status = gui.add_markdown(self._status_text())
        self.button = gui.add_button("pause training")
        self.button.on_click(lambda _: self.toggle())
        self.plot = gui.add_uplot(data=(np.zeros(1), np.zeros(1)),
                                  series=({"label": "step"}, {"label": "loss", "stroke": "red"}), title="loss",
                                  aspect=1.5, scales={"x": {"time": False}, "y": {"distr": 3}})

    def _status_text(self) -> str:
        state = "paused" if self.paused else "training"
        return f"**{state}** step {self.run.step}/{self.run.cfg.steps}  \nprompt: *{self.run.cfg.prompt}*"

    def toggle(self) -> None:
        """Pause or resume training (the button)."""
        self.paused = not self.paused
        self.button.label = "resume training" if self.paused else "pause training"
        self.status.content = self._status_text()

    def __call__(self, step: int, losses: Dict[str, float]) -> None:
        now = time.perf_counter()
        self.train_s += now - self._last_hook
        self.steps.append(step)
        self.losses.append(max(float(losses.get("loss", float("nan"))), 1e-12))
        if now - self._last_plot >= PLOT_EVERY_S:
            self._update_panel(now)
        while True:
            budget = (1 - self.train_util) / self.train_util * self.train_s
            if self.requests.wanted() and (self.paused or self.render_s <= budget):
                self.render_s += self.requests.serve(self.render)
            if not self.paused:
                break
            time.sleep(0.05)
        self._last_hook = time.perf_counter()

    def _update_panel(self, now: float) -> None:
        self._last_plot = now
        self.status.content = self._status_text()
        self.plot.data = (np.asarray(self.steps, dtype=np.float64), np.asarray(self.losses, dtype=np.float64))

    def close(self) -> None:
        stop_server(self.server)
