"""Where computations run."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key}: unknown device {name!r}; valid choices: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {name!r} requested but no CUDA device is available; use {key}=cpu or {key}=auto")
    return device
