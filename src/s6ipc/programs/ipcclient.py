"""ipcclient: connect to a Unix socket, put the connection on fds 6 and 7, exec the program."""

from __future__ import annotations

import os

from ..base.messages import Reporter
from ..base.options import Command, setting
from ..chain.options import CLIENT_VERBOSITY
from ..chain.run import exec_into, modify_environ
from ..sockets.unix import IPCPATH_MAX, address_text, connect_unix, move_to_client_fds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

USAGE = "[ -q | -Q | -v ] [ -p bindpath ] [ -l localname ] path prog..."


class _Options:
    def __init__(self) -> None:
        self.verbosity = 1
        self.bind_path: Optional[str] = None
        self.local_name: Optional[str] = None


COMMAND = Command({**CLIENT_VERBOSITY, "p": setting("bind_path"), "l": setting("local_name")}, 2)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o = _Options()
    rest = COMMAND.parse(args, o)
    sock = connect_unix(rest[0], o.bind_path)
    if o.verbosity >= 2:
        reporter.info(f"{reporter.name}: connected to {rest[0]}")
    if o.local_name is not None:
        local: Optional[str] = os.fsdecode(os.fsencode(o.local_name)[:IPCPATH_MAX])
    else:
        try:
            local = address_text(sock.getsockname())
        except OSError:
            local = None
    move_to_client_fds(sock)
    modify_environ(("PROTO=IPC", "IPCLOCALPATH" if local is None else f"IPCLOCALPATH={local}"))
    exec_into(reporter, rest[1:])
