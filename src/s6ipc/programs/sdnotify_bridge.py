"""sdnotify-bridge: run a daemon that speaks sd_notify under s6-supervise; READY=1 becomes the newline.

It creates a datagram socket in the abstract namespace, sets ``NOTIFY_SOCKET`` to it, starts a
detached helper that listens on it, and execs the daemon — which so keeps the PID s6-supervise
watches and gets s6-svc's signals itself. The helper writes ``\\n`` to s6's notification fd (and
closes it) on the first ``READY=1`` from the daemon's PID (or a PID it named with ``MAINPID=``; from
any process with ``-a``), then keeps reading (and discarding) messages until the daemon exits, so a
daemon's later ``STATUS=``/``WATCHDOG=1`` sends never fail. It exits when the daemon does.
"""

from __future__ import annotations

import errno
import os
import socket

from ..base.errors import BadInput, SystemFailure
from ..base.messages import Reporter
from ..base.options import INT_MAX, UsageError, getopt, parse_uint
from ..chain.run import exec_into
from ..daemon.readiness import NOTIFY_VARIABLES, NotifyRelay, spawn_detached

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

USAGE = "[ -d notif ] [ -t timeout ] [ -a ] [ -v ] prog..."

def _notification_fd(given: Optional[str]) -> int:
    """``-d notif``, else the number in ``./notification-fd`` (run scripts start in the service dir)."""
    if given is not None:
        fd = parse_uint(given)
    else:
        try:
            with open("notification-fd", "rb") as f:
                text = f.read().decode("ascii", "replace").strip()
        except OSError as e:
            raise SystemFailure("read notification-fd (use -d notif)", e.errno or errno.ENOENT) from None
        try:
            fd = parse_uint(text)
        except UsageError:
            raise BadInput(f"invalid notification-fd: {text}") from None
    try:
        if fd > INT_MAX:  # no such descriptor can be open
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        os.fstat(fd)
    except OSError as e:
        raise SystemFailure(f"use notification fd {fd}", e.errno or errno.EBADF) from None
    return fd


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    opts, rest = getopt(args, "d:t:av")
    notif_arg: Optional[str] = None
    timeout, allow_all, verbose = 0, False, False
    for letter, value in opts:
        if letter == "d":
            notif_arg = value
        elif letter == "t":
            timeout = parse_uint(value or "")
        elif letter == "a":
            allow_all = True
        elif letter == "v":
            verbose = True
    if not rest or not rest[0]:
        raise UsageError("no program")
    notif = _notification_fd(notif_arg)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind("")  # Linux autobind: a fresh abstract name
        name = sock.getsockname()
    except OSError as e:
        raise SystemFailure("create the notification socket", e.errno or errno.EINVAL) from None
    address = "@" + os.fsdecode(name[1:] if isinstance(name, bytes) else name.encode()[1:])
    try:
        pidfd = os.pidfd_open(os.getpid())
    except OSError as e:
        raise SystemFailure("pidfd_open", e.errno or errno.ENOSYS) from None
    helper = NotifyRelay(sock, notif, pidfd, os.getpid(), allow_all, timeout / 1000,
                         Reporter(reporter.name) if verbose else None)
    spawn_detached(helper.run, keep=(sock.fileno(), notif, pidfd))
    sock.close()
    os.close(pidfd)
    if notif > 2:
        os.close(notif)
    else:  # the daemon keeps a valid stdin/stdout/stderr, not the notification pipe
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, notif)
        os.close(null)
    for variable in NOTIFY_VARIABLES:
        os.environ.pop(variable, None)
    os.environ["NOTIFY_SOCKET"] = address
    exec_into(reporter, rest)
