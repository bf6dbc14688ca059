"""tcpserver4d, tcpserver6d, tcpserverd: accept TCP connections on fd 0, spawn prog per connection.

The loop is ipcserverd's (:class:`s6ipc.server.Server`) with a TCP peer identity
(:class:`s6ipc.tcppeer.TcpPeerIdentity`): per-IP ``-C``, ``TCPREMOTEIP``/``TCPREMOTEPORT``/
``TCPCONNNUM``, s6-tcpserver4d's or 6d's log lines and ``-1`` port line. ``tcpserverd`` (the
unified name of s6-networking 2.6+) serves either family, with 4d's formats on an IPv4 socket and
6d's on an IPv6 one — the 2.5.1.3 formats, not 2.6's (docs/tcpserverd.md). As with ipcserverd,
the socket may also come from systemd (``LISTEN_FDS``), and readiness reaches ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import socket
from typing import List, NoReturn, Optional

from ..activation import IP_FAMILIES
from ..execution import Spawner
from ..messages import Reporter
from ..options import UsageError
from ..server import ConnectionPolicy, Server, ServerConfig
from ..tcppeer import TcpPeerIdentity
from .chain import program_name
from .ipcserverd import own_program, parse, refusal_standin, run_server, take_listening_socket

USAGE = "[ -v verbosity ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] prog..."


def family_of_name(name: str) -> Optional[int]:
    """``AF_INET`` for ``[s6-]tcpserver4d``, ``AF_INET6`` for ``…6d``, None for ``tcpserverd``."""
    if name.endswith("4d"):
        return socket.AF_INET
    if name.endswith("6d"):
        return socket.AF_INET6
    return None


def access_fast_path(config: ServerConfig) -> Optional[ConnectionPolicy]:
    """The in-process policy replacing our own tcpserver-access as prog, or None.

    Applies when prog is ``S6IPC [s6-]tcpserver-access OPTIONS… prog…`` (see
    :func:`~s6ipc.programs.ipcserverd.own_program`) with valid options that need no network
    exchange and write nothing to the client (``-H -R``, no ``-B``: see :mod:`s6ipc.tcpaccess`);
    with other options every connection would go to the program anyway, so it simply runs.
    """
    argv = config.argv
    n = own_program(argv)
    if n is None or program_name(argv[n]) != "tcpserver-access":
        return None
    from ..tcpaccess import FastTcpAccess, parse_options

    try:
        options = parse_options(argv[n + 1 :])
    except UsageError:
        return None
    policy = FastTcpAccess(options, Reporter(argv[n]), Spawner(argv), refusal_standin(config))
    return policy if policy.in_process else None


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args, credentials=False)
    family = family_of_name(reporter.name)
    take_listening_socket(reporter, IP_FAMILIES if family is None else (family,))
    peer = TcpPeerIdentity(family)
    server = Server(config, reporter, Reporter(reporter.name + " (child)"), peer=peer)
    server.policy = access_fast_path(config)
    run_server(server, reporter)
