"""What a scene is: cameras, the NeRF field, 3D Gaussians and their ``.ply``, backgrounds, the scene
as one module (:class:`~text3d.scene.system.NeRFSystem`), the scene sections of a config, and
reading a run folder's scene (:mod:`.rundir`).

Importing the package registers its components (geometries, backgrounds, camera samplers) in
:mod:`.registry`.

May import: ``text3d.core``, ``text3d.renderers``.
"""

from . import background, cameras, gaussians, geometry  # noqa: F401  (register their components)
