"""ipcserverd: accept connections on the listening socket on fd 0, spawn prog per connection.

Beyond s6 (see docs/ipcserverd.md): the listening socket may also come from systemd, and readiness
reaches systemd too. Sources, in this order: (1) fd 0 when it is a socket — s6's convention, checked
exactly as s6 does; (2) a socket systemd passed to this process (``LISTEN_FDS``/``LISTEN_PID``: the
one listening Unix stream socket among them), moved to fd 0. ``LISTEN_*`` leave the environment
either way. With ``$NOTIFY_SOCKET`` set, ``READY=1`` (+ ``STATUS=``) follows the ``-1`` newline
and ``STOPPING=1`` is sent when the loop ends; with ``$WATCHDOG_USEC``, the loop pings ``WATCHDOG=1``
every half interval. ``NOTIFY_SOCKET``, ``LISTEN_*`` and ``WATCHDOG_*`` never reach a child.
"""

from __future__ import annotations

import os
from typing import Callable, List, NamedTuple, NoReturn, Optional

from ..activation import socket_address
from ..errors import S6ipcError
from ..execution import Spawner
from ..intake import take_daemon_socket
from ..messages import Reporter, flush_stdio
from ..options import UsageError, getopt, parse_uint
from ..peers import PeerIdentity
from ..readiness import Notifier, Readiness
from ..server import ConnectionPolicy, Heartbeat, Server, ServerConfig
from ..sockets import local_path
from .chain import exec_into, own_program_call

USAGE = "[ -v verbosity ] [ -1 ] [ -P | -p ] [ -c maxconn ] [ -C localmaxconn ] prog..."


def parse(args: List[str], credentials: bool = True) -> ServerConfig:
    """Parse s6-ipcserverd's command line (without *credentials*, s6-tcpserverd's: no ``-P/-p``).
    Raises :class:`UsageError`."""
    opts, rest = getopt(args, "v:1Ppc:C:" if credentials else "v:1c:C:")
    config = ServerConfig(rest)
    for letter, value in opts:
        if letter == "v":
            config.verbosity = parse_uint(value or "")
        elif letter == "1":
            config.notify = True
        elif letter in "Pp":
            config.lookup = letter == "p"
        elif letter == "c":
            config.maxconn = parse_uint(value or "")
        elif letter == "C":
            config.localmaxconn = parse_uint(value or "")
    if not rest or not rest[0]:
        raise UsageError("no program")
    return config


def access_fast_path(config: ServerConfig) -> Optional[ConnectionPolicy]:
    """The in-process policy replacing our own ipcserver-access as prog, or None.

    Applies when prog is ``S6IPC [s6-]ipcserver-access OPTIONS… prog…`` (see
    :func:`own_program_call`) with valid options and ``-p`` (with ``-P`` the program would only
    fail, which it then does itself). See :mod:`s6ipc.access` for what the fast path guarantees.
    """
    call = own_program_call(config.argv)
    if not config.lookup or call is None or call.name != "ipcserver-access":
        return None
    from ..access import FastAccess, parse_options, refusal_standin

    try:
        options = parse_options(call.args)
    except UsageError:
        return None
    return FastAccess(options, Reporter(call.word), Spawner(config.argv), refusal_standin(config.verbosity))


def _quietly(reporter: Reporter, send: Callable[[], object]) -> Callable[[], None]:
    """A readiness hook that turns a notification failure into a warning: serving matters more."""

    def hook() -> None:
        try:
            send()
        except S6ipcError as e:
            reporter.warn(str(e))

    return hook


class ReadinessSinks(NamedTuple):
    """Server's on_ready / on_exit hooks and heartbeat, as the environment asks for them."""

    on_ready: List[Callable[[], None]]
    on_exit: List[Callable[[], None]]
    heartbeat: Optional[Heartbeat]


def readiness_sinks(config: ServerConfig, reporter: Reporter) -> ReadinessSinks:
    """sd_notify and the watchdog, from the environment (taken out of it)."""
    try:
        readiness = Readiness.from_environment()
    except S6ipcError as e:  # a bad WATCHDOG_USEC: say so, notify anyway
        reporter.warn(str(e))
        readiness = Readiness(Notifier.from_environment())
    sinks = ReadinessSinks([], [], None)
    if readiness.notifier.enabled:
        maxconn = config.normalised().maxconn

        def ready() -> None:
            readiness.ready(f"accepting connections on {_local_name()} (at most {maxconn} at once)")

        sinks.on_ready.append(_quietly(reporter, ready))
        sinks.on_exit.append(_quietly(reporter, readiness.stopping))
    if readiness.watchdog_interval is not None:
        sinks = sinks._replace(heartbeat=(readiness.watchdog_interval / 2,
                                          _quietly(reporter, readiness.watchdog)))
    return sinks


def _local_name() -> str:
    try:
        return local_path(0) or socket_address(0) or "an unnamed socket"  # IP:PORT for TCP
    except S6ipcError:
        return "fd 0"


def run_daemon(reporter: Reporter, config: ServerConfig, child_name: str,
               identity: Optional[PeerIdentity], policy: Optional[ConnectionPolicy]) -> NoReturn:
    """Serve the socket on fd 0 with the loop (readiness sinks from the environment); exit with
    its code, or exec what it ended with."""
    sinks = readiness_sinks(config, reporter)
    server = Server(config, reporter, Reporter(child_name), identity=identity, policy=policy,
                    on_ready=sinks.on_ready, on_exit=sinks.on_exit, heartbeat=sinks.heartbeat)
    server.start()
    ending = server.serve()
    flush_stdio()
    if ending.exec_argv is not None:
        exec_into(reporter, ending.exec_argv)
    os._exit(ending.code)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args)
    take_daemon_socket(reporter.warn)
    child_name = reporter.name[:-1] if reporter.name.endswith("d") else reporter.name
    run_daemon(reporter, config, child_name + " (child)", None, access_fast_path(config))
