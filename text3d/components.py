"""Imports every module that registers a component, so that the registries are complete."""

import text3d.background  # noqa: F401
import text3d.cameras  # noqa: F401
import text3d.gaussians  # noqa: F401
import text3d.geometry  # noqa: F401
import text3d.guidance  # noqa: F401
import text3d.renderers  # noqa: F401
import text3d.guidance.pixel_prior  # noqa: F401,E402
