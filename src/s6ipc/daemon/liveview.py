"""The live view: look inside a running daemon without reading its logs.

Each daemon that offers it (``ipcserverd``, ``tcpserver4d``/``6d``/``tcpserverd``, ``fdholderd``: every
daemon on :mod:`s6ipc.daemon.lifecycle`) listens on a *status socket* of its own,
polled by its loop beside the listening socket. A client connects, the daemon checks who it is,
writes one JSON document (what :class:`StatusSocket`'s *describe* returns) and closes.
``s6ipc status PID|NAME [-j]`` and ``s6ipc metrics`` are the clients (:func:`query`,
:func:`documents`, :func:`render`). Under systemd, :class:`StatusLine` also keeps the unit's
``STATUS=`` text current.

Some facts about the kernel that the live view relies on:

* **Abstract AF_UNIX names** (unix(7)): a name starting with a NUL byte lives in the network
  namespace, not in the file system. It needs no directory, no permission, no clean-up (it vanishes
  with the last descriptor of the socket, even on SIGKILL), so it works the same under s6, systemd
  or a shell, whatever the daemon's uid or its root directory. The name is
  ``@s6ipc/status/PROGRAM/PID``: one per live process, found by program or pid in
  ``/proc/net/unix`` (which lists abstract names with a leading ``@``). A daemon in another network
  namespace (``PrivateNetwork=yes``) is only visible from inside that namespace.
* **Abstract names are first come, first served**, and PIDs are predictable: any local user can
  bind ``@s6ipc/status/ipcserverd/4242`` before the daemon that will get PID 4242. So the name
  proves nothing, and a daemon whose name is taken binds ``@s6ipc/status/PROGRAM/PID.XXXXXXXX``
  (eight random hex digits) instead, with one warning: it can still be found.
* **``SO_PEERCRED``** on a connected AF_UNIX stream gives the pid, euid and egid the *other end*
  had when it called ``connect`` (the client) or ``listen`` (the daemon), from the kernel, not
  from the peer. Both ends use it:

  - the daemon answers only **root and its own euid** (:func:`may_read`); anyone else gets
    ``{"error": …}`` and the close;
  - the client (:func:`query`) accepts an answer only from a socket whose listener **is the PID
    it asked for and runs as that process's euid** (``/proc/PID/status``): a name bound by anyone
    else is refused with one line before a byte is read, and a listing (:func:`documents`) tries
    every candidate name of a PID and shows only the verified ones. The uid check matters when a
    PID is reused: a socket bound by a process that had the PID before, kept open by its child,
    still says that PID, but not the new owner's uid.
* **Never blocking the loop**, whatever the size: the status socket and each client are
  non-blocking; a document up to :data:`INLINE_MAX` bytes is one ``send`` into the empty send
  buffer of a new connection (which takes it whole); a larger one is written to a **sealed
  memfd** (writing to memory never blocks) passed with ``SCM_RIGHTS`` after one line
  ``memfd SIZE``: an AF_UNIX send buffer (``net.core.wmem_max``, 208 KiB by default) no longer
  bounds the document. The client checks the descriptor is a sealed regular file of that size
  before reading it. At most :data:`_BURST` clients are answered per loop turn.
* **Nothing on the hot path**: the document is built when asked for, from what the daemon keeps
  anyway; ``STATUS=`` is sent from the loop's timer, at most once per interval, only when it changed.
"""

from __future__ import annotations

import _socket
import errno
import os
import sys
import time

from ..base.errors import Refused, SystemFailure
from ..base.options import scan_magnitude
from ..sockets.unix import listening_abstract_names, peer_credentials

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "NAME_PREFIX", "NAME_VARIABLE", "INLINE_MAX", "DOCUMENT_MAX", "status_name", "may_read", "StatusSocket",
    "find_daemons",
    "candidates", "process_euid", "query", "documents", "lookup", "PID_MAX", "duration", "render",
    "StatusLine", "every",
]

#: The variable that names a daemon for its operator (the ``name`` of its live view and its metrics'
#: ``name`` label); kept in the daemon's environment (so across in-place upgrades), never passed
#: to the handlers it spawns.
NAME_VARIABLE = "S6IPC_NAME"
#: The abstract name's prefix (``@`` stands for the leading NUL).
NAME_PREFIX = "s6ipc/status/"
#: The largest document sent in the stream itself; a larger one goes in a memfd.
INLINE_MAX = 32768
#: The largest document a client reads (a peer that verified may still be a buggy one).
DOCUMENT_MAX = 256 << 20
#: The largest pid Linux hands out (``/proc/sys/kernel/pid_max`` is at most 2**22).
PID_MAX = 2**22
_BURST = 16
#: Daemons a listing asks at the same time.
_AT_ONCE = 32
_PROC_NET_UNIX = "/proc/net/unix"
_MEMFD_LINE = b"memfd "
_SEALS_NEEDED = 0x0002 | 0x0004 | 0x0008  # F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE

