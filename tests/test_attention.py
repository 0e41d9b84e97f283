"""Shared / full / keyframe attention processors against explicit PyTorch references and the stock processors."""

import math

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from text3d.core.errors import ConfigError
from text3d.guidance.attention import (AttentionInstall, FullAttnProcessor, KeyframeAttnProcessor, LayerSelection,
                                       SharedAttentionConfig, SharedAttnProcessor, adain, keyframe_attention,
                                       select_layers, self_attention_layers, shared_attention)
from text3d.guidance.tiny import build_tiny_sd_pipeline

HEADS, DIM_HEAD, L = 2, 8, 6
C = HEADS * DIM_HEAD


@pytest.fixture(scope="module")
def attn():
    torch.manual_seed(0)
    return Attention(query_dim=C, heads=HEADS, dim_head=DIM_HEAD).eval()


@pytest.fixture(scope="module")
def unet():
    return build_tiny_sd_pipeline(seed=0).unet


def qkv(attn, x):
    """Head-split queries, keys, values ``[B, h, L, d]`` of a bare Attention layer."""
    split = lambda t: t.view(t.shape[0], t.shape[1], HEADS, DIM_HEAD).transpose(1, 2)  # noqa: E731
    return split(attn.to_q(x)), split(attn.to_k(x)), split(attn.to_v(x))


def finish(attn, heads_out):
    """``[B, h, L, d]`` attention output -> the layer output (merge heads, out projection)."""
    B = heads_out.shape[0]
    return attn.to_out[0](heads_out.transpose(1, 2).reshape(B, -1, C))


def softmax_attention(q, k, v, bias=None):
    logits = torch.einsum("hqd,hkd->hqk", q, k) / math.sqrt(DIM_HEAD)
    if bias is not None:
        logits = logits + bias
    return torch.einsum("hqk,hkd->hqd", logits.softmax(-1), v)


