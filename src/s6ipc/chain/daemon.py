"""What the spawning daemons' programs share (ipcserverd, tcpserver4d/6d/tcpserverd): their
options, readiness sinks, and the run of the loop — with SIGUSR2's in-place upgrade and the live view.

Not a program: the program modules import it (as they import :mod:`.chain`), never each other.

* **Readiness.** With ``$NOTIFY_SOCKET`` set, ``READY=1`` (+ ``STATUS=``) follows the ``-1`` newline
  and ``STOPPING=1`` is sent when the loop ends; with ``$WATCHDOG_USEC``, the loop pings
  ``WATCHDOG=1`` every half interval; ``STATUS=`` follows the counts, at most once a second.
  ``NOTIFY_SOCKET``, ``LISTEN_*`` and ``WATCHDOG_*`` never reach a child.
* **In-place upgrade** (SIGUSR2): preflight of the installed code, then an ``execve`` of it in the
  same PID keeping fd 0, the children and the state (:mod:`s6ipc.inplace`, :mod:`s6ipc.upgrade`);
  the live view answers on ``@s6ipc/status/PROGRAM/PID`` (:mod:`s6ipc.liveview`).
"""

from __future__ import annotations

import os
import signal

from .. import __version__
from ..base.errors import S6ipcError
from ..base.execution import exec_argv
from ..base.messages import Reporter, flush_stdio
from ..base.options import UsageError, getopt, parse_uint
from ..base.typeshim import NamedTuple
from ..daemon.liveview import StatusLine, StatusSocket, every
from ..daemon.readiness import Notifier, Readiness
from ..daemon.upgrade import (
    block_signals,
    keep_across_exec,
    reexec_argv,
    restore_mask,
    take_state,
    write_state,
)
from ..daemon.upgrade import preflight as check_installed
from ..serve.life import ServerLife
from ..serve.loop import HANDLED_SIGNALS, Server, ServerConfig
from ..serve.peers import PeerIdentity
from ..sockets.listenfds import socket_address
from ..sockets.unix import local_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, NoReturn, Optional

    from ..serve.loop import ConnectionPolicy, Heartbeat


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


#: Where the readiness sinks ride across an in-place upgrade (the environment of the first image).
_READINESS_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _readiness_state(readiness: Readiness) -> Dict[str, str]:
    """The variables that give the next image the same sinks (taken out of os.environ at start)."""
    kept = {}
    if readiness.notifier.address is not None:
        kept["NOTIFY_SOCKET"] = readiness.notifier.address
    if readiness.watchdog_interval is not None:
        kept["WATCHDOG_USEC"] = str(round(readiness.watchdog_interval * 1e6))
        kept["WATCHDOG_PID"] = str(os.getpid())
    return kept


class Upgrader:
    """SIGUSR2: preflight the installed code, then end the loop for the exec; and the exec itself."""

    def __init__(self, reporter: Reporter, args: List[str], server: Server, life: ServerLife,
                 readiness: Readiness) -> None:
        self.reporter, self.args, self.server = reporter, args, server
        self.life, self.readiness = life, readiness
        self.status: Optional[StatusSocket] = None
        self.upgrading = False

    def unless_upgrading(self, hook: Callable[[], None]) -> Callable[[], None]:
        """*hook* (an on_exit hook: STOPPING=1) skipped when the loop ends for the next image."""

        def maybe() -> None:
            if not self.upgrading:
                hook()

        return maybe

    def requested(self) -> None:
        """From the loop: upgrade if the installed code can start, else say why and go on."""
        verbosity = self.server.config.verbosity
        if verbosity >= 2:
            self.reporter.info("received SIGUSR2, checking the installed s6ipc before upgrading in place")
        feed_watchdog = _quietly(self.reporter, self.readiness.watchdog)
        feed_watchdog()  # the loop waits for the preflight: the watchdog must not starve meanwhile
        reason = check_installed(self.reporter.name, self.args)
        feed_watchdog()
        if reason is not None:
            if verbosity >= 1:
                self.reporter.warn(f"unable to upgrade in place: {reason}; "
                                   f"still serving with s6ipc {__version__}")
            return
        _quietly(self.reporter, self.readiness.reloading)()
        self.upgrading = True
        self.server.stop_for_exec(reexec_argv(self.reporter.name, self.args))

    def exec_next(self, argv: List[str]) -> NoReturn:
        """Hand the state over and exec *argv*; an exec failure is fatal (111: the supervisor restarts)."""
        mask = block_signals(HANDLED_SIGNALS + (signal.SIGUSR2,))
        keep = [self.server.listen_fd]
        extra: Dict[str, Any] = {"sigmask": mask, "environment": _readiness_state(self.readiness),
                                 "status_fd": None}
        if self.status is not None:
            keep.append(self.status.fileno())
            extra["status_fd"] = self.status.fileno()
        try:
            write_state(self.life.handoff(extra))
            keep_across_exec(keep)
            if self.server.config.verbosity >= 2:
                self.reporter.info(f"upgrading in place: exec {' '.join(argv[:2])}")
            flush_stdio()
            exec_argv(argv)
        except S6ipcError as e:
            self.reporter.fatal(f"unable to upgrade in place: {e}", 111)


