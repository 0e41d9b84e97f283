"""Config files and command-line overrides as *layers*, merged into one raw mapping before validation.

A command's config is built from layers, lowest first: the presets a file inherits (``base:``), the
file itself, then the command line's ``key.path=value`` overrides (and, for some commands, a layer
below the file: the scene an edit starts from, or above it: one item of a batch). Two rules hold
for every command:

- **Inheritance.** A YAML file may name a preset it refines: ``base: quickstart.yaml`` (a path
  relative to the file). The base's keys come first; the file's keys override them.
- **Retyping.** A layer that changes a section's ``type`` (``material.type=no-material`` over a
  ``camera-light`` preset) starts that section afresh: the keys of the layers below it belonged to
  the old type and are dropped, so the new type's defaults apply. Interpolations such as
  ``${geometry.radius}`` still see every layer's keys.

Typing and validation of the merged mapping are :mod:`text3d.core.config_merge` and
:mod:`text3d.core.schema`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config_merge import _escape_interpolations
from .errors import ConfigError

logger = logging.getLogger(__name__)


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")


def parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
    """``key.path=value`` items -> a nested dict. The value is the text after the first ``=``,
    verbatim; it is typed later by the field it sets (see :func:`merge_section`), so a prompt keeps
    ``#``, ``:``, quotes and ``=`` as typed."""
    out: Dict[str, Any] = {}
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(f"override {item!r} must look like key.path=value (e.g. guidance.guidance_scale=50)")
        node, parts = out, key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with {'.'.join(parts[:i + 1])}={child!r}")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"override {item!r} conflicts with other overrides of {key}.*")
        node[parts[-1]] = text
    return out


def read_yaml_file(path: str | Path, what: str = "config file") -> DictConfig:
    """A YAML mapping from a file, with one clear line for each way a file can be wrong."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory; pass a YAML file such as configs/quickstart.yaml")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found (presets live in configs/, e.g. configs/quickstart.yaml)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save it as UTF-8 YAML") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())[:200]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected 'key: value' lines (a mapping) at the top level, got a "
                          f"{type(data).__name__} ({str(data)[:60]!r})")
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None


BASE_KEY = "base"
"""The key with which a config file names the preset it inherits from."""


@dataclass(frozen=True)
class Layer:
    """One layer of a config: a nested mapping and where it came from (for error messages)."""

    data: Dict[str, Any]
    origin: str
    preset: bool = False
    """A file's layer: a type it changes is changed on purpose, not reported (:func:`merge_layers`)."""


def file_layers(path: str | Path, saved: bool = False, _seen: Sequence[Path] = ()) -> List[Layer]:
    """The layers of a YAML file: those of the preset it names with ``base:`` (recursively), then its own.

    ``saved=True`` reads a saved, already resolved config (a run's ``config.yaml``): a ``${`` in its
    prompt is text, not a reference, and ``base:`` is not followed.

    Raises:
        ConfigError: a file that cannot be read, or a ``base:`` that is missing or inherits in a circle.
    """
    path = Path(path)
    data = OmegaConf.to_container(read_yaml_file(path))
    if saved:
        return [Layer(_escape_interpolations(data), str(path), preset=True)]
    base = data.pop(BASE_KEY, None)
    if base is None:
        return [Layer(data, str(path), preset=True)]
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: {BASE_KEY}: expected the path of a preset (e.g. {BASE_KEY}: quickstart.yaml), got {base!r}")
    base_path = (path.parent / base).resolve() if not Path(base).is_absolute() else Path(base)
    seen = [*_seen, path.resolve()]
    if base_path in seen:
        chain = " -> ".join(str(p) for p in [*seen, base_path])
        raise ConfigError(f"{path}: {BASE_KEY}: presets inherit in a circle ({chain}); remove one {BASE_KEY}: line")
    if not base_path.is_file():
        raise ConfigError(f"{path}: {BASE_KEY}: {base!r} not found (looked for {base_path}); "
                          f"the path is relative to {path.parent}")
    return [*file_layers(base_path, _seen=seen), Layer(data, str(path), preset=True)]


