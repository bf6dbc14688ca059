"""Holding an in-place upgrade open at one of its phases, for real, without any hook in the daemons.

The servers run with a ``sitecustomize`` module first on ``PYTHONPATH`` (:data:`SITECUSTOMIZE`)
that, in the preflight child (``s6ipc preflight …`` on its command line) or in the new image (it
finds ``$S6IPC_HANDOFF`` in its environment, before any s6ipc code runs: its handlers do not exist
yet), writes a marker file and waits while a ``.hold`` file the test made exists, then dies (exit 111)
if a ``.die`` file exists. Used by
tests/programs/test_upgrade_signals.py and test_upgrade_standin.py.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Tuple

from .processes import read_all, wait_until

__all__ = ["SITECUSTOMIZE", "Phases", "process_state", "exited", "together", "after_held", "SERVER_OUTCOME",
           "parent_pid", "handler_pid", "hold_connection"]

SITECUSTOMIZE = '''\
import os
import time


def _phase():
    with open("/proc/self/cmdline", "rb") as f:
        argv = f.read().split(b"\\0")
    if b"preflight" in argv:
        return "preflight"
    if "S6IPC_HANDOFF" in os.environ:
        return "new-image"
    return None


_here = os.path.dirname(os.path.abspath(__file__))
_name = _phase()
if _name is not None:
    _marker = os.path.join(_here, _name + ".started")
    with open(_marker + ".tmp", "w") as f:
        f.write("%d\\n" % os.getpid())
    os.replace(_marker + ".tmp", _marker)
    _hold = os.path.join(_here, _name + ".hold")
    _until = time.monotonic() + 30
    while os.path.exists(_hold) and time.monotonic() < _until:
        time.sleep(0.005)
    if os.path.exists(os.path.join(_here, _name + ".die")):
        os._exit(111)
'''

class Phases:
    """The test's sitecustomize directory: hold a phase open, see it reached, let it go."""

    def __init__(self, top: str) -> None:
        self.top = top
        with open(os.path.join(top, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE)

    def env(self) -> dict:  # type: ignore[type-arg]
        return dict(os.environ, PYTHONPATH=self.top)

    def hold(self, name: str) -> None:
        open(os.path.join(self.top, name + ".hold"), "w").close()

    def die(self, name: str) -> None:
        """The process of phase *name* exits 111 once released (a new image that crashes)."""
        open(os.path.join(self.top, name + ".die"), "w").close()

    def release(self, name: str) -> None:
        os.unlink(os.path.join(self.top, name + ".hold"))

    def reached(self, name: str, timeout: float = 30) -> int:
        """The pid of the process that reached phase *name* (and waits in it while held)."""
        path = os.path.join(self.top, name + ".started")
        return wait_until(lambda: os.path.exists(path) and int(open(path).read().split()[0]), timeout)  # type: ignore[no-any-return]


def process_state(pid: int) -> str:
    """Process *pid*'s state letter (``Z``: exited, not reaped; ``T``: stopped); ``X`` once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "X"


def exited(pid: int) -> bool:
    return process_state(pid) in ("Z", "X")


def together(pid: int, *sigs: int) -> None:
    """Deliver *sigs* to *pid* so that its loop reads them in one batch."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: process_state(pid) == "T")
    for sig in sigs:
        os.kill(pid, sig)
    os.kill(pid, signal.SIGCONT)


def after_held(sock: socket.socket) -> bytes:
    """What a ``handler hold`` connection says now: its echo if the child lives, ``TERM\\n`` then
    EOF if it got SIGTERM, EOF alone if it was killed."""
    sock.settimeout(10)
    try:
        sock.sendall(b"alive\n")
    except OSError:
        pass
    return read_all(sock, until=b"alive\n")


#: ipcserverd/tcpserverd: (exits, what a connection from before sees afterwards)
SERVER_OUTCOME = {
    signal.SIGTERM: (True, b"alive\n"),
    signal.SIGQUIT: (True, b"TERM\n"),
    signal.SIGABRT: (True, b""),
    signal.SIGHUP: (False, b"TERM\n"),
}


def parent_pid(pid: int) -> int:
    """The parent of process *pid* (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def handler_pid(sock: socket.socket) -> int:
    """The pid a ``handler hold`` connection's handler says first (its line)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(100)
        assert chunk, "the connection ended before its handler said its pid"
        line += chunk
    return int(line)


def hold_connection(path: str) -> Tuple[socket.socket, int]:
    """A ``handler hold`` connection to the AF_UNIX socket *path*, and its handler's pid."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(path)
    return sock, handler_pid(sock)
