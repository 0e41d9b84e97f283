"""``text3d edit``: move an existing scene towards a target prompt with an editing guidance (PDS,
DDS or SDS-edit), keeping what the prompt does not ask to change.

An edit is a :class:`~text3d.run.Run` whose scene starts from the source's weights. Beside it a
frozen copy of the source renders ``x_0^src`` from the camera the edited copy is rendered from at
every step; each training view is held for ``edit.hold_steps`` steps (the official PDS holds 10),
so the frozen copy renders and encodes it once. The edit folder is a run folder: it checkpoints
(the frozen source's weights included, so it continues without the source folder) and resumes
bit-exactly, ``text3d export`` reads it, and a further ``text3d edit`` takes it as its source.

Config: an edit preset (``configs/edit-*.yaml``) gives the prior, guidance, optimiser, steps and
trainer settings; the scene sections (geometry, material, background, renderer, cameras) come from
the source, refined by the preset; the ``edit:`` section (``source``, ``target_prompt``,
``source_prompt``, ...; the first three also as top-level shorthands) says what to edit.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from text3d.core.checkpoint import Checkpoint, load_checkpoint, load_latest_checkpoint
from text3d.core.errors import ConfigError, RunDirError
from text3d.core.media import add_caption, save_video
from text3d.core.writer import refuse_if_in_use
from text3d.run.trainer import Run, build_optimizer, check_resumed_steps, new_run_dir
from text3d.scene.rundir import source_frame_offset
from text3d.scene.system import NeRFSystem

from .chroma import chroma_variation, object_colour
from .config import EditRunConfig, load_edit_run_config
from .hidden import orbit_rings, recolour_hidden
from .refine import Refinement
from .smoothness import SmoothnessSettings, build_smoothness
from .source import SCENE_SECTIONS, open_source

logger = logging.getLogger(__name__)

MAX_UPSAMPLING = 2
"""Renders may be enlarged at most this much to the prior's input resolution."""


def check_prior_resolution(cfg: EditRunConfig, prior: Any) -> None:
    """Raise :class:`ConfigError` when training renders are too small for the prior's input."""
    sizes = [min(cfg.cameras.width, cfg.cameras.height), *cfg.cameras.resolutions]
    smallest, need = min(sizes), int(prior.image_size)
    if smallest * MAX_UPSAMPLING < need:
        raise ConfigError(f"cameras.width: renders of {smallest} px cannot meet the prior's {need} px input "
                          f"(at most {MAX_UPSAMPLING}x enlargement); set cameras.width and cameras.height to at "
                          f"least {math.ceil(need / MAX_UPSAMPLING)}")


def _load_system(system: torch.nn.Module, state: Dict[str, torch.Tensor], what: str) -> None:
    try:
        system.load_state_dict({**system.state_dict(), **state})
    except RuntimeError as e:
        raise RunDirError(f"{what} does not fit this edit's scene config: {str(e).splitlines()[0]}") from None


