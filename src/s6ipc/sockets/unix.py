"""Unix domain sockets the way skalibs' ``ipc_*`` functions handle them.

Some facts about AF_UNIX sockets this module relies on (Linux):

* ``sun_path`` has 108 bytes; skalibs refuses paths longer than 107 with EPROTO ("Protocol
  error") and always passes the full ``sizeof(struct sockaddr_un)`` (110) as the address length.
  Python accepts 108-byte paths, so the length is checked here. An empty path therefore binds
  the *abstract* name made of 107 NUL bytes, as s6 does.
* A stream socket refuses connections (ECONNREFUSED) between ``bind`` and ``listen``, and the
  socket file takes its mode from the umask at ``bind`` time: setting the umask to ``~perms``
  around ``bind`` leaves no window in which the file has other permissions (no chmod needed).
* ``SO_REUSEADDR`` means nothing for AF_UNIX; "reuse" is ``unlink`` before ``bind``, guarded by
  an fcntl lock on ``PATH.lock`` so two binders never unlink each other's live socket.
* ``SO_PEERCRED`` returns the pid, euid and egid of the peer *at connect time*; accept(2) on
  Linux does not inherit O_NONBLOCK from the listening socket, so accepted sockets are blocking.
* Python creates every descriptor close-on-exec; the callers decide what becomes inheritable.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import os
import stat

from ..base.cstrings import peer_text
from ..base.errors import BadInput, SystemFailure, Unusable
from ..base.unixmessage import UCRED
from .inet import from_sockaddr, ip_fmt

__all__ = [
    "IPCPATH_MAX", "SOMAXCONN", "bind_unix_socket", "socket_kind", "is_socket", "check_socket",
    "UNIX_FAMILIES", "IP_FAMILIES", "ANY_FAMILIES", "listener_problem", "check_listening_stream",
    "peer_credentials", "address_text", "local_path", "connect_unix", "move_to_client_fds", "unix_address",
    "socket_address", "listening_abstract_names",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Dict, List, Optional, Tuple, Union

IPCPATH_MAX = 107
_INT_MAX = 0x7FFFFFFF
SOMAXCONN = _socket.SOMAXCONN

if TYPE_CHECKING:
    PathLike = Union[str, bytes]


def unix_address(path: PathLike) -> bytes:
    """*path* as skalibs binds and connects it: at most 107 bytes (EPROTO beyond), the empty path
    being the abstract name of 108 NUL bytes. Raises OSError."""
    raw = os.fsencode(path)
    if len(raw) > IPCPATH_MAX:
        raise OSError(errno.EPROTO, os.strerror(errno.EPROTO))
    if not raw:
        return b"\0" * (IPCPATH_MAX + 1)
    return raw


def _display(path: PathLike) -> str:
    return os.fsdecode(path)


def _lock(lockpath: bytes) -> int:
    """Open and write-lock ``PATH.lock`` without blocking; EBUSY when someone else holds it."""
    fd = os.open(lockpath, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY)) from None
        raise
    return fd


def bind_unix_socket(
    path: PathLike,
    *,
    perms: int = 0o777,
    reuse: bool = True,
    backlog: int = SOMAXCONN,
    datagram: bool = False,
    blocking: bool = False,
) -> int:
    """Create, bind and (if *backlog* is not 0) listen on a Unix socket; return its fd.

    Exactly s6-ipcserver-socketbinder's sequence: the umask is set to ``~perms & 0777`` for the
    lock file and the ``bind`` (so the socket's mode is *perms* whatever the caller's umask), and
    restored after a successful bind. With *reuse*, ``PATH.lock`` is created and write-locked,
    and whatever is at *path* is unlinked before binding; the lock file stays on disk.
    The returned fd is close-on-exec; it is non-blocking unless *blocking*.

    Raises :class:`SystemFailure` ("create socket", "bind to PATH", "listen to PATH").
    """
    kind = int(_socket.SOCK_DGRAM if datagram else _socket.SOCK_STREAM)
    if not blocking:
        kind |= _socket.SOCK_NONBLOCK
    try:
        sock = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC)
    except OSError as e:
        raise SystemFailure("create socket", e.errno or errno.EINVAL) from None
    name = _display(path)
    old_umask = os.umask(~perms & 0o777)
    lock_fd = -1
    try:
        raw = os.fsencode(path)
        if reuse:
            lock_fd = _lock(raw + b".lock")
            try:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            except OSError:
                pass
            if raw:
                try:
                    os.unlink(raw)
                except OSError:
                    pass
        sock.bind(unix_address(path))
    except OSError as e:
        if lock_fd >= 0:
            os.close(lock_fd)
        sock.close()
        raise SystemFailure(f"bind to {name}", e.errno or errno.EINVAL) from None
    os.umask(old_umask)
    try:
        if backlog:
            # listen(2) takes a C int and the kernel caps it (as unsigned) at somaxconn: any value
            # above INT_MAX ends up as somaxconn, which INT_MAX gives too (CPython refuses bigger ints)
            sock.listen(min(backlog, _INT_MAX))
    except OSError as e:
        sock.close()
        raise SystemFailure(f"listen to {name}", e.errno or errno.EINVAL) from None
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
    return sock.detach()


def socket_kind(fd: int) -> Tuple[int, int, bool]:
    """``(family, type, listening)`` of the socket on *fd* (SO_DOMAIN, SO_TYPE, SO_ACCEPTCONN).

    Raises OSError when *fd* is not an open socket.
    """
    sock = _socket.socket(fileno=os.dup(fd))
    try:
        return (sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_DOMAIN),
                sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_TYPE),
                bool(sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN)))
    finally:
        sock.close()


def is_socket(fd: int) -> bool:
    """True when *fd* is open and a socket of any kind."""
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def check_socket(fd: int) -> None:
    """s6's start-up check of a server's stdin: open (else SystemFailure "fstat stdin", exit 111)
    and a socket (else BadInput "stdin is not a socket", exit 100)."""
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise SystemFailure("fstat stdin", e.errno or errno.EBADF) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise BadInput("stdin is not a socket")


#: How a listener of the wrong family is described, by the families that were wanted.
_FAMILY_PHRASES: Dict[Tuple[int, ...], str] = {
    (_socket.AF_UNIX,): "is not a Unix domain socket",
    (_socket.AF_INET, _socket.AF_INET6): "is not an Internet domain socket",
    (_socket.AF_INET,): "is not an IPv4 socket",
    (_socket.AF_INET6,): "is not an IPv6 socket",
    (_socket.AF_UNIX, _socket.AF_INET, _socket.AF_INET6): "is not a Unix or Internet domain socket",
}
UNIX_FAMILIES: Tuple[int, ...] = (_socket.AF_UNIX,)
#: The listeners a TCP daemon takes, and those ``systemd-socket`` takes.
IP_FAMILIES: Tuple[int, ...] = (_socket.AF_INET, _socket.AF_INET6)
ANY_FAMILIES: Tuple[int, ...] = UNIX_FAMILIES + IP_FAMILIES


def listener_problem(fd: int, families: Tuple[int, ...] = UNIX_FAMILIES) -> Optional[str]:
    """Why *fd* is not a listening stream socket of one of *families*, or None when it is one.

    The one "is it a listener" predicate of s6ipc: every source of a listening socket (fd 0,
    systemd, an fd holder) and every daemon's start-up check use it. The phrase follows "fd N"
    or "stdin": ``is not open (Bad file descriptor)``, ``is not a socket``, ``is not a Unix domain
    socket``, ``is not a stream socket``, ``is not listening``.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        return f"is not open ({os.strerror(e.errno or errno.EBADF)})"
    if not stat.S_ISSOCK(mode):
        return "is not a socket"
    family, kind, listening = socket_kind(fd)
    if family not in families:
        return _FAMILY_PHRASES.get(families, "is not of the expected socket family")
    if kind != _socket.SOCK_STREAM:
        return "is not a stream socket"
    if not listening:
        return "is not listening"
    return None


