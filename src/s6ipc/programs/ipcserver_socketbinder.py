"""ipcserver-socketbinder: bind a Unix socket, put it on fd 0, exec the rest of the command line."""

from __future__ import annotations

from ..base.descriptors import move_fd
from ..base.messages import Reporter
from ..base.options import Command
from ..chain.options import BINDER_OPTIONS, DATAGRAM_OPTIONS, PERMS_OPTIONS
from ..chain.run import exec_into
from ..sockets.unix import bind_unix_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn

USAGE = "[ -d | -D ] [ -b backlog ] [ -M | -m ] [ -a perms ] [ -B ] path prog..."
#: The options are bind_unix_socket's keyword arguments (its defaults are s6's).
COMMAND = Command({**BINDER_OPTIONS, **DATAGRAM_OPTIONS, **PERMS_OPTIONS}, 2)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    bind: Dict[str, Any] = {}
    rest = COMMAND.parse(args, bind)
    fd = bind_unix_socket(rest[0], **bind)
    move_fd(fd, 0)
    exec_into(reporter, rest[1:])
