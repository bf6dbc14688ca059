"""tcpserver-socketbinder, tcpserver4-socketbinder, tcpserver6-socketbinder: bind a TCP socket,
put it on fd 0, exec the rest.

The unified name of s6-networking 2.6+ (``s6-tcpserver-socketbinder``) takes the family from the
address (IPv6 first, as skalibs' ``ip46_scan``); the one-family names parse the address in their
family only. Otherwise the three are one program, told apart by the name it runs under.
"""

from __future__ import annotations

import _socket

from ..base.descriptors import move_fd
from ..base.messages import Reporter
from ..base.options import Command, UsageError
from ..chain.options import BINDER_OPTIONS, DATAGRAM_OPTIONS
from ..chain.run import exec_into
from ..sockets.inet import parse_ip, parse_port
from ..sockets.tcp import bind_tcp_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn, Optional

_OPTIONS = "[ -d | -D ] [ -b backlog ] [ -M | -m ] [ -B ]"
USAGES = {
    "tcpserver-socketbinder": f"{_OPTIONS} ip port prog...",
    "tcpserver4-socketbinder": f"{_OPTIONS} ip4 port prog...",
    "tcpserver6-socketbinder": f"{_OPTIONS} ip6 port prog...",
}
#: The options are bind_tcp_socket's keyword arguments (its defaults are s6's).
COMMAND = Command({**BINDER_OPTIONS, **DATAGRAM_OPTIONS}, 3)


def run(reporter: Reporter, args: List[str], family: Optional[int]) -> NoReturn:
    """The binder for *family* (``socket.AF_INET``, ``AF_INET6``, None: from the address)."""
    bind: Dict[str, Any] = {}
    rest = COMMAND.parse(args, bind)
    try:  # both parsed before anything is created, as s6 does
        ip = parse_ip(rest[0], family)
        port = parse_port(rest[1])
    except ValueError:
        raise UsageError("bad address") from None
    fd = bind_tcp_socket(ip, port, f"{rest[0]}:{rest[1]}", **bind)
    move_fd(fd, 0)
    exec_into(reporter, rest[2:])


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    if reporter.name.endswith("tcpserver4-socketbinder"):
        run(reporter, args, _socket.AF_INET)
    if reporter.name.endswith("tcpserver6-socketbinder"):
        run(reporter, args, _socket.AF_INET6)
    run(reporter, args, None)