class EditRun(Run):
    """A run that edits a source scene (see the module docstring). Its folder is a run folder: the
    edited Gaussians of a Gaussian scene are its ``gaussians.ply``, as a run's are.

    Args:
        cfg: the resolved edit config (``prompt`` is the target prompt; ``cfg.edit.source_prompt``
            filled in; ``cfg.refine`` the refinement stage).
        run_dir: the edit folder.
        source_state: the source scene's weights (``NeRFSystem`` state keys).
        source_info: description of the source for ``metrics.json``.
        prior: an already loaded prior (tests inject tiny ones).
        fresh: the edit starts from the source (``False``: a checkpoint will be loaded over it, so the
            one-off preparation of the source, ``edit.recolour_hidden``, is skipped).
    """

    folder_kind = "edit folder"

    def __init__(self, cfg: EditRunConfig, run_dir: Path, source_state: Dict[str, torch.Tensor],
                 source_info: Dict[str, Any], prior: Any = None, fresh: bool = True):
        from text3d.guidance.prompts import PromptProcessor

        super().__init__(cfg, run_dir, prior=prior)
        check_prior_resolution(cfg, self.prior)
        edit = cfg.edit
        self.edit, self.refine, self.source_info = edit, cfg.refine, source_info
        _load_system(self.system, source_state, f"the source {edit.source}")
        self.optimizer = build_optimizer(cfg, self.system.parameter_groups())  # the Gaussian count may differ
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.source = NeRFSystem(cfg).to(self.device)
        _load_system(self.source, self.system.state_dict(), f"the source {edit.source}")
        self.source.requires_grad_(False)
        if edit.recolour_hidden and fresh:  # the frozen source keeps its own colours; only the edited copy changes
            views = orbit_rings(cfg.cameras.elevation_range, cfg.cameras.eval_distance, cfg.cameras.eval_fovy)
            hidden = recolour_hidden(self.system.geometry, views, rasterize_mode=cfg.renderer.rasterize_mode)
            logger.info("recoloured %d Gaussians no training view sees", hidden)
        self.source_prompts = PromptProcessor(self.prior, edit.source_prompt, cfg.negative_prompt, cfg.prompting)
        self.smoothness = None
        if edit.smooth_colour > 0:
            settings = SmoothnessSettings(edit.smooth_radius, edit.smooth_points, cfg.seed)
            self.smoothness = build_smoothness(cfg.geometry.type, settings, self.source, cfg.cameras)
        self._source_cache: Optional[Tuple[Tuple[int, str], Tuple[torch.Tensor, torch.Tensor]]] = None
        self.refinement = Refinement(self.refine, self.prior, self.sampler, cfg.seed) if self.refine.enabled else None
        self.clip = None
        if edit.clip_model:
            from .clip_metric import ClipScorer

            self.clip = ClipScorer(edit.clip_model, self.device)

    # ----------------------------------------------------------------------------- hooks of Run
    def train_step(self) -> Dict[str, float]:
        """A distillation step, or from ``refine.start_step`` a refinement step (:meth:`refine_step`)."""
        if self.refinement is not None and self.refinement.active(self.step):
            return self.refine_step()
        return super().train_step()

    def refine_step(self) -> Dict[str, float]:
        """Cache the views (first step of the stage), replace the step's views by SDEdits of their
        current renders, then fit cached views photometrically (see :mod:`text3d.edit.refine`)."""
        ref, sysm = self.refinement, self.system
        sysm.renderer.update_occupancy(sysm.geometry, self.step, self.generator)
        if ref.images is None:
            ref.start(self._render_still)
        ref.replace(self.step, self._render_still, self.prompts, self.device)
        render = lambda cams: sysm.render(cams, mode="albedo", generator=self.generator, train=True)["rgb"]  # noqa: E731
        return self.apply_loss({"refine": ref.loss(render, self.generator, self.device)})

    @torch.no_grad()
    def _render_still(self, cams) -> torch.Tensor:
        return self.system.render(cams.to(self.device), mode="albedo", train=False)["rgb"]

    def sample_cameras(self):
        """View ``step // hold_steps``, drawn from its own seeded generator (so a resumed edit holds
        the same view), at the resolution of the view's first step."""
        view = self.step // self.edit.hold_steps
        gen = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + view) % (2**63 - 1))
        return self.sampler.sample(gen, step=view * self.edit.hold_steps).to(self.device)

    def guide(self, out: Dict[str, torch.Tensor], cams, mode: str) -> Dict[str, torch.Tensor]:
        cond, uncond = self.prompts(cams.elevation, cams.azimuth)
        source_cond, _ = self.source_prompts(cams.elevation, cams.azimuth)
        return self.guidance(out["rgb"], cond, uncond, step=self.step, generator=self.generator, cameras=cams,
                             source_x0=self.source_x0(cams, mode), source_cond=source_cond)

    def source_x0(self, cams, mode: str) -> torch.Tensor:
        """Encoded renders of the frozen source from ``cams`` (deterministic; cached while the view is held)."""
        return self.source_view(cams, mode)[0]

    @torch.no_grad()
    def source_view(self, cams, mode: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x_0^src, opacity)`` of the frozen source from ``cams``: its encoded renders and their
        ``[B, H, W, 1]`` opacity (deterministic; rendered once while the view is held)."""
        key = (self.step // self.edit.hold_steps, mode)
        if self._source_cache is None or self._source_cache[0] != key:
            out = self.source.render(cams, mode=mode, train=False)
            x0 = self.prior.encode_images(out["rgb"].permute(0, 3, 1, 2), None)
            self._source_cache = (key, (x0, out["opacity"]))
        return self._source_cache[1]

    def loss_terms(self, out: Dict[str, torch.Tensor], guidance_loss: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The run's terms plus the opacity anchor (``edit.keep_opacity``) against the held view's source
        render, the colour smoothness (``edit.smooth_colour``, :mod:`text3d.edit.smoothness`) and the chroma
        smoothness of the renders (``edit.smooth_chroma``, :mod:`text3d.edit.chroma`)."""
        terms = super().loss_terms(out, guidance_loss)
        if self.smoothness is not None:
            terms["smooth"] = self.edit.smooth_colour * self.smoothness.loss(self.system.geometry, self.step)
        if self.edit.smooth_chroma > 0:
            terms["chroma"] = self.edit.smooth_chroma * chroma_variation(object_colour(out), out["opacity"])
        cache = self._source_cache  # the held view's, rendered by guide() for this step's cameras
        if self.edit.keep_opacity > 0 and cache is not None and cache[0][0] == self.step // self.edit.hold_steps:
            diff = out["opacity"] - cache[1][1]  # summed over pixels, averaged over views: the guidances' scale
            terms["keep"] = self.edit.keep_opacity * diff.square().sum() / diff.shape[0]
        return terms

    def export_settings(self):
        """As a run's, with the pore size from the finest pixel that supervised the scene, the source's
        included: the edit renders at its own (often coarser) resolution, yet keeps the source's detail."""
        from text3d.export.mesh import settings_for_run

        return settings_for_run(self.cfg.export, self.cfg, self.source_info.get("supervised_pixel"))

    def world_offset(self) -> Optional[torch.Tensor]:
        """A ``.ply`` source is edited centred on the origin (:func:`text3d.edit.source.open_source`); its
        edited ``gaussians.ply`` and export go back to the file's own frame, where the user's scene has it
        (an edit of such an edit too: its source's checkpoint records the re-centring)."""
        return source_frame_offset(self.source_info)

    def checkpoint_meta(self) -> Dict[str, Any]:
        return {"edit_source": self.source_info}

    # ----------------------------------------------------------------------------- checkpoints
    def state_tensors(self) -> Dict[str, torch.Tensor]:
        tensors = super().state_tensors()
        tensors.update({f"source.{k}": v for k, v in self.source.state_dict().items()})
        if self.refinement is not None:
            tensors.update(self.refinement.state_tensors())
        return tensors

    def load(self, path: Path | Checkpoint, **kwargs: Any) -> None:
        ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path)
        super().load(ckpt, **kwargs)
        source = {k[len("source."):]: v for k, v in ckpt.tensors.items() if k.startswith("source.")}
        if source:
            _load_system(self.source, source, f"checkpoint {ckpt.path}")
        self._source_cache = None
        if self.refinement is not None:
            self.refinement.load(ckpt.tensors, ckpt.path)

    # ----------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def render_source_views(self, cameras) -> List[Dict[str, torch.Tensor]]:
        out = self.source.render(cameras.to(self.device), mode="albedo", train=False)
        return [{k: v[i].cpu() for k, v in out.items() if torch.is_tensor(v) and v.dim() == 4} for i in range(len(cameras))]

    def turntable(self, metrics: Optional[Dict[str, Any]] = None) -> List[Path]:
        """``turntable.mp4/.gif`` of the edited scene and ``before_after.mp4/.gif``: source | edit, captioned
        with the edit's identity and cleanliness figures (:func:`edit_caption`) when ``metrics`` are given."""
        tcfg = self.cfg.trainer
        if tcfg.turntable_frames <= 0:
            return []
        cams = self.sampler.eval_cameras(tcfg.turntable_frames, tcfg.turntable_resolution, tcfg.turntable_resolution)
        edited, pairs = [], []
        for i in range(len(cams)):  # one frame at a time keeps memory bounded
            cam = cams.index(slice(i, i + 1))
            after, before = self.render_views(cam)[0]["rgb"], self.render_source_views(cam)[0]["rgb"]
            edited.append(after)
            pairs.append(torch.cat([before, torch.ones(before.shape[0], 2, 3), after], dim=1))
        if metrics is not None:
            pairs = add_caption(pairs, edit_caption(metrics, width=pairs[0].shape[1]))
        paths = []
        for stem, frames in (("turntable", edited), ("before_after", pairs)):
            paths += [save_video(self.run_dir / f"{stem}.{ext}", frames, fps=tcfg.turntable_fps) for ext in ("mp4", "gif")]
        return paths

    def metrics(self) -> Dict[str, Any]:
        from text3d.scene.cameras import turntable
        from .metrics import cleanliness_scores, identity_scores, target_scores

        e, c = self.edit, self.cfg.cameras
        cams = turntable(e.metric_views, c.eval_elevation, c.eval_distance, c.eval_fovy, e.metric_resolution,
                         e.metric_resolution)
        edited, source = self.render_views(cams), self.render_source_views(cams)
        metrics = super().metrics()
        metrics.update(edit={"source": self.source_info, "source_prompt": e.source_prompt,
                             "target_prompt": e.target_prompt, "guidance": self.cfg.guidance.type,
                             "refine_from_step": self.refine.start_step if self.refine.enabled else None},
                       identity=identity_scores(source, edited), cleanliness=cleanliness_scores(source, edited),
                       target=target_scores(e.target_prompt, edited, cams),
                       source_target=target_scores(e.source_prompt, source, cams))
        if self.clip is not None:
            rgb = lambda views: torch.stack([v["rgb"] for v in views])  # noqa: E731
            metrics["clip_directional_similarity"] = round(self.clip.directional_similarity(
                rgb(source), rgb(edited), e.source_prompt, e.target_prompt), 4)
        return metrics


