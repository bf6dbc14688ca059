"""What the daemons' programs share (ipcserverd, tcpserver4d/6d/tcpserverd, fdholderd): the spawning
servers' command line and readiness sinks, and the run of a daemon over its life
(:mod:`s6ipc.daemon.lifecycle`) — the one place where an in-place upgrade's exec happens.

Not a program: the program modules import it (as they import :mod:`.run`), never each other.

* **Readiness.** With ``$NOTIFY_SOCKET`` set, ``READY=1`` (+ ``STATUS=``) follows the ``-1`` newline
  and ``STOPPING=1`` is sent when the loop ends; with ``$WATCHDOG_USEC``, the loop pings
  ``WATCHDOG=1`` every half interval; ``STATUS=`` follows the counts, at most once a second.
  ``NOTIFY_SOCKET``, ``LISTEN_*`` and ``WATCHDOG_*`` never reach a child.
* **In-place upgrade** (SIGUSR2) and the live view (``@s6ipc/status/PROGRAM/PID``): the lifecycle's.
"""

from __future__ import annotations

import _signal
import os

from .. import __version__
from ..base.clock import SYSTEM_CLOCK
from ..base.errors import S6ipcError
from ..base.execution import exec_argv
from ..base.messages import Reporter, flush_stdio
from ..base.options import Command, collect, flag, parse_uint, setting
from ..base.s6release import s6_release
from ..base.typeshim import NamedTuple
from ..daemon.lifecycle import Ending, Lifecycle, State, System
from ..daemon.liveview import StatusLine, every
from ..daemon.readiness import Notifier, Readiness
from ..serve.life import ServerLife
from ..serve.loop import Server, ServerConfig
from ..serve.peers import PeerIdentity, UnixPeers
from ..sockets.unix import local_path, socket_address

