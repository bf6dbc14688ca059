"""tcpserver4-socketbinder: s6-tcpserver4-socketbinder (see :mod:`.tcp_socketbinder`)."""

from __future__ import annotations

import socket
from typing import List, NoReturn

from ..messages import Reporter
from .tcp_socketbinder import run

USAGE = "[ -d | -D ] [ -b backlog ] [ -M | -m ] [ -B ] ip4 port prog..."


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    run(reporter, args, socket.AF_INET)
