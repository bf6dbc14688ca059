"""tcpserver4 and tcpserver6: s6-tcpserver4 / s6-tcpserver6, the one-family wrappers.

The family is the program's name; see :mod:`s6ipc.programs.tcpserver` for how they differ from
``tcpserver`` (``-v N``, ``-b 0`` becomes 1, the address is left to the binder).
"""

from __future__ import annotations

from typing import List, NoReturn

from ..messages import Reporter
from .chain import exec_into
from .tcpserver import build_chain, naming_style, parse

USAGE = (
    "[ -v verbosity ] [ -d | -D ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] [ -b backlog ] "
    "[ -G gid,gid,... ] [ -g gid ] [ -u uid ] [ -U ] ip port prog..."
)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o, rest = parse(args, family=6 if reporter.name.endswith("6") else 4)
    exec_into(reporter, build_chain(o, rest[0], rest[1], rest[2:], naming_style(reporter),
                                    wrapper_verbosity=False))