__all__ = ["parse", "admission", "ReadinessSinks", "readiness_sinks", "system", "serve_on", "run_daemon"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, NoReturn, Optional

    from ..base.log import Log
    from ..serve.admission import Admission
    from ..serve.loop import ConnectionPolicy, Heartbeat


__TCP_COMMAND = {
    "v": setting("verbosity", parse_uint), "1": flag("notify"), "c": setting("maxconn", parse_uint),
    "C": setting("localmaxconn", parse_uint), "A": collect("admission"),
}
#: s6-tcpserverd's command line, into a :class:`ServerConfig`; s6-ipcserverd's adds ``-P/-p``.
_TCP_COMMAND = Command(__TCP_COMMAND, program=True)
_IPC_COMMAND = Command({**__TCP_COMMAND, "P": flag("lookup", False), "p": flag("lookup", True)}, program=True)


def parse(args: List[str], credentials: bool = True) -> ServerConfig:
    """Parse s6-ipcserverd's command line (without *credentials*, s6-tcpserverd's: no ``-P/-p``).
    Raises :class:`UsageError`, or :class:`~s6ipc.base.errors.BadInput` for a bad ``S6IPC_S6``."""
    config = ServerConfig([], release=s6_release(os.environ))
    config.argv = (_IPC_COMMAND if credentials else _TCP_COMMAND).parse(args, config)
    return config


def admission(config: ServerConfig, tcp: bool, log: Log,
              monotonic: Callable[[], float]) -> Optional[Admission]:
    """The ``-A`` limits of *config* for a TCP server (else an IPC one), None without ``-A``.
    Raises :class:`BadInput` (a bad item, exit 100) or :class:`SystemFailure` (``@PATH`` unreadable)."""
    if not config.admission:
        return None
    from ..serve.admission import AddressSources, Admission, UidSources, parse_limits  # only with -A

    limits = parse_limits(config.admission, tcp)
    assert limits is not None
    sources = AddressSources(limits.prefix4, limits.prefix6) if tcp else UidSources(config.lookup)
    return Admission(limits, sources, log, monotonic)


def _quietly(reporter: Reporter, send: Callable[[], object]) -> Callable[[], None]:
    """A readiness hook that turns a notification failure into a warning: serving matters more."""

    def hook() -> None:
        try:
            send()
        except S6ipcError as e:
            reporter.warn(str(e))

    return hook


class ReadinessSinks(NamedTuple):
    """Server's on_ready / on_exit hooks and heartbeat, as the environment asks for them, and the
    :class:`Readiness` they send through."""

    on_ready: List[Callable[[], None]]
    on_exit: List[Callable[[], None]]
    heartbeat: Optional[Heartbeat]
    readiness: Readiness


def readiness_sinks(config: ServerConfig, reporter: Reporter) -> ReadinessSinks:
    """sd_notify and the watchdog, from the environment (taken out of it)."""
    try:
        readiness = Readiness.from_environment()
    except S6ipcError as e:  # a bad WATCHDOG_USEC: say so, notify anyway
        reporter.warn(str(e))
        readiness = Readiness(Notifier.from_environment())
    sinks = ReadinessSinks([], [], None, readiness)
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


def system() -> System:
    """The real operating system for a daemon's life; its exec is :func:`exec_argv` (s6's)."""
    return System(exec_argv)


def serve_on(life: Lifecycle, serve: Callable[[], Ending], resume: Callable[[], None]) -> NoReturn:
    """Run the loop (*serve*) and exit with its code; an in-place upgrade's exec is done here, and
    when it fails (undone and said by the lifecycle) the loop goes on (*resume*, then *serve*)."""
    while True:
        ending = serve()
        flush_stdio()
        if ending.exec_argv is None:
            life.ending()
            os._exit(ending.code)
        life.replace(ending.exec_argv)
        resume()


def _keep_status(reporter: Reporter, server: Server, life: Lifecycle, readiness: Readiness, *,
                 fresh: bool) -> None:
    """``STATUS=`` from the loop's timer, on the server's clock. A fresh start keeps READY's
    "accepting connections on …" until the counts move; the image after an upgrade shows the
    counts it took over at once."""

    def send(text: str) -> None:
        _quietly(reporter, lambda: readiness.status(text))()

    line = StatusLine(send, life.status_text, monotonic=server.clock.monotonic, quiet_first=fresh)
    beats = [(1.0, line.tick)] + ([server.heartbeat] if server.heartbeat else [])
    server.heartbeat = every(beats, server.clock.monotonic)


def _unless_exec(server: Server, hook: Callable[[], None]) -> Callable[[], None]:
    def maybe() -> None:
        if not server.exec_pending:
            hook()

    return maybe


def run_daemon(reporter: Reporter, config: ServerConfig, child_name: str,
               identity: Optional[PeerIdentity], policy: Optional[ConnectionPolicy], *,
               program: str, args: List[str]) -> NoReturn:
    """Serve the socket on fd 0 with the loop, over the daemon's life: *program* names its state
    and live view, *args* are its own arguments (SIGUSR2 re-runs them from the installed code)."""
    identity = identity if identity is not None else UnixPeers(config.lookup)
    clock = SYSTEM_CLOCK
    limits = admission(config, identity.unit == "ip", reporter, clock.monotonic)  # a bad -A: exit 100 here
    os_ = system()
    state: Optional[State] = Lifecycle.take(os_, program, reporter)
    if state is not None:
        config.notify = False  # the -1 newline was written by the first image
    sinks = readiness_sinks(config, reporter)
    server = Server(config, reporter, Reporter(child_name), identity=identity, policy=policy,
                    on_ready=sinks.on_ready, heartbeat=sinks.heartbeat, clock=clock, admission=limits)
    part = ServerLife(server, os_.process_ages, os_.our_children)
    life = Lifecycle(program, reporter.name, args, part, reporter, sinks.readiness,
                     held_signals=lambda: server.signals, system=os_, loop=server, clock=server.clock,
                     verbosity=config.verbosity, guard=part.guard)
    server.on_exit = [_unless_exec(server, hook) for hook in sinks.on_exit]  # no STOPPING=1
    if state is not None:
        life.adopt(state)
    if sinks.readiness.notifier.enabled:
        _keep_status(reporter, server, life, sinks.readiness, fresh=state is None)

    server.on_signal(_signal.SIGUSR2, life.requested)
    server.start(checked=True)  # the intake (take_daemon_socket) checked fd 0
    life.open_live_view(server.watch, state)
    if state is not None:
        life.resumed(state, part.released(state.daemon))  # the stand-in stops: the loop serves next
        if config.verbosity >= 2:
            reporter.info(f"upgraded in place: s6ipc {__version__}, generation {life.generation}, "
                          f"{len(server.children)} connections taken over")
    serve_on(life, server.serve, server.serve_on)
