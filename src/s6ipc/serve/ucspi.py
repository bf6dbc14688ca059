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
  ``IPCREMOTEEGID`` (``SO_PEERCRED``: the peer's ids at connect time), ``IPCCONNNUM`` (connections
  from that uid, this one included) and ``IPCREMOTEPATH`` (the peer's bound path, empty when
  unbound); s6-tcpserverd sets ``PROTO=TCP``, ``TCPREMOTEIP``, ``TCPREMOTEPORT`` and ``TCPCONNNUM``
  (per address), and tcpserver-access adds ``TCPLOCALIP``/``TCPLOCALPORT``.
* **Addresses** print as skalibs prints them: an IPv4 client of a dual-stack IPv6 socket (systemd's
  ``ListenStream=PORT``) is ``::ffff:7f00:1``, never CPython's ``::ffff:127.0.0.1``.

What this means for us: the peer is identified and its variables are written by the very identities
the daemons use (:class:`s6ipc.serve.peers.UnixPeers`, :class:`s6ipc.serve.tcppeer.TcpPeers`), so a
program sees under ``Accept=yes`` what it sees under s6ipc's ipcserverd or tcpserver6d, spelling and
order included; only the count is ours (below), and the TCP local address is added as tcpserver-access
writes it.
* **Counting connections.** Under Accept=yes every connection is its own service instance: no
  process sees them all. A directory of lock files (``UID.PID``, locked with ``flock`` by a
  descriptor the connection program inherits, so the lock lives exactly as long as it) lets each
  instance count the live ones from its peer (its uid, or its address: what the daemons count by):
  a file whose lock can be taken is stale and removed.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import os

from ..base.errors import BadInput, SystemFailure
from ..base.s6release import DEFAULT, S6Release
from ..sockets.inet import from_sockaddr, ip_fmt
from ..sockets.listenfds import take_systemd_fds
from .peers import PeerUnknown, UnixPeers
from .tcppeer import TcpPeers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple, Union

__all__ = ["connection_variables", "count_connection", "take_connection", "TCP_LOCAL_VARIABLES"]

#: The variables tcpserver-access adds after the server's (set here too for a TCP connection).
TCP_LOCAL_VARIABLES = ("TCPLOCALIP", "TCPLOCALPORT")


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
        sock = _socket.socket(fileno=os.dup(fd))
    except OSError as e:
        if e.errno == errno.EBADF:
            raise SystemFailure(f"use {where}", errno.EBADF) from None
        raise BadInput(f"{where} is not a socket") from None
    try:
        if sock.type != _socket.SOCK_STREAM:
            raise BadInput(f"{where} is not a stream socket")
        if sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN):
            raise BadInput(f"{where} is a listening socket, not a connection: the unit needs Accept=yes "
                           "(for Accept=no use systemd-socket or listen-fds)")
    finally:
        sock.close()
    return fd


def connection_variables(fd: int, countdir: Optional[str] = None,
                         release: S6Release = DEFAULT) -> Dict[str, Optional[str]]:
    """The UCSPI variables of connection *fd*, in the order to set them: a value, or None for a
    variable to remove from the environment.

    ``PROTO`` and the peer's variables are those of the daemon's identity for the socket's family
    (s6-ipcserverd's, s6-tcpserver6d's or 4d's), in its order; the connection count
    (``IPCCONNNUM``/``TCPCONNNUM``) only with *countdir* (see :func:`count_connection`, whose lock
    fd is left open for the connection program to inherit) and numbered as *release* numbers it
    (:meth:`~s6ipc.base.s6release.S6Release.connnum`), else None. A TCP connection also gets
    ``TCPLOCALIP``/``TCPLOCALPORT``. Raises :class:`SystemFailure`, :class:`BadInput`.
    """
    sock = _socket.socket(fileno=os.dup(fd))
    try:
        identity: Union[UnixPeers, TcpPeers]
        if sock.family == _socket.AF_UNIX:
            identity = UnixPeers()
        elif sock.family in (_socket.AF_INET, _socket.AF_INET6):
            identity = TcpPeers(sock.family)
        else:
            raise BadInput(f"fd {fd} is neither a Unix nor an IP socket (family {sock.family})")
        try:
            address = sock.getpeername()
            peer = identity.identify(sock, address)
        except PeerUnknown as e:
            raise SystemFailure("getpeereid", errno.EIO) from e
        except OSError as e:
            raise SystemFailure("getpeername", e.errno or errno.EIO) from None
        count = 0
        if countdir is not None:
            count = release.connnum(count_connection(countdir, str(peer.key))[1] - 1)
        filled: Dict[str, str] = {}
        peer.fill(filled, count, address)
        env: Dict[str, Optional[str]] = {name: filled.get(name) for name in identity.variables}
        if countdir is None:  # no count: the identity's count variable (IPCCONNNUM, TCPCONNNUM) goes
            env.update((name, None) for name in identity.variables if name.endswith("CONNNUM"))
        if isinstance(identity, TcpPeers):
            try:
                ip, port = from_sockaddr(sock.getsockname(), sock.family)
            except (OSError, ValueError) as e:
                raise SystemFailure("socket_local", getattr(e, "errno", None) or errno.EAFNOSUPPORT) from None
            env.update(zip(TCP_LOCAL_VARIABLES, (ip_fmt(ip), str(port))))
        return env
    finally:
        sock.close()


def count_connection(directory: str, key: str) -> Tuple[int, int]:
    """Register this connection from peer *key* (a uid, an address) in lock *directory* (created
    0700 if missing); return (inheritable lock fd, the connection count: this one and the live ones
    from *key*). Raises :class:`SystemFailure`.
    """
    mine = os.path.join(directory, f"{key}.{os.getpid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        lock = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = os.listdir(directory)
    except OSError as e:
        raise SystemFailure(f"count connections in {directory}", e.errno or errno.EIO) from None
    live: List[str] = []
    for entry in entries:
        if entry.rpartition(".")[0] != key or os.path.join(directory, entry) == mine:
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
