"""The renderer stage's registries: ``renderer.type`` and ``material.type`` of a config.

Each class registers itself where it is defined (``@RENDERERS.register("nerf-volume", ...)``); the
package's ``__init__`` imports those modules once, so importing anything from ``text3d.renderers``
fills these registries.
"""

from text3d.core.registry import Registry

RENDERERS = Registry("renderer")
MATERIALS = Registry("material")
