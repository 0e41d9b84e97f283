"""Scoring a scene against the analytic shape of its prompt."""

from types import SimpleNamespace

import pytest

from text3d.scene.cameras import RandomCameraConfig
from text3d.prior.scene_eval import analytic_scores
from text3d.prior.shapes import render_shapes


class FakeRun:
    """A 'run' whose renders are the analytic renders of a given shape and colour."""

    def __init__(self, prompt: str, shape: str, colour: str):
        self.cfg = SimpleNamespace(prompt=prompt, cameras=RandomCameraConfig(eval_distance=3.0, eval_fovy=32.0))
        self.shape, self.colour = shape, colour

    def render_views(self, cameras, mode="albedo"):
        rgb, coverage = render_shapes([self.shape] * len(cameras), [self.colour] * len(cameras), cameras)
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
