"""The interface every frozen diffusion prior offers to the guidances.

A prior wraps a denoising UNet trained with the DDPM forward process
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` and exposes just what score distillation,
posterior distillation and multi-view sampling need:

- ``encode_images`` / ``decode``: renders in ``[0, 1]`` <-> the space ``x_0`` lives in (VAE latents
  for Stable Diffusion, the image itself in ``[-1, 1]`` for a pixel-space prior);
- ``encode_text``: prompt strings -> cross-attention embeddings, cached per string;
- ``predict_noise`` / ``predict_noise_cfg``: the noise estimate, always returned as an epsilon
  prediction in float32 whatever the model was trained to predict;
- ``add_noise`` / ``predict_x0`` and the schedule tensors ``alphas_cumprod``, ``alphas``, ``betas``.

Priors are plain objects, not ``nn.Module`` s: their weights are frozen and must never end up in
an optimizer or a training checkpoint. ``prior.unet`` is a diffusers ``UNet2DConditionModel``, so
attention processors can be swapped with ``prior.unet.set_attn_processor``.
"""

from __future__ import annotations

import abc
import logging
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text3d.core.errors import ConfigError
from text3d.core.quiet import no_transformers_progress_bars  # noqa: F401  (re-exported: guidance's public name)

if TYPE_CHECKING:
    from text3d.scene.cameras import Cameras

logger = logging.getLogger(__name__)

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
"""Valid values of a prior's ``dtype`` config key."""

Timesteps = Union[int, Tensor]


def resolve_dtype(name: str, device: torch.device, key: str = "prior.dtype") -> torch.dtype:
    """Turn a ``dtype`` config value into a torch dtype.

    ``auto`` is float16 on CUDA and float32 elsewhere (half precision is slow or unsupported in
    many CPU kernels).

    Raises:
        ConfigError: ``name`` is not one of :data:`DTYPE_CHOICES`.
    """
    if name not in DTYPE_CHOICES:
        raise ConfigError(f"{key}: unknown value {name!r}; valid choices: {', '.join(DTYPE_CHOICES)}")
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)


def freeze(*modules: Optional[nn.Module]) -> None:
    """Put modules in eval mode and turn off gradients of all their parameters."""
    for module in modules:
        if module is not None:
            module.requires_grad_(False)
            module.eval()


