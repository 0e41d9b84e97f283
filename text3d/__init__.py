"""text3d: text to 3D with a frozen diffusion prior, on CPU and GPU.

The package installs three import roots from three folders: ``text3d`` (this folder),
``text3d.renderers`` (``renderers/``) and ``text3d.guidance`` (``guidance/``). One package per stage,
lowest first: ``core``, ``renderers``, ``scene``, ``prior``, ``guidance``, ``export``, ``run``, then the
commands ``edit``, ``multiview``, ``video``, ``batch`` and the ``cli``; each package's docstring says
what it holds and what it may import.
"""

from text3d.core import moved as _moved

__version__ = "0.1.0"

_moved.install()  # the module paths of 0.1 (text3d.config, text3d.cameras, ...) still import
