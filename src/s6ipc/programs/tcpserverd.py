"""tcpserver4d, tcpserver6d, tcpserverd: accept TCP connections on fd 0, spawn prog per connection.

The loop is ipcserverd's (:class:`s6ipc.serve.loop.Server`) with a TCP peer identity
(:class:`s6ipc.serve.tcppeer.TcpPeers`): per-IP ``-C``, ``TCPREMOTEIP``/``TCPREMOTEPORT``/
``TCPCONNNUM``, s6-tcpserver4d's or 6d's log lines and ``-1`` port line. ``tcpserverd`` (the
unified name of s6-networking 2.6+) serves either family, with 4d's formats on an IPv4 socket and
6d's on an IPv6 one — the 2.5.1.3 formats, not 2.6's (docs/tcpserverd.md). As with ipcserverd,
the socket may also come from systemd (``LISTEN_FDS``), readiness reaches ``$NOTIFY_SOCKET``, and
our own ``tcpserver-access`` as prog is done in-process (:func:`.chain.fastpath.tcp_access_fast_path`).
"""

from __future__ import annotations

import _socket

from ..base.messages import Reporter
from ..chain.daemon import parse, run_daemon
from ..chain.fastpath import tcp_access_fast_path
from ..serve.intake import take_daemon_socket
from ..serve.tcppeer import TcpPeers
from ..sockets.unix import IP_FAMILIES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

    from ..daemon.lifecycle import State

USAGE = "[ -v verbosity ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] prog..."
#: What the state and the live view of each name are called.
KINDS = ("tcpserver4d", "tcpserver6d", "tcpserverd")


def family_of_name(name: str) -> Optional[int]:
    """``AF_INET`` for ``[s6-]tcpserver4d``, ``AF_INET6`` for ``…6d``, None for ``tcpserverd``."""
    if name.endswith("4d"):
        return _socket.AF_INET
    if name.endswith("6d"):
        return _socket.AF_INET6
    return None


def preflight(args: List[str]) -> None:
    """What ``s6ipc preflight tcpserver4d ARGS…`` checks before an in-place upgrade: the options
    parse, and this code reads the running daemon's state (given on stdin) with TCP peers."""
    from ..base.clock import SYSTEM_CLOCK
    from ..chain.daemon import admission
    from ..daemon.lifecycle import preflight_check
    from ..serve.life import parse_state

    config = parse(args, credentials=False)
    limits = admission(config, True, Reporter("tcpserverd"), SYSTEM_CLOCK.monotonic)
    preflight_check(KINDS, lambda state: parse_state(state.daemon, TcpPeers(_family_of_state(state)), limits))


def _family_of_state(state: State) -> int:
    """The family of a tcpserverd state's peers: its program's, or (the unified name) its addresses'."""
    family = family_of_name(state.kind)
    if family is not None:
        return family
    peers = dict(state.daemon["children"]).values()
    return _socket.AF_INET6 if any(":" in str(list(peer)[0]) for peer in peers) else _socket.AF_INET


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args, credentials=False)
    wanted = family_of_name(reporter.name)
    # fd 0 checked here, once (the unified name learns the socket's family from it)
    family = take_daemon_socket(reporter.warn, IP_FAMILIES if wanted is None else (wanted,))
    policy = tcp_access_fast_path(config.argv, config.verbosity)
    run_daemon(reporter, config, reporter.name + " (child)", TcpPeers(family), policy,
               program=reporter.name.removeprefix("s6-"), args=args)
