"""s6ipc.base.clock: the system clock the daemons read by default, and the protocol a fake one meets."""

from __future__ import annotations

import time

from s6ipc.base.clock import SYSTEM_CLOCK, Clock, SystemClock
from tests.support.clock import FakeClock


def test_the_system_clock_reads_the_monotonic_clock() -> None:
    before = time.monotonic()
    got = SYSTEM_CLOCK.monotonic()
    after = time.monotonic()
    assert before <= got <= after


def test_the_system_clock_reads_wall_time_in_nanoseconds() -> None:
    before = time.time_ns()
    got = SYSTEM_CLOCK.wall_ns()
    after = time.time_ns()
    assert isinstance(got, int)
    assert before <= got <= after


def test_the_monotonic_reading_never_goes_back() -> None:
    clock = SystemClock()
    readings = [clock.monotonic() for _ in range(1000)]
    assert readings == sorted(readings)


def test_the_fake_clock_of_the_tests_is_a_clock() -> None:
    def deadline(clock: Clock, seconds: float) -> float:
        return clock.monotonic() + seconds

    fake = FakeClock()
    start_wall = fake.wall_ns()
    assert deadline(fake, 2.0) == 1002.0
    fake.advance(1.5)
    assert deadline(fake, 2.0) == 1003.5
    assert fake.wall_ns() - start_wall == 1_500_000_000
    assert isinstance(SYSTEM_CLOCK, SystemClock)
