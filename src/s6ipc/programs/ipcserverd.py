"""ipcserverd: accept connections on the listening socket on fd 0, spawn prog per connection.

Beyond s6 (see docs/ipcserverd.md): the listening socket may also come from systemd, and readiness
reaches systemd too. Sources, in this order: (1) fd 0 when it is a socket — s6's convention, checked
exactly as s6 does; (2) a socket systemd passed to this process (``LISTEN_FDS``/``LISTEN_PID``: the
one listening Unix stream socket among them), moved to fd 0. ``LISTEN_*`` leave the environment
either way. With ``$NOTIFY_SOCKET`` set, ``READY=1`` (+ ``STATUS=``) follows the ``-1`` newline
and ``STOPPING=1`` is sent when the loop ends; with ``$WATCHDOG_USEC``, the loop pings ``WATCHDOG=1``
every half interval. ``NOTIFY_SOCKET``, ``LISTEN_*`` and ``WATCHDOG_*`` never reach a child.

Also beyond s6: SIGUSR2 upgrades the daemon in place — preflight of the installed code, then an
``execve`` of it in the same PID keeping fd 0, the children and the state (:mod:`s6ipc.inplace`,
:mod:`s6ipc.handoff`); the live view answers on ``@s6ipc/status/ipcserverd/PID``
(:mod:`s6ipc.liveview`); under systemd ``STATUS=`` follows the counts, at most once a second.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Dict, List, NamedTuple, NoReturn, Optional

from .. import __version__
from ..errors import S6ipcError
from ..execution import DEFAULT_PATH, Spawner, exec_argv
from ..handoff import block_signals, keep_across_exec, reexec_argv, restore_mask, take_state, write_state
from ..handoff import preflight as check_installed
from ..inplace import ServerLife
from ..intake import take_daemon_socket
from ..liveview import StatusLine, StatusSocket, every
from ..messages import Reporter, flush_stdio
from ..options import UsageError, getopt, parse_uint
from ..readiness import Notifier, Readiness
from ..server import HANDLED_SIGNALS, ConnectionPolicy, Heartbeat, Server, ServerConfig
from ..sockets import local_path
from .chain import own_prefix, program_name

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


def preflight(args: List[str]) -> None:
    """What ``s6ipc preflight ipcserverd ARGS…`` checks before an in-place upgrade: the options
    parse, and the access fast path they imply can be built. Raises :class:`UsageError`."""
    access_fast_path(parse(args))


def _names_us(word: str, entry: str) -> bool:
    """Whether running *word* (PATH-searched as exec would) runs the entry-point script *entry*."""
    if "/" in word:
        candidates = [word]
    else:
        candidates = [f"{d}/{word}" for d in os.environ.get("PATH", DEFAULT_PATH).split(":") if d]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.realpath(candidate) == os.path.realpath(entry)
    return False


def access_fast_path(config: ServerConfig) -> Optional[ConnectionPolicy]:
    """The in-process policy replacing our own ipcserver-access as prog, or None.

    Applies when prog is ``S6IPC [s6-]ipcserver-access OPTIONS… prog…`` where S6IPC is
    :func:`own_prefix` or, by path or PATH search, the same ``s6ipc`` entry-point file, with valid
    options and ``-p`` (with ``-P`` the program would only fail, which it then does itself). See
    :mod:`s6ipc.access` for what the fast path guarantees.
    """
    prefix = own_prefix()
    argv = config.argv
    if argv[: len(prefix)] == prefix:
        n = len(prefix)
    elif len(prefix) == 1 and _names_us(argv[0], prefix[0]):
        n = 1
    else:
        return None
    if not config.lookup or len(argv) <= n or program_name(argv[n]) != "ipcserver-access":
        return None
    from ..access import FastAccess, parse_options

    try:
        options = parse_options(argv[n + 1 :])
    except UsageError:
        return None
    standin = Spawner(["false"], path_env={"PATH": DEFAULT_PATH}) if config.verbosity >= 2 else None
    return FastAccess(options, Reporter(argv[n]), Spawner(argv), standin)


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
        return local_path(0) or "an unnamed socket"
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


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args)
    state = take_state()
    if state is not None:
        for name, value in dict(state.get("environment") or {}).items():
            if name in _READINESS_VARIABLES:
                os.environ[name] = str(value)
        config.notify = False  # the -1 newline was written by the first image
    take_daemon_socket(reporter.warn)
    child_name = reporter.name[:-1] if reporter.name.endswith("d") else reporter.name
    sinks = readiness_sinks(config, reporter)
    server = Server(config, reporter, Reporter(child_name + " (child)"), policy=access_fast_path(config),
                    on_ready=sinks.on_ready, on_exit=sinks.on_exit, heartbeat=sinks.heartbeat)
    life = ServerLife(server, "ipcserverd")
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
    upgrader = Upgrader(reporter, args, server, life, sinks.readiness)
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
