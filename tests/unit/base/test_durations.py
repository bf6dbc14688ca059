"""s6ipc.base.durations: a wait in seconds becomes poll timeouts that CPython and the kernel accept."""

from __future__ import annotations

import os
import select

import pytest

from s6ipc.base.durations import POLL_MAX_MS, poll_ms, scan_timeout, timeout_seconds
from s6ipc.base.options import UINT32_MAX, UsageError


def test_no_deadline_is_a_poll_without_timeout() -> None:
    assert poll_ms(None) is None


@pytest.mark.parametrize("seconds, expected", [
    (0, 0),
    (0.0, 0),
    (-5.0, 0),            # a deadline already past: poll at once, never a negative (infinite) wait
    (0.0001, 1),          # rounded up: a short wait never becomes a busy poll(0)
    (0.001, 1),
    (0.0011, 2),
    (1.5, 1500),
    (60, 60000),
])
def test_seconds_become_milliseconds_rounded_up(seconds: float, expected: int) -> None:
    assert poll_ms(seconds) == expected


def test_a_long_wait_is_cut_at_the_largest_poll() -> None:
    assert POLL_MAX_MS == 2**31 - 1
    assert poll_ms(4294967.295) == POLL_MAX_MS   # s6's largest -t (4294967295 ms)
    assert poll_ms(1e12) == POLL_MAX_MS
    assert poll_ms(2**31 / 1000 - 0.001) == 2**31 - 1


def test_the_largest_poll_is_one_cpython_accepts() -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        poller = select.poll()
        poller.register(r, select.POLLIN)
        assert poller.poll(poll_ms(1e12)) == [(r, select.POLLIN)]  # ready: returns at once
        with pytest.raises(OverflowError):
            poller.poll(POLL_MAX_MS + 1)
    finally:
        os.close(r)
        os.close(w)


def test_a_timeout_from_argv_in_seconds_zero_is_none() -> None:
    assert (timeout_seconds(0), timeout_seconds(1), timeout_seconds(1500)) == (None, 0.001, 1.5)
    assert scan_timeout(str(UINT32_MAX)) == UINT32_MAX / 1000  # about 49.7 days, as skalibs takes it
    for text in ("", "-1", "1.5", str(UINT32_MAX + 1)):
        with pytest.raises(UsageError):
            scan_timeout(text)