def check_listening_stream(fd: int, families: Tuple[int, ...] = UNIX_FAMILIES) -> None:
    """A daemon's start-up check of its listening socket, with s6's messages and exit codes.

    Raises :class:`SystemFailure` ("fstat stdin") if fd is not open, :class:`BadInput` (exit 100,
    s6's "stdin is not a socket") if it is not a socket, and :class:`BadInput` with exit 111 for a
    socket of the wrong family or type, or one that is not listening (:func:`listener_problem`).
    """
    check_socket(fd)
    problem = listener_problem(fd, families)
    if problem is not None:
        if problem == "is not listening":
            problem = "is not a listening socket"
        raise Unusable("stdin " + problem)


def peer_credentials(sock: _socket.socket) -> Tuple[int, int, int]:
    """Return ``(pid, euid, egid)`` of the peer of a connected Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, UCRED.size)
    pid, uid, gid = UCRED.unpack(raw)
    return pid, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF


def address_text(address: object) -> str:
    """The path of a Unix socket address as s6 reports it: truncated at the first NUL."""
    if isinstance(address, bytes):
        raw = address
    elif isinstance(address, str):
        raw = os.fsencode(address)
    else:
        return ""
    return peer_text(raw, IPCPATH_MAX)


def local_path(fd: int) -> str:
    """``getsockname`` of *fd* as s6's ``ipc_local``. Raises :class:`SystemFailure`."""
    try:
        sock = _socket.socket(fileno=os.dup(fd))
    except OSError as e:
        raise SystemFailure("ipc_local", e.errno or errno.ENOTSOCK) from None
    try:
        return address_text(sock.getsockname())
    except OSError as e:
        raise SystemFailure("ipc_local", e.errno or errno.ENOTSOCK) from None
    finally:
        sock.close()


