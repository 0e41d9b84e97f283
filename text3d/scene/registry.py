"""The scene stage's registries: ``geometry.type``, ``background.type`` and ``cameras.type`` of a config.

Each class registers itself where it is defined; the package's ``__init__`` imports those modules
once, so importing anything from ``text3d.scene`` fills these registries.
"""

from text3d.core.registry import Registry

GEOMETRIES = Registry("geometry")
BACKGROUNDS = Registry("background")
CAMERAS = Registry("cameras")
