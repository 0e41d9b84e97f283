"""A tiny Stable Diffusion pipeline with random weights, for tests and offline smoke runs.

Every component has the architecture of its Stable Diffusion counterpart at a toy size: a
cross-attention UNet on 4-channel latents, a 4-level VAE (downsampling factor 8, scaling factor
0.18215), a CLIP text encoder with a byte-level BPE tokenizer and SD's noise schedule. A 64x64
image becomes an 8x8 latent. Its images are noise by design; it exists to run the real SD code
path (loading, VAE encoding, CFG, SDS) on a CPU in well under a second.

The weights come from a fixed seed, so the same ``seed`` always gives the same model, and building
it leaves the global torch RNG untouched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional

import torch

logger = logging.getLogger(__name__)

TINY_MODEL_NAME = "tiny-random-sd"
"""The ``prior.model`` value that selects this pipeline."""

TINY_VERSION = 1
"""Bumped whenever the architecture or the weight recipe changes, so stale caches are rebuilt."""

_MARKER = "text3d-tiny.json"

# SD's training noise schedule (1000 steps, "scaled_linear" betas from 0.00085 to 0.012).
_SCHEDULER_KWARGS = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def _bytes_to_unicode() -> Dict[int, str]:
    """The byte -> printable-character table of byte-level BPE (GPT-2 / CLIP)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_tiny_tokenizer_files(folder: str | os.PathLike) -> None:
    """Write ``vocab.json`` and ``merges.txt`` of a byte-level CLIP vocabulary (514 tokens, no merges).

    Every byte is a token, once inside a word and once word-final (``</w>``), so any text
    tokenizes; the two CLIP special tokens end the vocabulary.
    """
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _tiny_tokenizer():
    from transformers import CLIPTokenizer

    # transformers 5 ignores vocab_file/merges_file given to the constructor (every token becomes
    # end-of-text), so the tokenizer is loaded from a folder; model_max_length 77 as in SD.
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer_files(tmp)
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=77)


def _tiny_modules(vocab_size: int, bos_id: int, eos_id: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        projection_dim=32,
    ))
    return unet, vae, text_encoder


def build_tiny_sd_pipeline(seed: int = 0):
    """Build the tiny random-weight Stable Diffusion pipeline.

    Args:
        seed: weights seed; the same seed always gives bit-identical weights.

    Returns:
        A ``diffusers.StableDiffusionPipeline`` on CPU in float32, without a safety checker.
        Building it does not change the global torch RNG state.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    tokenizer = _tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae, text_encoder = _tiny_modules(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=DDIMScheduler(**_SCHEDULER_KWARGS),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it (safetensors) into ``folder``.

    Returns:
        The folder, which then loads like any diffusers folder (``prior.model: <folder>``).
    """
    from .priors import no_transformers_progress_bars

    folder = Path(folder)
    with no_transformers_progress_bars():
        build_tiny_sd_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    (folder / _MARKER).write_text(json.dumps({"version": TINY_VERSION, "seed": seed}), encoding="utf-8")
    return folder


def tiny_sd_cache_dir() -> Path:
    """Where ``tiny-random-sd`` is cached: ``$TEXT3D_CACHE/tiny-random-sd``, else ``~/.cache/text3d/tiny-random-sd``."""
    root = os.environ.get("TEXT3D_CACHE") or os.path.join("~", ".cache", "text3d")
    return Path(root).expanduser() / TINY_MODEL_NAME


def _is_current(folder: Path, seed: int) -> bool:
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker == {"version": TINY_VERSION, "seed": seed} and (folder / "model_index.json").is_file()


def ensure_tiny_sd(folder: Optional[str | os.PathLike] = None, seed: int = 0) -> Path:
    """Return a folder holding the current tiny pipeline, building it there once if needed.

    The pipeline is written into a temporary sibling folder and moved into place with
    ``os.replace``, so an interrupted build or a concurrent process never leaves a half-written
    model behind. A cache from an older :data:`TINY_VERSION` is replaced.

    Args:
        folder: cache folder; defaults to :func:`tiny_sd_cache_dir`.
        seed: weights seed.
    """
    target = Path(folder) if folder is not None else tiny_sd_cache_dir()
    if _is_current(target, seed):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-build-", dir=target.parent))
    try:
        save_tiny_sd(tmp, seed)
        if target.exists():  # stale: move it aside first, a directory cannot replace a non-empty one
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, target)
        logger.info("built the tiny random Stable Diffusion pipeline in %s", target)
    except OSError:
        if not _is_current(target, seed):  # a concurrent build that finished first is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
