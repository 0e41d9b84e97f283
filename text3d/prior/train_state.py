"""A prior training run's resumable state and its step loop, shared by both trainers.

:class:`TrainState` holds what a run needs to go on exactly where it stopped: the modules being
trained, the optimizer, the EMA of the weights (:class:`EMA`), the generator every batch and noise
is drawn from, the step, the wall time and the smoothed loss with its history. It saves itself as
a checkpoint (:mod:`text3d.core.checkpoint`: safetensors + JSON, atomically) with the tensors
``<module>.<key>``, ``ema.<i>``, the optimizer's flat tensors and ``rng.generator``, and the
recipe it was trained with; loading refuses a checkpoint of another recipe (only
:data:`RESUME_FREE_KEYS` may change on resume). A state named ``name`` lives in
``<work_dir>/<name>/ckpts`` (the latent prior's ``vae`` and ``unet`` stages); the empty name puts
it in ``<work_dir>/ckpts`` (the pixel prior).

:func:`run_steps` iterates a step function until the run reaches its iteration count, logging,
checkpointing, snapshotting and reporting progress on the way. Since the generator is part of the
state, a resumed run draws the same numbers an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from text3d.core.checkpoint import load_latest_checkpoint, optimizer_from_flat, optimizer_to_flat, save_checkpoint
from text3d.core.errors import ConfigError

logger = logging.getLogger(__name__)

RESUME_FREE_KEYS = ("iterations", "checkpoint_every", "log_every", "snapshot_every", "num_threads", "device")
"""Recipe keys a resumed run may change: how long it trains, how often it writes, where and how fast it runs."""


def resume_recipe(cfg: Any) -> Dict[str, Any]:
    """The part of a recipe (a dataclass) a resumed run must match: all of it but :data:`RESUME_FREE_KEYS`."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUME_FREE_KEYS}


class EMA:
    """Exponential moving average of parameters; decay ramps up as ``min(decay, (1 + n) / (10 + n))``."""

    def __init__(self, modules: Sequence[nn.Module], decay: float):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, modules: Sequence[nn.Module]) -> None:
        for p, s in zip([p for m in modules for p in m.parameters()], self.shadow):
            p.copy_(s)

    def state_dict(self) -> Dict[str, Any]:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for s, v in zip(self.shadow, state["shadow"]):
            s.copy_(v)
        self.updates = int(state["updates"])