def _take_over(reporter: Reporter, step: Callable[[], None]) -> None:
    """One step of the new image adopting the previous one's state; any failure is one line and
    exit 111."""
    try:
        step()
    except Exception as e:  # the new version's own bug: the supervisor must see the exit
        text = f"no {e} in the handoff state" if isinstance(e, KeyError) else " ".join(str(e).split())
        text = text or type(e).__name__
        reporter.fatal(f"unable to take over from the previous image: {text}", 111)


def _live_view(reporter: Reporter, life: ServerLife, fd: Optional[int]) -> Optional[StatusSocket]:
    try:
        return StatusSocket(life.program, life.describe, fd)
    except S6ipcError as e:  # no live view is no reason not to serve
        reporter.warn(f"{e}: no live view")
        return None


def take_previous_state(config: ServerConfig) -> Optional[Dict[str, Any]]:
    """The state an in-place upgrade handed over (None on a fresh start): the readiness variables
    go back into the environment, and the ``-1`` newline is not written again."""
    state = take_state()
    if state is not None:
        for name, value in dict(state.get("environment") or {}).items():
            if name in _READINESS_VARIABLES:
                os.environ[name] = str(value)
        config.notify = False  # the -1 newline was written by the first image
    return state


def run_daemon(reporter: Reporter, config: ServerConfig, child_name: str,
               identity: Optional[PeerIdentity], policy: Optional[ConnectionPolicy], *,
               program: str, args: Optional[List[str]] = None,
               state: Optional[Dict[str, Any]] = None) -> NoReturn:
    """Serve the socket on fd 0 with the loop (readiness sinks from the environment); exit with
    its code. With *args* (the daemon's own arguments), SIGUSR2 upgrades it in place and *state*
    is what the previous image handed over; the live view is named after *program*."""
    sinks = readiness_sinks(config, reporter)
    server = Server(config, reporter, Reporter(child_name), identity=identity, policy=policy,
                    on_ready=sinks.on_ready, on_exit=sinks.on_exit, heartbeat=sinks.heartbeat)
    life = ServerLife(server, program)
    if state is not None:
        _take_over(reporter, lambda: life.adopt(state))
    if sinks.readiness.notifier.enabled:
        readiness = sinks.readiness

        def send_status(text: str) -> None:
            _quietly(reporter, lambda: readiness.status(text))()

        # a fresh start keeps READY's "accepting connections on …" until the counts move; the
        # image after an upgrade shows the counts it took over at once
        line = StatusLine(send_status, life.status_text, quiet_first=state is None)
        beats = [(1.0, line.tick)] + ([server.heartbeat] if server.heartbeat else [])
        server.heartbeat = every(beats)
    upgrader = Upgrader(reporter, args or [], server, life, sinks.readiness)
    if args is not None:
        server.on_exit = [upgrader.unless_upgrading(hook) for hook in server.on_exit]
        server.on_signal(signal.SIGUSR2, upgrader.requested)
    server.start()
    status_fd = state.get("status_fd") if state else None
    upgrader.status = _live_view(reporter, life, status_fd if isinstance(status_fd, int) else None)
    if upgrader.status is not None:
        server.watch(upgrader.status.fileno(), upgrader.status.on_event)
    if state is not None:
        _take_over(reporter, lambda: restore_mask(state.get("sigmask") or ()))
        if config.verbosity >= 2:
            reporter.info(f"upgraded in place: s6ipc {__version__}, generation {life.generation}, "
                          f"{len(server.children)} connections taken over")
    ending = server.serve()
    flush_stdio()
    if ending.exec_argv is not None:
        upgrader.exec_next(ending.exec_argv)
    os._exit(ending.code)


