"""tcpserver-socketbinder: bind a TCP socket of the address's family, put it on fd 0, exec the rest.

The unified name of s6-networking 2.6+ (``s6-tcpserver-socketbinder``): the family comes from the
address (IPv6 first, as skalibs' ``ip46_scan``); otherwise it is exactly
``tcpserver4-socketbinder`` / ``tcpserver6-socketbinder``, which share this code with the
address parsed in their one family only.
"""

from __future__ import annotations

import socket
from typing import List, NoReturn, Optional

from ..activation import move_fd
from ..inet import parse_ip, parse_port
from ..messages import Reporter
from ..options import UsageError, getopt, parse_uint
from ..tcp import bind_tcp_socket
from .chain import exec_into

USAGE = "[ -d | -D ] [ -b backlog ] [ -M | -m ] [ -B ] ip port prog..."


def run(reporter: Reporter, args: List[str], family: Optional[int]) -> NoReturn:
    """The binder for *family* (``socket.AF_INET``, ``AF_INET6``, None: from the address)."""
    opts, rest = getopt(args, "dDb:mMB")
    reuse, backlog, datagram, blocking = True, socket.SOMAXCONN, False, False
    for letter, value in opts:
        if letter in "dD":
            reuse = letter == "d"
        elif letter == "b":
            backlog = parse_uint(value or "")
        elif letter in "mM":
            datagram = letter == "m"
        elif letter == "B":
            blocking = True
    if len(rest) < 3:
        raise UsageError("too few arguments")
    try:  # both parsed before anything is created, as s6 does
        ip = parse_ip(rest[0], family)
        port = parse_port(rest[1])
    except ValueError:
        raise UsageError("bad address") from None
    fd = bind_tcp_socket(ip, port, f"{rest[0]}:{rest[1]}", reuse=reuse, backlog=backlog,
                         datagram=datagram, blocking=blocking)
    move_fd(fd, 0)
    exec_into(reporter, rest[2:])


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    run(reporter, args, None)
