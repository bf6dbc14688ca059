"""ipcserverd: accept connections on the listening socket on fd 0, spawn prog per connection.

Beyond s6 (see docs/ipcserverd.md): the listening socket may also come from systemd, and readiness
reaches systemd too. Sources, in this order: (1) fd 0 when it is a socket — s6's convention, checked
exactly as s6 does; (2) a socket systemd passed to this process (``LISTEN_FDS``/``LISTEN_PID``: the
one listening Unix stream socket among them), moved to fd 0. ``LISTEN_*`` leave the environment
either way. Readiness, SIGUSR2's in-place upgrade and the live view: :mod:`s6ipc.chain.daemon`.
"""

from __future__ import annotations

from ..base.messages import Reporter
from ..chain.daemon import parse, run_daemon
from ..chain.fastpath import ipc_access_fast_path as access_fast_path
from ..serve.intake import take_daemon_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "[ -v verbosity ] [ -1 ] [ -P | -p ] [ -c maxconn ] [ -C localmaxconn ] prog..."


def preflight(args: List[str]) -> None:
    """What ``s6ipc preflight ipcserverd ARGS…`` checks before an in-place upgrade: the options
    parse, the access fast path they imply can be built, and this code reads the running daemon's
    state (given on stdin). Raises :class:`UsageError`, ValueError, KeyError, TypeError."""
    from ..base.clock import SYSTEM_CLOCK
    from ..chain.daemon import admission
    from ..daemon.lifecycle import preflight_check
    from ..serve.life import parse_state
    from ..serve.peers import UnixPeers

    config = parse(args)
    access_fast_path(config)
    limits = admission(config, False, Reporter("ipcserverd"), SYSTEM_CLOCK.monotonic)
    identity = UnixPeers(config.lookup)
    preflight_check(("ipcserverd",), lambda state: parse_state(state.daemon, identity, limits))


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args)
    take_daemon_socket(reporter.warn)  # fd 0 checked here, once: run_daemon starts with checked=True
    child_name = reporter.name[:-1] if reporter.name.endswith("d") else reporter.name
    run_daemon(reporter, config, child_name + " (child)", None, access_fast_path(config),
               program="ipcserverd", args=args)
