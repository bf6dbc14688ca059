"""systemd-socket: put the listening socket systemd passed on fd 0, then exec the rest of the chain.

It takes the place of ``ipcserver-socketbinder`` in a chain run by a systemd service, in front of
our ``ipcserverd`` or s6's C ``s6-ipcserverd``: it checks ``LISTEN_PID``, picks the socket by
``LISTEN_FDNAMES`` name (``-n``) and/or bound path (``-l``), checks that it is a listening Unix
stream socket, moves it to fd 0, closes the other passed fds and removes every ``LISTEN_*``
variable from the environment it passes on.

With ``-f``, when systemd passed no matching socket, it binds ``-l path`` itself as
ipcserver-socketbinder would (``-d/-D/-b/-a/-B``), and with ``-s`` pushes that socket to systemd's
fd store under the ``-n`` name, so that after a restart it comes back through the first path.
With ``-N``, the rest of the chain gets a pipe on fd 1: the first newline on it (an ``-1``
readiness notification, e.g. from s6's C daemon) is sent to ``$NOTIFY_SOCKET`` as ``READY=1``
by a detached helper, and ``NOTIFY_SOCKET`` is removed from the environment passed on.
"""

from __future__ import annotations

import os

from ..base.descriptors import move_fd
from ..base.messages import Reporter
from ..base.options import Command, UsageError, flag, setting
from ..chain.options import BINDER_OPTIONS, PERMS_OPTIONS
from ..chain.run import exec_into
from ..daemon.readiness import Notifier, spawn_detached
from ..serve.intake import systemd_socket_or_bind, take_systemd_socket
from ..sockets.unix import ANY_FAMILIES, bind_unix_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn, Optional

USAGE = (
    "[ -n fdname ] [ -l path ] [ -f ] [ -s ] [ -d | -D ] [ -b backlog ] [ -a perms ] [ -B ] [ -N ] prog..."
)

#: What is left of the options once ``-n -l -f -s -N`` are taken out are bind_unix_socket's keyword
#: arguments, for the fallback.
COMMAND = Command({
    "n": setting("name"), "l": setting("path"), "f": flag("fallback"), "s": flag("store"),
    "N": flag("forward"), **BINDER_OPTIONS, **PERMS_OPTIONS,
}, program=True)


def _forward_newline(notifier: Notifier, read_fd: int, mainpid: int) -> int:
    """The -N helper: wait for a newline on *read_fd*, then send READY=1 on behalf of *mainpid*."""
    while True:
        try:
            chunk = os.read(read_fd, 4096)
        except InterruptedError:
            continue
        if not chunk:
            return 1
        if b"\n" in chunk:
            notifier.send("READY=1", pid=mainpid)
            return 0


def _start_forwarder(reporter: Reporter) -> None:
    notifier = Notifier.from_environment(unset=True)
    if not notifier.enabled:
        reporter.warn("NOTIFY_SOCKET is not set: -N has nothing to forward readiness to")
        return
    r, w = os.pipe()
    mainpid = os.getpid()
    spawn_detached(lambda: _forward_newline(notifier, r, mainpid), keep=(r,))
    os.close(r)
    move_fd(w, 1)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    given: Dict[str, Any] = {}
    rest = COMMAND.parse(args, given)
    name: Optional[str] = given.pop("name", None)
    path: Optional[str] = given.pop("path", None)
    fallback, store, forward = (given.pop(key, False) for key in ("fallback", "store", "forward"))
    if (fallback and path is None) or (store and (not fallback or not name)):
        raise UsageError("-f needs -l path; -s needs -f and -n fdname")
    if not fallback:
        take_systemd_socket(name=name, path=path, families=ANY_FAMILIES)
    else:
        assert path is not None

        def bind() -> int:
            return bind_unix_socket(path, **given)

        bound = systemd_socket_or_bind(bind, name=name, path=path, warn=reporter.warn, families=ANY_FAMILIES)
        if bound and store:
            assert name is not None
            notifier = Notifier.from_environment(unset=False)
            if not notifier.store_fds(name, [0]):
                reporter.warn(f"NOTIFY_SOCKET is not set: {path} not pushed to the fd store")
    if forward:
        _start_forwarder(reporter)
    exec_into(reporter, rest)

