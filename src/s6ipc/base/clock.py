"""The clock the daemons read: monotonic time for deadlines and back-off, wall time for expiry.

A daemon takes a :class:`Clock` as a parameter (the default reads the system's clocks), so that
tests can drive deadlines, expiry and back-off by moving time instead of sleeping.
"""

from __future__ import annotations

import time

from .typeshim import Protocol

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK"]


class Clock(Protocol):
    """Where a daemon reads the time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, back-off)."""
        ...

    def wall_ns(self) -> int:
        """Nanoseconds since the Unix epoch (absolute expiry limits)."""
        ...


class SystemClock:
    """The system's clocks: ``time.monotonic`` and ``time.time_ns``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ns(self) -> int:
        return time.time_ns()


SYSTEM_CLOCK = SystemClock()