def socket_address(fd: int) -> Optional[str]:
    """The local address of socket *fd*: a Unix socket's path (``@name`` when abstract), an IP
    socket's ``IP:PORT`` or ``[IP6]:PORT`` (systemd's ``ListenStream=`` spelling), None otherwise."""
    try:
        sock = _socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        family = sock.family
        address = sock.getsockname()
    except OSError:
        return None
    finally:
        sock.close()
    if family in IP_FAMILIES:
        host = ip_fmt(from_sockaddr(address, family)[0])
        return f"[{host}]:{address[1]}" if family == _socket.AF_INET6 else f"{host}:{address[1]}"
    if family != _socket.AF_UNIX:
        return None
    if isinstance(address, bytes):
        return "@" + os.fsdecode(address[1:]) if address[:1] == b"\0" else os.fsdecode(address)
    return str(address)


def connect_unix(path: PathLike, bind_path: Optional[PathLike] = None) -> socket.socket:
    """A blocking stream socket connected to *path*, optionally bound to *bind_path* first.

    Raises :class:`SystemFailure` ("create socket", "bind socket to P", "connect to P").
    """
    import socket  # a client's: the daemons' start path has only _socket (socket imports enum)

    try:
        sock = socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError as e:
        raise SystemFailure("create socket", e.errno or errno.EINVAL) from None
    if bind_path is not None:
        try:
            sock.bind(unix_address(bind_path))
        except OSError as e:
            sock.close()
            raise SystemFailure(f"bind socket to {_display(bind_path)}", e.errno or errno.EINVAL) from None
    try:
        sock.connect(unix_address(path))
    except OSError as e:
        sock.close()
        raise SystemFailure(f"connect to {_display(path)}", e.errno or errno.EINVAL) from None
    return sock


def move_to_client_fds(sock: _socket.socket) -> None:
    """Put a connected socket on fds 6 (read) and 7 (write), inheritable, as UCSPI clients do
    (s6-ipcclient, s6-tcpclient); the socket object is detached and its own fd closed.

    Raises :class:`SystemFailure` ``set up fd 6`` / ``set up fd 7``.
    """
    fd = sock.detach()
    for target in (6, 7):
        try:
            os.dup2(fd, target, inheritable=True)
            os.set_inheritable(target, True)  # dup2 onto itself (the socket was fd 6) keeps CLOEXEC
        except OSError as e:
            raise SystemFailure(f"set up fd {target}", e.errno or errno.EBADF) from None
    if fd not in (6, 7):
        os.close(fd)


_ACCEPTCON = 0x10000  # /proc/net/unix's flags: a listening socket


def listening_abstract_names(prefix: str) -> List[str]:
    """The abstract names (without the leading NUL) of the listening Unix sockets of this network
    namespace that start with *prefix*, sorted, from ``/proc/net/unix`` (which shows them with a
    leading ``@``; a listening socket has ``__SO_ACCEPTCON``, 0x10000, in its flags field — its
    state, ``01``, is also a socket merely bound). Unverified: anyone may bind any abstract name.
    Empty when /proc cannot be read."""
    try:
        with open("/proc/net/unix", "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").splitlines()[1:]
    except OSError:
        return []
    marker = "@" + prefix
    return sorted({fields[7][1:] for fields in (line.split() for line in lines)
                   if len(fields) >= 8 and fields[7].startswith(marker) and int(fields[3], 16) & _ACCEPTCON})
