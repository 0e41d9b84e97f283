"""The embedded shapes prior: data stream, loss weighting, a tiny end-to-end training run (save,
load, sample, resume), the pixel prior behind the guidance interface, and the sample judge."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from text3d.scene.cameras import orbit_cameras
from text3d.core.errors import ConfigError, ModelNotFoundError
from text3d.prior.evaluation import judge
from text3d.prior.model import CAMERA_FEATURES, PRIOR_FORMAT_VERSION, camera_features, load_prior, sample
from text3d.prior.pixel_data import ShapesDataConfig, ShapesDataset, view_label
from text3d.prior.training import load_train_config, loss_weights, train_prior
from text3d.prior.shapes import COLOUR_NAMES, SHAPES, parse_prompt, render_shapes

TINY = ["iterations=2", "batch_size=4", "log_every=1", "checkpoint_every=1", "snapshot_every=0",
        "data.bank_views_per_shape=2", "data.bank_refresh_per_step=1", "data.held_out=[red cube]",
        "model.unet_channels=[8,16,16]", "model.norm_groups=4", "model.attention_heads=2",
        "model.text_hidden_size=16", "model.text_heads=2", "model.text_layers=1", "model.text_intermediate_size=32"]


@pytest.fixture(scope="module")
def tiny_prior_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes-prior")
    train_prior(load_train_config(None, TINY), root / "prior")
    return root / "prior"


def _cams(az, el, res=32):
    n = len(az)
    return orbit_cameras(torch.tensor(az, dtype=torch.float32), torch.tensor(el, dtype=torch.float32),
                         torch.full((n,), 3.0), torch.full((n,), 32.0), res, res)


def test_dataset_hides_held_out_pairs_and_prompts_match_images():
    data = ShapesDataConfig(held_out=["blue cube", "yellow torus"], bank_views_per_shape=3, partial_prompt_prob=0.2)
    g = torch.Generator().manual_seed(0)
    ds = ShapesDataset(data, 16, g)
    batch = ds.sample(300, g)
    pairs = set(zip([SHAPES[i] for i in batch.shape_ids], [COLOUR_NAMES[i] for i in batch.colour_ids]))
    assert not pairs & {("cube", "blue"), ("torus", "yellow")} and len(pairs) > 40
    assert batch.images.shape == (300, 3, 16, 16) and batch.images.min() >= -1 and batch.images.max() <= 1
    assert batch.camera.shape == (300, len(CAMERA_FEATURES))
    full = [(p, s, c) for p, s, c in zip(batch.prompts, batch.shape_ids, batch.colour_ids) if parse_prompt(p)]
    assert 0.7 < len(full) / 300 < 0.9  # the rest name only the shape or only the colour
    assert all(parse_prompt(p) == (SHAPES[s], COLOUR_NAMES[c]) for p, s, c in full)


def test_bank_images_equal_direct_renders():
    data = ShapesDataConfig(bank_views_per_shape=2, bank_refresh_per_step=0, held_out=[])
    g = torch.Generator().manual_seed(1)
    ds = ShapesDataset(data, 16, g)
    ds.refresh(g)
    batch = ds.sample(6, g)
    az = torch.atan2(batch.camera[:, 0], batch.camera[:, 1]).rad2deg()
    el = torch.atan2(batch.camera[:, 8], batch.camera[:, 9]).rad2deg()
    cams = orbit_cameras(az, el, torch.full((6,), 3.0), torch.full((6,), 32.0), 16, 16)
    rgb, _ = render_shapes(batch.shape_ids, [COLOUR_NAMES[c] for c in batch.colour_ids], cams)
    torch.testing.assert_close(batch.images, rgb.permute(0, 3, 1, 2) * 2 - 1, atol=4e-3, rtol=0)  # fp16 bank


def test_view_labels_follow_dreamfusion_thresholds():
    assert [view_label(a, 10.0) for a in (0.0, 45.0, 46.0, 134.0, 135.0, -180.0, 370.0)] == \
        ["front", "front", "side", "side", "back", "back", "front"]
    assert view_label(90.0, 61.0) == "overhead" and view_label(90.0, 60.0) == "side"


def test_min_snr_weights():
    abar = torch.tensor([1e-9, 0.5, 0.9, 0.999])
    snr = abar / (1 - abar)
    w_v = loss_weights(abar, "v_prediction", 5.0)
    torch.testing.assert_close(w_v[:2], torch.ones(2))  # full v-loss where the image mean is learned
    torch.testing.assert_close(w_v[2:], 5.0 / (snr[2:] + 1))
    torch.testing.assert_close(loss_weights(abar, "epsilon", 5.0), snr.clamp(max=5.0) / snr)
    assert torch.equal(loss_weights(abar, "epsilon", 0.0), torch.ones(4))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="batchsize"):
        load_train_config(None, ["batchsize=3"])
    with pytest.raises(ConfigError, match="held_out.*'cube blue'"):
        load_train_config(None, ["data.held_out=[cube blue]"])
    with pytest.raises(ConfigError, match="norm_groups"):
        load_train_config(None, ["model.unet_channels=[12,24,24]"])


def test_trained_folder_loads_and_samples(tiny_prior_dir):
    names = {p.name for p in tiny_prior_dir.iterdir()}
    assert {"unet", "text_encoder", "tokenizer", "scheduler", "model_index.json", "text3d_prior.json"} <= names
    meta = json.loads((tiny_prior_dir / "text3d_prior.json").read_text())
    assert meta["format_version"] == PRIOR_FORMAT_VERSION and meta["held_out"] == ["red cube"]
    assert meta["iterations"] == 2 and meta["wall_time_s"] > 0 and meta["recipe"]["batch_size"] == 4
    prior = load_prior(tiny_prior_dir)
    assert prior.tokenizer("a red cube").input_ids == [49406, 320, 736, 11353, 49407]
    assert prior.scheduler.config.prediction_type == "v_prediction"
    cams = _cams([0.0, 90.0, 180.0], [0.0, 30.0, 60.0])
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    x = sample(prior, ["a red cube", "a blue cone", ""], cams, steps=3, cfg_scale=4.0, generator=g())
    assert x.shape == (3, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, sample(prior, ["a red cube", "a blue cone", ""], cams, steps=3, cfg_scale=4.0, generator=g()))
    other = sample(prior, ["a red cube", "a blue cone", ""], cams, steps=3, cfg_scale=4.0,
                   generator=torch.Generator().manual_seed(4))
    assert not torch.equal(x, other)


def test_training_resumes_and_refuses_another_recipe(tiny_prior_dir, tmp_path):
    work = tiny_prior_dir.with_name("prior.train")
    assert (work / "ckpts" / "last" / "state.safetensors").is_file()
    out = tmp_path / "longer"
    train_prior(load_train_config(None, TINY + ["iterations=3"]), out, work_dir=work)
    meta = json.loads((out / "text3d_prior.json").read_text())
    assert meta["iterations"] == 3 and [s for s, _ in meta["loss_history"]] == [1, 2, 3]
    with pytest.raises(ConfigError, match="another recipe"):
        train_prior(load_train_config(None, TINY + ["lr=0.5"]), tmp_path / "x", work_dir=work)


def test_missing_prior_says_how_to_train(tmp_path):
    with pytest.raises(ModelNotFoundError, match="text3d train-prior"):
        load_prior(tmp_path)


def test_pixel_prior_sees_a_larger_render_as_its_training_images(tiny_prior_dir):
    """A 64-px render reaches the 32-px prior box-filtered: exactly the prior's training images, which
    average 2x2 rays per pixel (``supersample: 2``); a bilinear shrink would blur edges and corners."""
    from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig

    prior = PixelPrior(PixelPriorConfig(model=str(tiny_prior_dir)), torch.device("cpu"))
    shapes, colours = ["pyramid", "torus"], ["orange", "green"]
    render, _ = render_shapes(shapes, colours, _cams([30.0, 200.0], [-10.0, 45.0], res=64), supersample=1)
    training, _ = render_shapes(shapes, colours, _cams([30.0, 200.0], [-10.0, 45.0], res=32), supersample=2)
    seen = prior.decode(prior.encode_images(render.permute(0, 3, 1, 2)))
    torch.testing.assert_close(seen, training.permute(0, 3, 1, 2), atol=1e-5, rtol=0)


def test_pixel_prior_interface(tiny_prior_dir):
    from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig
    from text3d.guidance.prompts import PromptProcessor

    prior = PixelPrior(PixelPriorConfig(model=str(tiny_prior_dir)), torch.device("cpu"))
    renders = torch.rand(2, 3, 64, 64, requires_grad=True)
    x0 = prior.encode_images(renders)
    assert x0.shape == (2, 3, 32, 32) and x0.min() >= -1 and x0.max() <= 1
    torch.testing.assert_close(prior.decode(prior.encode_images(renders[:, :, ::2, ::2])), renders[:, :, ::2, ::2])
    cams = _cams([0.0, 120.0], [10.0, 40.0], res=64)
    torch.testing.assert_close(prior.camera_class_labels(cams), camera_features(cams.azimuth, cams.elevation))
    emb = prior.encode_text(["a red cube", ""])
    eps = prior.predict_noise_cfg(prior.add_noise(x0, torch.randn_like(x0), 500), 500, emb[:1], emb[1:], 4.0, cams)
    assert eps.shape == (2, 3, 32, 32) and torch.isfinite(eps).all()
    with pytest.raises(ValueError, match="camera-conditioned"):
        prior.predict_noise(x0, 500, emb[:1])
    # The view suffixes SDS sends are the ones the prior was trained with.
    grid_el, grid_az = torch.meshgrid(torch.tensor([-10.0, 30.0, 60.0, 61.0]), torch.linspace(-180, 180, 25),
                                      indexing="ij")
    labels = PromptProcessor(prior, "a red cube").view_labels(grid_el.flatten(), grid_az.flatten())
    assert labels == [view_label(a, e) for a, e in zip(grid_az.flatten().tolist(), grid_el.flatten().tolist())]


def test_judge_accepts_true_renders_and_rejects_wrong_ones():
    shapes, colours = ["cone", "torus", "capsule"], ["green", "pink", "orange"]
    cams = _cams([10.0, -70.0, 150.0], [5.0, 40.0, 20.0])
    rgb, _ = render_shapes(shapes, colours, cams)
    images = rgb.permute(0, 3, 1, 2)
    tinted = images * 0.8 + 0.2 * torch.tensor([1.0, 0.7, 0.7]).view(1, 3, 1, 1)
    both = judge(torch.cat([images, tinted]), cams.index([0, 1, 2, 0, 1, 2]), shapes * 2, colours * 2)
    assert both["colour_ok"].all() and both["shape_ok"].all()
    assert both["background_ok"][:3].all() and not both["background_ok"][3:].any()
    blank = torch.ones(1, 3, 32, 32)
    wrong = judge(torch.cat([images, blank]), cams.index([0, 1, 2, 0]), ["sphere", "cube", "cylinder", "cube"],
                  ["red", "blue", "cyan", "green"])
    assert not wrong["colour_ok"].any() and not wrong["shape_ok"].any()
    assert wrong["pred_colour"][3] == -1 and wrong["pred_shape"][3] == -1
    torch.testing.assert_close(both["area"][:3], torch.ones(3))  # the true render is the prompted size
    # The same shapes seen through a narrower lens are (tan 16 / tan 14)^2 = 1.32x larger in area.
    zoomed = orbit_cameras(cams.azimuth, cams.elevation, torch.full((3,), 3.0), torch.full((3,), 28.0), 32, 32)
    closer, _ = render_shapes(shapes, colours, zoomed)
    ratio = judge(closer.permute(0, 3, 1, 2), cams, shapes, colours)["area"]
    assert ((ratio - (math.tan(math.radians(16)) / math.tan(math.radians(14))) ** 2).abs() < 0.06).all(), ratio


def test_nearest_pose_finds_the_camera_a_true_render_was_taken_from():
    """A true pyramid rendered 10 degrees further round and 5 degrees higher than asked is the right shape
    in the wrong pose: the probe finds exactly that offset, with IoU 1 there and less at the asked camera."""
    from text3d.prior.evaluation import nearest_pose, object_mask

    cams = _cams([20.0, -100.0], [10.0, 30.0])
    turned = orbit_cameras(cams.azimuth + 10.0, cams.elevation + 5.0, cams.distance, torch.rad2deg(cams.fovy), 32, 32)
    rgb, _ = render_shapes(["pyramid"] * 2, ["orange"] * 2, turned)
    mask = object_mask(rgb.permute(0, 3, 1, 2))
    r = nearest_pose(mask, cams, "pyramid", "orange", azimuth_offsets=[-10, 0, 10, 20], elevation_offsets=[-5, 0, 5])
    torch.testing.assert_close(r["azimuth_offset"], torch.full((2,), 10.0))
    torch.testing.assert_close(r["elevation_offset"], torch.full((2,), 5.0))
    torch.testing.assert_close(r["best_iou"], torch.ones(2))
    assert (r["iou"] < 0.95).all(), r["iou"]
    torus, _ = render_shapes(["torus"] * 2, ["green"] * 2, turned)  # the same at every azimuth: no turn found
    r = nearest_pose(object_mask(torus.permute(0, 3, 1, 2)), cams, "torus", "green", azimuth_offsets=[-20, 0, 20],
                     elevation_offsets=[0, 5])
    torch.testing.assert_close(r["azimuth_offset"], torch.zeros(2))
    torch.testing.assert_close(r["elevation_offset"], torch.full((2,), 5.0))


def test_unknown_words_warn_once_and_still_run(tiny_prior_dir, caplog):
    from text3d.guidance.pixel_prior import PixelPrior, PixelPriorConfig

    prior = PixelPrior(PixelPriorConfig(model=str(tiny_prior_dir)), torch.device("cpu"))
    caplog.clear()
    with caplog.at_level("WARNING"):
        prior.encode_text(["a red cube, front view", "an orange donut", ""])
        assert not [r for r in caplog.records if r.levelname == "WARNING"]  # donut is a synonym
        emb = prior.encode_text(["a shiny hamburger"])
        prior.encode_text(["a shiny hamburger on a plate"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "hamburger" in warnings[0] and "cube" in warnings[0]
    assert emb.shape[0] == 1 and torch.isfinite(emb).all()


class _OracleUNet(torch.nn.Module):
    """Predicts the exact v (or epsilon) of a known clean image x0 from any x_t: a perfect model
    of a one-image data set, so DDIM must land on x0 whatever the guidance scale."""

    def __init__(self, x0, scheduler, sample_size):
        super().__init__()
        self.x0, self.abar = x0, scheduler.alphas_cumprod
        self.config = SimpleNamespace(sample_size=sample_size)
        self.prediction_type = scheduler.config.prediction_type
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # device / dtype probe

    def forward(self, x_t, t, encoder_hidden_states=None, class_labels=None):
        abar = self.abar[int(t)]
        x0 = self.x0.repeat(x_t.shape[0] // self.x0.shape[0], 1, 1, 1)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        out = abar.sqrt() * eps - (1 - abar).sqrt() * x0 if self.prediction_type == "v_prediction" else eps
        return SimpleNamespace(sample=out)


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_ddim_sampler_recovers_the_image_of_a_perfect_model(tiny_prior_dir, cfg_scale):
    prior = load_prior(tiny_prior_dir)
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    prior = type(prior)(_OracleUNet(target, prior.scheduler, 32), prior.text_encoder, prior.tokenizer,
                        prior.scheduler, prior.meta)
    cams = _cams([0.0, 90.0], [10.0, 30.0])
    for eta in (0.0, 1.0):  # deterministic DDIM and ancestral steps (the default) both land on the image
        x = sample(prior, ["a red cube", "a blue cone"], cams, steps=20, cfg_scale=cfg_scale,
                   generator=torch.Generator().manual_seed(0), eta=eta)
        torch.testing.assert_close(x, target * 0.5 + 0.5, atol=2e-3, rtol=0)


def test_camera_features_are_harmonics_of_azimuth_and_elevation():
    az, el = torch.tensor([0.0, 30.0, 120.0]), torch.tensor([0.0, 45.0, -10.0])
    f = camera_features(az, el)
    assert f.shape == (3, len(CAMERA_FEATURES)) == (3, 12)
    a, e = torch.deg2rad(az), torch.deg2rad(el)
    torch.testing.assert_close(f[:, 0], torch.sin(a))
    torch.testing.assert_close(f[:, 7], torch.cos(4 * a))
    torch.testing.assert_close(f[:, 10], torch.sin(2 * e))
    # a cube looks the same every 90 degrees: the 4th azimuth harmonic sees that, the 1st does not
    g = camera_features(az + 90.0, el)
    torch.testing.assert_close(g[:, 6:8], f[:, 6:8], atol=1e-5, rtol=0)
    assert (g[:, 0:2] - f[:, 0:2]).abs().max() > 0.5
