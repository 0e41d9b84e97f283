"""Typed schedules for values that change over a run (timestep range, loss weights, ...)."""

from __future__ import annotations

from dataclasses import dataclass

from .bounds import bounded


@dataclass
class LinearSchedule:
    """A value that is ``start`` until ``start_step``, moves linearly to ``end`` at ``end_step``,
    and stays at ``end`` afterwards.

    In YAML a plain number is accepted wherever a schedule is expected and means a constant
    (``t_max: 0.98`` is ``t_max: {start: 0.98, end: 0.98}``).
    """

    SCHEDULED_FIELDS = ("start", "end")
    """Fields that take the valid range of the value being scheduled (see :mod:`text3d.core.bounds`)."""

    start: float = 0.0
    """Value at and before ``start_step``."""
    end: float = 0.0
    """Value at and after ``end_step``."""
    start_step: int = bounded(0, lo=0)
    """Step where the ramp begins."""
    end_step: int = bounded(0, lo=0)
    """Step where the ramp ends; ``end_step <= start_step`` means a jump to ``end`` at ``start_step``."""

    @classmethod
    def constant(cls, value: float) -> "LinearSchedule":
        return cls(start=value, end=value)

    def value(self, step: int) -> float:
        if self.end_step <= self.start_step:
            return self.end if step >= self.start_step else self.start
        if step <= self.start_step:
            return self.start
        if step >= self.end_step:
            return self.end
        frac = (step - self.start_step) / (self.end_step - self.start_step)
        return self.start + frac * (self.end - self.start)
