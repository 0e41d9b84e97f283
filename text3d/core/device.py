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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{key}: {name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s); "
                          f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{key}: {name!r} requested but this machine has no Apple MPS device; use {key}=cpu or {key}=auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{key}: unsupported device {name!r}; valid choices: auto, cpu, cuda, cuda:N, mps")
    return device
