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

from ..errors import S6ipcError
from ..execution import DEFAULT_PATH, Spawner
from ..intake import take_daemon_socket
from ..messages import Reporter, flush_stdio
from ..options import UsageError, getopt, parse_uint
from ..readiness import Notifier, Readiness
from ..server import ConnectionPolicy, Heartbeat, Server, ServerConfig
from ..sockets import local_path
from .chain import exec_into
from .entry import own_program, program_name

USAGE = "[ -v verbosity ] [ -1 ] [ -P | -p ] [ -c maxconn ] [ -C localmaxconn ] prog..."


def parse(args: List[str]) -> ServerConfig:
    """Parse s6-ipcserverd's command line. Raises :class:`UsageError`."""
    opts, rest = getopt(args, "v:1Ppc:C:")
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

    Applies when prog runs our ipcserver-access in any spelling (``s6ipc ipcserver-access``, an
    ``s6-ipcserver-access`` link, a path to either: :func:`~s6ipc.programs.entry.own_program`),
    with valid options and ``-p`` (with ``-P`` the program would only fail, which it then does
    itself). See :mod:`s6ipc.access` for what the fast path guarantees.
    """
    ours = own_program(config.argv)
    if not config.lookup or ours is None or program_name(ours[0]) != "ipcserver-access":
        return None
    from ..access import FastAccess, parse_options

    word, args = ours
    try:
        options = parse_options(args)
    except UsageError:
        return None
    standin = Spawner(["false"], path_env={"PATH": DEFAULT_PATH}) if config.verbosity >= 2 else None
    return FastAccess(options, Reporter(word), Spawner(config.argv), standin)


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
        return local_path(0) or "an unnamed socket"
    except S6ipcError:
        return "fd 0"


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args)
    take_daemon_socket(reporter.warn)
    child_name = reporter.name[:-1] if reporter.name.endswith("d") else reporter.name
    sinks = readiness_sinks(config, reporter)
    server = Server(config, reporter, Reporter(child_name + " (child)"), policy=access_fast_path(config),
                    on_ready=sinks.on_ready, on_exit=sinks.on_exit, heartbeat=sinks.heartbeat)
    server.start()
    ending = server.serve()
    flush_stdio()
    if ending.exec_argv is not None:
        exec_into(reporter, ending.exec_argv)
    os._exit(ending.code)
