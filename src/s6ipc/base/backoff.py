"""Running out of descriptors at ``accept``: back off instead of spinning.

Some facts about EMFILE at accept (Linux) that both daemons rely on:

* When ``accept`` fails with EMFILE or ENFILE (or ENOBUFS/ENOMEM), the connection stays queued and
  the listening socket stays readable: polling it again at once fails again, at 100 % CPU (what
  s6-ipcserverd does, logging a warning per try; s6-fdholderd dies instead).
* So a daemon stops polling the listening socket for a delay — 10 ms, doubling up to 1 s while the
  failures go on — and logs one warning per episode; clients wait in the kernel's backlog meanwhile.
  A successful accept ends the episode. A child's exit (descriptors freed) may cut the delay short.
"""

from __future__ import annotations

import errno

__all__ = ["NO_DESCRIPTORS", "FIRST_DELAY", "MAX_DELAY", "AcceptBackoff"]

#: accept's errnos that mean "no descriptor (or memory) to give you now": wait, don't spin.
NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FIRST_DELAY = 0.01
MAX_DELAY = 1.0


class AcceptBackoff:
    """The back-off state of one listening socket, on a caller-given clock (seconds)."""

    def __init__(self) -> None:
        #: The current delay (0: not backing off).
        self.delay = 0.0
        #: When accepting may resume (meaningful while :attr:`delay` is set).
        self.until = 0.0

    def __bool__(self) -> bool:
        return self.delay > 0

    def failed(self, now: float) -> bool:
        """Record a failed accept at *now*; True when this starts an episode (log it once)."""
        first = not self.delay
        self.delay = FIRST_DELAY if first else min(self.delay * 2, MAX_DELAY)
        self.until = now + self.delay
        return first

    def succeeded(self) -> None:
        """An accept worked: the episode is over."""
        self.delay = 0.0

    def cut_short(self, now: float) -> None:
        """Descriptors were freed: retry at once, and start again from the first delay."""
        if self.delay:
            self.delay = FIRST_DELAY
            self.until = now

    def waiting(self, now: float) -> bool:
        """True while accepting must wait."""
        return bool(self.delay) and now < self.until
