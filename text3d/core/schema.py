"""A command's config schema, and the one loader every command calls.

Each command (``run``, ``edit``, ``multiview``, ``video``, ``batch``, ``export``, ``train-prior``)
declares a :class:`Schema`: its short top-level keys (a dataclass), its sections (a fixed dataclass,
or a :class:`Component` whose ``type`` picks a registered implementation), top-level shorthands for
section keys, cross-field checks, and how the typed parts make the command's config object.
:meth:`Schema.load` is the one way in: a YAML file (with its ``base:`` presets), ``key=value``
overrides and any extra layers are merged by :mod:`text3d.core.config_files` (retype rule
included), then every key is typed and checked here, before any model loads; the command then
only reads the typed config it gets back.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import yaml

from .bounds import check_bounds
from .config_files import Layer, file_layers, merge_layers, override_layer
from .config_merge import merge_section, valid_keys_hint
from .errors import ConfigError
from .registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Component:
    """A section whose ``type`` picks a class of ``registry`` (``default`` when not given); its keys
    are validated against that class's config dataclass, then by the class's ``check_config``."""

    registry: Registry
    default: str


@dataclass(frozen=True)
class Plain:
    """A section with one fixed config dataclass, and an optional check of the typed section."""

    cls: type
    check: Optional[Callable[[Any], None]] = None


SectionSpec = Union[Component, Plain]


def component_type(name: str, spec: Component, raw: Any) -> str:
    """The registered type of component section ``name`` (its ``type`` key or the default).

    Raises:
        ConfigError: an unknown type, naming the valid ones.
    """
    t = raw.get("type", spec.default) if isinstance(raw, dict) else spec.default
    if t not in spec.registry:
        raise ConfigError(f"{name}.type: unknown type {t!r}; valid choices: {', '.join(spec.registry.names())}")
    return t


def check_is_section(name: str, raw: Any) -> None:
    """Raise :class:`ConfigError` when section ``name`` was given a value (``material=no-material``)."""
    if raw is None or isinstance(raw, dict):
        return
    example = raw if isinstance(raw, str) and re.fullmatch(r"[\w-]+", raw) else "..."
    raise ConfigError(f"{name}: a section of keys, not a value (got {raw!r}); set its keys, e.g. {name}.type={example}")


def resolve_section(name: str, spec: SectionSpec, raw: Any) -> Any:
    """One section, typed and checked (ranges first: the component checks may assume finite numbers)."""
    if isinstance(spec, Plain):
        obj = merge_section(name, spec.cls, raw)
        check_bounds(obj, name)
        if spec.check is not None:
            spec.check(obj)
        return obj
    check_is_section(name, raw)
    raw = raw or {}
    t = component_type(name, spec, raw)
    obj = merge_section(name, spec.registry.config_class(t), {**raw, "type": t})
    check_bounds(obj, name)
    check = getattr(spec.registry.get(t).cls, "check_config", None)
    if check is not None:
        check(obj)
    return obj


@dataclass(frozen=True)
class Schema:
    """What a command's config may hold, and how its typed parts become the command's config.

    Attributes:
        command: the command's name, for messages (``run``, ``edit``, ...).
        top: dataclass of the short top-level keys (fields named like a section are left to the section).
        sections: section name -> :class:`Component` or :class:`Plain`.
        build: ``(top object, {section: typed section}) -> config``; default: the ``top`` object itself.
        check: cross-field checks of the built config (raise :class:`ConfigError`).
        shorthands: top-level keys that stand for a key of a section (``source`` -> ``edit``).
        ignore_unknown: skip keys the schema does not know (reading part of a saved config).
    """

    command: str
    top: type
    sections: Mapping[str, SectionSpec] = field(default_factory=dict)
    build: Optional[Callable[[Any, Dict[str, Any]], Any]] = None
    check: Optional[Callable[[Any], None]] = None
    shorthands: Mapping[str, str] = field(default_factory=dict)
    ignore_unknown: bool = False

    def top_keys(self) -> list:
        return [f.name for f in dataclasses.fields(self.top) if f.name not in self.sections]

    def lift_shorthands(self, raw: Dict[str, Any]) -> Dict[str, Any]:
        """``raw`` with each shorthand moved into its section (``source=X`` -> ``edit.source=X``)."""
        out = dict(raw)
        for key, section in self.shorthands.items():
            if key in out:
                value = out.pop(key)
                out[section] = {**(out.get(section) or {}), key: value}
        return out

    def resolve(self, raw: Dict[str, Any]) -> Any:
        """Validate a merged raw mapping into the command's typed config; no model loads. Once it is
        valid, the notes of a :class:`~text3d.core.config_files.Merged` mapping are logged as warnings."""
        notes = list(getattr(raw, "notes", ()))
        raw = self.lift_shorthands(raw)
        top_keys = self.top_keys()
        known = top_keys + list(self.sections)
        if not self.ignore_unknown:
            for key in raw:
                if key not in known:
                    raise ConfigError(f"unknown key '{key}'{valid_keys_hint(str(key), known)}")
        top = merge_section("", self.top, {k: raw[k] for k in top_keys if k in raw})
        check_bounds(top, "")
        sections = {name: resolve_section(name, spec, raw.get(name)) for name, spec in self.sections.items()}
        cfg = self.build(top, sections) if self.build is not None else top
        if self.check is not None:
            self.check(cfg)
        for note in notes:
            logger.warning(note)
        return cfg

    def load(self, path: Optional[str | Path], overrides: Sequence[str] = (), *, saved: bool = False,
             below: Sequence[Layer] = (), above: Sequence[Layer] = ()) -> Any:
        """The one loader: ``below`` layers, the file (``base:`` presets first), ``overrides``, ``above``
        layers, merged (retype rule) and resolved. ``saved=True`` reads a resolved ``config.yaml``."""
        return self.resolve(self.merge([*below, *self.layers(path, overrides, saved=saved), *above]))

    def layers(self, path: Optional[str | Path], overrides: Sequence[str] = (), saved: bool = False) -> List[Layer]:
        """The layers of a file (``base:`` presets first; none for ``path=None``) and of ``overrides``."""
        return [*(file_layers(path, saved=saved) if path is not None else []), override_layer(overrides)]

    def merge(self, layers: Sequence[Layer]) -> Dict[str, Any]:
        """Layers merged (shorthands lifted in each, so ``source=`` overrides ``edit.source``), not yet validated."""
        if self.shorthands:
            layers = [Layer(self.lift_shorthands(layer.data), layer.origin, layer.preset) for layer in layers]
        return merge_layers(layers)


def to_plain(cfg: Any) -> Dict[str, Any]:
    """A typed config as plain data (its own ``to_dict`` if it has one), reloadable with its schema."""
    to_dict = getattr(cfg, "to_dict", None)
    return to_dict() if callable(to_dict) else dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    """A typed config as plain YAML (what ``--print-config`` prints and ``config.yaml`` holds)."""
    return yaml.safe_dump(to_plain(cfg), sort_keys=False, default_flow_style=None)
