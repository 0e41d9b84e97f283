"""Self-attention across images: shared (StyleAligned), full (MVDream) and keyframe (video) processors.

Each behaviour is one self-contained diffusers attention processor, installed on a UNet's
self-attention layers (``...attn1.processor``) by name with ``unet.set_attn_processor`` and removed
by restoring the processors that were there before (:class:`AttentionInstall`). Nothing patches a
``forward``.

Batch layout. A batch of ``B = G * N`` images is ``G`` groups of ``N`` views each, group-major
(``(g n)``): the diffusers classifier-free-guidance batch ``cat([x_uncond, x_cond])`` of ``N`` views
is ``G = 2`` groups, so each CFG half has its own reference; a batch that is not CFG-doubled is
``G = 1``; several multi-view sets sampled together are more groups. ``N`` comes from the
``num_views`` argument of ``__call__`` (pass it through ``cross_attention_kwargs``) or from the
processor's constructor; without either, the whole batch is one group.

The processors follow diffusers' ``AttnProcessor2_0`` (spatial / group norm, ``norm_q`` / ``norm_k``,
residual, ``rescale_output_factor``) and compute attention with ``torch`` SDPA, so memory stays that
of the fused kernels (a shared-score shift is an additive SDPA mask, not an explicit logit matrix).
They read fused projections (``to_qkv`` after ``unet.fuse_qkv_projections()``) when the layer has
them.

- :class:`SharedAttnProcessor` (StyleAligned, Hertz et al. 2024, ``sa_handler.py``): view 0 of each
  group is the reference; every other view attends to its own keys/values concatenated with the
  reference's; optional AdaIN of queries / keys (/ values) towards the reference's statistics
  (mean and std over tokens per head and channel, eps 1e-5); ``shared_score_scale`` multiplies the
  reference keys, ``shared_score_shift`` adds a constant to the reference logits (StyleAligned's
  transfer demo uses ``log 2``). The reference attends to itself only: StyleAligned concatenates
  its keys to themselves, which gives the same output without a shift; skipping it keeps the
  reference exactly its independent self for any shift.
- :class:`FullAttnProcessor` (MVDream's ``(b f) l c -> b (f l) c``; StyleAligned's
  ``full_attention_share``): every view attends to the tokens of all views of its group.
- :class:`KeyframeAttnProcessor` (video): frame ``i`` attends to keyframes only: the first frame
  (Text2Video-Zero), the first and the previous frame (Pix2Video), or the middle frame (FateZero).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from text3d.core.bounds import bounded
from text3d.core.errors import ConfigError

logger = logging.getLogger(__name__)

SELF_ATTENTION_SUFFIX = "attn1.processor"
ADAIN_EPS = 1e-5
"""StyleAligned's epsilon, added to the variance before the square root."""

#: Processors whose behaviour is plain softmax self-attention: replacing them loses nothing.
PLAIN_PROCESSORS = frozenset({"AttnProcessor", "AttnProcessor2_0", "FusedAttnProcessor2_0", "SlicedAttnProcessor",
                              "XFormersAttnProcessor", "AttnProcessorNPU", "ScaledDotProductAttention"})


# --------------------------------------------------------------------------------------------
# Shared pieces
def views_per_group(batch: int, num_views: Optional[int]) -> int:
    """``N`` for a batch of ``batch`` images: ``num_views``, or the whole batch when None.

    Raises:
        ValueError: ``batch`` is not a multiple of ``num_views``.
    """
    if num_views is None:
        return batch
    if num_views < 1 or batch % num_views:
        raise ValueError(f"a batch of {batch} images cannot be split into groups of num_views={num_views}")
    return int(num_views)


