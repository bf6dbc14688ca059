"""tcpserver4d, tcpserver6d, tcpserverd: accept TCP connections on fd 0, spawn prog per connection.

The loop is ipcserverd's (:class:`s6ipc.server.Server`) with a TCP peer identity
(:class:`s6ipc.tcppeer.TcpPeers`): per-IP ``-C``, ``TCPREMOTEIP``/``TCPREMOTEPORT``/
``TCPCONNNUM``, s6-tcpserver4d's or 6d's log lines and ``-1`` port line. ``tcpserverd`` (the
unified name of s6-networking 2.6+) serves either family, with 4d's formats on an IPv4 socket and
6d's on an IPv6 one — the 2.5.1.3 formats, not 2.6's (docs/tcpserverd.md). As with ipcserverd,
the socket may also come from systemd (``LISTEN_FDS``), readiness reaches ``$NOTIFY_SOCKET``, and
our own ``tcpserver-access`` as prog is done in-process (:func:`.chain.fastpath.tcp_access_fast_path`).
"""

from __future__ import annotations

import socket
from typing import List, NoReturn, Optional

from ..base.messages import Reporter
from ..chain.daemon import parse, run_daemon
from ..chain.fastpath import tcp_access_fast_path
from ..serve.intake import take_daemon_socket
from ..serve.tcppeer import TcpPeers
from ..sockets.unix import IP_FAMILIES, check_listening_stream, socket_kind

USAGE = "[ -v verbosity ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] prog..."


def family_of_name(name: str) -> Optional[int]:
    """``AF_INET`` for ``[s6-]tcpserver4d``, ``AF_INET6`` for ``…6d``, None for ``tcpserverd``."""
    if name.endswith("4d"):
        return socket.AF_INET
    if name.endswith("6d"):
        return socket.AF_INET6
    return None


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args, credentials=False)
    family = family_of_name(reporter.name)
    take_daemon_socket(reporter.warn, IP_FAMILIES if family is None else (family,))
    if family is None:  # the unified name: the socket's family, once it is known to be one
        check_listening_stream(0, IP_FAMILIES)
        family = socket_kind(0)[0]
    policy = tcp_access_fast_path(config.argv, config.verbosity)
    run_daemon(reporter, config, reporter.name + " (child)", TcpPeers(family), policy,
               program=reporter.name.removeprefix("s6-"))