if TYPE_CHECKING:
    Document = Dict[str, Any]


def status_name(program: str, pid: int, suffix: str = "") -> str:
    """The abstract name (without the leading ``@``) of *program*'s status socket in process *pid*
    (``.SUFFIX`` appended: the name a daemon takes when the plain one is squatted)."""
    return f"{NAME_PREFIX}{program}/{pid}{'.' + suffix if suffix else ''}"


def may_read(uid: int) -> bool:
    """Whether a client of euid *uid* may read this daemon's live view: root or the daemon's euid."""
    return uid == 0 or uid == os.geteuid()


class StatusSocket:
    """The daemon's end: a listening abstract socket answering each client with ``describe()``.

    *program* is the daemon's name as clients look it up (``ipcserverd``). *fd* adopts a status
    socket inherited from the previous image (an in-place upgrade; its name is read back), else
    a new one is bound: at ``@s6ipc/status/PROGRAM/PID``, or, when someone holds that name, at a
    random ``…/PID.XXXXXXXX`` (then :attr:`squatted` is True: the caller says so). Raises
    :class:`SystemFailure` (``bind to @s6ipc/status/…``) when it cannot be made.
    """

    def __init__(self, program: str, describe: Callable[[], Document], fd: Optional[int] = None) -> None:
        self.program = program
        self.describe = describe
        self.squatted = False
        if fd is not None:
            try:
                self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
                os.set_inheritable(fd, False)
                self.sock.setblocking(False)
                bound = self.sock.getsockname()
            except OSError as e:
                raise SystemFailure(f"adopt the status socket on fd {fd}", e.errno or errno.EBADF) from None
            raw = bound if isinstance(bound, bytes) else str(bound).encode("utf-8", "surrogateescape")
            self.name = raw.lstrip(b"\0").decode("utf-8", "surrogateescape")
            return
        kind = _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC
        sock = _socket.socket(_socket.AF_UNIX, kind)
        self.name = status_name(program, os.getpid())
        try:
            for attempt in range(8):
                try:
                    sock.bind("\0" + self.name)
                    break
                except OSError as e:
                    if e.errno != errno.EADDRINUSE or attempt == 7:
                        raise
                    self.squatted = True
                    self.name = status_name(program, os.getpid(), os.urandom(4).hex())
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
                fd, _ = self.sock._accept()  # type: ignore[attr-defined]
            except OSError:  # EAGAIN: nobody left; EMFILE…: they wait, the daemon goes on
                return
            # what socket.accept does (accept4 with SOCK_CLOEXEC) without socket.py, whose import
            # builds enums: this module is on the daemons' start path (tests/programs/test_startup_imports.py)
            conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
            try:
                self._answer(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def _answer(self, conn: _socket.socket) -> None:
        conn.setblocking(False)
        _, uid, _ = peer_credentials(conn)
        if may_read(uid):
            document = self.describe()
        else:
            document = {"error": f"uid {uid} may not read the live view of {self.program} "
                                 f"(only root and uid {os.geteuid()})"}
        import json

        data = (json.dumps(document, separators=(",", ":")) + "\n").encode()
        if len(data) <= INLINE_MAX:
            conn.send(data)  # an empty send buffer takes it whole
            return
        memfd = _sealed_memfd(data)
        try:
            conn.sendmsg([_MEMFD_LINE + b"%d\n" % len(data)],
                         [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, memfd.to_bytes(4, sys.byteorder))])
        finally:
            os.close(memfd)

    def close(self) -> None:
        self.sock.close()