def adain(x: Tensor, ref: Tensor, eps: float = ADAIN_EPS) -> Tensor:
    """Give ``x`` the per-channel token statistics of ``ref`` (AdaIN).

    Args:
        x: ``[..., L, d]`` features (tokens ``L``, channels ``d``; leading dims e.g. group, view, head).
        ref: ``[..., L', d]`` reference features, broadcastable to ``x`` in the leading dims.
        eps: added to the (unbiased) variance before the square root. A single token (a 1x1 layer of a
            tiny UNet) has no unbiased variance: its variance is taken as 0, so it becomes ``mean_ref``.

    Returns:
        ``(x - mean_x) / std_x * std_ref + mean_ref``, the shape of ``x``.
    """
    mean_x, std_x = x.mean(-2, keepdim=True), (x.var(-2, keepdim=True, correction=int(x.shape[-2] > 1)) + eps).sqrt()
    mean_r, std_r = ref.mean(-2, keepdim=True), (ref.var(-2, keepdim=True, correction=int(ref.shape[-2] > 1)) + eps).sqrt()
    return (x - mean_x) / std_x * std_r + mean_r


def _project_qkv(attn: nn.Module, hidden: Tensor):
    """Queries, keys and values ``[B, L, inner]`` of self-attention (fused ``to_qkv`` when present)."""
    if getattr(attn, "fused_projections", False) and getattr(attn, "to_qkv", None) is not None:
        return attn.to_qkv(hidden).chunk(3, dim=-1)
    return attn.to_q(hidden), attn.to_k(hidden), attn.to_v(hidden)


