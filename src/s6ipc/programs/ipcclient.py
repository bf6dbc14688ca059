"""ipcclient: connect to a Unix socket, put the connection on fds 6 and 7, exec the program."""

from __future__ import annotations

import os

from ..base.messages import Reporter
from ..base.options import UsageError, getopt
from ..chain.run import exec_into, modify_environ
from ..sockets.unix import IPCPATH_MAX, address_text, connect_unix, move_to_client_fds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

USAGE = "[ -q | -Q | -v ] [ -p bindpath ] [ -l localname ] path prog..."


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    opts, rest = getopt(args, "qQvp:l:")
    verbosity = 1
    bind_path: Optional[str] = None
    local_name: Optional[str] = None
    for letter, value in opts:
        if letter == "q":
            verbosity = max(verbosity - 1, 0)
        elif letter == "Q":
            verbosity = 1
        elif letter == "v":
            verbosity += 1
        elif letter == "p":
            bind_path = value
        elif letter == "l":
            local_name = value
    if len(rest) < 2:
        raise UsageError("too few arguments")
    sock = connect_unix(rest[0], bind_path)
    if verbosity >= 2:
        reporter.info(f"{reporter.name}: connected to {rest[0]}")
    if local_name is not None:
        local: Optional[str] = os.fsdecode(os.fsencode(local_name)[:IPCPATH_MAX])
    else:
        try:
            local = address_text(sock.getsockname())
        except OSError:
            local = None
    move_to_client_fds(sock)
    modify_environ(("PROTO=IPC", "IPCLOCALPATH" if local is None else f"IPCLOCALPATH={local}"))
    exec_into(reporter, rest[1:])