@dataclass
class TrainState:
    """One training run (or one stage of it) as it stands, with its checkpoint in the work folder."""

    name: str
    """The state's folder inside the work folder; ``""`` = the work folder itself."""
    modules: Dict[str, nn.Module]
    """The trained modules by name (the prefix of their tensors in the checkpoint)."""
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    """CPU generator of every batch and every noise draw."""
    recipe: Dict[str, Any]
    """What a resumed run must match (JSON-able; see :func:`resume_recipe`)."""
    ema: Optional[EMA] = None
    step: int = 0
    wall_time: float = 0.0
    smoothed_loss: float = float("nan")
    history: List[List[float]] = field(default_factory=list)
    """``[step, smoothed loss]`` every ``log_every`` iterations."""

    @property
    def label(self) -> str:
        """What the log and the errors call it: ``"vae stage"``, or ``"training run"`` for the unnamed state."""
        return f"{self.name} stage" if self.name else "training run"

    def folder(self, work_dir: Path) -> Path:
        """Where the state lives: ``work_dir / name`` (``work_dir`` itself for the empty name)."""
        return Path(work_dir) / self.name

    def optimise(self, loss: Tensor, lr: float, grad_clip: float) -> float:
        """One optimizer step on ``loss`` at learning rate ``lr`` (gradient norm clipped unless 0), then the EMA."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        return loss.item()

    def save(self, work_dir: Path) -> None:
        """Checkpoint the state in ``<folder>/ckpts``, keeping only the newest."""
        tensors = {f"{n}.{k}": v for n, m in self.modules.items() for k, v in m.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{i}": t for i, t in enumerate(self.ema.shadow)})
        optim_tensors, groups = optimizer_to_flat(self.optimizer)
        tensors.update(optim_tensors)
        tensors["rng.generator"] = self.generator.get_state()
        meta = {"recipe": self.recipe, "wall_time": self.wall_time, "smoothed_loss": self.smoothed_loss,
                "history": self.history, "ema_updates": self.ema.updates if self.ema else 0,
                "optimizer_param_groups": groups}
        save_checkpoint(self.folder(work_dir) / "ckpts", self.step, tensors, meta, keep=1)

    def load(self, work_dir: Path) -> bool:
        """Restore the newest intact checkpoint in :meth:`folder`, if any (False when there is none).

        Weights and EMA are moved to the modules' device; the optimizer places its own state (as
        ``torch.optim.Optimizer.load_state_dict`` does); the generator stays on the CPU.

        Raises:
            ConfigError: the checkpoint was written by a run of another recipe.
        """
        ckpt = load_latest_checkpoint(self.folder(work_dir))
        if ckpt is None:
            return False
        if json.loads(json.dumps(self.recipe)) != ckpt.meta["recipe"]:
            raise ConfigError(f"{work_dir} holds a {self.label} of another recipe; delete it or pick another "
                              f"work folder (only {', '.join(RESUME_FREE_KEYS)} may change on resume)")
        device = next(p.device for m in self.modules.values() for p in m.parameters())
        weights = {k: v.to(device) for k, v in ckpt.tensors.items() if not k.startswith(("optim.", "rng."))}
        for name, module in self.modules.items():
            module.load_state_dict({k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")})
        optimizer_from_flat(self.optimizer, ckpt.tensors, ckpt.meta["optimizer_param_groups"])
        if self.ema is not None:
            self.ema.load_state_dict({"shadow": [weights[f"ema.{i}"] for i in range(len(self.ema.shadow))],
                                      "updates": ckpt.meta["ema_updates"]})
        self.generator.set_state(ckpt.tensors["rng.generator"])
        self.step, self.wall_time = int(ckpt.meta["step"]), float(ckpt.meta["wall_time"])
        self.smoothed_loss, self.history = float(ckpt.meta["smoothed_loss"]), list(ckpt.meta["history"])
        logger.info("resumed the %s from %s at iteration %d", self.label, ckpt.path, self.step)
        return True


def run_steps(state: TrainState, total: int, step_fn: Callable[[], float], work_dir: Path, *, label: str,
              log_every: int, checkpoint_every: int, snapshot_every: int = 0,
              snapshot: Optional[Callable[[], None]] = None, metrics: Callable[[], Dict[str, float]] = dict,
              report: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
    """Call ``step_fn`` (one optimisation step; returns its loss) until ``state.step == total``.

    After each step the smoothed loss is updated; every ``log_every`` steps (and at ``total``) it is
    recorded in ``state.history`` and logged as ``<label> iteration i/total loss ...`` with the
    numbers of ``metrics()``; every ``checkpoint_every`` steps (and at ``total``) the state is saved
    to ``work_dir``; every ``snapshot_every`` steps (0 = never; not at ``total``) ``snapshot()``
    runs; last, ``report({"loss": smoothed loss, **metrics()})`` (the caller's progress callback).
    """
    while state.step < total:
        t0 = time.perf_counter()
        loss = step_fn()
        state.step += 1
        state.wall_time += time.perf_counter() - t0
        state.smoothed_loss = loss if math.isnan(state.smoothed_loss) else 0.98 * state.smoothed_loss + 0.02 * loss
        if state.step % log_every == 0 or state.step == total:
            state.history.append([state.step, round(state.smoothed_loss, 6)])
            extra = "".join(f" {k} {v:.2e}" for k, v in metrics().items())
            logger.info("%s iteration %d/%d loss %.5f%s (%.2f s/it)", label, state.step, total, state.smoothed_loss,
                        extra, state.wall_time / max(state.step, 1))
        if state.step % checkpoint_every == 0 or state.step == total:
            state.save(work_dir)
        if snapshot is not None and snapshot_every > 0 and state.step % snapshot_every == 0 and state.step < total:
            snapshot()
        if report is not None:
            report({"loss": state.smoothed_loss, **metrics()})