def _heads(x: Tensor, heads: int) -> Tensor:
    """``[B, L, heads * d]`` -> ``[B, heads, L, d]``."""
    B, L, inner = x.shape
    return x.view(B, L, heads, inner // heads).transpose(1, 2)


class _SelfAttnBase:
    """The diffusers ``AttnProcessor2_0`` frame around a replaceable core ``[B, h, L, d]`` -> ``[B, h, L, d]``.

    Subclasses implement :meth:`core` (queries, keys, values after head split and ``norm_q`` /
    ``norm_k``; ``n`` views per group) and keep any settings as attributes.
    """

    num_views: Optional[int] = None

    def __call__(self, attn: nn.Module, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor] = None,
                 attention_mask: Optional[Tensor] = None, temb: Optional[Tensor] = None,
                 num_views: Optional[int] = None) -> Tensor:
        if encoder_hidden_states is not None:
            raise ValueError(f"{type(self).__name__} is for self-attention (attn1) layers; got encoder_hidden_states")
        if attention_mask is not None:
            raise ValueError(f"{type(self).__name__} does not take an attention_mask (self-attention has none in "
                             "Stable Diffusion UNets)")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            B, C, H, W = hidden_states.shape
            hidden_states = hidden_states.view(B, C, H * W).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q, k, v = (_heads(t, attn.heads) for t in _project_qkv(attn, hidden_states))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        n = views_per_group(q.shape[0], num_views if num_views is not None else self.num_views)
        out = self.core(q, k, v, n, attn.scale)
        out = out.transpose(1, 2).reshape(q.shape[0], -1, q.shape[1] * q.shape[3]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(B, C, H, W)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def core(self, q: Tensor, k: Tensor, v: Tensor, n: int, scale: float) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def _grouped(x: Tensor, n: int) -> Tensor:
    """``[G * n, h, L, d]`` -> ``[G, n, h, L, d]``."""
    return x.view(x.shape[0] // n, n, *x.shape[1:])


# --------------------------------------------------------------------------------------------
# The processors
class SharedAttnProcessor(_SelfAttnBase):
    """StyleAligned shared attention: each view attends to itself and to view 0 of its group.

    Args:
        num_views: ``N`` views per group (overridable per call); None = the whole batch is one group.
        adain_queries, adain_keys, adain_values: AdaIN of the views' queries / keys / values towards
            the reference's statistics (StyleAligned: queries and keys, not values).
        shared_score_scale: factor on the reference keys seen by the other views (1 = off).
        shared_score_shift: added to the logits of the reference keys (0 = off; StyleAligned's
            transfer demo uses ``log 2``: the reference weighs twice as much).
    """

    def __init__(self, num_views: Optional[int] = None, adain_queries: bool = True, adain_keys: bool = True,
                 adain_values: bool = False, shared_score_scale: float = 1.0, shared_score_shift: float = 0.0):
        self.num_views = num_views
        self.adain_queries, self.adain_keys, self.adain_values = adain_queries, adain_keys, adain_values
        self.shared_score_scale, self.shared_score_shift = float(shared_score_scale), float(shared_score_shift)

    def core(self, q: Tensor, k: Tensor, v: Tensor, n: int, scale: float) -> Tensor:
        q, k, v = (_grouped(t, n) for t in (q, k, v))  # [G, N, h, L, d]
        ref_q, ref_k, ref_v = q[:, :1], k[:, :1], v[:, :1]
        # The reference attends to itself only: exactly its independent output.
        ref_out = F.scaled_dot_product_attention(ref_q[:, 0], ref_k[:, 0], ref_v[:, 0], scale=scale)[:, None]
        if n == 1:
            return ref_out.flatten(0, 1)
        oq, ok, ov = q[:, 1:], k[:, 1:], v[:, 1:]
        if self.adain_queries:
            oq = adain(oq, ref_q)
        if self.adain_keys:
            ok = adain(ok, ref_k)
        if self.adain_values:
            ov = adain(ov, ref_v)
        L_own, L_ref = ok.shape[-2], ref_k.shape[-2]
        keys = torch.cat([ok, (self.shared_score_scale * ref_k).expand_as(ok)], dim=-2)
        values = torch.cat([ov, ref_v.expand_as(ov)], dim=-2)
        mask = None
        if self.shared_score_shift != 0.0:
            mask = torch.zeros(1, 1, 1, L_own + L_ref, dtype=q.dtype, device=q.device)
            mask[..., L_own:] = self.shared_score_shift
        other = F.scaled_dot_product_attention(oq.flatten(0, 1), keys.flatten(0, 1), values.flatten(0, 1),
                                               attn_mask=mask, scale=scale)
        return torch.cat([ref_out, other.view_as(oq)], dim=1).flatten(0, 1)


class FullAttnProcessor(_SelfAttnBase):
    """Every view attends to the tokens of all views of its group (MVDream's ``(b f) l c -> b (f l) c``).

    Args:
        num_views: ``N`` views per group (overridable per call); None = the whole batch is one group.
    """

    def __init__(self, num_views: Optional[int] = None):
        self.num_views = num_views

    def core(self, q: Tensor, k: Tensor, v: Tensor, n: int, scale: float) -> Tensor:
        G, (h, L, d) = q.shape[0] // n, q.shape[1:]
        # [G, N, h, L, d] -> [G, h, N * L, d]: one sequence of all views' tokens per group and head
        joined = [_grouped(t, n).transpose(1, 2).reshape(G, h, n * t.shape[2], d) for t in (q, k, v)]
        out = F.scaled_dot_product_attention(*joined, scale=scale)
        return out.view(G, h, n, L, d).transpose(1, 2).reshape(G * n, h, L, d)


KEYFRAME_MODES = ("first", "first_previous", "middle")
"""Keyframes of :class:`KeyframeAttnProcessor`: Text2Video-Zero, Pix2Video, FateZero."""


def keyframe_indices(n: int, mode: str, include_self: bool = False) -> Tensor:
    """``[n, K]`` long: the frames whose keys/values frame ``i`` attends to.

    ``first``: ``[0]``; ``first_previous``: ``[0, max(i - 1, 0)]``; ``middle``: ``[n // 2]``. With
    ``include_self`` the frame's own index comes first. A row may list a frame twice (frames 0 and
    1 of ``first_previous``); the processor masks the repeats.
    """
    if mode not in KEYFRAME_MODES:
        raise ValueError(f"keyframe mode {mode!r} is unknown; valid: {', '.join(KEYFRAME_MODES)}")
    i = torch.arange(n)
    if mode == "first":
        idx = torch.zeros(n, 1, dtype=torch.long)
    elif mode == "first_previous":
        idx = torch.stack([torch.zeros_like(i), (i - 1).clamp(min=0)], dim=1)
    else:
        idx = torch.full((n, 1), n // 2, dtype=torch.long)
    return torch.cat([i[:, None], idx], dim=1) if include_self else idx


class KeyframeAttnProcessor(_SelfAttnBase):
    """Frame ``i`` attends to the keys/values of keyframes (video cross-frame attention).

    Args:
        mode: ``first`` (Text2Video-Zero), ``first_previous`` (Pix2Video) or ``middle`` (FateZero).
        num_views: frames per group (overridable per call); None = the whole batch is one clip.
        include_self: also attend to the frame's own tokens (the papers replace them).
    """

    def __init__(self, mode: str = "first", num_views: Optional[int] = None, include_self: bool = False):
        keyframe_indices(1, mode)  # validates mode
        self.mode, self.num_views, self.include_self = mode, num_views, include_self

    def core(self, q: Tensor, k: Tensor, v: Tensor, n: int, scale: float) -> Tensor:
        idx = keyframe_indices(n, self.mode, self.include_self).to(q.device)  # [n, K]
        gk, gv = _grouped(k, n), _grouped(v, n)  # [G, n, h, L, d]
        G, _, h, L, d = gk.shape
        # keys of frame i: its keyframes' tokens side by side -> [G, n, h, K * L, d]
        keys = gk[:, idx].permute(0, 1, 3, 2, 4, 5).reshape(G, n, h, -1, d)
        values = gv[:, idx].permute(0, 1, 3, 2, 4, 5).reshape(G, n, h, -1, d)
        return F.scaled_dot_product_attention(q, keys.flatten(0, 1), values.flatten(0, 1),
                                              attn_mask=_duplicate_mask(idx, L, G, q.dtype), scale=scale)


def _duplicate_mask(idx: Tensor, tokens: int, groups: int, dtype: torch.dtype) -> Optional[Tensor]:
    """``[G * n, 1, 1, K * L]`` additive mask hiding repeated keyframes of a row (None when none repeats).

    A frame listed twice would otherwise weigh twice against the others of its row."""
    n, K = idx.shape
    repeated = torch.zeros(n, K, dtype=torch.bool)
    for j in range(1, K):
        repeated[:, j] = (idx[:, :j] == idx[:, j:j + 1]).any(dim=1).cpu()
    if not repeated.any():
        return None
    mask = torch.zeros(n, K, dtype=dtype).masked_fill(repeated, float("-inf"))
    mask = mask.repeat_interleave(tokens, dim=1).to(idx.device)  # [n, K * L]
    return mask.repeat(groups, 1)[:, None, None, :]


# --------------------------------------------------------------------------------------------
# Choosing layers and installing
@dataclass
class LayerSelection:
    """Which self-attention layers get the processor (StyleAligned shares all of them by default)."""

    levels: List[str] = field(default_factory=list)
    """UNet levels, e.g. ``[down.2, mid, up.0]`` (``down.<i>``, ``mid``, ``up.<i>``); empty = every level."""
    fraction: float = bounded(1.0, lo=0.0, hi=1.0, lo_open=True)
    """Fraction of the (level-selected) layers, evenly spread from the first; 1 = all of them."""


def layer_level(name: str) -> str:
    """``down.<i>`` / ``mid`` / ``up.<i>`` of a processor name such as ``down_blocks.2.attentions.0...``."""
    parts = name.split(".")
    if parts[0] == "mid_block":
        return "mid"
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 1:
        return f"{parts[0][:-len('_blocks')]}.{parts[1]}"
    return parts[0]


def self_attention_layers(unet: nn.Module) -> List[str]:
    """Processor names of the UNet's self-attention layers, in the order diffusers lists them."""
    return [name for name in unet.attn_processors if name.endswith(SELF_ATTENTION_SUFFIX)]


def select_layers(unet: nn.Module, selection: LayerSelection = LayerSelection()) -> List[str]:
    """The self-attention processor names that ``selection`` picks.

    Raises:
        ConfigError: the UNet has no self-attention layers, a level is unknown, or the fraction is
            outside (0, 1].
    """
    names = self_attention_layers(unet)
    if not names:
        raise ConfigError("the UNet has no self-attention (attn1) layers, so views cannot share attention; "
                          "valid modes for this model: independent")
    levels = sorted({layer_level(n) for n in names})
    unknown = [lv for lv in selection.levels if lv not in levels]
    if unknown:
        raise ConfigError(f"attention.layers.levels: unknown level(s) {unknown}; this UNet's levels with "
                          f"self-attention: {', '.join(levels)}")
    if selection.levels:
        names = [n for n in names if layer_level(n) in selection.levels]
    if not 0.0 < selection.fraction <= 1.0:
        raise ConfigError(f"attention.layers.fraction: must be in (0, 1], got {selection.fraction}")
    k = max(1, round(selection.fraction * len(names)))
    picks = sorted({math.floor(i * len(names) / k) for i in range(k)})
    return [names[i] for i in picks]


OURS = (SharedAttnProcessor, FullAttnProcessor, KeyframeAttnProcessor)


class AttentionInstall:
    """Processors installed on some self-attention layers of a UNet; :meth:`remove` restores the previous ones.

    Use as a context manager or call :meth:`remove`. One processor instance per layer comes from
    ``factory(name)``.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (anything with ``attn_processors`` /
            ``set_attn_processor``).
        factory: layer name -> a new processor.
        layers: processor names (default: every self-attention layer).

    Raises:
        ValueError: a target layer already runs one of these processors (remove that install first)
            or a processor whose behaviour would be lost (IP-Adapter, LoRA, custom): restore the
            defaults with ``unet.set_default_attn_processor()`` (or fuse after, not before) first.
            Plain processors (default, SDPA, sliced, xformers, fused QKV) are replaced: the
            installed ones compute the same attention, reading fused ``to_qkv`` weights if present.
    """

    def __init__(self, unet: nn.Module, factory: Callable[[str], object], layers: Optional[Sequence[str]] = None):
        self.unet = unet
        self.previous: Dict[str, object] = dict(unet.attn_processors)
        targets = list(layers) if layers is not None else self_attention_layers(unet)
        for name in targets:
            self._check_replaceable(name, self.previous.get(name))
        self.layers = targets
        self.processors = {name: factory(name) for name in targets}
        unet.set_attn_processor({**self.previous, **self.processors})
        self.installed = True
        logger.debug("installed %s on %d layers", type(next(iter(self.processors.values()), None)).__name__, len(targets))

    @staticmethod
    def _check_replaceable(name: str, current: object) -> None:
        if current is None:
            raise ValueError(f"the UNet has no attention layer {name!r}")
        kind = type(current).__name__
        if isinstance(current, OURS):
            raise ValueError(f"{name} already runs {kind}; remove() that installation before installing another")
        if kind not in PLAIN_PROCESSORS:
            raise ValueError(f"{name} runs {kind}, whose behaviour a multi-view processor would drop; call "
                             "unet.set_default_attn_processor() first (plain, sliced, xformers and fused-QKV "
                             "processors are replaced without loss)")

    def remove(self) -> None:
        """Put back the processors the layers had before (fused, sliced or default alike)."""
        if self.installed:
            self.unet.set_attn_processor(dict(self.previous))
            self.installed = False

    def __enter__(self) -> "AttentionInstall":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def shared_group_norm(x: Tensor, norm: nn.GroupNorm, n: int) -> Tensor:
    """``norm`` of ``x`` ``[B, C, ...]`` with each view's group statistics taken over its own features and
    those of view 0 of its set of ``n`` (StyleAligned's ``share_group_norm``: the reference's features are
    appended along the spatial axis before normalising). View 0 itself is normalised as before."""
    B, C = x.shape[:2]
    flat = x.reshape(B // n, n, C, -1)
    both = torch.cat([flat, flat[:, :1].expand_as(flat)], dim=-1).reshape(B, C, -1)
    out = F.group_norm(both, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return out[..., :flat.shape[-1]].reshape(x.shape)


class SharedNormInstall:
    """Every ``nn.GroupNorm`` of a UNet normalises each view with statistics shared with view 0 of its set
    (:func:`shared_group_norm`), until :meth:`remove`. StyleAligned also shares LayerNorm; LayerNorm
    normalises each token on its own, so appending tokens changes nothing and it is left out."""

    def __init__(self, unet: nn.Module, num_views: Optional[int] = None):
        def hook(module: nn.GroupNorm, args, _output) -> Tensor:
            x = args[0]
            return shared_group_norm(x, module, views_per_group(x.shape[0], num_views))

        self.handles = [m.register_forward_hook(hook) for m in unet.modules() if isinstance(m, nn.GroupNorm)]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> "SharedNormInstall":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class StyleAlignedInstall:
    """Shared attention (:class:`AttentionInstall` of :class:`SharedAttnProcessor`) and, optionally, shared
    GroupNorm statistics (:class:`SharedNormInstall`); :meth:`remove` undoes both."""

    def __init__(self, attention: AttentionInstall, norms: Optional[SharedNormInstall]):
        self.attention, self.norms = attention, norms

    def remove(self) -> None:
        self.attention.remove()
        if self.norms is not None:
            self.norms.remove()

    def __enter__(self) -> "StyleAlignedInstall":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@dataclass
class SharedAttentionConfig:
    """StyleAligned settings of ``mode=shared`` (config section ``attention``)."""

    adain_queries: bool = True
    """AdaIN of each view's queries towards the reference's statistics."""
    adain_keys: bool = True
    """AdaIN of each view's keys towards the reference's statistics."""
    adain_values: bool = False
    """AdaIN of values too (StyleAligned: off)."""
    shared_score_scale: float = 1.0
    """Factor on the reference keys seen by the other views."""
    shared_score_shift: float = 0.0
    """Added to the logits of the reference keys (StyleAligned's transfer demo: log 2 = 0.693)."""
    share_group_norm: bool = False
    """Every GroupNorm of the UNet takes its statistics over each view's and view 0's features together
    (StyleAligned's handler does this by default; here off unless asked, as the documented figures were
    measured without it). It carries view 0's global statistics through the convolutions, where
    attention cannot reach."""
    layers: LayerSelection = field(default_factory=LayerSelection)
    """Which self-attention layers share (``full`` mode uses the same selection)."""


def shared_attention(unet: nn.Module, num_views: Optional[int] = None,
                     cfg: SharedAttentionConfig = SharedAttentionConfig()) -> StyleAlignedInstall:
    """Install :class:`SharedAttnProcessor` on the layers ``cfg.layers`` selects (and shared GroupNorm
    statistics with ``cfg.share_group_norm``)."""
    params = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("layers", "share_group_norm")}
    attention = AttentionInstall(unet, lambda _: SharedAttnProcessor(num_views, **params), select_layers(unet, cfg.layers))
    return StyleAlignedInstall(attention, SharedNormInstall(unet, num_views) if cfg.share_group_norm else None)


def full_attention(unet: nn.Module, num_views: Optional[int] = None,
                   layers: LayerSelection = LayerSelection()) -> AttentionInstall:
    """Install :class:`FullAttnProcessor` on the layers ``layers`` selects."""
    return AttentionInstall(unet, lambda _: FullAttnProcessor(num_views), select_layers(unet, layers))


def keyframe_attention(unet: nn.Module, mode: Literal["first", "first_previous", "middle"] = "first",
                       num_views: Optional[int] = None, include_self: bool = False,
                       layers: LayerSelection = LayerSelection()) -> AttentionInstall:
    """Install :class:`KeyframeAttnProcessor` on the layers ``layers`` selects."""
    return AttentionInstall(unet, lambda _: KeyframeAttnProcessor(mode, num_views, include_self),
                            select_layers(unet, layers))
