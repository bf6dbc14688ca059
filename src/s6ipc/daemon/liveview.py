"""The live view: look inside a running daemon without reading its logs.

Each daemon that offers it (``ipcserverd``, ``tcpserver4d``/``6d``/``tcpserverd``, ``fdholderd``: every
daemon on :mod:`s6ipc.daemon.lifecycle`) listens on a *status socket* of its own,
polled by its loop beside the listening socket. A client connects, the daemon checks who it is,
writes one JSON document (what :class:`StatusSocket`'s *describe* returns, plus a newline) and
closes. ``s6ipc status PID|NAME [-j]`` is the client (:func:`query`, :func:`render`). Under
systemd, :class:`StatusLine` also keeps the unit's ``STATUS=`` text current.

Some facts about the kernel that the live view relies on:

* **Abstract AF_UNIX names** (unix(7)): a name starting with a NUL byte lives in the network
  namespace, not in the file system. It needs no directory, no permission, no clean-up (it vanishes
  with the last descriptor of the socket, even on SIGKILL), so it works the same under s6, systemd
  or a shell, whatever the daemon's uid or its root directory. The name is
  ``@s6ipc/status/PROGRAM/PID``: one per live process, found by program or pid in
  ``/proc/net/unix`` (which lists abstract names with a leading ``@``). A daemon in another network
  namespace (``PrivateNetwork=yes``) is only visible from inside that namespace.
* **Anyone may connect** to an abstract socket (no file mode applies), so the daemon decides:
  ``SO_PEERCRED`` gives the client's euid at ``connect`` time; only **root and the daemon's own
  euid** get the document (:func:`may_read`), anyone else gets ``{"error": …}`` and the close.
* **Never blocking the loop**: the status socket and each client are non-blocking; the answer is
  one ``send`` on a socket whose send buffer is first grown to hold it (an AF_UNIX stream ``send``
  succeeds whole when the buffer has room, whatever the reader does); the growth is capped by
  ``net.core.wmem_max`` (208 KiB by default: an ``ipcserverd`` document at 1000 connections is
  about 70 KiB), and a document that still does not fit is cut short, which the client reports
  as not JSON. At most :data:`_BURST` clients are answered per loop turn.
* **Nothing on the hot path**: the document is built when asked for, from what the daemon keeps
  anyway; ``STATUS=`` is sent from the loop's timer, at most once per interval, only when it changed.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from ..base.errors import Refused, SystemFailure
from ..sockets.unix import peer_credentials

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "NAME_PREFIX", "status_name", "may_read", "StatusSocket", "find_daemons", "query", "duration",
    "render", "StatusLine", "every",
]

#: The abstract name's prefix (``@`` stands for the leading NUL).
NAME_PREFIX = "s6ipc/status/"
_BURST = 16
_PROC_NET_UNIX = "/proc/net/unix"

if TYPE_CHECKING:
    Document = Dict[str, Any]


def status_name(program: str, pid: int) -> str:
    """The abstract name (without the leading ``@``) of *program*'s status socket in process *pid*."""
    return f"{NAME_PREFIX}{program}/{pid}"


def may_read(uid: int) -> bool:
    """Whether a client of euid *uid* may read this daemon's live view: root or the daemon's euid."""
    return uid == 0 or uid == os.geteuid()


