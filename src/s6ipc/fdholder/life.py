"""fdholderd's part of its life: what it hands its next image, shows in its live view and says in
``STATUS=``. The life itself (SIGUSR2, the preflight, the exec and its failure, the lineage, the
common fields of the live view) is :mod:`s6ipc.daemon.lifecycle`'s, the same for every daemon.

Some facts about the upgrade of a descriptor holder that this relies on:

* **What must survive is in the kernel already.** A held descriptor is an open file description
  referenced by a descriptor number; cleared of close-on-exec it is still open, at the same number,
  in the new image. Its id, its TAI limit and its slot (s6's list/getdump order: a new entry takes
  the most recently freed slot) are data: they go in the handed-over JSON with the number.
* **Clients are drained, then carried.** The new image cannot continue a half-read request or a
  half-sent reply from the old one's buffers, so the upgrade first does what a lameduck does: it
  stops accepting (new clients wait in the listening socket's backlog, which the exec keeps) and
  finishes the I/O in progress, for at most :data:`~s6ipc.fdholder.server.UPGRADE_DRAIN`; a client
  still in the middle of a message then is dropped (it sees a close and may retry). Every other
  client is idle between two messages: its socket is kept across the exec with its deadline and its
  setdump progress. The new image checks it against the rules again before serving it.
* **A new image that dies after the exec** (a module that raises at import, a state it cannot
  take over) would take every held descriptor with it: a guardian forked just before the exec
  keeps them until the new image has taken over, and hands them to the fdholderd the supervisor
  restarts if it has not (:mod:`s6ipc.fdholder.guardian`).
* **Readiness.** The PID never changes, so there is no ``MAINPID=``; the s6 notification fd is
  written once, by the first image: after an upgrade fd 1 may be a held descriptor, so the new
  image never touches it.
"""

from __future__ import annotations

import errno
import os

from ..base.errors import S6ipcError, SystemFailure
from ..base.log import Log
from ..sockets.unix import local_path
from . import guardian, tai
from .server import FdHolderDaemon

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

#: What the handed-over JSON says it is (another daemon's state is refused).

__all__ = ["KIND", "HolderLife"]

#: The daemon's name in its state and its live view.
KIND = "fdholderd"


def _is_pipe(fd: int) -> bool:
    """Whether *fd* is a pipe: the guardian's write end is, a held or listening socket never (a
    state that names another descriptor must not make the holder write to it and close it)."""
    import stat

    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


class HolderLife:
    """The :class:`~s6ipc.daemon.lifecycle.DaemonPart` of an :class:`FdHolderDaemon`."""

    def __init__(self, daemon: FdHolderDaemon, log: Log) -> None:
        self.daemon = daemon
        self.log = log
        #: The guardian of the descriptors across the exec under way: (pid, pipe's write end).
        self.guardian: Optional[Tuple[int, int]] = None

    def to_state(self) -> Dict[str, Any]:
        state = self.daemon.to_state()
        if self.guardian is not None:
            state["guardian"] = list(self.guardian)
        return state

    def restore(self, state: Dict[str, Any]) -> None:
        self.daemon.restore(state)

    def descriptors(self) -> Dict[str, int]:
        named = self.daemon.descriptors()
        if self.guardian is not None:
            named["guardian"] = self.guardian[1]
        return named

    def path(self) -> Optional[str]:
        """The listening socket's path (None: unnamed, or not a Unix socket)."""
        try:
            return local_path(self.daemon.listen_fd) or None
        except S6ipcError:
            return None

    # -- the guardian (fdholder/guardian.py) ---------------------------------------------
    def guard(self, mask: List[int]) -> Callable[[], None]:
        """Just before the exec: fork the guardian; returns what releases it if the exec fails.
        Raises :class:`SystemFailure` (``fork a guardian``): the upgrade goes on without one."""
        try:
            pid, fd = guardian.guard(self.daemon.store, self.path(), self.log)
        except OSError as e:
            raise SystemFailure("fork a guardian", e.errno or errno.EIO) from None
        self.guardian = (pid, fd)

        def undo() -> None:
            self.guardian = None
            guardian.release(pid, fd)
        return undo

    def released(self, state: Dict[str, Any]) -> None:
        """The new image has taken *state* over: its guardian (if the old image made one) goes."""
        named = state.get("guardian")
        if isinstance(named, list) and len(named) == 2 and _is_pipe(int(named[1])):
            guardian.release(int(named[0]), int(named[1]))

    def collect(self) -> None:
        """A fresh start: take what a guardian holds for this socket (an image died after its exec)."""
        store = guardian.collect(self.path(), self.log)
        if store is not None:
            self.daemon.store = store

    def describe(self) -> Dict[str, Any]:
        """The live view (JSON): limits, the clients connected (uid, gid, age), the ids held in slot
        order with their limit, the seconds until it (null: never) and the inode of the descriptor."""
        daemon = self.daemon
        now = tai.from_unix_ns(daemon.clock.wall_ns())
        held = []
        for e in daemon.store.entries():
            finite = tai.is_finite(e.limit, now)
            try:
                inode: Optional[int] = os.fstat(e.held.fd).st_ino
            except OSError:
                inode = None
            held.append({"id": e.id.decode("utf-8", "surrogateescape"), "limit": e.limit.text(),
                         "expires_in": round(e.limit.unix() - now.unix(), 3) if finite else None,
                         "inode": inode})
        config = daemon.config
        monotonic = daemon.clock.monotonic()
        clients = [{"uid": c.uid, "gid": c.gid, "age": round(monotonic - c.since, 3)}
                   for c in daemon.clients.values()]
        return {"limits": {"maxconn": config.maxconn, "maxfds": config.maxfds},
                "rules": config.rules_cdb or config.rules_dir,
                "lameduck": not daemon.running, "upgrading": daemon.upgrade_deadline is not None,
                "clients": clients, "held": held,
                "counters": {"held": len(held), "requests": dict(daemon.requests)}}

    def status_text(self) -> str:
        """``STATUS=``: ``3 descriptors held, 2 clients``."""
        n, c = len(self.daemon.store), len(self.daemon.clients)
        return f"{n} descriptor{'' if n == 1 else 's'} held, {c} client{'' if c == 1 else 's'}"
