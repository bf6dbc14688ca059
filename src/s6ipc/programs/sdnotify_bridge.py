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
from ..base.options import INT_MAX, Command, UsageError, flag, parse_uint, setting
from ..chain.run import exec_into
from ..daemon.readiness import NOTIFY_VARIABLES, NotifyRelay, spawn_detached

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn, Optional

USAGE = "[ -d notif ] [ -t timeout ] [ -a ] [ -v ] prog..."

COMMAND = Command({
    "d": setting("notif"), "t": setting("timeout", parse_uint), "a": flag("allow_all"), "v": flag("verbose"),
}, program=True)


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
    o: Dict[str, Any] = {}
    rest = COMMAND.parse(args, o)
    notif = _notification_fd(o.get("notif"))
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
    helper = NotifyRelay(sock, notif, pidfd, os.getpid(), o.get("allow_all", False),
                         o.get("timeout", 0) / 1000, Reporter(reporter.name) if o.get("verbose") else None)
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