def _sealed_memfd(data: bytes) -> int:
    """A close-on-exec memfd holding *data*, sealed against any change (the reader trusts its size)."""
    import fcntl

    fd = os.memfd_create("s6ipc-status", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS_NEEDED | 0x0001)  # … | F_SEAL_SEAL
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- the client's end --------------------------------------------------------------------------
def candidates(program: Optional[str] = None, pid: Optional[int] = None) -> Dict[Tuple[str, int], List[str]]:
    """Every status socket listening in this network namespace, unverified: ``(program, pid)`` →
    the names claiming it (the plain name first); only those of *program* and/or *pid* when
    given. Raises :class:`SystemFailure` without /proc."""
    if not os.path.exists(_PROC_NET_UNIX):
        raise SystemFailure(f"read {_PROC_NET_UNIX}", errno.ENOENT)
    found: Dict[Tuple[str, int], List[str]] = {}
    for listening in listening_abstract_names(NAME_PREFIX):
        name, _, last = listening[len(NAME_PREFIX):].rpartition("/")
        number, dot, suffix = last.partition(".")
        claimed = scan_magnitude(number, 10, PID_MAX) if number.isascii() and number.isdigit() else None
        if not name or claimed is None or (dot and not suffix):  # anyone may bind any name
            continue
        key = (name, claimed)
        if (program is None or name == program) and (pid is None or key[1] == pid):
            found.setdefault(key, []).append(listening)
    for names in found.values():
        names.sort(key=lambda n: ("." in n.rpartition("/")[2], n))
    return dict(sorted(found.items()))


def find_daemons(program: Optional[str] = None, pid: Optional[int] = None) -> List[Tuple[str, int]]:
    """``(program, pid)`` of every status socket listening in this network namespace, sorted and
    unverified (:func:`query` verifies); only those of *program* and/or *pid* when given."""
    return list(candidates(program, pid))


