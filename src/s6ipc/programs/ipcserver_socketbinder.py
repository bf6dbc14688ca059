"""ipcserver-socketbinder: bind a Unix socket, put it on fd 0, exec the rest of the command line."""

from __future__ import annotations

from ..base.descriptors import move_fd
from ..base.messages import Reporter
from ..base.options import UsageError, getopt, parse_octal, parse_uint
from ..chain.run import exec_into
from ..sockets.unix import SOMAXCONN, bind_unix_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "[ -d | -D ] [ -b backlog ] [ -M | -m ] [ -a perms ] [ -B ] path prog..."


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    opts, rest = getopt(args, "dDb:mMa:B")
    reuse, backlog, datagram, perms, blocking = True, SOMAXCONN, False, 0o777, False
    for letter, value in opts:
        if letter == "d":
            reuse = True
        elif letter == "D":
            reuse = False
        elif letter == "b":
            backlog = parse_uint(value or "")
        elif letter == "m":
            datagram = True
        elif letter == "M":
            datagram = False
        elif letter == "a":
            perms = parse_octal(value or "")
        elif letter == "B":
            blocking = True
    if len(rest) < 2:
        raise UsageError("too few arguments")
    fd = bind_unix_socket(
        rest[0], perms=perms, reuse=reuse, backlog=backlog, datagram=datagram, blocking=blocking
    )
    move_fd(fd, 0)
    exec_into(reporter, rest[1:])
