"""systemd-accept: run a UCSPI program as systemd's per-connection (Accept=yes) service.

Takes the connection systemd passed (fd 3 with ``LISTEN_FDS=1``, or fd 0 with
``StandardInput=socket``), puts it on fds 0 and 1, sets ``PROTO=IPC`` and ``IPCREMOTEEUID``,
``IPCREMOTEEGID``, ``IPCREMOTEPATH`` from the socket (``PROTO=TCP`` and ``TCPREMOTE*``/``TCPLOCAL*``
for IP), as ipcserverd and tcpserverd set them (:func:`s6ipc.serve.ucspi.connection_variables`),
with ``-c dir`` also ``IPCCONNNUM``/``TCPCONNNUM`` (live connections from that uid or address,
counted with lock files in *dir*, numbered as the s6 line ``S6IPC_S6`` chooses), removes
``LISTEN_*`` and execs the rest of the command line: an
``ipcserver-access`` rules check, ``s6-connlimit``, the program.
"""

from __future__ import annotations

import os

from ..base.cstrings import assign
from ..base.descriptors import move_fd
from ..base.messages import Reporter
from ..base.options import Command, setting
from ..base.s6release import s6_release
from ..chain.run import exec_into
from ..serve.ucspi import connection_variables, take_connection

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, NoReturn

USAGE = "[ -c countdir ] prog..."
COMMAND = Command({"c": setting("countdir")}, program=True)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o: Dict[str, str] = {}
    rest = COMMAND.parse(args, o)
    fd = take_connection()
    variables = connection_variables(fd, o.get("countdir"), s6_release(os.environ))
    os.dup2(fd, 1, inheritable=True)
    move_fd(fd, 0)
    for name in variables:
        os.environ.pop(name, None)
    assign(os.environ, ((name, value) for name, value in variables.items() if value is not None))
    exec_into(reporter, rest)
