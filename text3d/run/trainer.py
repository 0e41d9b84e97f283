"""A text-to-3D run: build the components from a config, optimise with SDS, save everything.

``Run`` owns one seeded ``torch.Generator`` from which every random choice is drawn (cameras,
shading mode, timesteps, noise, VAE sampling), and checkpoints it with the weights and the
optimizer, so that on CPU a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from text3d import __version__
from text3d.core.checkpoint import (Checkpoint, load_checkpoint, load_latest_checkpoint, optimizer_from_flat,
                                    optimizer_to_flat, save_checkpoint)
from text3d.core.config_files import literal_layer
from text3d.core.device import resolve_device
from text3d.core.errors import ConfigError, RunDirError
from text3d.core.interrupt import StepBoundaryStop
from text3d.core.io import write_json, write_text
from text3d.core.media import image_grid, save_image, save_video
from text3d.core.paths import check_writable, claim_new_dir, safe_component, stamped_dir
from text3d.core.writer import FolderWriter, hold_folder, refuse_if_in_use
from text3d.guidance.registry import GUIDANCES, PRIORS
from text3d.scene.registry import CAMERAS
from text3d.scene.rundir import check_run_folder
from text3d.scene.system import NeRFSystem

from .config import RUN_SCHEMA, Config, check_resume_overrides, to_yaml
from .logs import TrainingLog

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, Dict[str, float]], None]


def slugify(text: str, max_len: int = 48) -> str:
    """A prompt as a folder/object name (``a red cube`` -> ``a_red_cube``); see :func:`safe_component`."""
    return safe_component(text, max_len=max_len)


def new_run_dir(cfg: Config) -> Path:
    """``<output_dir>/<name>/<tag>@<YYYYmmdd-HHMMSS>``, made unique with a counter if needed.

    The folder is created by :meth:`Run.fit`, so a run that fails to start leaves nothing behind.
    """
    tag = safe_component(cfg.tag) if cfg.tag else slugify(cfg.prompt)
    return stamped_dir(cfg.output_dir, cfg.name, tag)


def versions() -> Dict[str, str]:
    import diffusers
    import transformers

    return {"text3d": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def build_optimizer(cfg: Config, groups: Dict[str, List[nn.Parameter]]) -> torch.optim.Optimizer:
    ocfg = cfg.optimizer  # group names and the type are validated with the config
    param_groups = [{"params": params, "lr": ocfg.lr.get(name, ocfg.default_lr), "name": name}
                    for name, params in groups.items() if params]
    kwargs = dict(betas=tuple(ocfg.betas), eps=ocfg.eps, weight_decay=ocfg.weight_decay)
    return (torch.optim.AdamW if ocfg.type == "adamw" else torch.optim.Adam)(param_groups, **kwargs)


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-5, 1 - 1e-5)
    return (-p * torch.log(p) - (1 - p) * torch.log(1 - p)).mean()


class Run:
    """One optimisation run in ``run_dir``.

    Args:
        cfg: the resolved config.
        run_dir: where outputs land (created by the caller, see :func:`new_run_dir`).
        prior: an already loaded prior (tests inject tiny ones); loaded from ``cfg.prior`` if None.
    """

    folder_kind = "run folder"
    """What the folder is called in messages (an edit's is an edit folder)."""

    def __init__(self, cfg: Config, run_dir: Path, prior: Any = None):
        from text3d.guidance.prompts import PromptProcessor

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.new_folder = False  # set by open_run for a timestamped folder that fit() must claim
        self.device = resolve_device(cfg.device)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
            torch.manual_seed(cfg.seed)
            self.system = NeRFSystem(cfg).to(self.device)
        self.prior = prior if prior is not None else PRIORS.build(cfg.prior, self.device)
        self.guidance = GUIDANCES.build(cfg.guidance, self.prior)
        self.prompts = PromptProcessor(self.prior, cfg.prompt, cfg.negative_prompt, cfg.prompting)
        self.sampler = CAMERAS.build(cfg.cameras)
        self.optimizer = build_optimizer(cfg, self.system.parameter_groups())
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.targets = None
        if cfg.targets:
            from .targets import ViewTargets

            self.targets = ViewTargets.load(cfg.targets)
        self.step = 0
        self.elapsed = 0.0
        self.skipped_steps: List[int] = []
        self.last_losses: Dict[str, float] = {}
        self.writer: Optional[FolderWriter] = None  # held while fit() writes the folder
        self.log: Optional[TrainingLog] = None  # metrics.csv, tb/, curves.png while fit() runs
        self.last_grad_norm: Optional[float] = None

    # ----------------------------------------------------------------------------- training
    def loss_terms(self, out: Dict[str, torch.Tensor], guidance_loss: torch.Tensor) -> Dict[str, torch.Tensor]:
        lcfg, step = self.cfg.loss, self.step
        terms = {"sds": (lcfg.lambda_sds.value(step), guidance_loss)}
        if "orient_loss" in out:
            terms["orient"] = (lcfg.lambda_orient.value(step), out["orient_loss"])
        terms["sparsity"] = (lcfg.lambda_sparsity.value(step), lambda: (out["opacity"] ** 2 + 0.01).sqrt().mean())
        terms["opaque"] = (lcfg.lambda_opaque.value(step), lambda: _binary_entropy(out["opacity"]))
        geometry = self.system.geometry  # each Gaussian's own entropy, summed (Gaussian scenes; checked in config)
        terms["gaussian_opacity"] = (lcfg.lambda_gaussian_opacity.value(step),
                                     lambda: _binary_entropy(geometry.opacities()) * geometry.num_gaussians)
        return {name: w * (v() if callable(v) else v) for name, (w, v) in terms.items() if w != 0.0}

    def train_step(self) -> Dict[str, float]:
        """One SDS step; returns the loss figures. A non-finite gradient skips the update."""
        sysm, gen, step = self.system, self.generator, self.step
        sysm.renderer.update_occupancy(sysm.geometry, step, gen)
        cams = self.sample_cameras()
        mode = sysm.material.choose_mode(step, gen)
        out = sysm.render(cams, mode=mode, generator=gen, train=True)
        guided = {"loss": torch.zeros((), device=self.device)}
        if self.targets is None or self.cfg.loss.lambda_sds.value(step) != 0.0:
            guided = self.guide(out, cams, mode)
        terms = self.loss_terms(out, guided["loss"])
        if self.targets is not None and self.cfg.loss.lambda_image.value(step) != 0.0:
            terms["image"] = self.cfg.loss.lambda_image.value(step) * self.targets.loss(
                sysm.render, gen, len(cams), self.device)
        figures = self.apply_loss(terms)
        # a guidance's own losses (VSD's phi), reported beside the 3D terms but not part of ``loss``
        figures.update({k[len("loss_"):]: float(v) for k, v in guided.items() if k.startswith("loss_")})
        return figures

    def apply_loss(self, terms: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """Back-propagate the sum of the loss ``terms`` and step the optimiser (Gaussians: densify on
        schedule); a non-finite gradient skips the update. Returns the figures of the terms and ``loss``."""
        sysm, gen, step = self.system, self.generator, self.step
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.last_grad_norm = gradient_norm(self.optimizer)
        if self._gradients_finite(loss):
            if hasattr(sysm.geometry, "after_backward"):  # Gaussians: densification statistics
                sysm.geometry.after_backward()
            self.optimizer.step()
            if hasattr(sysm.geometry, "after_step"):  # Gaussians: densify / prune on schedule
                sysm.geometry.after_step(step, self.optimizer, gen)
        else:
            self.skipped_steps.append(step)
            logger.warning("step %d: non-finite loss or gradient; update skipped", step)
            self.optimizer.zero_grad(set_to_none=True)
        figures = {name: float(v.detach()) for name, v in terms.items()}
        figures["loss"] = float(loss.detach())
        return figures

    def sample_cameras(self):
        """The training cameras of the current step, on the run's device (a hook: edits hold views)."""
        return self.sampler.sample(self.generator, step=self.step).to(self.device)

    def guide(self, out: Dict[str, torch.Tensor], cams, mode: str) -> Dict[str, torch.Tensor]:
        """The guidance of this step's renders ``out`` seen from ``cams`` in shading ``mode`` (a hook:
        edits also give the frozen source's renders); returns the guidance's dict with its ``loss``."""
        cond, uncond = self.prompts(cams.elevation, cams.azimuth)
        extra = {"perp_neg": self.prompts.perp_neg(cams.elevation, cams.azimuth)} if self.cfg.prompting.perp_neg else {}
        return self.guidance(out["rgb"], cond, uncond, step=self.step, generator=self.generator, cameras=cams, **extra)

    def config_text(self) -> str:
        """The resolved config as saved in ``run_dir/config.yaml``."""
        return to_yaml(self.cfg)

    def _gradients_finite(self, loss: torch.Tensor) -> bool:
        if not torch.isfinite(loss):
            return False
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and not torch.isfinite(p.grad).all():
                    return False
        return True

    def _one_step(self, t0: float, progress: Optional[ProgressFn]) -> None:
        """One training step and what follows it on schedule: log, validation, checkpoint."""
        tcfg, started = self.cfg.trainer, time.perf_counter()
        self.last_losses = self.train_step()
        self.step += 1
        self.elapsed = time.perf_counter() - t0
        if self.log is not None and self.log.due(self.step, self.cfg.steps):
            self.check_writer()
            self.log.record(self.log_row(time.perf_counter() - started))
        if progress is not None:
            progress(self.step, self.last_losses)
        if tcfg.log_every and self.step % tcfg.log_every == 0:
            logger.info("step %d/%d loss %.4g", self.step, self.cfg.steps, self.last_losses["loss"])
        if tcfg.val_every and self.step % tcfg.val_every == 0:
            self.validate()
        if tcfg.checkpoint_every and self.step % tcfg.checkpoint_every == 0 and self.step < self.cfg.steps:
            self.save()

    def log_row(self, step_time: float) -> Dict[str, Any]:
        """The figures of a logged step (a row of ``metrics.csv``): losses, gradient norm, timestep range,
        learning rates, Gaussians."""
        row: Dict[str, Any] = {"step": self.step, "wall_time_s": round(self.elapsed, 3),
                               "step_time_s": round(step_time, 4), "loss": self.last_losses.get("loss"),
                               "grad_norm": self.last_grad_norm}
        row.update({f"loss_{k}": v for k, v in self.last_losses.items() if k != "loss"})
        for name in ("t_min", "t_max"):
            schedule = getattr(self.cfg.guidance, name, None)
            if hasattr(schedule, "value"):
                row[name] = schedule.value(self.step - 1)
        row.update({f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(self.optimizer.param_groups)})
        if hasattr(self.system.geometry, "num_gaussians"):
            row["num_gaussians"] = self.system.geometry.num_gaussians
        return row

    def fit(self, progress: Optional[ProgressFn] = None) -> Path:
        """Train to ``cfg.steps`` from the current step, then write the final outputs.

        The run holds its folder as its one writer (:func:`~text3d.core.writer.hold_folder`): another
        process writing it is refused, and a folder removed under the run stops it. SIGINT/SIGTERM
        stop the loop at the next step boundary after saving a checkpoint there (then
        ``KeyboardInterrupt`` is raised), so a resumed run ends as an uninterrupted one would.
        """
        if self.new_folder:  # claimed now, atomically: a run that fails to start leaves nothing behind
            self.run_dir, self.new_folder = claim_new_dir(self.run_dir), False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with hold_folder(self.run_dir, self.folder_kind) as self.writer:
            self.log = TrainingLog(self.cfg.logging, self.run_dir, self.step)
            try:
                write_text(self.run_dir / "config.yaml", self.config_text())
                self._train(progress)
                self.save()
                self.finish()
            finally:
                self.log.close()
                self.writer, self.log = None, None
        return self.run_dir

    def _train(self, progress: Optional[ProgressFn]) -> None:
        t0 = time.perf_counter() - self.elapsed
        with StepBoundaryStop() as stop:
            while self.step < self.cfg.steps:
                self._one_step(t0, progress)
                if stop.requested is not None:  # Ctrl-C / SIGTERM: a consistent checkpoint, then stop
                    self.save()
                    raise KeyboardInterrupt

    def check_writer(self) -> None:
        """Before writing into the folder: stop if it was removed or taken over (see :meth:`fit`)."""
        if self.writer is not None:
            self.writer.check()

    # ----------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def render_views(self, cameras, mode: str = "albedo") -> List[Dict[str, torch.Tensor]]:
        out = self.system.render(cameras.to(self.device), mode=mode, train=False)
        return [{k: v[i].cpu() for k, v in out.items() if torch.is_tensor(v) and v.dim() == 4} for i in range(len(cameras))]

    def validate(self) -> Path:
        """Save a grid of validation views: colour on top, opacity below."""
        self.check_writer()
        tcfg = self.cfg.trainer
        cams = self.sampler.eval_cameras(tcfg.val_views, tcfg.val_resolution, tcfg.val_resolution)
        views = self.render_views(cams)
        tiles = [v["rgb"] for v in views] + [v["opacity"].expand(-1, -1, 3) for v in views]
        grid = image_grid(tiles, cols=len(views))
        path = save_image(self.run_dir / "validation" / f"step-{self.step:06d}.png", grid)
        if self.log is not None:
            self.log.image("validation", grid, self.step)
            self.log.draw()
        return path

    def turntable(self, metrics: Optional[Dict[str, Any]] = None) -> List[Path]:
        """``turntable.mp4/.gif`` of the final scene (``metrics``: the run's figures, for captions)."""
        tcfg = self.cfg.trainer
        if tcfg.turntable_frames <= 0:
            return []
        cams = self.sampler.eval_cameras(tcfg.turntable_frames, tcfg.turntable_resolution, tcfg.turntable_resolution)
        frames = []
        for i in range(len(cams)):  # one frame at a time keeps memory bounded
            frames.append(self.render_views(cams.index(slice(i, i + 1)))[0]["rgb"])
        return [save_video(self.run_dir / f"turntable.{ext}", frames, fps=tcfg.turntable_fps) for ext in ("mp4", "gif")]

    def metrics(self) -> Dict[str, Any]:
        return {
            "steps": self.step,
            "wall_time_s": round(self.elapsed, 3),
            "final_loss": self.last_losses.get("loss"),
            "final_losses": self.last_losses,
            "seed": self.cfg.seed,
            "prompt": self.cfg.prompt,
            "skipped_steps": self.skipped_steps,
            "device": str(self.device),
            "versions": versions(),
        }

    def finish(self) -> None:
        from text3d.prior.scene_eval import analytic_scores

        self.validate()
        metrics = self.metrics()
        scores = analytic_scores(self)
        if scores is not None:  # the prompt names a shape the analytic renderer knows
            metrics.update(silhouette_iou=scores["silhouette_iou"], colour_found=scores["colour_found"],
                           analytic=scores)
            if "pattern_ok" in scores:
                metrics.update(stripe_found=scores["stripe_found"], pattern_ok=scores["pattern_ok"])
        if hasattr(self.system.geometry, "num_gaussians"):  # Gaussian runs: the standard 3DGS .ply
            from text3d.scene.gaussians import model_params, write_ply

            params, offset = model_params(self.system.geometry), self.world_offset()
            if offset is not None:
                params = {**params, "means": params["means"] + offset.to(params["means"])}
            write_ply(self.run_dir / "gaussians.ply", params)
            metrics["num_gaussians"] = self.system.geometry.num_gaussians
        if self.cfg.export.enabled:
            metrics["export"] = self.export_mesh()
        self.turntable(metrics)
        self.check_writer()
        write_json(self.run_dir / "metrics.json", metrics)

    def world_offset(self) -> Optional[torch.Tensor]:
        """``[3]`` translation from the frame the scene is trained in to the frame its ``gaussians.ply``
        and export are written in; None when they are the same (every run)."""
        return None

    def export_settings(self):
        """The run's export settings, an unset pore size taken from its finest training pixel."""
        from text3d.export.mesh import settings_for_run

        return settings_for_run(self.cfg.export, self.cfg)

    def export_mesh(self) -> Dict[str, Any]:
        """Export the geometry (NeRF or Gaussians) as configured in ``cfg.export`` into ``run_dir/export``.

        A field with no surface yet (a short or failed run) logs a warning instead of failing the
        run: the checkpoint is saved, and ``text3d export`` can be tried with other settings.
        """
        from text3d.export import export_any, object_name
        from text3d.export.pipeline import drawn_as
        from text3d.core.errors import Text3DError

        source = {"run_dir": str(self.run_dir.absolute()), "step": self.step, "prompt": self.cfg.prompt}
        try:
            result = export_any(self.system.geometry, self.export_settings(), self.run_dir / "export",
                                name=object_name(self.cfg.prompt), source=source, offset=self.world_offset(),
                                rasterize_mode=drawn_as(self.cfg))
        except Text3DError as e:
            logger.warning("mesh export skipped: %s", e)
            return {"error": str(e)}
        return {"files": [str(p.relative_to(self.run_dir)) for p in result.paths], "iso_level": result.level,
                "faces": result.faces, "pieces": result.pieces, "seconds": round(sum(result.timings.values()), 3)}

    # ----------------------------------------------------------------------------- checkpoints
    def state_tensors(self) -> Dict[str, torch.Tensor]:
        tensors = {f"system.{k}": v for k, v in self.system.state_dict().items()}
        optim_tensors, _ = optimizer_to_flat(self.optimizer)
        tensors.update(optim_tensors)
        tensors["rng.generator"] = self.generator.get_state()
        if hasattr(self.guidance, "state_tensors"):  # a guidance that trains a model of its own (VSD)
            tensors.update({f"guidance.{k}": v for k, v in self.guidance.state_tensors().items()})
        return tensors

    def checkpoint_meta(self) -> Dict[str, Any]:
        """Extra JSON fields of a checkpoint's ``state.json`` (a hook; edits record their source)."""
        return {}

    def save(self) -> Path:
        self.check_writer()
        _, groups = optimizer_to_flat(self.optimizer)
        meta = {"elapsed_s": self.elapsed, "skipped_steps": self.skipped_steps, "last_losses": self.last_losses,
                "optimizer_param_groups": groups, "seed": self.cfg.seed, "versions": versions(),
                **self.checkpoint_meta()}
        if hasattr(self.guidance, "state_meta"):
            meta["guidance"] = self.guidance.state_meta()
        return save_checkpoint(self.run_dir / "ckpts", self.step, self.state_tensors(), meta,
                               keep=self.cfg.trainer.keep_checkpoints)

    def load(self, path: Path | Checkpoint, overrides: Sequence[str] = ()) -> None:
        """Load a checkpoint (a folder or one already read) into the system, optimizer and counters.

        ``overrides``: the model-section overrides given on resume, named when the model does not fit.
        """
        ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path)
        path = ckpt.path
        system_sd = {k[len("system."):]: v for k, v in ckpt.tensors.items() if k.startswith("system.")}
        try:
            self.system.load_state_dict(system_sd)
        except RuntimeError:
            why = state_dict_difference(system_sd, self.system.state_dict())
            hint = (f"the overrides {' '.join(overrides)} change the saved model; drop them" if overrides
                    else "the run's config.yaml was edited after the checkpoint; restore it")
            raise RunDirError(f"checkpoint {path} does not fit the model: {why}; {hint}") from None
        # a Gaussian geometry may have been resized to the checkpoint's count: optimise the new tensors
        self.optimizer = build_optimizer(self.cfg, self.system.parameter_groups())
        try:
            optimizer_from_flat(self.optimizer, ckpt.tensors, ckpt.meta["optimizer_param_groups"])
            self.generator.set_state(ckpt.tensors["rng.generator"])
            if hasattr(self.guidance, "load_state"):
                self.guidance.load_state({k[len("guidance."):]: v for k, v in ckpt.tensors.items()
                                          if k.startswith("guidance.")}, ckpt.meta["guidance"])
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise RunDirError(f"checkpoint {path} is damaged (optimizer or RNG state: {type(e).__name__} "
                              f"{str(e).splitlines()[0][:120] if str(e) else ''}); delete that folder to resume "
                              "from an older checkpoint") from None
        self.step = int(ckpt.meta["step"])
        self.elapsed = float(ckpt.meta.get("elapsed_s", 0.0))
        self.skipped_steps = list(ckpt.meta.get("skipped_steps", []))
        self.last_losses = dict(ckpt.meta.get("last_losses", {}))
        logger.info("resumed from %s at step %d", path, self.step)


def gradient_norm(optimizer: torch.optim.Optimizer) -> Optional[float]:
    """The L2 norm of every parameter's gradient together (None when no parameter has one)."""
    norms = [p.grad.detach().norm() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else None


def state_dict_difference(saved: Dict[str, torch.Tensor], model: Dict[str, torch.Tensor]) -> str:
    """One line saying how a saved state dict and a model's differ (names and shapes)."""
    missing, unexpected = sorted(set(model) - set(saved)), sorted(set(saved) - set(model))
    shapes = [(k, tuple(saved[k].shape), tuple(model[k].shape)) for k in sorted(set(saved) & set(model))
              if saved[k].shape != model[k].shape]
    parts = []
    if shapes:
        k, a, b = shapes[0]
        parts.append(f"{len(shapes)} tensor(s) differ in shape (e.g. {k}: saved {list(a)}, now {list(b)})")
    if missing:
        parts.append(f"{len(missing)} tensor(s) the checkpoint lacks (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensor(s) the model lacks (e.g. {unexpected[0]})")
    return ", ".join(parts) or "the tensors differ"


def load_run_config(config_path: Optional[str | Path], overrides: Sequence[str] = ()) -> Config:
    """The config a run would use, validated (no model loads, nothing is written): a preset with
    ``overrides``, or with ``resume=DIR`` the config saved in ``DIR`` with ``overrides`` on top."""
    raw = RUN_SCHEMA.merge(RUN_SCHEMA.layers(config_path, overrides))
    if raw.get("resume"):
        return _resumed_config(Path(raw["resume"]), overrides)
    if config_path is None:
        raise ConfigError("a config file is needed (e.g. text3d run configs/quickstart.yaml), or resume=<run dir>")
    cfg = RUN_SCHEMA.resolve(raw)
    if getattr(GUIDANCES.get(cfg.guidance.type).cls, "needs_source", False):
        raise ConfigError(f"guidance.type: {cfg.guidance.type!r} edits an existing scene; use "
                          f"'text3d edit CONFIG source=RUN_DIR target_prompt=...' (or guidance.type=sds here)")
    return cfg


def open_run(config_path: Optional[str | Path], overrides: Sequence[str] = (), prior: Any = None,
             run_dir: Optional[str | Path] = None) -> Run:
    """Validate the config and set up a run (a new one, or ``resume=<run dir>``).

    With ``resume=DIR`` the run continues with the config saved in ``DIR/config.yaml``; overrides
    given here (``steps=...``) apply on top, and ``config_path`` may be None. A new run lands in
    ``run_dir`` when it is given (a batch item's folder), else in a new timestamped folder.
    """
    cfg = load_run_config(config_path, overrides)
    if cfg.resume:
        return _resume_run(cfg, overrides, prior)
    _warn_empty_prompt(cfg)
    check_writable(run_dir if run_dir is not None else cfg.output_dir, "output_dir")
    if run_dir is not None:  # a given folder (a batch item's): used as it is
        refuse_if_in_use(run_dir)
        return Run(cfg, Path(run_dir), prior=prior)
    run = Run(cfg, new_run_dir(cfg), prior=prior)
    run.new_folder = True
    return run


MODEL_SECTIONS = ("geometry", "material", "background", "renderer")
"""Sections whose settings shape the checkpointed model: a resumed run cannot change their type."""


def _resumed_config(run_dir: Path, overrides: Sequence[str]) -> Config:
    """The config saved in ``run_dir`` with ``overrides``; a model-changing override is refused."""
    check_run_folder(run_dir, "resume")
    layers = RUN_SCHEMA.layers(run_dir / "config.yaml", overrides, saved=True)
    base, extra = layers[0].data, layers[-1].data
    if "edit" in base:
        raise ConfigError(f"resume: {str(run_dir)!r} is an edit; continue it with: text3d edit resume={run_dir}")
    for section in MODEL_SECTIONS:
        new_type = (extra.get(section) or {}).get("type") if isinstance(extra.get(section), dict) else None
        old_type = (base.get(section) or {}).get("type")
        if new_type is not None and new_type != old_type:
            raise ConfigError(f"resume: {section}.type={new_type} differs from the run's {old_type!r}; a resumed run "
                              f"keeps its components — drop the override, or start a new run with it")
    check_resume_overrides(extra)
    return RUN_SCHEMA.resolve(RUN_SCHEMA.merge([*layers, literal_layer({"resume": str(run_dir)}, "resume")]))


def _resume_run(cfg: Config, overrides: Sequence[str], prior: Any) -> Run:
    """Continue ``cfg.resume`` from its newest intact checkpoint with its saved config (+ ``overrides``)."""
    run_dir = Path(cfg.resume)
    check_writable(run_dir, "resume")
    refuse_if_in_use(run_dir)  # before any model loads
    ckpt = load_latest_checkpoint(run_dir)  # a damaged one is reported before any model loads
    run = Run(cfg, run_dir, prior=prior)
    if ckpt is None:
        logger.warning("%s has no checkpoint yet; starting from step 0", run_dir)
        return run
    model_overrides = [o for o in overrides if o.split("=", 1)[0].split(".")[0] in MODEL_SECTIONS]
    run.load(ckpt, overrides=model_overrides)
    check_resumed_steps(run)
    return run


def check_resumed_steps(run: Run) -> None:
    """A resume may raise ``steps`` or keep them, not set them below the step it continues from."""
    if run.cfg.steps < run.step:
        raise ConfigError(f"steps: {run.cfg.steps} is below step {run.step}, where {run.run_dir} continues from; "
                          f"a resume may keep or raise steps (steps >= {run.step})")


def _warn_empty_prompt(cfg: Config) -> None:
    if not cfg.prompt.strip():
        logger.warning("prompt is empty: nothing conditions this run, so the prior pulls toward an arbitrary "
                       "object; set prompt=\"...\"")
