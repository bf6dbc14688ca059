"""s6ipc.base.backoff: the accept back-off (s6's 10 ms doubling to a second after EMFILE/ENFILE,
cut short when a child exits), on the clock values the test passes."""

from __future__ import annotations

from s6ipc.base.backoff import FIRST_DELAY, MAX_DELAY, AcceptBackoff


def test_accept_backoff_doubles_to_a_second_and_is_cut_short() -> None:
    b = AcceptBackoff()
    assert not b and not b.waiting(0.0)
    assert b.failed(10.0) is True            # an episode starts: the caller logs once
    assert (b.delay, b.until) == (FIRST_DELAY, 10.0 + FIRST_DELAY)
    delays = [b.delay]
    for _ in range(10):
        assert b.failed(10.0) is False
        delays.append(b.delay)
    assert delays[:4] == [0.01, 0.02, 0.04, 0.08] and delays[-1] == MAX_DELAY
    assert b.waiting(10.5) and not b.waiting(11.0)
    b.cut_short(10.2)                        # a child exited: retry now, from the first delay
    assert not b.waiting(10.2) and b.delay == FIRST_DELAY
    b.succeeded()
    assert not b