def unet_out(unet, x, cross_kwargs=None):
    emb = torch.randn(x.shape[0], 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return unet(x, 500, encoder_hidden_states=emb, cross_attention_kwargs=cross_kwargs).sample


def latents(batch, seed=0):
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
def test_sharing_nothing_reproduces_the_stock_output_exactly(unet):
    x = latents(4)
    stock = unet_out(unet, x)
    for make in (lambda _: SharedAttnProcessor(num_views=1, shared_score_shift=math.log(2)),
                 lambda _: FullAttnProcessor(num_views=1), lambda _: KeyframeAttnProcessor("first", num_views=1)):
        with AttentionInstall(unet, make):
            assert torch.equal(unet_out(unet, x), stock)


def test_reference_view_equals_its_independent_output(unet):
    x = latents(8)  # G = 2 groups (a CFG-doubled batch) of N = 4 views
    with shared_attention(unet, 4, SharedAttentionConfig(shared_score_shift=math.log(2), shared_score_scale=0.8)):
        out = unet_out(unet, x)
    emb = torch.randn(8, 77, 32, generator=torch.Generator().manual_seed(1))
    for ref in (0, 4):
        with torch.no_grad():
            alone = unet(x[ref:ref + 1], 500, encoder_hidden_states=emb[ref:ref + 1]).sample
        torch.testing.assert_close(out[ref:ref + 1], alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[1:4], unet_out(unet, x)[1:4], atol=1e-4)  # the other views did change


def test_adain_gives_the_reference_statistics():
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(2, 5, 64, 8, generator=g) + 1
    ref = 0.5 * torch.randn(2, 1, 64, 8, generator=g) - 2
    out = adain(x, ref)
    torch.testing.assert_close(out.mean(-2), ref.mean(-2).expand_as(out.mean(-2)), atol=1e-5, rtol=0)
    # std over tokens, per channel: std_ref * std_x / sqrt(var_x + eps)
    want = (ref.var(-2) + 1e-5).sqrt() * x.var(-2).sqrt() / (x.var(-2) + 1e-5).sqrt()
    torch.testing.assert_close(out.std(-2), want.expand_as(out.std(-2)), atol=1e-5, rtol=1e-5)


def test_adain_of_a_single_token_is_the_reference_mean_not_nan():
    x, ref = torch.randn(2, 1, 1, 8), torch.randn(2, 1, 1, 8)
    torch.testing.assert_close(adain(x, ref), ref.expand_as(x))


def test_shared_matches_an_explicit_stylealigned_reference(attn):
    n, G = 3, 2
    x = torch.randn(G * n, L, C, generator=torch.Generator().manual_seed(2))
    scale, shift = 0.7, math.log(2)
    proc = SharedAttnProcessor(num_views=n, shared_score_scale=scale, shared_score_shift=shift)
    with torch.no_grad():
        got = proc(attn, x)
        q, k, v = qkv(attn, x)
        want = []
        for g in range(G):
            r = g * n
            for i in range(g * n, (g + 1) * n):
                if i == r:
                    heads = softmax_attention(q[i], k[i], v[i])
                else:
                    qi, ki = adain(q[i], q[r]), adain(k[i], k[r])
                    bias = torch.cat([torch.zeros(L), torch.full((L,), shift)])
                    heads = softmax_attention(qi, torch.cat([ki, scale * k[r]], 1), torch.cat([v[i], v[r]], 1), bias)
                want.append(heads)
        want = finish(attn, torch.stack(want))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_full_equals_explicitly_concatenated_attention(attn):
    n, G = 4, 2
    x = torch.randn(G * n, L, C, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = FullAttnProcessor(num_views=n)(attn, x)
        joined = AttnProcessor2_0()(attn, x.reshape(G, n * L, C))  # the stock processor on one long sequence
    torch.testing.assert_close(got, joined.reshape(G * n, L, C), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["first", "first_previous", "middle"])
@pytest.mark.parametrize("include_self", [False, True])
def test_keyframe_matches_explicit_keyframes(attn, mode, include_self):
    n = 5
    keyframes = {"first": lambda i: [0], "first_previous": lambda i: sorted({0, max(i - 1, 0)}),
                 "middle": lambda i: [n // 2]}[mode]
    x = torch.randn(n, L, C, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = KeyframeAttnProcessor(mode, include_self=include_self)(attn, x)
        q, k, v = qkv(attn, x)
        want = []
        for i in range(n):
            frames = ([i] if include_self else []) + [f for f in keyframes(i) if not (include_self and f == i)]
            want.append(softmax_attention(q[i], torch.cat([k[f] for f in frames], 1), torch.cat([v[f] for f in frames], 1)))
        want = finish(attn, torch.stack(want))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_each_cfg_half_uses_its_own_reference(unet):
    x = latents(6)  # [uncond views 0-2, cond views 3-5]
    with shared_attention(unet, 3):
        both = unet_out(unet, x)
        changed = x.clone()
        changed[:3] = latents(3, seed=9)  # a different first half must not touch the second
        torch.testing.assert_close(unet_out(unet, changed)[3:], both[3:], rtol=1e-5, atol=1e-5)
    with AttentionInstall(unet, lambda _: SharedAttnProcessor(num_views=3)):
        emb = torch.randn(6, 77, 32, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            half = unet(x[3:], 500, encoder_hidden_states=emb[3:]).sample
    torch.testing.assert_close(both[3:], half, rtol=1e-5, atol=1e-5)


def test_num_views_is_a_call_argument_for_batches_with_and_without_cfg(attn):
    x = torch.randn(6, L, C, generator=torch.Generator().manual_seed(5))
    proc = SharedAttnProcessor(num_views=None)
    with torch.no_grad():
        as_two_groups = proc(attn, x, num_views=3)
        per_group = torch.cat([proc(attn, x[:3]), proc(attn, x[3:])])  # no num_views: the batch is one group
    torch.testing.assert_close(as_two_groups, per_group, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="num_views=4"):
        proc(attn, x, num_views=4)


def test_removing_restores_the_previous_processors(unet):
    before = dict(unet.attn_processors)
    install = shared_attention(unet, 2)
    procs = [unet.attn_processors[n] for n in self_attention_layers(unet)]
    assert all(isinstance(p, SharedAttnProcessor) for p in procs)
    assert len({id(p) for p in procs}) == len(procs)  # one instance per layer
    assert all(unet.attn_processors[n] is before[n] for n in before if n.endswith("attn2.processor"))
    install.remove()
    assert all(unet.attn_processors[n] is before[n] for n in before)


def test_install_after_fused_qkv_projections_uses_the_fused_weights_and_restores_them():
    unet = build_tiny_sd_pipeline(seed=0).unet
    x = latents(4)
    stock = unet_out(unet, x)
    unet.fuse_qkv_projections()
    fused = dict(unet.attn_processors)
    for layer in unet.modules():  # the fused weights are what the fused model computes with
        if isinstance(layer, Attention) and getattr(layer, "to_qkv", None) is not None:
            layer.to_q.weight.data.zero_()
    with AttentionInstall(unet, lambda _: SharedAttnProcessor(num_views=1)):
        torch.testing.assert_close(unet_out(unet, x), stock, rtol=1e-5, atol=1e-5)
    assert all(unet.attn_processors[n] is fused[n] for n in fused)


def test_refuses_to_stack_or_to_drop_unknown_processors(unet):
    with shared_attention(unet, 2):
        with pytest.raises(ValueError, match="already runs SharedAttnProcessor"):
            shared_attention(unet, 2)

    class Custom(AttnProcessor2_0):
        pass

    before = dict(unet.attn_processors)
    unet.set_attn_processor(Custom())
    try:
        with pytest.raises(ValueError, match="runs Custom"):
            shared_attention(unet, 2)
    finally:
        unet.set_attn_processor(before)


def test_layer_selection_by_level_and_fraction(unet):
    names = self_attention_layers(unet)
    assert select_layers(unet) == names
    assert all(".attn1." in n for n in names) and len(names) == 4  # down.0, up.1 (two), mid
    assert select_layers(unet, LayerSelection(levels=["mid"])) == [n for n in names if n.startswith("mid_block")]
    assert len(select_layers(unet, LayerSelection(fraction=0.5))) == 2
    assert len(select_layers(unet, LayerSelection(fraction=0.01))) == 1
    with pytest.raises(ConfigError, match="unknown level"):
        select_layers(unet, LayerSelection(levels=["down.7"]))
    with keyframe_attention(unet, "middle", 2, layers=LayerSelection(levels=["mid"])) as inst:
        assert len(inst.processors) == 1


def test_a_unet_without_self_attention_is_refused():
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), mid_block_type=None,
                                 cross_attention_dim=8, norm_num_groups=4)
    with pytest.raises(ConfigError, match="no self-attention"):
        select_layers(plain)


def test_shared_group_norm_matches_statistics_over_own_and_reference_features():
    """Each view is normalised with the mean and variance of its and view 0's features in each channel
    group, computed by hand; view 0 is normalised exactly as alone."""
    from text3d.guidance.attention import shared_group_norm

    g = torch.Generator().manual_seed(0)
    norm = torch.nn.GroupNorm(2, 4, eps=1e-5)
    norm.weight.data, norm.bias.data = torch.randn(4, generator=g), torch.randn(4, generator=g)
    x = torch.randn(6, 4, 3, 5, generator=g) * torch.arange(1, 7).view(6, 1, 1, 1)  # 2 sets of 3, different scales
    out = shared_group_norm(x, norm, 3)
    for i in range(6):
        ref = x[3 * (i // 3)]
        for grp in range(2):
            ch = slice(2 * grp, 2 * grp + 2)
            both = torch.cat([x[i, ch].flatten(), ref[ch].flatten()])
            want = (x[i, ch] - both.mean()) / (both.var(unbiased=False) + 1e-5).sqrt()
            want = want * norm.weight[ch].view(2, 1, 1) + norm.bias[ch].view(2, 1, 1)
            torch.testing.assert_close(out[i, ch], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[[0, 3]], norm(x[[0, 3]]), rtol=1e-5, atol=1e-5)


def test_share_group_norm_acts_on_every_group_norm_and_is_removed(unet):
    x = latents(4)
    stock = unet_out(unet, x)
    with shared_attention(unet, 2):
        attention_only = unet_out(unet, x)
    with shared_attention(unet, 2, SharedAttentionConfig(share_group_norm=True)) as install:
        shared = unet_out(unet, x)
        assert len(install.norms.handles) == sum(isinstance(m, torch.nn.GroupNorm) for m in unet.modules()) > 0
    torch.testing.assert_close(shared[[0, 2]], attention_only[[0, 2]], rtol=1e-5, atol=1e-5)  # the references
    assert not torch.allclose(shared[[1, 3]], attention_only[[1, 3]], atol=1e-4)            # the others move
    torch.testing.assert_close(unet_out(unet, x), stock)  # hooks and processors gone
