"""A clock the tests move by hand (the daemons take a :class:`s6ipc.clock.Clock`)."""

from __future__ import annotations

import time


class FakeClock:
    """Monotonic and wall time that change only when :meth:`advance` is called."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = time.time_ns()

    def monotonic(self) -> float:
        return self.now

    def wall_ns(self) -> int:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += int(seconds * 1e9)
