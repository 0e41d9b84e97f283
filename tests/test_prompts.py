"""View-dependent prompts and the embedding cache."""

import pytest
import torch
from omegaconf import OmegaConf

from text3d.core.errors import ConfigError
from text3d.guidance import PromptingConfig, PromptProcessor, wrap_azimuth


@pytest.mark.parametrize("elevation, azimuth, view", [
    (0.0, 0.0, "front"),
    (0.0, 45.0, "front"),          # |az| <= front_threshold
    (0.0, -45.0, "front"),
    (0.0, 45.01, "side"),
    (0.0, -90.0, "side"),
    (0.0, 134.99, "side"),
    (0.0, 135.0, "back"),          # |az| >= 180 - back_threshold
    (0.0, -135.0, "back"),
    (0.0, 180.0, "back"),
    (0.0, -180.0, "back"),
    (0.0, 225.0, "back"),          # wraps to -135
    (0.0, 315.0, "front"),         # wraps to -45
    (0.0, 405.0, "front"),         # wraps to 45
    (0.0, -314.0, "side"),         # wraps to 46
    (60.0, 0.0, "front"),          # overhead needs elevation > threshold
    (60.01, 180.0, "overhead"),    # overhead wins over azimuth
    (89.0, 90.0, "overhead"),
])
def test_view_at_boundary_angles(tiny_prior, elevation, azimuth, view):
    proc = PromptProcessor(tiny_prior, "a corgi")
    el, az = torch.tensor([elevation]), torch.tensor([azimuth])
    assert proc.view_labels(el, az) == [view]
    assert proc.prompts_for(el, az) == [f"a corgi, {view} view"]


def test_wrap_azimuth_range():
    az = torch.tensor([-540.0, -180.0, -179.0, 0.0, 180.0, 181.0, 360.0, 540.0])
    torch.testing.assert_close(wrap_azimuth(az), torch.tensor([180.0, 180.0, -179.0, 0.0, 180.0, -179.0, 0.0, 180.0]))


def test_conditioning_rows_follow_the_views(tiny_prior):
    proc = PromptProcessor(tiny_prior, "a corgi", "blurry")
    el, az = torch.tensor([0.0, 0.0, 0.0, 80.0]), torch.tensor([10.0, 90.0, 170.0, 0.0])
    cond, uncond = proc(el, az)
    assert cond.shape == uncond.shape == (4, 77, 32)
    expected = tiny_prior.encode_text([f"a corgi, {v} view" for v in ("front", "side", "back", "overhead")])
    torch.testing.assert_close(cond, expected)
    torch.testing.assert_close(uncond, tiny_prior.encode_text(["blurry"] * 4))


def test_without_view_dependence_every_camera_gets_the_prompt(tiny_prior):
    proc = PromptProcessor(tiny_prior, "a corgi", cfg=PromptingConfig(view_dependent=False))
    el, az = torch.tensor([0.0, 80.0]), torch.tensor([180.0, 0.0])
    cond, _ = proc(el, az)
    torch.testing.assert_close(cond, tiny_prior.encode_text(["a corgi", "a corgi"]))
    assert proc.view_labels(el, az) == ["none", "none"] and proc.prompts_for(el, az) == ["a corgi"] * 2


def test_each_distinct_string_is_encoded_once(fresh_tiny_prior):
    prior, rows = fresh_tiny_prior, []
    prior.text_encoder.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    proc = PromptProcessor(prior, "a corgi")
    assert rows == [5]  # four views + the negative prompt, in one call
    PromptProcessor(prior, "a corgi")
    assert rows == [5]
    PromptProcessor(prior, "a tabby cat")
    assert rows == [5, 4]  # the negative prompt is cached
    for _ in range(3):
        proc(torch.zeros(2), torch.tensor([0.0, 180.0]))
    assert rows == [5, 4]


def test_thresholds_are_validated(tiny_prior):
    with pytest.raises(ConfigError, match=r"prompting.front_threshold \+ prompting.back_threshold: must be <= 180"):
        PromptProcessor(tiny_prior, "x", cfg=PromptingConfig(front_threshold=100, back_threshold=90))
    with pytest.raises(ConfigError, match="prompting.overhead_threshold"):
        PromptProcessor(tiny_prior, "x", cfg=PromptingConfig(overhead_threshold=120))


def test_config_is_omegaconf_structured():
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PromptingConfig), {"front_threshold": 30}))
    assert isinstance(cfg, PromptingConfig) and cfg.front_threshold == 30.0
