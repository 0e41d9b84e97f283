"""Which prior a ``text3d train-prior`` recipe trains: ``type: pixel`` (the default, the pixel-space
shapes prior of :mod:`.training`) or ``type: latent`` (the miniature Stable Diffusion of
:mod:`.latent_training`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from text3d.core.errors import ConfigError
from .latent_model import BUILTIN_LATENT_PRIOR_DIR
from .latent_training import TRAIN_LATENT_PRIOR_SCHEMA, TrainLatentPriorConfig, ViewAttention, train_latent_prior
from .model import BUILTIN_PRIOR_DIR
from .training import TRAIN_PRIOR_SCHEMA, ProgressFn, train_prior

RECIPE_TYPES = ("pixel", "latent")


def load_recipe(path: Optional[Path | str] = None, overrides: Sequence[str] = ()) -> Any:
    """Read a recipe (``key.path=value`` overrides applied) with the schema its ``type`` names.

    Raises:
        ConfigError: an unknown ``type``, unknown keys, wrong types or values, with the key path.
    """
    raw = TRAIN_PRIOR_SCHEMA.merge(TRAIN_PRIOR_SCHEMA.layers(path, overrides))
    kind = raw.get("type", "pixel")
    if kind == "latent":
        return TRAIN_LATENT_PRIOR_SCHEMA.resolve(raw)
    if kind != "pixel":
        raise ConfigError(f"type: unknown recipe type {kind!r}; valid choices: {', '.join(RECIPE_TYPES)}")
    raw.pop("type", None)
    return TRAIN_PRIOR_SCHEMA.resolve(raw)


def default_out(cfg: Any) -> Path:
    """Where a recipe's prior goes when ``--out`` is not given: the package's built-in prior of its type."""
    return BUILTIN_LATENT_PRIOR_DIR if isinstance(cfg, TrainLatentPriorConfig) else BUILTIN_PRIOR_DIR


def train(cfg: Any, out_dir: Path | str, progress: Optional[ProgressFn] = None,
          work_dir: Optional[Path | str] = None, replace: bool = False,
          view_attention: Optional[ViewAttention] = None) -> Path:
    """Train the prior ``cfg`` describes (see :func:`train_prior` and :func:`train_latent_prior`;
    ``view_attention`` is the latent recipe's view-set stage's)."""
    if isinstance(cfg, TrainLatentPriorConfig):
        return train_latent_prior(cfg, out_dir, progress=progress, work_dir=work_dir, replace=replace,
                                  view_attention=view_attention)
    return train_prior(cfg, out_dir, progress=progress, work_dir=work_dir, replace=replace)
