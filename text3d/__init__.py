"""text3d: text to 3D with a frozen diffusion prior, on CPU and GPU.

The package installs three import roots from three folders: ``text3d`` (this folder),
``text3d.renderers`` (``renderers/``) and ``text3d.guidance`` (``guidance/``).
"""

__version__ = "0.1.0"
