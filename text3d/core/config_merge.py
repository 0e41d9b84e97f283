"""Typed merging of a raw mapping (YAML + ``key=value`` overrides) into a config dataclass.

Override values arrive as text and are typed by the field they set (a ``str`` field verbatim, a number
or boolean parsed as one, lists / mappings / schedules as YAML); unknown keys fail with one line naming
the key and the valid ones (:class:`text3d.core.errors.ConfigError`).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Dict, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from .errors import ConfigError
from .schedules import LinearSchedule


def valid_keys_hint(key: str, valid: Sequence[str]) -> str:
    """The tail of an unknown-key message: ``" (did you mean 'x'?); valid keys: a, b"``."""
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; valid keys: {', '.join(valid)}"


def _schedule_fields(cls: type) -> Dict[str, bool]:
    """Names of the fields of ``cls`` typed LinearSchedule (or Optional of it)."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint)
        if hint is LinearSchedule or LinearSchedule in args:
            out[name] = True
    return out


def _coerce_schedules(cls: type, raw: Dict[str, Any]) -> Dict[str, Any]:
    """Let a plain number stand for a constant schedule (``t_max: 0.98``)."""
    for name in _schedule_fields(cls):
        value = raw.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raw[name] = {"start": float(value), "end": float(value)}
    return raw


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


_NULL_TEXTS = ("null", "none", "~")


def _parse_text(key: str, hint: Any, text: str) -> Any:
    """Type the text of a string value by the field it sets: a ``str`` field takes it verbatim, a
    number or boolean parses as one, a list / mapping / schedule parses as YAML."""
    hint, optional = _unwrap_optional(hint)
    if optional and text.strip().lower() in _NULL_TEXTS:
        return None
    if hint is str or typing.get_origin(hint) is typing.Literal:
        return text
    if hint is bool:
        value = yaml.safe_load(text) if text.strip() else None
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {text!r}")
    if hint in (int, float):
        return _parse_number(key, hint, text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: could not read {text!r} ({str(e).splitlines()[0]}); "
                          "quote the whole override, e.g. 'key=[1, 2]'") from None


def _parse_number(key: str, hint: type, text: str) -> Any:
    t = text.strip()
    try:
        if hint is int:
            return int(t.replace("_", ""), 0) if t[:2].lower() in ("0x", "0o", "0b") else int(t)
        return float(t)
    except ValueError:
        pass
    if hint is int:
        try:
            as_float = float(t)
        except ValueError:
            as_float = None
        if as_float is not None and as_float.is_integer() and abs(as_float) < 2**53:
            return int(as_float)
    kind = "an integer" if hint is int else "a number"
    raise ConfigError(f"{key}: expected {kind}, got {text!r}")


def _typed_strings(path: str, cls: type, raw: Dict[str, Any]) -> Dict[str, Any]:
    """Turn string values (command-line overrides, YAML's unquoted ``1e-3``) into their fields' types."""
    hints = typing.get_type_hints(cls)
    out = dict(raw)
    for name, value in raw.items():
        hint = hints.get(name)
        key = f"{path}.{name}" if path else name
        if hint is None:
            continue
        inner, optional = _unwrap_optional(hint)
        if value is None and inner is str and not optional:  # `prompt:` in YAML, `key=` parsed as null
            out[name] = ""
        elif isinstance(value, str):
            out[name] = _parse_text(key, hint, value)
        elif isinstance(value, dict) and dataclasses.is_dataclass(inner):
            out[name] = _typed_strings(key, inner, value)
        elif isinstance(value, dict) and typing.get_origin(inner) in (dict, Dict):
            value_hint = typing.get_args(inner)[1] if typing.get_args(inner) else Any
            out[name] = {k: _parse_text(f"{key}.{k}", value_hint, v) if isinstance(v, str) else v
                         for k, v in value.items()}
    return out


def merge_section(path: str, cls: type, raw: Any) -> Any:
    """Validate one section against its dataclass and return the typed object."""
    label = path or "(top level)"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a mapping of keys, got {raw!r}")
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in valid:
            shown = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{label}: unknown key '{shown}'{valid_keys_hint(str(key), valid)}")
    raw = _coerce_schedules(cls, _typed_strings(path, cls, dict(raw)))
    prefix = f"{path}." if path else ""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), _escape_interpolations(raw))
        return OmegaConf.to_object(merged)
    except ConfigKeyError as e:  # nested unknown key
        raise ConfigError(f"{prefix}{e.full_key}: unknown key; {e.msg.splitlines()[0]}") from None
    except ValidationError as e:
        raise ConfigError(f"{prefix}{e.full_key}: {e.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or ""
        raise ConfigError(f"{prefix}{key}: {str(e).splitlines()[0]}") from None


def _escape_interpolations(data: Any) -> Any:
    """Keep ``${`` in override text literal when merged into a YAML config with interpolations."""
    if isinstance(data, dict):
        return {k: _escape_interpolations(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_escape_interpolations(v) for v in data]
    return data.replace("${", "\\${") if isinstance(data, str) else data
