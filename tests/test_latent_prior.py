"""The miniature Stable Diffusion (prior.type: latent): its folder is an SD folder, it is driven by the
SD code, SDS through its VAE matches a hand-written reference, and its training resumes bit-exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file

from text3d.core.errors import ConfigError, ModelNotFoundError
from text3d.guidance import PromptProcessor, SDSConfig, SDSGuidance, StableDiffusionPrior
from text3d.guidance.latent_prior import LatentPrior, LatentPriorConfig
from text3d.guidance.registry import PRIORS
from text3d.guidance.stable_diffusion import load_sd_components
from text3d.prior.latent_model import LatentModelConfig, VAEConfig, build_latent_prior, save_latent_prior
from text3d.prior.latent_training import TrainLatentPriorConfig, train_latent_prior
from text3d.prior.model import camera_features
from text3d.prior.recipes import load_recipe
from text3d.scene.cameras import orbit_cameras

CPU = torch.device("cpu")
TINY_MODEL = dict(resolution=16, unet_channels=[8, 16, 16], norm_groups=4, attention_heads=2, text_hidden_size=16,
                  text_heads=2, text_layers=1, text_intermediate_size=32, vae=VAEConfig(channels=[8, 8, 8], norm_groups=4))


@pytest.fixture(scope="module")
def tiny_latent_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("latent")
    prior = build_latent_prior(LatentModelConfig(**TINY_MODEL), seed=3)
    prior.vae.register_to_config(scaling_factor=0.7)
    return save_latent_prior(prior, folder, {"version": "test"})


@pytest.fixture(scope="module")
def latent_prior(tiny_latent_dir):
    return PRIORS.build(LatentPriorConfig(model=str(tiny_latent_dir)), CPU)


def _cameras(n):
    return orbit_cameras(torch.linspace(-90, 90, n), torch.full((n,), 20.0), torch.full((n,), 3.0),
                         torch.full((n,), 32.0), 16, 16)


def test_folder_is_a_stable_diffusion_folder(tiny_latent_dir, latent_prior):
    index = json.loads((tiny_latent_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["vae"] == ["diffusers", "AutoencoderKL"]
    parts = load_sd_components(tiny_latent_dir, torch.float32)  # the SD loader itself
    assert parts["vae"].config.scaling_factor == 0.7 and parts["unet"].config.in_channels == 4
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_latent_dir, safety_checker=None)  # diffusers reads it as SD
    assert pipe.vae.config.latent_channels == 4
    assert isinstance(latent_prior, StableDiffusionPrior) and latent_prior.latent_space
    assert (latent_prior.image_size, latent_prior.x0_size, latent_prior.x0_channels) == (16, 4, 4)


def test_unet_has_attention_where_sd_has_it(latent_prior):
    cfg = latent_prior.unet.config
    assert cfg.down_block_types == ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    assert cfg.up_block_types == ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    assert cfg.mid_block_type == "UNetMidBlock2DCrossAttn"
    assert 2 ** (len(latent_prior.vae.config.block_out_channels) - 1) == 4  # f = 4


@pytest.mark.parametrize("layers", [1, 2])
def test_transformer_layers_deepen_every_attention_layer(layers):
    """``model.transformer_layers``: that many transformer blocks in every attention layer (down, mid, up),
    as diffusers' ``transformer_layers_per_block``; the ResNets are unchanged."""
    unet = build_latent_prior(LatentModelConfig(**TINY_MODEL, transformer_layers=layers), seed=0).unet
    attentions = [a for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
                  for a in getattr(block, "attentions", [])]
    assert len(attentions) == 2 + 1 + 4  # two attention levels down (1 layer each), mid, up (2 each)
    assert all(len(a.transformer_blocks) == layers for a in attentions)
    resnets = sum(p.numel() for n, p in unet.named_parameters() if ".resnets." in n)
    assert resnets == sum(p.numel() for n, p in build_latent_prior(LatentModelConfig(**TINY_MODEL), seed=0)
                          .unet.named_parameters() if ".resnets." in n)


