"""Ray as the engine of a batch: connect (a local instance sized to the machine, or a running
cluster), check that a run's resources exist before anything starts, submit one task per run
attempt with ``num_cpus`` / ``num_gpus``, and read results and progress.

Ray's own task retries are off (``max_retries=0``): a retry must continue from the run's last
checkpoint and count as an attempt in ``batch.json``, which the driver does.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any, Dict, List, Optional, Sequence, Tuple

from text3d.core.errors import Text3DError
from .state import BatchOptions

logger = logging.getLogger(__name__)

RAY_MISSING = 'text3d batch needs Ray, an optional extra: pip install -e ".[ray]" (or pip install "text3d[ray]")'


def import_ray():
    """The ``ray`` module, or a one-line :class:`Text3DError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise Text3DError(RAY_MISSING) from None
    return ray


def task_options(options: BatchOptions) -> Dict[str, Any]:
    """The Ray options of one run's task: its CPU and GPU reservation, and no retries by Ray."""
    return {"num_cpus": float(options.cpus_per_run), "num_gpus": float(options.gpus_per_run), "max_retries": 0,
            "retry_exceptions": False}


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line, when ``HOST:PORT`` or ``ray://HOST:PORT`` does not answer (Ray itself
    would keep retrying for a minute or more)."""
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise Text3DError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise Text3DError(f"--address {address!r}: cannot reach a Ray cluster there ({e.strerror or e}); start one "
                          "with 'ray start --head' or check the address") from None


def local_resources() -> Tuple[int, int]:
    """CPU cores and CUDA GPUs of this machine (what a local Ray instance is given)."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, torch.cuda.device_count()


def check_fits(options: BatchOptions, nodes: Sequence[Dict[str, float]], where: str) -> None:
    """Raise :class:`Text3DError` unless some node has the CPUs and GPUs that one run asks for."""
    cpus, gpus = options.cpus_per_run, options.gpus_per_run
    if gpus > 0 and not any(n.get("GPU", 0.0) >= gpus for n in nodes):
        most = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
        raise Text3DError(f"--gpus-per-run {gpus:g}: {where} has no node with {gpus:g} GPU(s) (the most on one node: "
                          f"{most:g}); run on GPU machines or use --gpus-per-run 0 for CPU runs")
    if not any(n.get("CPU", 0.0) >= cpus and n.get("GPU", 0.0) >= gpus for n in nodes):
        most = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
        raise Text3DError(f"--cpus-per-run {cpus:g}: {where} has no node with {cpus:g} CPU core(s) "
                          f"(the most on one node: {most:g})")


class RayEngine:
    """The batch's connection to Ray.

    Args:
        options: the batch options (resources per run, cluster address).
    """

    def __init__(self, options: BatchOptions):
        self.options = options
        self.ray = import_ray()
        self._owned = False
        self._task = None
        self.board = None

    def start(self) -> None:
        """Connect and check resources; raises :class:`Text3DError` (nothing started) when impossible."""
        ray, address = self.ray, self.options.address
        if ray.is_initialized():  # a caller (a notebook, a test) already connected: use that
            logger.info("using the Ray instance this process is connected to")
        elif address is None:
            cpus, gpus = local_resources()
            check_fits(self.options, [{"CPU": float(cpus), "GPU": float(gpus)}], "this machine")
            ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False,
                     logging_level=logging.ERROR, log_to_driver=False)
            self._owned = True
        else:
            if address != "auto":
                check_reachable(address)
            self._connect(address)
        try:
            check_fits(self.options, self._alive_nodes(), "the Ray cluster")
        except Text3DError:
            self.stop()
            raise
        from .progress import ProgressBoard
        from .worker import run_item

        self.board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        self._task = ray.remote(run_item).options(**task_options(self.options))

    def _connect(self, address: str) -> None:
        try:
            self.ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            raise Text3DError(f"--address {address!r}: could not connect to Ray: {_first_line(e)}") from None
        self._owned = True

    def _alive_nodes(self) -> List[Dict[str, float]]:
        return [node["Resources"] for node in self.ray.nodes() if node.get("Alive")]

    def submit(self, run_dir: str, item: str, attempt: int):
        """Start one attempt of one item's run; returns the task's ObjectRef."""
        return self._task.remote(run_dir, item, attempt, self.board)

    def wait(self, refs: List[Any], timeout_s: float) -> List[Any]:
        """The refs among ``refs`` that finished (successfully or not) within ``timeout_s``."""
        if not refs:
            return []
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        return ready

    def result(self, ref) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """``(figures, None)`` for a finished run, ``(None, one-line reason)`` for a failed attempt."""
        try:
            return self.ray.get(ref), None
        except self.ray.exceptions.RayError as e:
            return None, describe_failure(self.ray, e)

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        """The latest progress report of each running item (empty if the board does not answer)."""
        try:
            return self.ray.get(self.board.snapshot.remote(), timeout=10)
        except self.ray.exceptions.RayError as e:  # slow, or its node was lost: progress is cosmetic
            logger.debug("progress board: %s", _first_line(e))
            return {}

    def cancel(self, refs: List[Any], force: bool = False) -> None:
        """Stop tasks: without ``force`` a KeyboardInterrupt in the run (which saves a checkpoint first)."""
        for ref in refs:
            try:
                self.ray.cancel(ref, force=force)
            except Exception as e:  # an already finished task cannot be cancelled: nothing to do
                logger.debug("cancel: %s", e)

    def stop(self) -> None:
        """Disconnect (and shut down a local instance this engine started)."""
        if self._owned and self.ray.is_initialized():
            self.ray.shutdown()
        self._owned = False


def describe_failure(ray, error: Exception) -> str:
    """One line saying why an attempt failed: the run's own exception, or what happened to its worker."""
    exc = ray.exceptions
    if isinstance(error, exc.RayTaskError):
        cause = getattr(error, "cause", None)
        if cause is not None:
            return f"{type(cause).__name__}: {_first_line(cause)}"
    if isinstance(error, exc.TaskCancelledError):
        return "cancelled"
    if isinstance(error, exc.WorkerCrashedError):
        return "worker process died (killed or crashed)"
    if isinstance(error, exc.NodeDiedError):
        return "node lost"
    return f"{type(error).__name__}: {_first_line(error)}"


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0][:500] if lines else type(e).__name__