class StatusSocket:
    """The daemon's end: a listening abstract socket answering each client with ``describe()``.

    *program* is the daemon's name as clients look it up (``ipcserverd``). *fd* adopts a status
    socket inherited from the previous image (an in-place upgrade), else a new one is bound.
    Raises :class:`SystemFailure` (``bind to @s6ipc/status/…``) when it cannot be made.
    """

    def __init__(self, program: str, describe: Callable[[], Document], fd: Optional[int] = None) -> None:
        self.program = program
        self.describe = describe
        self.name = status_name(program, os.getpid())
        if fd is not None:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fd)
                self.sock.set_inheritable(False)
                self.sock.setblocking(False)
            except OSError as e:
                raise SystemFailure(f"adopt the status socket on fd {fd}", e.errno or errno.EBADF) from None
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.bind("\0" + self.name)
            sock.listen(16)
        except OSError as e:
            sock.close()
            raise SystemFailure(f"bind to @{self.name}", e.errno or errno.EIO) from None
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_event(self, mask: int) -> None:
        """Answer the clients waiting (for :meth:`s6ipc.serve.loop.Server.watch`); never raises OSError."""
        for _ in range(_BURST):
            try:
                conn, _ = self.sock.accept()
            except OSError:  # EAGAIN: nobody left; EMFILE…: they wait, the daemon goes on
                return
            try:
                self._answer(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def _answer(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        _, uid, _ = peer_credentials(conn)
        if may_read(uid):
            document = self.describe()
        else:
            document = {"error": f"uid {uid} may not read the live view of {self.program} "
                                 f"(only root and uid {os.geteuid()})"}
        import json

        data = (json.dumps(document, separators=(",", ":")) + "\n").encode()
        if len(data) > 65536:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * len(data))
        conn.send(data)  # whole, or cut short (see the module docstring): never waited for

    def close(self) -> None:
        self.sock.close()


# -- the client's end --------------------------------------------------------------------------
def find_daemons(program: Optional[str] = None, pid: Optional[int] = None) -> List[Tuple[str, int]]:
    """``(program, pid)`` of every status socket listening in this network namespace, sorted;
    only those of *program* and/or *pid* when given. Raises :class:`SystemFailure` without /proc."""
    try:
        with open(_PROC_NET_UNIX, "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").splitlines()[1:]
    except OSError as e:
        raise SystemFailure(f"read {_PROC_NET_UNIX}", e.errno or errno.EIO) from None
    found = set()
    marker = "@" + NAME_PREFIX
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or not fields[7].startswith(marker) or fields[5] != "01":
            continue
        name, _, number = fields[7][len(marker):].rpartition("/")
        if not name or not number.isdigit():
            continue
        if (program is None or name == program) and (pid is None or int(number) == pid):
            found.add((name, int(number)))
    return sorted(found)


def query(pid: int, program: Optional[str] = None, *, timeout: float = 5.0) -> Document:
    """The live view of the daemon running as *pid* (of *program*, when several could match).

    Raises :class:`Refused` (exit 1): no status socket for that pid (ESRCH), the daemon refused
    (EACCES); :class:`SystemFailure` (111) when the exchange fails or the answer is not JSON.
    """
    daemons = find_daemons(program, pid)
    if not daemons:
        raise Refused(f"find a live view for pid {pid}", errno.ESRCH)
    name = status_name(*daemons[0])
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = _exchange(name, max(0.01, deadline - time.monotonic()))
            break
        except ConnectionRefusedError:  # the backlog is full, or the daemon is between two images
            if time.monotonic() >= deadline:
                raise SystemFailure(f"connect to @{name}", errno.ECONNREFUSED) from None
            time.sleep(0.02)
    import json

    try:
        document = json.loads(data)
    except ValueError:
        raise SystemFailure(f"read a JSON document from @{name}", errno.EPROTO) from None
    if not isinstance(document, dict):
        raise SystemFailure(f"read a JSON document from @{name}", errno.EPROTO)
    if "error" in document:
        raise Refused(f"read the live view of pid {pid} ({document['error']})", errno.EACCES)
    return document


def _exchange(name: str, timeout: float) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect("\0" + name)
            chunks: List[bytes] = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        except ConnectionRefusedError:
            raise
        except socket.timeout:
            raise SystemFailure(f"read from @{name}", errno.ETIMEDOUT) from None
        except OSError as e:
            raise SystemFailure(f"talk to @{name}", e.errno or errno.EIO) from None


def duration(seconds: float) -> str:
    """``1d02h03m04s``, ``2h03m04s``, ``3m04s``; tenths of a second below a minute (``12.3s``)."""
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m{secs:02d}s"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"


def _value(key: str, value: Any) -> str:
    if isinstance(value, float) and (key == "age" or key == "uptime" or key.endswith("_in")):
        return duration(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(k, v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_value(key, v) for v in value) or "none"
    return str(value)


_HEADLINE = ("program", "pid", "version", "generation", "uptime")


def render(document: Document) -> str:
    """The document for humans: a headline (program, pid, version, generation, uptime), then one
    line per other key, and one indented line per item of a list of objects."""
    head = f"{document.get('program', '?')} pid {document.get('pid', '?')}"
    extras = [f"{k} {_value(k, document[k])}" for k in _HEADLINE[2:] if k in document]
    lines = [", ".join([head] + extras)]
    for key, value in document.items():
        if key in _HEADLINE:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{key}: {len(value)}")
            lines.extend("  " + " ".join(f"{k} {_value(k, v)}" for k, v in item.items()) for item in value)
        else:
            lines.append(f"{key}: {_value(key, value)}")
    return "\n".join(lines) + "\n"


# -- systemd's STATUS= -------------------------------------------------------------------------
class StatusLine:
    """Keeps ``STATUS=`` current: :meth:`tick` (from the loop's timer) sends ``text()`` through
    *send* when it changed, at most once per *interval* seconds. With *quiet_first*, the text as
    it is now counts as sent (the ``READY=1`` status stays until something changes). *send*
    errors are the caller's."""

    def __init__(self, send: Callable[[str], object], text: Callable[[], str], interval: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic, *, quiet_first: bool = False) -> None:
        self.send, self.text, self.interval, self.monotonic = send, text, interval, monotonic
        self._last: Optional[str] = text() if quiet_first else None
        self._next = 0.0

    def tick(self) -> None:
        now = self.monotonic()
        if now < self._next:
            return
        text = self.text()
        if text != self._last:
            self._last = text
            self._next = now + self.interval
            self.send(text)


def every(beats: Sequence[Tuple[float, Callable[[], None]]],
          monotonic: Callable[[], float] = time.monotonic) -> Tuple[float, Callable[[], None]]:
    """One loop timer (the loop's ``Heartbeat``) calling each ``(interval, function)`` at least
    every interval: the shortest interval, each function run when its own is due (read on
    *monotonic*: the daemon's clock)."""
    interval = min(i for i, _ in beats)
    due = [0.0] * len(beats)

    def beat() -> None:
        now = monotonic()
        for n, (each, function) in enumerate(beats):
            if now >= due[n] - interval / 2:
                due[n] = now + each
                function()

    return interval, beat
