"""Readiness: one event, every sink — s6's notification fd, systemd's ``$NOTIFY_SOCKET``, the watchdog.

Some facts about the two readiness protocols that this module relies on:

* **s6** (``notification-fd`` in a service directory): s6-supervise puts the write end of a pipe on
  that fd number in the ``run`` process; the first chunk holding a newline marks the service
  *ready* (``s6-svwait -U`` returns); bytes before it are ignored; EOF without a newline means
  never ready. The daemon writes ``\\n`` and closes the fd; write errors are ignored.
* **sd_notify** (sd_notify(3)): one AF_UNIX *datagram* per message to ``$NOTIFY_SOCKET`` — a
  path when it starts with ``/``, the abstract name after ``@`` otherwise; anything else, an empty
  name is EINVAL; a name of 108 bytes or more is ENAMETOOLONG for a path, EINVAL
  for an abstract name. The payload is ``KEY=VALUE`` lines in
  UTF-8 (no NUL: libsystemd takes a C string). File descriptors ride along as SCM_RIGHTS
  (``FDSTORE=1`` + one ``FDNAME=`` per message; the manager drops them silently unless
  ``FileDescriptorStoreMax=`` > 0). The kernel attaches the sender's credentials; a privileged
  sender may claim another pid (SCM_CREDENTIALS), and libsystemd retries with its own
  credentials when the kernel refuses (EPERM for the unprivileged). CPython 3.11's
  ``socket.send_fds`` ignores its address argument, so ``sendmsg`` is called directly.
* **Messages** used here: ``READY=1`` (start-up or reload finished), ``STATUS=`` (one line),
  ``RELOADING=1`` which must carry ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC in µs; required by
  ``Type=notify-reload`` from systemd 253, harmless before) and be followed by ``READY=1``,
  ``STOPPING=1``, ``MAINPID=``, ``WATCHDOG=1``, ``FDSTORE=1``/``FDNAME=``/``FDPOLL=0``,
  ``FDSTOREREMOVE=1``. Unknown keys are ignored by the manager.
* **Watchdog** (sd_watchdog_enabled(3)): ``$WATCHDOG_USEC`` (> 0) is the interval;
  ``$WATCHDOG_PID``, when set, must be this process. Ping ``WATCHDOG=1`` at least every half
  interval.
* **Helpers that outlive nobody's patience.** A readiness helper that must keep running next to a
  daemon which then execs (so the daemon keeps the supervised PID) is started by a double fork:
  the intermediate child exits at once and is reaped before the exec, and the helper, orphaned,
  is reaped by the nearest subreaper (the service manager) — never left a zombie of a daemon
  that does not reap unknown children.
* **Children must not inherit** ``NOTIFY_SOCKET`` or ``WATCHDOG_*``: with ``NotifyAccess=all``, a
  child that says ``STOPPING=1`` on its own exit stops the whole unit. :meth:`Notifier.from_environment`
  takes them out of ``os.environ`` (``pop`` also calls ``unsetenv``).
"""

from __future__ import annotations

import _socket
import array
import errno
import os
import select
import time

from ..base import systemd_backend
from ..base.cstrings import peer_text
from ..base.descriptors import close_above
from ..base.durations import POLL_MAX_MS, poll_ms
from ..base.errors import BadInput, SystemFailure
from ..base.log import Log
from ..base.options import UINT64_MAX, UsageError, parse_uint
from ..base.unixmessage import UCRED, close_fds, recv_datagram

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Optional, Sequence, Set


__all__ = [
    "WATCHDOG_VARIABLES", "NOTIFY_VARIABLES", "monotonic_usec", "Notifier", "WATCHDOG_MAX_USEC",
    "watchdog_interval", "claim_notification_fd", "write_newline", "Readiness", "notify_ready",
    "spawn_detached", "NotifyRelay",
]

#: The watchdog's variables (sd_watchdog_enabled(3)).
WATCHDOG_VARIABLES = ("WATCHDOG_USEC", "WATCHDOG_PID")
#: Variables the service manager meant for the daemon only: the notification socket and the watchdog.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET",) + WATCHDOG_VARIABLES
_SUN_PATH = 108