def literal_layer(data: Dict[str, Any], origin: str) -> Layer:
    """A layer of plain values (a source's saved scene, facts a command found): ``${`` in them is text."""
    return Layer(_escape_interpolations(data), origin)


def override_layer(overrides: Sequence[str]) -> Layer:
    """The command line's ``key.path=value`` items as a layer (their text kept literal: no ``${``)."""
    return Layer(_escape_interpolations(parse_overrides(overrides)), "the command line")


def retype_starts(layers: Sequence[Layer]) -> Dict[str, int]:
    """For each section whose ``type`` a layer changes, the index of the last layer that changes it
    (a section without ``type`` in a lower layer counts as another type)."""
    types: Dict[str, Any] = {}
    starts: Dict[str, int] = {}
    for i, layer in enumerate(layers):
        for name, section in layer.data.items():
            if not isinstance(section, dict):
                continue
            new = str(section["type"]).strip() if "type" in section else None
            if name in types and new is not None and new != types[name]:
                logger.debug("%s.type %s from %s replaces the %s section below it (the new type's defaults apply)",
                             name, new, layer.origin, name)
                starts[name] = i
            if new is not None or name not in types:
                types[name] = new
    return starts


class Merged(dict):
    """A merged raw config, and ``notes``: what the retype rule dropped from outside the preset files, for
    :meth:`text3d.core.schema.Schema.resolve` to warn about once the config is valid (a config that fails
    gets its one error line alone)."""

    notes: List[str]

    def __init__(self, *args: Any, notes: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notes = list(notes)


def merge_layers(layers: Sequence[Layer]) -> Dict[str, Any]:
    """Merge layers (lowest first), resolve interpolations, then apply the retype rule; no validation yet.
    Returns a :class:`Merged` mapping."""
    layers = [layer for layer in layers if layer.data]
    if not layers:
        return Merged()
    try:
        merged = OmegaConf.merge(*[OmegaConf.create(layer.data) for layer in layers])
        out = OmegaConf.to_container(merged, resolve=True)  # interpolations see every layer's keys
    except OmegaConfBaseException as e:
        origin = next((layer.origin for layer in layers if layer.origin != "the command line"), layers[0].origin)
        raise ConfigError(f"{origin}: {str(e).splitlines()[0]}") from None
    notes = []
    for name, start in retype_starts(layers).items():
        keep = {k for layer in layers[start:] if isinstance(layer.data.get(name), dict) for k in layer.data[name]}
        notes += _dropped_note(name, layers[start], sorted(k for k in out[name] if k not in keep))
        out[name] = {k: v for k, v in out[name].items() if k in keep}
    return Merged(out, notes=notes)


def _dropped_note(section: str, layer: Layer, dropped: List[str]) -> List[str]:
    """The keys a retype from outside the preset files (the command line, a batch item) drops, in words:
    ``guidance.type=sds-refine`` over an ``sds`` preset silently loses its ``guidance_scale`` else.
    A preset that retypes its base does so on purpose and is not reported."""
    if not dropped or layer.preset:
        return []
    return [f"{section}.type={layer.data[section]['type']} from {layer.origin} starts {section} afresh with the new "
            f"type's defaults: the preset's {', '.join(dropped)} no longer apply; give them again "
            f"({section}.KEY=VALUE) to keep them"]


def load_raw(path: Optional[str | Path], overrides: Sequence[str] = (), interpolate: bool = True,
             extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A YAML file (its ``base:`` chain first) with ``key.path=value`` overrides, then ``extra`` (a nested
    mapping, e.g. one item of a batch), merged as :func:`merge_layers` does; no validation yet.

    ``path=None`` gives the overrides alone. ``interpolate=False`` reads a saved, already resolved
    config (a run's ``config.yaml``): a ``${`` in its prompt is text, not a reference."""
    layers = file_layers(path, saved=not interpolate) if path is not None else []
    layers.append(override_layer(overrides))
    if extra:
        layers.append(Layer(_escape_interpolations(extra), "the item's overrides"))
    return merge_layers(layers)
