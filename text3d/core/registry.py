"""One small registry per stage, keyed by the config's ``type``.

Each registered class declares its config dataclass, so the config loader can validate a YAML
section against the right schema before anything is built::

    RENDERERS = Registry("renderer")      # in text3d/renderers/registry.py

    @RENDERERS.register("nerf-volume", VolumeRendererConfig)
    class VolumeRenderer(nn.Module):
        def __init__(self, cfg: VolumeRendererConfig): ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Type

from .errors import ConfigError


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    config_cls: type


class Registry:
    """Maps a component ``type`` string to its class and its config dataclass."""

    def __init__(self, section: str):
        self.section = section
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, config_cls: Type[Any]) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            if name in self._entries:
                raise ValueError(f"{self.section} type {name!r} registered twice")
            self._entries[name] = Entry(name, cls, config_cls)
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise ConfigError(
                f"{self.section}.type: unknown type {name!r}; valid choices: {', '.join(self.names())}"
            )
        return self._entries[name]

    def config_class(self, name: str) -> type:
        return self.get(name).config_cls

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        """Instantiate the class registered under ``cfg.type`` with ``(cfg, *args, **kwargs)``."""
        return self.get(cfg.type).cls(cfg, *args, **kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
