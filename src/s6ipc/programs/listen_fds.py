"""listen-fds: append socket(s) to the LISTEN_FDS list of this process, then exec the rest of the chain.

The socket is fd 0 (what ipcserver-socketbinder, fdholder-retrieve and systemd-socket leave), or
each ``-f fd`` in order; it moves to the next free place at fds 3, 4, …, named by the ``-n`` of the
same rank. ``LISTEN_FDS``, ``LISTEN_FDNAMES``, ``LISTEN_PID`` (this PID: the chain execs) and
``LISTEN_PIDFDID`` then describe the whole list, so that several invocations in one chain collect
several sockets. ``-x scheme`` adds a daemon's own variables for the whole list (``nginx``:
``NGINX=3;4;``). All the work is :func:`s6ipc.sockets.give.append_sockets`.
"""

from __future__ import annotations

import os

from ..base.cstrings import assign
from ..base.messages import Reporter
from ..base.options import Command, UsageError, collect, parse_uint
from ..chain.run import exec_into
from ..sockets.give import append_sockets, daemon_variables

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn

USAGE = "[ -n name ] [ -f fd ] [ -x scheme ] prog..."

COMMAND = Command({"n": collect("names"), "f": collect("fds", parse_uint), "x": collect("schemes")},
                  program=True)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    lists: Dict[str, List[Any]] = {}
    rest = COMMAND.parse(args, lists)
    names: List[str] = lists.get("names", [])
    fds: List[int] = lists.get("fds", [0])
    schemes: List[str] = lists.get("schemes", [])
    if len(names) > len(fds):
        raise UsageError("more -n than sockets")
    for scheme in schemes:
        daemon_variables(scheme, [])  # an unknown scheme fails before anything is moved
    passed = append_sockets(fds, names)
    for scheme in schemes:
        assign(os.environ, daemon_variables(scheme, [p.fd for p in passed]).items())
    exec_into(reporter, rest)