def test_encode_decode_shapes_and_scaling(latent_prior):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    z = latent_prior.encode_images(images)
    small = torch.nn.functional.avg_pool2d(images, 2)  # a 2x render is box-filtered to 16 px
    expected = latent_prior.vae.encode(small * 2 - 1).latent_dist.mean * 0.7
    assert z.shape == (3, 4, 4, 4)
    torch.testing.assert_close(z, expected)
    out = latent_prior.decode(z)
    torch.testing.assert_close(out, (latent_prior.vae.decode(expected / 0.7).sample * 0.5 + 0.5).clamp(0, 1))
    assert out.shape == (3, 3, 16, 16)


def test_sds_through_the_vae_matches_a_hand_written_reference(latent_prior):
    B, t = 2, torch.tensor([200, 650])
    cams = _cameras(B)
    cond, uncond = PromptProcessor(latent_prior, "a red cube")(cams.elevation, cams.azimuth)
    noise = torch.randn(B, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    images = torch.rand(B, 16, 16, 3, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    out = SDSGuidance(SDSConfig(guidance_scale=7.5), latent_prior)(images, cond, uncond, step=0, cameras=cams,
                                                                      generator=torch.Generator().manual_seed(9),
                                                                      t=t, noise=noise)
    out["loss"].backward()

    ref = images.detach().clone().requires_grad_(True)
    vae, unet = latent_prior.vae, latent_prior.unet
    post = vae.encode(ref.permute(0, 3, 1, 2) * 2 - 1).latent_dist
    x0 = (post.mean + post.std * torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(9))) * 0.7
    abar = latent_prior.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0.detach() + (1 - abar).sqrt() * noise
    labels = camera_features(cams.azimuth, cams.elevation)
    with torch.no_grad():
        v_u = unet(x_t, t, encoder_hidden_states=uncond.expand(B, -1, -1), class_labels=labels).sample
        v_c = unet(x_t, t, encoder_hidden_states=cond, class_labels=labels).sample
    v = v_u + 7.5 * (v_c - v_u)
    eps_hat = abar.sqrt() * v + (1 - abar).sqrt() * x_t  # v-prediction -> epsilon
    grad = (1 - abar) * (eps_hat - noise)
    (image_grad,) = torch.autograd.grad(x0, ref, grad_outputs=grad / B)
    torch.testing.assert_close(out["grad"], grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(images.grad, image_grad, atol=1e-4 * image_grad.abs().max().item(), rtol=1e-4)


def test_camera_is_required(latent_prior):
    x = torch.zeros(1, 4, 4, 4)
    with pytest.raises(ValueError, match="camera-conditioned"):
        latent_prior.predict_noise(x, 10, latent_prior.encode_text(["a cube"]))


def test_missing_and_damaged_folders_are_one_line_errors(tmp_path, tiny_latent_dir):
    with pytest.raises(ConfigError, match="prior.model"):
        LatentPrior.check_config(LatentPriorConfig(model=str(tmp_path / "nope")))
    with pytest.raises(ModelNotFoundError, match="train-latent-prior"):
        LatentPrior(LatentPriorConfig(model=str(tmp_path)), CPU)
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_latent_dir, broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelNotFoundError) as err:
        LatentPrior(LatentPriorConfig(model=str(broken)), CPU)
    assert "\n" not in str(err.value) and "vae" in str(err.value) or "cannot load" in str(err.value)


# ----------------------------------------------------------------------------------------------
# Training
TINY_RECIPE = ["type=latent", "batch_size=3", "log_every=1", "checkpoint_every=1", "snapshot_every=0",
               "vae.batch_size=3", "vae.scale_images=6", "data.bank_views_per_shape=2", "data.shapes=[cube,torus]",
               "model.resolution=16", "model.unet_channels=[8,16,16]", "model.norm_groups=4",
               "model.attention_heads=2", "model.text_hidden_size=16", "model.text_heads=2", "model.text_layers=1",
               "model.text_intermediate_size=32", "model.vae.channels=[8,8,8]", "model.vae.norm_groups=4"]


def _recipe(*extra):
    return load_recipe(None, [*TINY_RECIPE, *extra])


def test_recipe_type_selects_the_latent_schema():
    assert isinstance(_recipe("iterations=1"), TrainLatentPriorConfig)
    with pytest.raises(ConfigError, match="type"):
        load_recipe(None, ["type=voxel"])
    with pytest.raises(ConfigError, match="model.vae.channels"):
        _recipe("model.vae.channels=[8,8]")


class _Stop(Exception):
    pass


def _weights(folder):
    return {**{f"u.{k}": v for k, v in load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")).items()},
            **{f"v.{k}": v for k, v in load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors")).items()}}


def _stop_at(k):
    """A progress callback that stops training at iteration ``k`` (counted over the stages)."""
    def progress(step, total, figures):
        if step == k:
            raise _Stop
    return progress


def test_training_resumes_bit_exactly(tmp_path):
    cfg = _recipe("vae.iterations=3", "iterations=3")
    straight = train_latent_prior(cfg, tmp_path / "a")
    for k in (2, 5):  # once inside the VAE stage, once inside the UNet stage
        with pytest.raises(_Stop):
            train_latent_prior(cfg, tmp_path / "b", progress=_stop_at(k))
    resumed = train_latent_prior(cfg, tmp_path / "b")
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((resumed / "text3d_prior.json").read_text())
    assert meta["iterations"] == {"vae": 3, "unet": 3} and meta["type"] == "latent"
    assert PRIORS.build(LatentPriorConfig(model=str(resumed)), CPU).scaling_factor == meta["scaling_factor"]


def test_a_changed_recipe_is_refused_on_resume(tmp_path):
    train_latent_prior(_recipe("vae.iterations=1", "iterations=1"), tmp_path / "p")
    with pytest.raises(ConfigError, match="another recipe"):
        train_latent_prior(_recipe("vae.iterations=1", "iterations=1", "vae.lr=0.01"), tmp_path / "p", replace=True)


def _spy_attention(calls):
    from text3d.guidance.attention import shared_attention

    def install(unet, n):
        calls.append(n)
        return shared_attention(unet, n)
    return install


def test_the_view_set_stage_resumes_bit_exactly_and_a_later_sitting_gives_the_same_prior(tmp_path):
    """Stage 3 after stages 1-2 in one run, the same run stopped inside stage 3 and resumed, and stage 3
    started in a later sitting from the stage-2 prior (``views.start_from``) write identical weights."""
    views = ["views.iterations=3", "views.views=3", "views.set_share=0.5", "views.warmup=1"]
    cfg = _recipe("vae.iterations=2", "iterations=2", *views)
    calls = []
    straight = train_latent_prior(cfg, tmp_path / "a", view_attention=_spy_attention(calls))
    assert calls and set(calls) == {3}  # the set batches ran with attention across each set of 3
    with pytest.raises(_Stop):
        train_latent_prior(cfg, tmp_path / "b", progress=_stop_at(5), view_attention=_spy_attention([]))
    resumed = train_latent_prior(cfg, tmp_path / "b", view_attention=_spy_attention([]))
    stage2 = train_latent_prior(_recipe("vae.iterations=2", "iterations=2"), tmp_path / "s2")
    later = train_latent_prior(_recipe("vae.iterations=2", "iterations=2", *views, f"views.start_from={stage2}"),
                               tmp_path / "c", view_attention=_spy_attention([]))
    a = _weights(straight)
    for other in (resumed, later):
        b = _weights(other)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), other
    assert not all(torch.equal(a[k], _weights(stage2)[k]) for k in a if k.startswith("u."))  # stage 3 changed the UNet
    assert all(torch.equal(a[k], _weights(stage2)[k]) for k in a if k.startswith("v."))     # and not the VAE
    for folder in (straight, later):
        meta = json.loads((folder / "text3d_prior.json").read_text())
        assert meta["iterations"] == {"vae": 2, "unet": 2, "views": 3}
        assert meta["version"].endswith("vae2-unet2-views3-seed0")
    # the prior started from a folder names no path of this machine in its configs
    assert not any("_name_or_path" in json.loads(c.read_text()) for c in later.glob("*/config.json"))
    # and a prior that has had stage 3 is not a start for another one
    with pytest.raises(ConfigError, match="views.start_from.*stage 3"):
        train_latent_prior(_recipe("vae.iterations=2", "iterations=2", *views, f"views.start_from={later}"),
                           tmp_path / "d", view_attention=_spy_attention([]))


def test_the_view_set_stage_refuses_a_start_prior_of_another_recipe(tmp_path, tiny_latent_dir):
    stage2 = train_latent_prior(_recipe("vae.iterations=1", "iterations=1"), tmp_path / "s2")
    cfg = _recipe("views.iterations=1", "views.views=3", f"views.start_from={stage2}", "data.stripe_prob=0.5")
    with pytest.raises(ConfigError, match="views.start_from.*'data'"):
        train_latent_prior(cfg, tmp_path / "c", view_attention=_spy_attention([]))
    with pytest.raises(ConfigError, match="view_attention"):
        train_latent_prior(_recipe("views.iterations=1", "views.views=3"), tmp_path / "d")


# ----------------------------------------------------------------------------------------------
# The command line: bad recipes and damaged folders are one line, exit 2
BAD_LATENT_RECIPES = [
    (["model.vae.channels=[8,8]"], ["model.vae.channels", "f = 2"]),
    (["model.vae.norm_groups=3"], ["model.vae.norm_groups"]),
    (["vae.lr=0"], ["vae.lr"]),
    (["vae.kl_weight=-1"], ["vae.kl_weight"]),
    (["data.stripe_prob=2"], ["data.stripe_prob"]),
    (["data.held_out_striped=[red cube]"], ["data.held_out_striped", "red cube"]),
    (["data.held_out_striped=[red cube with a red stripe]"], ["data.held_out_striped"]),
    (["vae.typo=1"], ["vae.typo"]),
    (["views.iterations=1", "views.views=2"], ["views.views", "batch_size"]),
    (["views.iterations=1", "views.views=3", "views.start_from=/no/such/prior"], ["/no/such/prior"]),
]


@pytest.mark.parametrize("extra,words", BAD_LATENT_RECIPES, ids=[" ".join(r[0]) for r in BAD_LATENT_RECIPES])
def test_bad_latent_recipe(tmp_path, expect_bad_input, extra, words):
    expect_bad_input(["train-prior", *TINY_RECIPE, "iterations=1", *extra, "--out", tmp_path / "prior", "--no-progress"],
                     *words, watch=tmp_path)


def test_unknown_recipe_type(tmp_path, expect_bad_input):
    expect_bad_input(["train-prior", "type=voxel", "--out", tmp_path / "p", "--no-progress"], "type", "pixel, latent",
                     watch=tmp_path)


def test_damaged_latent_prior_folder_is_one_line(tmp_path, tiny_latent_dir, expect_bad_input):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_latent_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 10)
    out = tmp_path / "out"
    out.mkdir()
    common = ["run", "configs/quickstart.yaml", "prior.type=latent", "steps=1", f"output_dir={out}", "--no-progress"]
    expect_bad_input([*common, f"prior.model={broken}"], "prior.model", watch=out)
    expect_bad_input([*common, f"prior.model={tmp_path / 'missing'}"], "prior.model", "does not exist", watch=out)
    pixel = tmp_path / "pixel"
    shutil.copytree(tiny_latent_dir, pixel)
    meta = json.loads((pixel / "text3d_prior.json").read_text())
    (pixel / "text3d_prior.json").write_text(json.dumps({**meta, "type": "pixel"}))
    expect_bad_input([*common, f"prior.model={pixel}"], "prior.type: pixel", watch=out)