def _sockaddr(address: str) -> str:
    """The ``connect``/``sendto`` address for a ``$NOTIFY_SOCKET`` value; OSError(EINVAL) if invalid."""
    if len(address) < 2 or address[0] not in "/@":
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    raw = os.fsencode(address)
    if len(raw) >= _SUN_PATH:  # room for the NUL, even for abstract names (libsystemd 252)
        code = errno.EINVAL if address[0] == "@" else errno.ENAMETOOLONG
        raise OSError(code, os.strerror(code))
    return "\0" + address[1:] if address[0] == "@" else address


def _stdlib_notify(address: str, message: str, fds: Sequence[int] = (), pid: Optional[int] = None) -> bool:
    """``sd_pid_notify_with_fds`` in Python: same datagram, same credentials, same fallback."""
    target = _sockaddr(address)
    data = message.encode("utf-8", "surrogateescape")
    ancillary = []
    if fds:
        ancillary.append((_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds).tobytes()))
    claim = pid is not None and pid != 0 and pid != os.getpid()
    import socket  # only with NOTIFY_SOCKET and no libsystemd: off the start path otherwise

    with socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC) as sock:
        if claim:
            assert pid is not None
            creds = UCRED.pack(pid, os.getuid(), os.getgid())
            try:
                sock.sendmsg([data], ancillary + [(_socket.SOL_SOCKET, _socket.SCM_CREDENTIALS, creds)],
                               _socket.MSG_NOSIGNAL, target)
                return True
            except OSError:
                pass  # not allowed to claim that pid: send as ourselves, as libsystemd does
        sock.sendmsg([data], ancillary, _socket.MSG_NOSIGNAL, target)
    return True


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``MONOTONIC_USEC=`` wants it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages to one ``$NOTIFY_SOCKET`` address (or nowhere: :attr:`enabled` False).

    *backend*: ``stdlib``, ``python-systemd`` or None (``$S6IPC_SYSTEMD_BACKEND``, else
    python-systemd when it imports). Every method returns False when there is no address and True
    once the datagram is sent; a send error raises :class:`SystemFailure` (``unable to notify …``).
    """

    def __init__(self, address: Optional[str], *, backend: Optional[str] = None) -> None:
        self.address = address
        self.backend = systemd_backend.choose(backend) if address is not None else systemd_backend.STDLIB

    @classmethod
    def from_environment(cls, *, unset: bool = True, backend: Optional[str] = None) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET``; with *unset*, the variable leaves ``os.environ``."""
        address = os.environ.pop("NOTIFY_SOCKET", None) if unset else os.environ.get("NOTIFY_SOCKET")
        return cls(address, backend=backend)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str, fds: Sequence[int] = (), pid: Optional[int] = None) -> bool:
        """Send one datagram made of *fields* (``KEY=VALUE`` each), with *fds* attached."""
        if self.address is None:
            return False
        message = "\n".join(fields)
        if "\0" in message:
            raise BadInput("an sd_notify message cannot contain a NUL byte")
        try:
            if self.backend == systemd_backend.LIBSYSTEMD:
                return systemd_backend.notify(self.address, message, fds, pid)
            return _stdlib_notify(self.address, message, fds, pid)
        except OSError as e:
            raise SystemFailure(f"notify {self.address}", e.errno or errno.EIO) from None

    def ready(self, status: Optional[str] = None) -> bool:
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.send(*_status(text))

    def reloading(self, status: Optional[str] = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=``: follow it with :meth:`ready` when done."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", *_status(status))

    def stopping(self, status: Optional[str] = None) -> bool:
        return self.send("STOPPING=1", *_status(status))

    def mainpid(self, pid: int) -> bool:
        return self.send(f"MAINPID={pid}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def store_fds(self, name: str, fds: Sequence[int], *, poll: bool = True) -> bool:
        """Push *fds* to the manager's fd store as *name* (``FDSTORE=1``, ``FDNAME=``).

        They come back after a restart in ``LISTEN_FDS`` under that name. *poll* False adds
        ``FDPOLL=0`` (keep the fd even when it reports POLLHUP/POLLERR).
        """
        _check_fdname(name)
        fields = ["FDSTORE=1", f"FDNAME={name}"]
        if not poll:
            fields.append("FDPOLL=0")
        return self.send(*fields, fds=fds)

    def remove_stored(self, name: str) -> bool:
        """``FDSTOREREMOVE=1`` for *name*: the manager closes every stored fd of that name."""
        _check_fdname(name)
        return self.send("FDSTOREREMOVE=1", f"FDNAME={name}")


def _check_fdname(name: str) -> None:
    """The one fd-name rule (:func:`s6ipc.sockets.listenfds.check_fdname`), imported when a name is
    first checked: a daemon that never uses the fd store does not load the LISTEN_* module."""
    from ..sockets.listenfds import check_fdname

    check_fdname(name)


def _status(text: Optional[str]) -> Sequence[str]:
    if text is None:
        return ()
    return (f"STATUS={text.splitlines()[0] if text else ''}",)


#: The longest watchdog interval honoured (the pings then come every ~24.8 days, a poll's limit):
#: a longer one, up to systemd's 2**64 - 2 µs, is taken as this one — pinging early is harmless.
WATCHDOG_MAX_USEC = 2 * POLL_MAX_MS * 1000


def watchdog_interval(environ: Optional[Dict[str, str]] = None) -> Optional[float]:
    """The watchdog interval in seconds asked by ``$WATCHDOG_USEC``, or None when not for us.

    None when unset or when ``$WATCHDOG_PID`` names another process. Raises :class:`BadInput`
    for a value that is not a positive number of microseconds.
    """
    env = os.environ if environ is None else environ
    usec_text = env.get("WATCHDOG_USEC")
    if usec_text is None:
        return None
    pid_text = env.get("WATCHDOG_PID")
    if pid_text is not None and pid_text.strip() != str(os.getpid()):
        return None
    try:
        usec = parse_uint(usec_text, UINT64_MAX)
    except UsageError:
        usec = 0
    if usec <= 0:
        raise BadInput(f"invalid WATCHDOG_USEC: {usec_text[:40]!r}")
    return min(usec, WATCHDOG_MAX_USEC) / 1e6


def claim_notification_fd(notify: bool) -> None:
    """s6's start-up handling of fd 1 by a daemon: with ``-1`` it must be open (kept for the newline),
    else it is closed. Raises :class:`BadInput` (exit 100) as s6 does when ``-1`` finds it closed."""
    if notify:
        try:
            os.fstat(1)
        except OSError as e:
            reason = os.strerror(e.errno or errno.EBADF)
            raise BadInput(f"called with option -1 but stdout said: {reason}") from None
    else:
        try:
            os.close(1)
        except OSError:
            pass


def write_newline(fd: int, line: bytes = b"\n") -> None:
    """s6 readiness on *fd*: write one newline (or *line*) and close it (errors ignored, as s6 does)."""
    try:
        os.write(fd, line)
    except OSError:
        pass
    try:
        os.close(fd)
    except OSError:
        pass


class Readiness:
    """One readiness event, every sink: the s6 notification fd and/or sd_notify, plus the watchdog.

    Build it with :meth:`from_environment` early (it takes ``NOTIFY_SOCKET`` and ``WATCHDOG_*``
    out of ``os.environ`` so children never inherit them), then call :meth:`ready` once the
    daemon accepts connections. The notification fd is written at most once.
    """

    def __init__(self, notifier: Optional[Notifier] = None, notification_fd: Optional[int] = None,
                 watchdog: Optional[float] = None) -> None:
        self.notifier = notifier if notifier is not None else Notifier(None)
        self.notification_fd = notification_fd
        #: Seconds between two ``WATCHDOG=1`` pings the manager expects (None: no watchdog).
        self.watchdog_interval = watchdog

    @classmethod
    def from_environment(cls, notification_fd: Optional[int] = None, *, unset: bool = True,
                         backend: Optional[str] = None) -> Readiness:
        """Sinks from the environment (``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC``) plus *notification_fd*."""
        interval = watchdog_interval()
        if unset:
            for name in WATCHDOG_VARIABLES:
                os.environ.pop(name, None)
        return cls(Notifier.from_environment(unset=unset, backend=backend), notification_fd, interval)

    def ready(self, status: Optional[str] = None) -> None:
        """The daemon is ready: newline on the notification fd, ``READY=1`` (+ ``STATUS=``)."""
        if self.notification_fd is not None:
            write_newline(self.notification_fd)
            self.notification_fd = None
        self.notifier.ready(status)

    def status(self, text: str) -> None:
        self.notifier.status(text)

    def reloading(self, status: Optional[str] = None) -> None:
        self.notifier.reloading(status)

    def stopping(self, status: Optional[str] = None) -> None:
        self.notifier.stopping(status)

    def watchdog(self) -> None:
        if self.watchdog_interval is not None:
            self.notifier.watchdog()


def notify_ready(status: Optional[str] = None, notification_fd: Optional[int] = None) -> Readiness:
    """Tell whichever supervisor is present that this process is ready; return the :class:`Readiness`.

    Writes the newline on *notification_fd* (s6) and sends ``READY=1`` to ``$NOTIFY_SOCKET``
    (systemd) when set, after taking ``NOTIFY_SOCKET``/``WATCHDOG_*`` out of ``os.environ``.
    Keep the returned object to send ``STATUS=``, ``STOPPING=1`` or watchdog pings later.
    """
    readiness = Readiness.from_environment(notification_fd)
    readiness.ready(status)
    return readiness


def _isolate(keep: Sequence[int]) -> None:
    """In a helper: fds 0 and 1 on /dev/null, every fd above 2 closed except *keep*, cwd ``/``."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        if fd != null and fd not in keep:
            os.dup2(null, fd)
    close_above(2, keep)
    os.chdir("/")


def spawn_detached(work: Callable[[], int], keep: Sequence[int] = ()) -> None:
    """Run *work* in a detached grandchild process (double fork), which exits with its return value.

    In the grandchild, fds 0 and 1 point to /dev/null, fd 2 stays, every other fd is closed except
    those in *keep*, and the working directory is ``/``. Returns in the caller once the
    intermediate child is reaped; the grandchild ends with ``os._exit`` whatever *work* does.
    """
    pid = os.fork()
    if pid == 0:  # intermediate child
        code = 111
        try:
            if os.fork() == 0:
                try:
                    _isolate(keep)
                    code = work()
                except BaseException:
                    code = 111
            else:
                code = 0
        finally:
            os._exit(code)
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return


# -- the receiving end: sd_notify to s6's notification fd -------------------------------------
class NotifyRelay:
    """The receiving end of ``$NOTIFY_SOCKET`` for a daemon under s6-supervise (sdnotify-bridge):
    the first ``READY=1`` becomes the newline on s6's notification fd.

    *sock* is the bound datagram socket (SO_PASSCRED on), *notif* the notification fd, *pidfd* a
    pidfd of the daemon (*daemon* its pid): :meth:`run` returns when it exits — 0 if readiness was
    passed on, 1 otherwise. Only the daemon's pid, or a pid it named with ``MAINPID=``, may say
    ``READY=1`` (any process with *allow_all*). Descriptors attached to a message are closed.
    With *timeout* (seconds, 0: none) the notification fd is closed unready when it passes.
    *log*, when given, gets one line per message and the give-up warning.
    """

    def __init__(self, sock: _socket.socket, notif: int, pidfd: int, daemon: int, allow_all: bool,
                 timeout: float, log: Optional[Log]) -> None:
        self.sock, self.notif, self.pidfd = sock, notif, pidfd
        self.allowed: Set[int] = {daemon}
        self.allow_all, self.timeout, self.log = allow_all, timeout, log

    def run(self) -> int:
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self.pidfd, select.POLLIN)
        deadline = time.monotonic() + self.timeout if self.timeout else None
        while True:
            wait = None
            if deadline is not None and self.notif >= 0:
                wait = max(0.0, deadline - time.monotonic())
                if wait == 0:
                    self._give_up()
                    wait = None
            try:
                events = poller.poll(poll_ms(wait))
            except InterruptedError:
                continue
            for fd, _ in events:
                if fd == self.pidfd:
                    return 0 if self.notif < 0 else 1
                self._receive()

    def _give_up(self) -> None:
        if self.log:
            self.log.warn(f"no READY=1 within {self.timeout * 1000:.0f} ms: giving up")
        os.close(self.notif)
        self.notif = -1

    def _receive(self) -> None:
        try:
            datagram = recv_datagram(self.sock)
        except (BlockingIOError, InterruptedError):
            return
        close_fds(datagram.fds)
        sender = datagram.pid
        if b"\0" in datagram.data:  # systemd ignores such a message too ("embedded NUL bytes")
            if self.log:
                self.log.warn(f"pid {sender}: notification with a NUL byte: ignored")
            return
        text = peer_text(datagram.data)  # the sender's bytes, in the log line too
        if self.log:
            self.log.info(f"pid {sender}: " + text.replace("\n", " "))
        if not (self.allow_all or sender in self.allowed):
            return
        fields = text.split("\n")
        for field in fields:
            if field.startswith("MAINPID="):
                try:
                    self.allowed.add(parse_uint(field[8:]))
                except UsageError:
                    pass
        if "READY=1" in fields and self.notif >= 0:
            write_newline(self.notif)
            self.notif = -1
