"""The guidance stage's registries: ``prior.type`` and ``guidance.type`` of a config.

Each class registers itself where it is defined; the package's ``__init__`` imports those modules
once, so importing anything from ``text3d.guidance`` fills these registries.
"""

from text3d.core.registry import Registry

PRIORS = Registry("prior")
GUIDANCES = Registry("guidance")
