"""Diffusion priors and score-distillation guidance (installed as ``text3d.guidance``).

Priors loaded with diffusers (:mod:`.stable_diffusion`: any SD 1.x/2.x hub id or folder;
:mod:`.tiny`: the tiny test pipeline; :mod:`.pixel_prior`: the embedded shapes prior; :mod:`.latent_prior`: the miniature SD), prompts
(:mod:`.prompts`), SDS (:mod:`.sds`; then SDEdit targets: :mod:`.sds_refine`), CSD and NFSD (:mod:`.classifier_score`), ISM (:mod:`.ism`), VSD (:mod:`.vsd`, with LoRA adapters from :mod:`.lora`), PDS / DDS / SDS-edit (:mod:`.pds`, :mod:`.dds`), attention
processors (:mod:`.attention`), SDEdit (:mod:`.sdedit`) and reference-camera conditioning
(:mod:`.reference_camera`). Importing the package registers the priors and guidances in
:mod:`.registry`.

May import: ``text3d.core``, ``text3d.renderers``, ``text3d.scene``, ``text3d.prior``.
"""

from .priors import DTYPE_CHOICES, DiffusionPrior, freeze, no_transformers_progress_bars, resolve_dtype
from .prompts import VIEWS, PerpNeg, PromptingConfig, PromptProcessor, check_prompting_config, wrap_azimuth
from .sds import WEIGHTINGS, SDSConfig, SDSGuidance, check_sds_config, distillation_loss
from .pds import COEFFICIENTS, PDSConfig, PDSGuidance, check_pds_config, timestep_grid
from .dds import DDSConfig, DDSGuidance, SDSEditConfig, SDSEditGuidance
from .classifier_score import CSDConfig, CSDGuidance, NFSDConfig, NFSDGuidance
from .ism import ISMConfig, ISMGuidance
from .vsd import VSDConfig, VSDGuidance
from .sds_refine import SDSRefineConfig, SDSRefineGuidance
from .stable_diffusion import (
    DEFAULT_MODEL,
    WITHDRAWN_MODELS,
    StableDiffusionPrior,
    StableDiffusionPriorConfig,
    check_model_id,
    load_sd_components,
    resolve_model_folder,
)
from . import pixel_prior  # noqa: F401  (registers prior.type: pixel)
from . import latent_prior  # noqa: F401  (registers prior.type: latent)
from .tiny import TINY_MODEL_NAME, build_tiny_sd_pipeline, ensure_tiny_sd, save_tiny_sd, tiny_sd_cache_dir

__all__ = [
    "COEFFICIENTS", "CSDConfig", "CSDGuidance", "DDSConfig", "ISMConfig", "ISMGuidance", "VSDConfig", "VSDGuidance", "NFSDConfig", "NFSDGuidance", "DDSGuidance", "DEFAULT_MODEL", "DTYPE_CHOICES", "PDSConfig", "PDSGuidance",
    "SDSEditConfig", "SDSEditGuidance", "SDSRefineConfig", "SDSRefineGuidance", "check_pds_config", "distillation_loss", "timestep_grid", "TINY_MODEL_NAME", "VIEWS", "WEIGHTINGS", "WITHDRAWN_MODELS",
    "DiffusionPrior", "PerpNeg", "PromptProcessor", "PromptingConfig", "SDSConfig", "SDSGuidance", "StableDiffusionPrior",
    "StableDiffusionPriorConfig", "build_tiny_sd_pipeline", "check_model_id", "check_prompting_config",
    "check_sds_config", "ensure_tiny_sd", "freeze", "load_sd_components", "no_transformers_progress_bars",
    "resolve_dtype", "resolve_model_folder", "save_tiny_sd", "tiny_sd_cache_dir", "wrap_azimuth",
]