def resize_square(images: Tensor, size: int) -> Tensor:
    """``[B, 3, H, W]`` renders resized to ``size`` x ``size``.

    A square render ``k`` times the size is averaged over ``k x k`` pixel blocks, the box filter of a
    supersampled render (how the shapes prior's training images are made); other sizes are resized
    bilinearly, anti-aliased when shrinking.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"encode_images: expected [B, 3, H, W] images, got shape {tuple(images.shape)}")
    H, W = images.shape[-2:]
    if (H, W) == (size, size):
        return images
    if H == W and H > size and H % size == 0:  # whole-pixel shrink: the box filter of a supersampled render
        return F.avg_pool2d(images, H // size)
    return F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=max(H, W) > size)


def warn_if_truncated(tokenizer, prompt: str) -> None:
    """Log a warning when ``prompt`` has more tokens than the text encoder reads (77 for CLIP, the
    start and end tokens included): how many are dropped and the text that remains."""
    ids = tokenizer(prompt, truncation=False, add_special_tokens=True, verbose=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) <= limit:
        return
    kept = tokenizer.decode(ids[1:limit - 1], skip_special_tokens=True)
    dropped = tokenizer.decode(ids[limit - 1:-1], skip_special_tokens=True)
    logger.warning("prompt is %d tokens long and the text encoder reads %d: the last %d are dropped (%r); it reads "
                   "%r — shorten the prompt", len(ids), limit, len(ids) - limit, _clip(dropped), _clip(kept))


def _clip(text: str, n: int = 60) -> str:
    """``text`` shortened to about ``n`` characters (its start and end kept)."""
    return text if len(text) <= n else f"{text[:n // 2 - 2]} ... {text[-(n // 2 - 3):]}"


def perpendicular(x: Tensor, y: Tensor) -> Tensor:
    """The part of each sample of ``x`` perpendicular to the same sample of ``y`` (``[B, ...]``):
    ``x - <x, y> / max(|y|^2, 1e-6) y``."""
    xf, yf = x.flatten(1), y.flatten(1)
    coef = (xf * yf).sum(1) / yf.square().sum(1).clamp_min(1e-6)
    return x - coef.view(-1, *([1] * (x.ndim - 1))) * y


class DiffusionPrior(abc.ABC):
    """A frozen, text-conditioned (optionally camera-conditioned) epsilon-prediction prior.

    Subclasses load their weights, then call ``super().__init__`` with the loaded modules, and
    implement :meth:`encode_images` and :meth:`decode`. Camera-conditioned priors also override
    :meth:`camera_class_labels`.

    Attributes:
        unet: the denoiser, a diffusers ``UNet2DConditionModel`` (frozen).
        scheduler: a diffusers scheduler built from the model's scheduler config (DDIM for the
            built-in priors); use it for sampling loops, read the schedule from the tensors below.
        text_encoder, tokenizer: the CLIP text path feeding the UNet's cross-attention.
        num_train_timesteps: ``T``, the number of training timesteps (1000 for SD).
        alphas_cumprod: ``[T]`` float32 on ``device``, ``abar_t``.
        alphas: ``[T]`` float32 on ``device``, single-step ``alpha_t = 1 - beta_t``.
        betas: ``[T]`` float32 on ``device``.
        prediction_type: what the UNet predicts (``epsilon``, ``v_prediction`` or ``sample``).
        device: where the modules live.
        dtype: the modules' dtype; inputs are cast to it, outputs come back as float32.
        image_size: renders are resized to ``image_size`` x ``image_size`` before encoding.
        x0_channels, x0_size: ``x_0`` is ``[B, x0_channels, x0_size, x0_size]``.
        latent_space: True when ``x_0`` is a VAE latent, False when it is the image in [-1, 1].
    """

    latent_space: bool = False

    def __init__(self, *, unet: nn.Module, scheduler, text_encoder: nn.Module, tokenizer,
                 device: torch.device, dtype: torch.dtype, image_size: int, x0_size: int):
        freeze(unet, text_encoder)
        self.unet, self.scheduler = unet, scheduler
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.device, self.dtype = torch.device(device), dtype
        self.image_size, self.x0_size = int(image_size), int(x0_size)
        self.x0_channels = int(unet.config.in_channels)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.prediction_type = str(scheduler.config.prediction_type)
        as_f32 = lambda t: t.detach().to(device=self.device, dtype=torch.float32)  # noqa: E731
        self.alphas_cumprod = as_f32(scheduler.alphas_cumprod)
        self.alphas = as_f32(scheduler.alphas)
        self.betas = as_f32(scheduler.betas)
        self._text_cache: Dict[str, Tensor] = {}

    # ----------------------------------------------------------------------------------------
    # Images <-> x_0
    @abc.abstractmethod
    def encode_images(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Map renders to ``x_0``, differentiably with respect to ``images``.

        Args:
            images: ``[B, 3, H, W]`` in ``[0, 1]``, any resolution (resized to ``image_size``).
            generator: CPU generator for any sampling (e.g. the VAE posterior); ``None`` takes
                the deterministic mode instead of a sample.

        Returns:
            ``[B, x0_channels, x0_size, x0_size]`` float32.
        """

    @abc.abstractmethod
    def decode(self, x0: Tensor) -> Tensor:
        """Map ``x_0`` ``[B, C, h, w]`` back to images ``[B, 3, image_size, image_size]`` in ``[0, 1]``, float32."""

    # ----------------------------------------------------------------------------------------
    # Text
    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """Embed prompts for cross-attention; each distinct string is encoded once and cached.

        Args:
            prompts: ``B`` strings (``""`` is the unconditional prompt).

        Returns:
            ``[B, L, D]`` in the prior's dtype on its device (``L`` = the tokenizer's max length).
        """
        if isinstance(prompts, str):
            raise TypeError(f"encode_text expects a list of strings, got the string {prompts!r}")
        missing = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if missing:
            for prompt, emb in zip(missing, self._encode_text_uncached(missing)):
                self._text_cache[prompt] = emb
        return torch.stack([self._text_cache[p] for p in prompts])

    def _encode_text_uncached(self, prompts: List[str]) -> Tensor:
        for prompt in prompts:
            warn_if_truncated(self.tokenizer, prompt)
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(self.device)
        out = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)
        return out[0].to(self.dtype)

    def clear_text_cache(self) -> None:
        """Forget all cached prompt embeddings."""
        self._text_cache.clear()

    # ----------------------------------------------------------------------------------------
    # Noise prediction
    def camera_class_labels(self, cameras: Optional["Cameras"]) -> Optional[Tensor]:
        """Hook for camera-conditioned priors: turn cameras into the UNet's ``class_labels``.

        Args:
            cameras: ``B`` cameras (anything with ``azimuth`` and ``elevation`` ``[B]`` tensors,
                degrees), or ``None``.

        Returns:
            ``[B, ...]`` class labels for ``unet(..., class_labels=...)``, or ``None`` for priors
            without camera conditioning (the default: ``cameras`` is ignored).
        """
        return None

    def predict_noise(self, x_t: Tensor, t: Timesteps, text_embeddings: Tensor,
                      cameras: Optional["Cameras"] = None) -> Tensor:
        """One UNet evaluation, without gradient, as an epsilon prediction.

        Args:
            x_t: ``[B, C, h, w]`` noisy samples.
            t: ``[B]`` integer timesteps in ``[0, T)``, or one int for the whole batch.
            text_embeddings: ``[B, L, D]`` (or ``[1, L, D]``, broadcast) from :meth:`encode_text`.
            cameras: ``B`` cameras, for camera-conditioned priors.

        Returns:
            ``[B, C, h, w]`` float32 predicted noise.
        """
        t = self._timesteps(t, x_t.shape[0])
        emb = self._expand(text_embeddings, x_t.shape[0], "text_embeddings")
        return self._eps(x_t, t, emb, self.camera_class_labels(cameras))

    def predict_noise_cfg(self, x_t: Tensor, t: Timesteps, cond: Tensor, uncond: Tensor,
                          guidance_scale: float, cameras: Optional["Cameras"] = None) -> Tensor:
        """Classifier-free-guided noise from one batched UNet call on ``[uncond, cond]``.

        ``eps_hat = eps_u + s * (eps_c - eps_u)`` (the diffusers convention). threestudio writes
        ``eps_c + s' * (eps_c - eps_u)``, so its scale ``s'`` is ``s - 1`` here: threestudio's
        ``guidance_scale: 100`` is ``101`` in this convention (the difference is negligible at 100).

        Args:
            x_t: ``[B, C, h, w]`` noisy samples.
            t: ``[B]`` integer timesteps, or one int.
            cond, uncond: ``[B, L, D]`` (or ``[1, L, D]``) conditional / unconditional embeddings.
            guidance_scale: ``s``; 1 means no guidance, 0 the unconditional prediction.
            cameras: ``B`` cameras, given to both halves (camera conditioning is never dropped).

        Returns:
            ``[B, C, h, w]`` float32 guided noise.
        """
        B = x_t.shape[0]
        t = self._timesteps(t, B)
        emb = torch.cat([self._expand(uncond, B, "uncond"), self._expand(cond, B, "cond")])
        labels = self.camera_class_labels(cameras)
        if labels is not None:
            labels = torch.cat([labels, labels])
        eps = self._eps(torch.cat([x_t, x_t]), torch.cat([t, t]), emb, labels)
        eps_u, eps_c = eps.chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    def predict_noise_many(self, x_t: Tensor, t: Timesteps, embeddings: Sequence[Tensor],
                           cameras: Optional["Cameras"] = None) -> List[Tensor]:
        """The noise predicted for ``x_t`` under each of ``embeddings`` (one batched UNet call of
        ``len(embeddings) * B`` samples; the same numbers as one :meth:`predict_noise` call each).

        Args:
            x_t: ``[B, C, h, w]`` noisy samples.
            t: ``[B]`` integer timesteps, or one int.
            embeddings: ``K`` text embeddings, each ``[B, L, D]`` or ``[1, L, D]``.
            cameras: ``B`` cameras, given to every copy (camera conditioning is never dropped).

        Returns:
            ``K`` float32 tensors ``[B, C, h, w]``, in the order of ``embeddings``.
        """
        B, K = x_t.shape[0], len(embeddings)
        t = self._timesteps(t, B)
        emb = torch.cat([self._expand(e, B, f"embeddings[{i}]") for i, e in enumerate(embeddings)])
        labels = self.camera_class_labels(cameras)
        if labels is not None:
            labels = torch.cat([labels] * K)
        return list(self._eps(torch.cat([x_t] * K), torch.cat([t] * K), emb, labels).chunk(K))

    def predict_noise_perp_neg(self, x_t: Tensor, t: Timesteps, pos: Tensor, negatives: Tensor, weights: Tensor,
                               uncond: Tensor, guidance_scale: float, cameras: Optional["Cameras"] = None) -> Tensor:
        """Perp-Neg's guided noise, from one batched UNet call of ``(2 + K) B`` samples:
        ``eps_u + s [(eps_pos - eps_u) + sum_k w_k perp(eps_neg_k - eps_u, eps_pos - eps_u)]``, where
        ``perp(x, y) = x - <x, y> / max(|y|^2, 1e-6) y`` per sample.

        Args:
            x_t: ``[B, C, h, w]``; t: ``[B]`` or one int.
            pos: ``[B, L, D]`` the positive embedding; negatives: ``[B, K, L, D]``; weights: ``[B, K]``.
            uncond: ``[B, L, D]`` or ``[1, L, D]``.
            guidance_scale: ``s`` (the diffusers convention, as :meth:`predict_noise_cfg`).
            cameras: ``B`` cameras, for camera-conditioned priors.
        """
        K = negatives.shape[1]
        eps_u, eps_pos, *eps_neg = self.predict_noise_many(
            x_t, t, [uncond, pos, *(negatives[:, k] for k in range(K))], cameras=cameras)
        d_pos = eps_pos - eps_u
        total = d_pos
        for k, eps_k in enumerate(eps_neg):
            total = total + weights[:, k].to(d_pos).view(-1, 1, 1, 1) * perpendicular(eps_k - eps_u, d_pos)
        return eps_u + guidance_scale * total

    @torch.no_grad()
    def _eps(self, x_t: Tensor, t: Tensor, emb: Tensor, class_labels: Optional[Tensor]) -> Tensor:
        out = self.unet(x_t.to(self.dtype), t, encoder_hidden_states=emb.to(self.dtype),
                        class_labels=class_labels).sample.float()
        if out.shape[1] == 2 * x_t.shape[1]:  # learned-variance models also output the variance
            out = out[:, : x_t.shape[1]]
        return self._to_epsilon(out, x_t.float(), t)

    def _to_epsilon(self, out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        abar = self._abar(t)
        if self.prediction_type == "epsilon":
            return out
        if self.prediction_type == "v_prediction":  # v = sqrt(abar) eps - sqrt(1-abar) x_0
            return abar.sqrt() * out + (1 - abar).sqrt() * x_t
        if self.prediction_type == "sample":
            return (x_t - abar.sqrt() * out) / (1 - abar).sqrt()
        raise ValueError(f"unsupported scheduler prediction_type {self.prediction_type!r}")

    # ----------------------------------------------------------------------------------------
    # Forward process
    def add_noise(self, x0: Tensor, eps: Tensor, t: Timesteps) -> Tensor:
        """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, differentiable in ``x0`` and ``eps``.

        Args:
            x0, eps: ``[B, C, h, w]``.
            t: ``[B]`` integer timesteps, or one int.

        Returns:
            ``[B, C, h, w]`` float32.
        """
        abar = self._abar(self._timesteps(t, x0.shape[0]))
        return abar.sqrt() * x0.float() + (1 - abar).sqrt() * eps.float()

    def predict_x0(self, x_t: Tensor, eps: Tensor, t: Timesteps) -> Tensor:
        """Tweedie's estimate ``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``, float32 ``[B, C, h, w]``."""
        abar = self._abar(self._timesteps(t, x_t.shape[0]))
        return (x_t.float() - (1 - abar).sqrt() * eps.float()) / abar.sqrt()

    # ----------------------------------------------------------------------------------------
    # Helpers
    def _abar(self, t: Tensor) -> Tensor:
        return self.alphas_cumprod[t].view(-1, 1, 1, 1)

    def _timesteps(self, t: Timesteps, batch: int) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.long).to(self.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"expected {batch} timesteps, got shape {tuple(t.shape)}")
        return t

    @staticmethod
    def _expand(emb: Tensor, batch: int, name: str) -> Tensor:
        if emb.ndim != 3 or emb.shape[0] not in (1, batch):
            raise ValueError(f"{name}: expected shape ({batch} or 1, L, D), got {tuple(emb.shape)}")
        return emb.expand(batch, -1, -1)


class CameraConditioned:
    """Mixin of the embedded priors: each render's camera reaches the UNet through its class embedding
    as :func:`text3d.prior.model.camera_features` (azimuth and elevation harmonics)."""

    def camera_class_labels(self, cameras: Optional["Cameras"]) -> Optional[Tensor]:
        """``[B, 12]`` camera features in the prior's dtype.

        Raises:
            ValueError: ``cameras`` is None (the prior needs to know where each render was seen from).
        """
        from text3d.prior.model import camera_features

        if cameras is None:
            raise ValueError(f"the {self.kind} prior is camera-conditioned: pass the renders' cameras to predict_noise")
        return camera_features(cameras.azimuth.cpu(), cameras.elevation.cpu()).to(self.device, self.dtype)

