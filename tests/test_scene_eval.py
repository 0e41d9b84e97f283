"""Scoring a scene against the analytic shape of its prompt."""

from types import SimpleNamespace

import pytest

from text3d.scene.cameras import RandomCameraConfig
from text3d.prior.scene_eval import analytic_scores
from text3d.prior.shapes import render_shapes


class FakeRun:
    """A 'run' whose renders are the analytic renders of a given shape and colour."""

    def __init__(self, prompt: str, shape: str, colour: str, stripe=None):
        self.cfg = SimpleNamespace(prompt=prompt, cameras=RandomCameraConfig(eval_distance=3.0, eval_fovy=32.0))
        self.shape, self.colour, self.stripe = shape, colour, stripe

    def render_views(self, cameras, mode="albedo"):
        rgb, coverage = render_shapes([self.shape] * len(cameras), [self.colour] * len(cameras), cameras,
                                      stripe_colours=[self.stripe] * len(cameras))
        return [{"rgb": rgb[i], "opacity": coverage[i, ..., None]} for i in range(len(cameras))]


def test_the_true_shape_scores_one_and_its_colour_is_found():
    scores = analytic_scores(FakeRun("a red cube, front view", "cube", "red"), resolution=48)
    assert scores["shape"] == "cube" and scores["colour"] == "red"
    assert scores["silhouette_iou"] > 0.97 and scores["colour_found"] == "red" and scores["colour_ok"]


def test_a_wrong_shape_or_colour_scores_low():
    scores = analytic_scores(FakeRun("a red cube", "torus", "blue"), resolution=48)
    assert scores["silhouette_iou"] < 0.7 and scores["colour_found"] == "blue" and not scores["colour_ok"]


@pytest.mark.parametrize("prompt", ["a hamburger", "a red cube and a blue sphere"])
def test_prompts_without_one_known_shape_are_not_scored(prompt):
    assert analytic_scores(FakeRun(prompt, "cube", "red")) is None


@pytest.mark.parametrize("shape", ["cube", "cylinder", "cone", "capsule"])
def test_a_striped_scene_is_judged_by_its_pattern(shape):
    """The exact striped render passes; the same object plain, or with the colours swapped, fails."""
    prompt = f"a red {shape} with a blue stripe"
    right = analytic_scores(FakeRun(prompt, shape, "red", "blue"), resolution=48)
    assert right["pattern_ok"] and right["pattern_ok_share"] == 1.0 and right["stripe_found"] == "blue"
    assert right["colour_found"] == "red" and right["colour_ok"] and right["pattern_views"] >= 6
    plain = analytic_scores(FakeRun(prompt, shape, "red"), resolution=48)
    assert not plain["pattern_ok"] and plain["stripe_found"] == "red"
    swapped = analytic_scores(FakeRun(prompt, shape, "blue", "red"), resolution=48)
    assert not swapped["pattern_ok"] and not swapped["colour_ok"]