def edit_caption(metrics: Dict[str, Any], width: int) -> List[str]:
    """The before/after picture's caption: the target, identity, colour reached, see-through share and
    floaters against the source's, mesh pieces (lines cut to ``width`` pixels of the default font)."""
    idn, clean = metrics.get("identity", {}), metrics.get("cleanliness", {})
    target = metrics.get("target") or {}
    lines = [f"source | edit: {metrics.get('edit', {}).get('target_prompt', '')}",
             f"IoU to source {idn.get('silhouette_iou', 0):.2f}"
             + (f"  hue {target['hue']:.0f} ({target['hue_error']:.0f} off)" if target.get("hue") is not None else ""),
             f"see-through {clean.get('semi_transparent', 0):.0%} (source {clean.get('semi_transparent_source', 0):.0%})",
             f"floaters {clean.get('floaters', 0):.2f}"
             + (f"  mesh pieces {metrics['export']['pieces']}" if (metrics.get("export") or {}).get("pieces") else "")]
    chars = max(width // 6 - 1, 8)
    return [line[:chars] for line in lines]


def open_edit(config_path: Optional[str | Path], overrides: Sequence[str] = (), prior: Any = None) -> EditRun:
    """Validate an edit config and set up the edit (a new one, or ``resume=<edit dir>``).

    Everything the user gave is checked, and the source's weights read, before the prior loads;
    nothing is written until :meth:`EditRun.fit`.
    """
    cfg, source = load_edit_run_config(config_path, overrides)
    if source is not None:
        run = EditRun(cfg, new_run_dir(cfg), source.state, source.info, prior=prior)
        run.new_folder = True
        return run
    return _resume_edit(cfg, prior)


def _resume_edit(cfg: EditRunConfig, prior: Any) -> EditRun:
    """Continue the edit folder ``cfg.resume`` from its newest checkpoint (which holds the frozen source)."""
    run_dir = Path(cfg.resume)
    refuse_if_in_use(run_dir, "edit folder")  # before any model loads
    ckpt = load_latest_checkpoint(run_dir)
    if ckpt is not None:
        state = {k[len("source."):]: v for k, v in ckpt.tensors.items() if k.startswith("source.")}
        info = dict(ckpt.meta.get("edit_source") or {"path": cfg.edit.source})
    else:
        source = open_source(cfg.edit.source, cfg.edit.orbit_distance, cfg.edit.orbit_elevations)
        state, info = source.state, source.info
    run = EditRun(cfg, run_dir, state, info, prior=prior, fresh=ckpt is None)
    if ckpt is not None:
        run.load(ckpt)
        check_resumed_steps(run)
    return run


__all__ = ["EditRun", "SCENE_SECTIONS", "open_edit"]
