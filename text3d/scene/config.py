"""The scene sections of a config (geometry, material, background, renderer, cameras) and
:class:`SceneConfig`, what a saved run folder says about its scene.

Every command that draws a scene (``run``, ``edit``, ``video``, ``export``) shares these sections;
reading a run folder needs only them, so ``export`` and ``video`` read a run without the run's
prior or guidance settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from text3d.core.schema import Component, Schema
from text3d.renderers.registry import MATERIALS, RENDERERS

from .registry import BACKGROUNDS, CAMERAS, GEOMETRIES

SCENE_SECTIONS: Dict[str, Component] = {
    "geometry": Component(GEOMETRIES, "implicit-volume"),
    "material": Component(MATERIALS, "diffuse-with-point-light"),
    "background": Component(BACKGROUNDS, "neural-environment"),
    "renderer": Component(RENDERERS, "nerf-volume"),
    "cameras": Component(CAMERAS, "random"),
}
"""Config sections that describe a scene, with their registries and default types."""


@dataclass
class SceneConfig:
    """A run's scene: its prompt and its five typed scene sections."""

    prompt: str = ""
    """The prompt the scene was trained on."""
    geometry: Any = None
    material: Any = None
    background: Any = None
    renderer: Any = None
    cameras: Any = None


def _build(top: SceneConfig, sections: Dict[str, Any]) -> SceneConfig:
    return SceneConfig(prompt=top.prompt, **sections)


SCENE_SCHEMA = Schema("scene", SceneConfig, SCENE_SECTIONS, build=_build, ignore_unknown=True)
"""Reads the scene part of a saved run config; the run's other sections are not looked at."""
