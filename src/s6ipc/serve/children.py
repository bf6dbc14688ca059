"""The children of a spawning server: who they serve, how many per peer, reaping, killing.

Some facts about child processes (Linux) this table relies on:

* **SIGCHLD is not queued**: one delivery may stand for many exited children, so :meth:`reap`
  loops on ``waitpid(-1, WNOHANG)`` until it returns 0 (children left, none exited) or ECHILD.
* A child that exited stays a zombie, holding its pid, until it is waited for: a pid in the table
  is never reused by another process before :meth:`reap` has removed it, so ``kill`` on a pid of
  the table never hits a stranger.
* ``waitpid(-1)`` also collects processes this table does not know (inherited children of an
  image that exec'd into the server): they are reaped and ignored — but for those the daemon
  said it expects (the preflight of an in-place upgrade), whose wait status goes to their hook.
"""

from __future__ import annotations

import os

from ..base.execution import exited_children
from .peers import Peer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Hashable, Iterable

__all__ = ["ChildTable"]

#: Called for each child reaped: (pid, the peer it served, its wait status).
if TYPE_CHECKING:
    EndHook = Callable[[int, Peer, int], None]


class ChildTable:
    """Running children by pid, with the number of children per peer key."""

    def __init__(self) -> None:
        self.peers: Dict[int, Peer] = {}
        self.per_key: Dict[Hashable, int] = {}
        #: Other children of the daemon (a preflight): pid → what to call with its wait status.
        self.expected: Dict[int, Callable[[int], None]] = {}

    def __len__(self) -> int:
        return len(self.peers)

    def count(self, key: Hashable) -> int:
        """Children now serving peers of *key*."""
        return self.per_key.get(key, 0)

    def add(self, pid: int, peer: Peer) -> int:
        """Record a new child; returns the number of children of its key, this one included."""
        self.peers[pid] = peer
        n = self.per_key.get(peer.key, 0) + 1
        self.per_key[peer.key] = n
        return n

    def expect(self, pid: int, on_exit: Callable[[int], None]) -> None:
        """Child *pid* is not a connection: when it is reaped, call *on_exit(status)* instead."""
        self.expected[pid] = on_exit

    def reap(self, on_end: EndHook) -> None:
        """Wait for every exited child, calling *on_end* for those of the table (and the hook of
        an :meth:`expect`-ed one).

        Raises :class:`SystemFailure` ``wait_nohang`` for an unexpected waitpid error.
        """
        for pid, status in exited_children():
            peer = self.peers.pop(pid, None)
            if peer is None:
                on_exit = self.expected.pop(pid, None)
                if on_exit is not None:
                    on_exit(status)
                continue
            left = self.per_key[peer.key] - 1
            if left:
                self.per_key[peer.key] = left
            else:
                del self.per_key[peer.key]
            on_end(pid, peer, status)

    def kill_all(self, signals: Iterable[int]) -> None:
        """Send each of *signals*, in order, to every child (errors ignored)."""
        sigs = tuple(signals)
        for pid in list(self.peers):
            for sig in sigs:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
