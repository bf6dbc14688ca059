"""Durations from argv and the environment, and the waits they become.

Some facts this module relies on (skalibs 2.13, Linux, CPython), checked:

* skalibs keeps times as ``tain`` (64-bit TAI seconds + nanoseconds): a duration given in
  milliseconds is any 32-bit number (up to 4294967295 ms, about 49.7 days) and ``now + it``
  never overflows. s6 2.11.3.2's programs then squeeze it into an ``int`` of milliseconds in
  places, and misbehave from 2**31 ms on (an at-once "Connection timed out", EINVAL, a
  descriptor stored with a limit that kills s6-fdholderd on ``iopause``): the docs list them.
* ``poll(2)`` takes an ``int`` of milliseconds; CPython's ``select.poll().poll()`` raises
  OverflowError ("timeout is too large") above 2**31 - 1 ms (about 24.8 days).
* So every wait is cut into polls of at most :data:`POLL_MAX_MS`, the caller polling again
  until its deadline: a timeout of 4294967295 ms waits that long, as the tain arithmetic says.
"""

from __future__ import annotations

import math

from .options import INT_MAX, parse_uint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["POLL_MAX_MS", "poll_ms", "timeout_seconds", "scan_timeout"]

#: The longest single ``poll``; a longer wait polls again.
POLL_MAX_MS = INT_MAX


def poll_ms(seconds: Optional[float]) -> Optional[int]:
    """The ``poll`` timeout for a wait of *seconds* (None: forever), rounded up, never negative,
    at most :data:`POLL_MAX_MS`."""
    if seconds is None:
        return None
    return max(0, min(POLL_MAX_MS, math.ceil(seconds * 1000)))


def timeout_seconds(ms: int) -> Optional[float]:
    """A timeout of *ms* milliseconds from argv as a wait in seconds: 0 is s6's "no timeout", None."""
    return ms / 1000 if ms else None


def scan_timeout(text: str) -> Optional[float]:
    """``-t timeout`` (milliseconds, a 32-bit number; 0: none) as :func:`timeout_seconds` gives it.
    Raises :class:`~s6ipc.base.options.UsageError`."""
    return timeout_seconds(parse_uint(text))
