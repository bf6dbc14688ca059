"""fdholderd's in-place upgrade (SIGUSR2): the same PID, every held descriptor kept, no client lost.

Some facts about the upgrade of a descriptor holder that this module relies on (the generic part —
memfd state, preflight, what ``execve`` keeps — is in :mod:`s6ipc.upgrade`):

* **What must survive is in the kernel already.** A held descriptor is an open file description
  referenced by a descriptor number; cleared of close-on-exec it is still open, at the same number,
  in the new image. Its id, its TAI limit and its slot (s6's list/getdump order: a new entry takes
  the most recently freed slot) are data: they go in the handed-over JSON with the number.
* **Clients are drained, then carried.** The new image cannot continue a half-read request or a
  half-sent reply from the old one's buffers, so the upgrade first does what a lameduck does: it
  stops accepting (new clients wait in the listening socket's backlog, which the exec keeps) and
  finishes the I/O in progress — complete requests buffered are answered, a started message is read
  to its end, replies are written out (a descriptor in a reply is then in the client's socket
  queue, owned by the kernel). That takes at most :data:`~s6ipc.fdholder.server.UPGRADE_DRAIN`; a
  client still in the middle of a message then is dropped (it sees a close and may retry). Every
  other connected client is idle between two messages: its socket is kept across the exec with its
  deadline and its setdump progress, and whatever it sends meanwhile waits in the kernel. The new
  image checks it against the rules again (they may have changed) before serving it.
* **Readiness.** The PID never changes, so there is no ``MAINPID=``; with ``$NOTIFY_SOCKET`` the
  manager sees ``RELOADING=1`` (with ``MONOTONIC_USEC=``) when the upgrade starts and ``READY=1``
  when the new image serves (or when the old one gives up and goes on). The s6 notification fd
  is written once, by the first image: after an upgrade fd 1 may be a held descriptor, so the new
  image never touches it. s6-supervise sees nothing: same PID, no exit, no new readiness.
* **A failed upgrade keeps the old image.** A preflight that fails (syntax error, missing module,
  bad options in the code on disk, or a state it cannot read: the child gets the state the holder
  would hand over now and reads it with :func:`read_state`) logs one line and nothing changes.
  An ``execve`` that fails (the interpreter was removed…) gives the descriptors their
  close-on-exec back and goes on. Once
  the exec has happened there is no old image left: a new image that cannot take the state over
  dies with ``unable to take over from the previous image: …`` (exit 111) — the held descriptors die
  with it, as in a crash, and the supervisor restarts a holder that is empty.
"""

from __future__ import annotations

import os
import signal
import time

from .. import __version__
from ..base.errors import S6ipcError, Unusable
from ..base.log import Log
from ..base.messages import flush_stdio
from ..base.typeshim import NamedTuple
from ..daemon import upgrade
from ..daemon.liveview import StatusSocket
from ..daemon.readiness import Notifier
from . import tai
from .server import FdHolderDaemon, ParsedState, parse_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

#: What the handed-over JSON says it is (another daemon's state is refused).
KIND = "fdholderd"
#: Signals kept pending (blocked) across the exec: the new image's handlers get them.
_HELD_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)


