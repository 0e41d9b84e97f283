"""User-facing errors.

Anything a user can cause (a typo in a config, a missing model, a bad run directory) raises a
subclass of :class:`Text3DError` with a one-line message that names the offending key or value and
says how to fix it. The CLI prints the message and exits with status 2, without a traceback.
"""


class Text3DError(Exception):
    """An error caused by user input; its message is shown to the user as is."""


class ConfigError(Text3DError):
    """A config key, value, type or component ``type`` is wrong."""


class ModelNotFoundError(Text3DError):
    """A prior's weights cannot be found locally and cannot be downloaded."""


class RunDirError(Text3DError):
    """A run directory (for ``resume=`` or export) is missing or incomplete."""
