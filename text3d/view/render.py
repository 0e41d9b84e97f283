"""Frames of a scene rendered from each browser's camera (nerfstudio's rule): a quarter resolution while
the camera moves, the full resolution once it rests. :class:`FrameRequests` collects the latest camera
of each client; whoever owns the scene calls :meth:`FrameRequests.serve` — a background thread in
``text3d view``, the training loop between steps in a live viewer (so rendering and training never
touch the model at once)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from .scene import cameras_from_client

REST_S = 0.3
"""Seconds without a camera update after which the frame is rendered at full resolution."""
MOVING_FRACTION = 4
"""While the camera moves, frames are this many times smaller per side."""

RenderFn = Callable[[Any], np.ndarray]
"""``cameras -> [H, W, 3]`` float image in [0, 1]."""


@dataclass
class _Request:
    client: Any
    moved_at: float
    full_sent: bool = False
    low_sent: bool = False


class FrameRequests:
    """The cameras the browsers are looking from, and what each still needs rendered."""

    def __init__(self, server: Any, resolution: int):
        self.resolution = resolution
        self._pending: Dict[int, _Request] = {}
        self._lock = threading.Lock()
        server.on_client_connect(self._connect)

    def _connect(self, client: Any) -> None:
        self._moved(client)
        client.camera.on_update(lambda camera: self._moved(client))

    def _moved(self, client: Any) -> None:
        with self._lock:
            self._pending[client.client_id] = _Request(client, time.time())

    def wanted(self) -> bool:
        """Whether some client waits for a frame (a new camera, or a rest at full resolution)."""
        now = time.time()
        with self._lock:
            return any(not r.low_sent or (not r.full_sent and now - r.moved_at >= REST_S)
                       for r in self._pending.values())

    def serve(self, render: RenderFn) -> float:
        """Render and send what the clients wait for; returns the seconds spent."""
        started, now = time.time(), time.time()
        with self._lock:
            todo = list(self._pending.values())
        for request in todo:
            resting = now - request.moved_at >= REST_S
            if request.full_sent or (request.low_sent and not resting):
                continue
            height = self.resolution if resting else max(16, self.resolution // MOVING_FRACTION)
            image = render(cameras_from_client(request.client.camera, height))
            request.client.scene.set_background_image(image, format="jpeg", jpeg_quality=70 if resting else 40)
            request.low_sent, request.full_sent = True, resting
        return time.time() - started


def system_renderer(system: Any, lock: Optional[threading.Lock] = None) -> RenderFn:
    """Render a scene system (NeRF or Gaussians) in albedo from one camera, under ``lock`` if given."""

    def render(cameras: Any) -> np.ndarray:
        with (lock or threading.Lock()), torch.no_grad():
            out = system.render(cameras, mode="albedo", train=False)
        return out["rgb"][0].clamp(0, 1).cpu().numpy()

    return render


def serve_in_background(requests: FrameRequests, render: RenderFn) -> threading.Thread:
    """A daemon thread serving ``requests`` as they come (``text3d view``)."""

    def loop() -> None:
        while True:
            if requests.wanted():
                requests.serve(render)
            else:
                time.sleep(0.05)

    thread = threading.Thread(target=loop, name="text3d-view-render", daemon=True)
    thread.start()
    return thread
