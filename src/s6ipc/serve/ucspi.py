"""One accepted connection as a UCSPI program expects it: fds 0 and 1, ``PROTO`` and the peer's variables.

Some facts this module relies on (systemd 252, Linux):

* **Where systemd puts an Accept=yes connection.** With the default ``StandardInput=null`` the
  connection socket is fd 3 with ``LISTEN_FDS=1`` (``LISTEN_FDNAMES=connection`` from a real
  manager, nothing from ``systemd-socket-activate --accept``); with ``StandardInput=socket`` (and
  ``--inetd``) it is fds 0 and 1 and no ``LISTEN_*`` is set. For IP sockets systemd adds
  ``REMOTE_ADDR``/``REMOTE_PORT``; for ``AF_UNIX`` nothing useful. So the peer is read from the
  socket itself, never from those variables.
* **UCSPI.** A connection program reads from fd 0 and writes to fd 1, both the socket (what
  s6-ipcserverd gives its children). s6-ipcserverd sets ``PROTO=IPC``, ``IPCREMOTEEUID`` /
  ``IPCREMOTEEGID`` (``SO_PEERCRED``: the peer's ids at connect time), ``IPCREMOTEPATH`` (the
  peer's bound path, empty when unbound) and ``IPCCONNNUM`` (connections from that uid, this one
  included). s6-tcpserver's equivalents are ``PROTO=TCP``, ``TCPREMOTEIP``/``TCPREMOTEPORT`` and
  ``TCPLOCALIP``/``TCPLOCALPORT``.
* **Counting connections.** Under Accept=yes every connection is its own service instance: no
  process sees them all. A directory of lock files (``UID.PID``, locked with ``flock`` by a
  descriptor the connection program inherits, so the lock lives exactly as long as it) lets each
  instance count the live ones from its uid: a file whose lock can be taken is stale and removed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket

from ..base.errors import BadInput, SystemFailure
from ..sockets.listenfds import take_systemd_fds
from .peers import PeerUnknown, UnixPeers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

__all__ = ["IPC_VARIABLES", "take_connection", "connection_variables", "count_connection"]

#: Variables of a connection program's environment set here (others are left alone).
IPC_VARIABLES = ("PROTO", "IPCREMOTEEUID", "IPCREMOTEEGID", "IPCREMOTEPATH", "IPCCONNNUM")


def take_connection() -> int:
    """The fd of the connection systemd passed (fd 3 of ``LISTEN_FDS=1``, else fd 0).

    ``LISTEN_*`` leave ``os.environ``. Raises :class:`BadInput` (exit 100) when there is none, when
    systemd passed several fds, or when the fd is a listening socket (an ``Accept=no`` unit).
    """
    passed, reason = take_systemd_fds(True)
    if len(passed) > 1:
        listing = ", ".join(f"fd {p.fd} {p.name}" for p in passed)
        raise BadInput(f"{len(passed)} fds passed by systemd ({listing}): "
                       "Accept=yes passes one connection")
    fd = passed[0].fd if passed else 0
    where = f"fd {fd}" + (" (LISTEN_FDS)" if passed else f" (stdin; {reason})")
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as e:
        if e.errno == errno.EBADF:
            raise SystemFailure(f"use {where}", errno.EBADF) from None
        raise BadInput(f"{where} is not a socket") from None
    try:
        if sock.type != socket.SOCK_STREAM:
            raise BadInput(f"{where} is not a stream socket")
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise BadInput(f"{where} is a listening socket, not a connection: the unit needs Accept=yes "
                           "(for Accept=no use systemd-socket or listen-fds)")
    finally:
        sock.close()
    return fd


def connection_variables(fd: int, countdir: Optional[str] = None) -> Dict[str, str]:
    """``PROTO`` and the peer variables of connection *fd*, as s6-ipcserverd / s6-tcpserver set them;
    ``IPCCONNNUM`` only with *countdir* (see :func:`count_connection`, whose lock fd is left open for
    the connection program to inherit). Raises :class:`SystemFailure`, :class:`BadInput`."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        if sock.family == socket.AF_UNIX:
            try:
                peer = UnixPeers().identify(sock, None)
            except PeerUnknown as e:
                raise SystemFailure("getpeereid", errno.EIO) from e
            count = count_connection(countdir, str(peer.uid))[1] if countdir is not None else 0
            env: Dict[str, str] = {}
            peer.fill(env, count, sock.getpeername())
            if countdir is None:
                del env["IPCCONNNUM"]
            return env
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            remote, local = sock.getpeername(), sock.getsockname()
            return {"PROTO": "TCP", "TCPREMOTEIP": remote[0], "TCPREMOTEPORT": str(remote[1]),
                    "TCPLOCALIP": local[0], "TCPLOCALPORT": str(local[1])}
        raise BadInput(f"fd {fd} is neither a Unix nor an IP socket (family {sock.family})")
    finally:
        sock.close()


def count_connection(directory: str, uid: str) -> Tuple[int, int]:
    """Register this connection in lock *directory* (created 0700 if missing); return (inheritable
    lock fd, IPCCONNNUM). Raises :class:`SystemFailure`.
    """
    mine = os.path.join(directory, f"{uid}.{os.getpid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        lock = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = os.listdir(directory)
    except OSError as e:
        raise SystemFailure(f"count connections in {directory}", e.errno or errno.EIO) from None
    live: List[str] = []
    for entry in entries:
        if not entry.startswith(uid + ".") or os.path.join(directory, entry) == mine:
            continue
        path = os.path.join(directory, entry)
        try:
            other = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            live.append(entry)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
        finally:
            os.close(other)
    os.set_inheritable(lock, True)
    return lock, len(live) + 1
