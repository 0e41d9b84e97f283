"""Config files and command-line overrides: a YAML mapping read with one clear line per way it can
be wrong, ``key.path=value`` items turned into a nested mapping, both merged before validation."""

from __future__ import annotations

import logging
import re
from pathlib import Path
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


def retyped(base: Dict[str, Any], top: Dict[str, Any]) -> List[str]:
    """The sections of ``base`` whose ``type`` ``top`` changes (``material.type=no-material`` on a
    camera-light preset): their other settings in ``base`` belong to the old type."""
    names = []
    for name, section in top.items():
        old = base.get(name)
        if isinstance(section, dict) and isinstance(old, dict) and "type" in section \
                and str(section["type"]).strip() != str(old.get("type")):
            logger.debug("%s.type %s replaces the %s section below it (the new type's defaults apply)",
                        name, section["type"], name)
            names.append(name)
    return names


def drop_retyped(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` without the sections :func:`retyped` by ``top`` (so they start again from ``top``'s
    keys and the new type's defaults); ``base`` itself is not changed."""
    gone = set(retyped(base, top))
    return {k: v for k, v in base.items() if k not in gone}


def load_raw(path: str | Path, overrides: Sequence[str] = (), interpolate: bool = True,
             extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Read a YAML file and apply ``key.path=value`` overrides, then ``extra`` (a nested mapping, e.g.
    one item of a batch), before interpolations such as ``${geometry.radius}`` resolve; no validation yet.

    ``interpolate=False`` reads a saved, already resolved config (a run's ``config.yaml``): a
    ``${`` in its prompt is text, not a reference."""
    base = read_yaml_file(path)
    if not interpolate:
        base = OmegaConf.create(_escape_interpolations(OmegaConf.to_container(base)))
    parsed = parse_overrides(overrides)
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(_escape_interpolations(parsed)))
        if extra:
            merged = OmegaConf.merge(merged, OmegaConf.create(_escape_interpolations(extra)))
        out = OmegaConf.to_container(merged, resolve=True)  # interpolations see every preset key
        preset = OmegaConf.to_container(base)
        for top in (parsed, extra or {}):  # a section given a new type keeps only what was given with it
            for name in retyped(preset, top):
                out[name] = {k: v for k, v in out[name].items() if k in top[name] or k in parsed.get(name, {})}
        return out  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None