class InPlace:
    """The :class:`~s6ipc.fdholder.server.Upgrader` of the ``fdholderd`` program: re-executes
    *program* *args* (the command line it was started with) from the code installed now.

    *generation* counts the in-place upgrades since the holder started at *started_ns* (wall
    clock); both go on across upgrades, for the live view.
    """

    def __init__(self, program: str, args: List[str], log: Log, notifier: Notifier, *,
                 generation: int = 0, started_ns: Optional[int] = None) -> None:
        self.program = program
        self.args = list(args)
        self.log = log
        self.notifier = notifier
        self.generation = generation
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        #: The live view's socket, kept across the exec (its abstract name holds the PID).
        self.status: Optional[StatusSocket] = None

    def tell(self, send: Callable[[], bool]) -> None:
        """Send one sd_notify message; a failure is a warning, never the end of the holder."""
        try:
            send()
        except S6ipcError as e:
            self.log.warn(str(e))

    def preflight(self, daemon: FdHolderDaemon) -> Optional[str]:
        self.tell(self.notifier.reloading)
        problem = upgrade.preflight(self.program, self.args, state=self._state(daemon, []))
        if problem is not None:
            self.tell(self.notifier.ready)
        return problem

    def replace(self, daemon: FdHolderDaemon) -> str:
        fds = daemon.descriptors()
        if self.status is not None:
            fds.append(self.status.fileno())
        argv = upgrade.reexec_argv(self.program, self.args)
        mask = upgrade.block_signals(_HELD_SIGNALS)
        state = self._state(daemon, mask)
        memfd = -1
        try:
            upgrade.keep_across_exec(fds)
            memfd = upgrade.write_state(state)
            flush_stdio()
            os.execv(argv[0], argv)
        except S6ipcError as e:
            return self._undo(fds, memfd, mask, str(e))
        except OSError as e:
            return self._undo(fds, memfd, mask, f"unable to exec {argv[0]}: {os.strerror(e.errno or 0)}")

    def _state(self, daemon: FdHolderDaemon, mask: List[int]) -> Dict[str, Any]:
        """What the next image gets (:func:`read_state` reads it)."""
        return {"kind": KIND, "version": __version__, "generation": self.generation + 1,
                "started_ns": self.started_ns, "mask": mask,
                "status_fd": None if self.status is None else self.status.fileno(),
                "daemon": daemon.to_state()}

    def _undo(self, fds: List[int], memfd: int, mask: List[int], why: str) -> str:
        upgrade.restore_mask(mask)
        for fd in fds[1:]:  # fd 0 was inherited: it stays inheritable
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
        if memfd >= 0:
            upgrade.discard_state(memfd)
        self.tell(self.notifier.ready)
        return why

    def view(self, daemon: FdHolderDaemon) -> Dict[str, Any]:
        """The live view (JSON): version, generation, uptime, limits, the clients connected (uid,
        gid, age), the ids held in slot order with their limit, the seconds until it (null: never)
        and the inode of the descriptor."""
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
        return {"program": KIND, "pid": os.getpid(), "version": __version__,
                "generation": self.generation,
                "uptime": round((time.time_ns() - self.started_ns) / 1e9, 3),
                "started": round(self.started_ns / 1e9, 3),
                "limits": {"maxconn": config.maxconn, "maxfds": config.maxfds},
                "rules": config.rules_cdb or config.rules_dir,
                "lameduck": not daemon.running, "upgrading": daemon.upgrade_deadline is not None,
                "clients": clients, "held": held}


class Lineage(NamedTuple):
    """The part of the handed-over state that is the program's, not the daemon's."""

    generation: int
    started_ns: int
    mask: List[int]
    status_fd: Optional[int]


def read_state(state: Dict[str, Any]) -> Tuple[Lineage, ParsedState]:
    """Read a handed-over *state* entirely, touching no descriptor: what :func:`resume` does first,
    and what the preflight runs in the new code against the running holder's current state (so that
    a new version that cannot read the old one's state is refused before the exec).

    Raises ValueError (KeyError, TypeError) when this code cannot read it.
    """
    if state.get("kind") != KIND:
        raise ValueError(f"the state is not {KIND}'s")
    fd = state["status_fd"]
    lineage = Lineage(int(state["generation"]), int(state["started_ns"]), [int(s) for s in state["mask"]],
                      None if fd is None else int(fd))
    return lineage, parse_state(state["daemon"])


def open_live_view(daemon: FdHolderDaemon, upgrader: InPlace, fd: Optional[int]) -> None:
    """Serve the live view (``s6ipc status fdholderd``) from *daemon*'s loop: on the status socket
    *fd* handed over by the previous image, else a new one. One that cannot be made is a warning."""
    try:
        status = StatusSocket(KIND, lambda: upgrader.view(daemon), fd)
    except S6ipcError as e:
        upgrader.log.warn(f"{e}: no live view")
        return
    upgrader.status = status
    daemon.watch(status.fileno(), status.on_event)


def resume(daemon: FdHolderDaemon, upgrader: InPlace, state: Dict[str, Any]) -> None:
    """Start *daemon* from the handed-over *state*, then let the signals held across the exec in.

    Raises :class:`Unusable` (exit 111: ``unable to take over from the previous image: …``) when the
    state does not describe a daemon this code can continue.
    """
    try:
        lineage, _ = read_state(state)
        upgrader.generation = lineage.generation
        upgrader.started_ns = lineage.started_ns
        status_fd = lineage.status_fd
        daemon.start(state["daemon"], before_ready=lambda: open_live_view(daemon, upgrader, status_fd))
    except (KeyError, TypeError, ValueError) as e:
        raise Unusable(f"unable to take over from the previous image: {e}") from None
    upgrade.restore_mask(lineage.mask)
    upgrader.tell(upgrader.notifier.ready)