def process_euid(pid: int) -> Optional[int]:
    """The effective uid of process *pid* (``/proc/PID/status``), None when there is no such
    process. Raises :class:`SystemFailure` when this process cannot look (out of descriptors,
    of memory): that says nothing about the peer, and must not read as a forgery."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[2])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None
    except OSError as e:
        raise SystemFailure(f"read /proc/{pid}/status", e.errno or errno.EIO) from None
    return None


def query(pid: int, program: Optional[str] = None, *, timeout: float = 5.0) -> Document:
    """The live view of the daemon running as *pid* (of *program*, when several could match),
    from a status socket whose listener is verified to be that process (the module docstring).

    Raises :class:`Refused` (exit 1): no status socket for that pid (ESRCH), none held by that
    process (EPERM: the one line names who holds it), the daemon refused (EACCES);
    :class:`SystemFailure` (111) when the exchange fails, times out or the answer is not JSON.
    """
    claims = candidates(program, pid)
    if not claims:
        raise Refused(f"find a live view for pid {pid}", errno.ESRCH)
    deadline = time.monotonic() + timeout
    forged: Optional[Refused] = None
    for (kind, _), names in claims.items():
        for name in names:
            try:
                document = _read(name, pid, deadline)
            except Refused as e:
                if e.errno != errno.EPERM:
                    raise
                forged = forged or e
                continue
            if document.get("pid") != pid or (document.get("program", kind) != kind):
                raise SystemFailure(f"read the live view of pid {pid} at @{name} (it says it is "
                                    f"{document.get('program')!r} pid {document.get('pid')!r})", errno.EPROTO)
            return document
    assert forged is not None
    raise forged


def documents(program: Optional[str] = None, *, timeout: float = 5.0,
              failures: Optional[List[SystemFailure]] = None) -> List[Document]:
    """The live view of every verified daemon (of *program*) this caller may read, in pid order,
    asked all at once (one thread each, at most :data:`_AT_ONCE` at a time), so that one hung
    daemon costs *timeout*, not one timeout per daemon. Names held by another process, daemons
    that refuse this caller, and daemons gone meanwhile are left out; so is a verified daemon
    whose answer cannot be read (its :class:`SystemFailure` is appended to *failures*). Raises
    what :func:`candidates` raises."""
    import threading

    wanted = sorted(candidates(program), key=lambda k: (k[1], k[0]))
    answers: List[Any] = [None] * len(wanted)
    slots = threading.BoundedSemaphore(_AT_ONCE)

    def ask(n: int, kind: str, pid: int) -> None:
        with slots:
            try:
                answers[n] = query(pid, kind, timeout=timeout)
            except Refused:
                pass
            except SystemFailure as e:
                answers[n] = e

    threads = [threading.Thread(target=ask, args=(n, kind, pid), daemon=True)
               for n, (kind, pid) in enumerate(wanted)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = []
    for answer in answers:
        if isinstance(answer, SystemFailure):
            if failures is not None:
                failures.append(answer)
        elif answer is not None:
            found.append(answer)
    return found


def lookup(target: str, *, timeout: float = 5.0,
           failures: Optional[List[SystemFailure]] = None) -> List[Document]:
    """The live views *target* names: a pid (:func:`query`) or a program (:func:`documents`, whose
    unreadable daemons go to *failures*). Raises :class:`Refused` (ESRCH) when there is none, and
    what :func:`query` raises for a pid."""
    if target.isascii() and target.isdigit():
        pid = scan_magnitude(target, 10, PID_MAX)
        if pid is None:  # no process can have it
            raise Refused(f"find a live view of pid {target}", errno.ESRCH)
        return [query(pid, timeout=timeout)]
    found = documents(target, timeout=timeout, failures=failures)
    if not found:
        raise Refused(f"find a running {target} with a live view", errno.ESRCH)
    return found


def _read(name: str, pid: int, deadline: float) -> Document:
    """Connect to *name*, verify the listener is process *pid* under its own euid, read the document."""
    import socket  # the client's (s6ipc status), not the daemon's start path

    while True:
        sock = socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                sock.connect("\0" + name)
            except (ConnectionRefusedError, BlockingIOError):  # backlog full, or between two images
                if time.monotonic() >= deadline:
                    raise SystemFailure(f"connect to @{name}", errno.ECONNREFUSED) from None
                time.sleep(0.02)
                continue
            except socket.timeout:
                raise SystemFailure(f"connect to @{name}", errno.ETIMEDOUT) from None
            except FileNotFoundError:  # gone since /proc/net/unix was read
                raise Refused(f"find a live view for pid {pid}", errno.ESRCH) from None
            except OSError as e:
                raise SystemFailure(f"connect to @{name}", e.errno or errno.EIO) from None
            _verify(sock, name, pid)
            data = _receive(sock, name, deadline)
        finally:
            sock.close()
        break
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


def _verify(sock: Any, name: str, pid: int) -> None:
    peer_pid, peer_uid, _ = peer_credentials(sock)
    owner = process_euid(pid)
    if peer_pid != pid or owner is None or peer_uid != owner:
        expected = f"pid {pid} uid {owner}" if owner is not None else f"pid {pid}"
        raise Refused(f"verify the live view of pid {pid}: @{name} is held by pid {peer_pid} uid {peer_uid}, "
                      f"not {expected}", errno.EPERM)


def _receive(sock: Any, name: str, deadline: float) -> bytes:
    """Everything the daemon writes until it closes: the document, or the memfd that holds it."""
    import socket

    chunks: List[bytes] = []
    size = 0
    memfd: Optional[int] = None
    try:
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(4 * 4))
            except socket.timeout:
                raise SystemFailure(f"read from @{name}", errno.ETIMEDOUT) from None
            except OSError as e:
                raise SystemFailure(f"read from @{name}", e.errno or errno.EIO) from None
            for level, kind, raw in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    for n in range(len(raw) // 4):
                        fd = int.from_bytes(raw[4 * n:4 * n + 4], sys.byteorder, signed=True)
                        if memfd is None:
                            memfd = fd
                        else:
                            os.close(fd)
            if not chunk:
                break
            size += len(chunk)
            if size > INLINE_MAX + len(_MEMFD_LINE) + 32:
                raise SystemFailure(f"read a document of at most {INLINE_MAX} bytes from @{name}",
                                    errno.EMSGSIZE)
            chunks.append(chunk)
        data = b"".join(chunks)
        if memfd is None:
            return data
        return _read_memfd(memfd, data, name)
    finally:
        if memfd is not None:
            os.close(memfd)


def _read_memfd(fd: int, line: bytes, name: str) -> bytes:
    import fcntl
    import stat

    what = f"read the document's memfd from @{name}"
    head, _, count = line.rstrip(b"\n").partition(b" ")
    size = scan_magnitude(count.decode("ascii", "replace"), 10, DOCUMENT_MAX) if count.isdigit() else None
    if head + b" " != _MEMFD_LINE or size is None:
        raise SystemFailure(what, errno.EPROTO)
    try:
        st = os.fstat(fd)
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        raise SystemFailure(what, errno.EPROTO) from None
    if not stat.S_ISREG(st.st_mode) or st.st_size != size or seals & _SEALS_NEEDED != _SEALS_NEEDED:
        raise SystemFailure(what, errno.EPROTO)
    data = os.pread(fd, size, 0) if size else b""
    if len(data) != size:
        raise SystemFailure(what, errno.EPROTO)
    return data


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
    if value is None or value == "":
        return "-"  # not Python's "None", nor a line ending in a blank
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
