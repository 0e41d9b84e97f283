"""Valid ranges of numeric config fields, declared once beside each field and checked in one place.

A field declares its range in its dataclass metadata::

    guidance_scale: float = bounded(100.0, lo=0.0)
    lr: Dict[str, float] = bounded(default_factory=dict, lo=0.0, lo_open=True)   # every value > 0

:func:`check_bounds` walks a resolved config object (nested dataclasses, lists and dicts of numbers
included) and raises one :class:`ConfigError` that names the key and the valid range. Every float is
also required to be finite, declared or not: ``nan`` or ``inf`` never reaches training.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .errors import ConfigError

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Bounds:
    """``lo <= value <= hi`` (or strict where ``*_open``); None = unbounded on that side."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def describe(self) -> str:
        lo = "-inf" if self.lo is None else _num(self.lo)
        hi = "inf" if self.hi is None else _num(self.hi)
        left = "(" if self.lo is None or self.lo_open else "["
        right = ")" if self.hi is None or self.hi_open else "]"
        return f"{left}{lo}, {hi}{right}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def bounded(default: Any = dataclasses.MISSING, *, lo: Optional[float] = None, hi: Optional[float] = None,
            lo_open: bool = False, hi_open: bool = False, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value (or each value of a list/dict) must lie in the given range."""
    meta = {"bounds": Bounds(lo, hi, lo_open, hi_open)}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_value(key: str, value: Any, bounds: Optional[Bounds] = None) -> None:
    """Check one number (or the numbers inside a list/dict) against ``bounds`` and finiteness."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_value(f"{key}[{i}]", v, bounds)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            check_value(f"{key}.{k}", v, bounds)
        return
    if dataclasses.is_dataclass(value):
        check_bounds(value, key, outer=bounds)
        return
    if isinstance(value, float) and not math.isfinite(value):
        valid = bounds.describe() if bounds is not None else "a finite number"
        raise ConfigError(f"{key}: must be a finite number{' in ' + valid if bounds else ''}, got {value}")
    if isinstance(value, int) and abs(value) > INT64_MAX:
        raise ConfigError(f"{key}: must fit in 64 bits (|value| <= {INT64_MAX}), got {value}")
    if isinstance(value, (int, float)) and bounds is not None and not bounds.contains(value):
        raise ConfigError(f"{key}: must be in {bounds.describe()}, got {value}")


def check_bounds(obj: Any, prefix: str, outer: Optional[Bounds] = None) -> None:
    """Check every numeric field of a config dataclass (recursively) against its declared range.

    ``outer`` is the range declared on the field holding ``obj`` (a schedule's ``start``/``end``
    take the range of the value it schedules)."""
    for f in dataclasses.fields(obj):
        bounds = f.metadata.get("bounds")
        if bounds is None and outer is not None and f.name in getattr(obj, "SCHEDULED_FIELDS", ()):
            bounds = outer
        key = f"{prefix}.{f.name}" if prefix else f.name
        check_value(key, getattr(obj, f.name), bounds)


def check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    """Raise :class:`ConfigError` naming ``key`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key}: unknown value {value!r}; valid choices: {', '.join(choices)}")
