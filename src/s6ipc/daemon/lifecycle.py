"""One life for every daemon: start fresh or take over, the live view, and SIGUSR2's in-place upgrade.

Some facts about ``execve`` (Linux) that the life of a daemon across images relies on:

* **What survives**: the PID (the supervisor's view: s6-supervise's pid, systemd's ``MainPID``),
  the parent, the **children** (still ours to ``waitpid``), every descriptor *without*
  close-on-exec at the same number, the **signal mask** and the **pending signals** (a signal
  blocked across the exec waits for the new image's handlers), signals set to SIG_IGN, uids, gids,
  rlimits, the current directory. CLOCK_MONOTONIC is system-wide: a reading taken by the old
  image means the same in the new one, so uptime is counted on it.
* **What does not**: caught signals go back to SIG_DFL (a SIGTERM between the exec and the new
  image's handlers would kill it: the daemon's own signals are *blocked* across the exec, from
  its own table, and the new image lets them in once its handlers are in place), the memory
  (every Python object, every imported module), threads, close-on-exec descriptors (Python opens
  its own close-on-exec: those the state names are cleared of it just before the exec), and a
  memfd made with MFD_CLOEXEC (the state's memfd is made without: :mod:`s6ipc.daemon.upgrade`).

What that means for us — one path for ipcserverd, tcpserverd (4d/6d/unified) and fdholderd:

1. SIGUSR2 → :meth:`Lifecycle.requested`: ``RELOADING=1``, then the **preflight** of the code
   installed now, given the state it would take over (the child parses it: a new version that
   cannot read the running one's state is refused before anything happens). It is a child the
   daemon's loop watches (:class:`UpgradeLoop`), never waits for: the loop serves on, and the
   verdict comes back when the child is reaped; refused → one warning, ``READY=1``, serving
   goes on. A SIGUSR2 meanwhile is coalesced with the upgrade under way.
2. The daemon drains (fdholderd finishes the requests in progress; the spawning servers have
   nothing to drain: their connections belong to the children), then its loop returns
   ``Ending(exec_argv=…)``. The library never execs.
3. The program layer calls :meth:`Lifecycle.replace`, which blocks the held signals (and raises
   again those the loop left unread in its self-pipe, so that none is lost), forks the daemon's
   *guard* with them blocked (the spawning servers' stand-in, which serves during the exec:
   :mod:`s6ipc.serve.standin`; fdholderd's guardian: :mod:`s6ipc.fdholder.guardian`), writes the
   :class:`State` (a memfd), keeps the named descriptors and execs through the :class:`System`
   seam (the program gives it :func:`s6ipc.base.execution.exec_argv`).
4. **One failure policy.** If the exec fails (the interpreter was removed, ENOMEM…), everything
   is undone — the signal mask restored, close-on-exec set back on what was kept (fd 0, the
   listening socket inherited from the supervisor, stays as it was), the memfd discarded,
   ``READY=1`` after the ``RELOADING=1`` — one line ``NAME: warning: unable to upgrade in place:
   …`` is logged, and the daemon **serves on** with the same state. Dying 111 instead would lose
   more than it saves: a supervisor restart loses every descriptor fdholderd holds, and makes
   ipcserverd refuse clients while it restarts; the old image is still whole, so it goes on.
5. The new image: :meth:`Lifecycle.take` reads the state (``S6IPC_HANDOFF``), the readiness
   variables go back into the environment, :meth:`Lifecycle.adopt` gives the daemon its part.
   Once the exec has happened there is no old image left: a state this code cannot take over is
   one line ``unable to take over from the previous image: …``, ``STOPPING=1`` (the old image's
   ``RELOADING=1`` gets no ``READY=1``: systemd 257 would wait for one until its start timeout) and
   exit 111 (:class:`~s6ipc.base.errors.Unusable`), so that the supervisor restarts the service.

The daemon's part (:class:`DaemonPart`) is its own: what it hands over, what its live view
shows, its ``STATUS=`` line, its descriptors. The common fields of the live view (program, pid,
version, generation, uptime, started) and the lineage are this module's.
"""

from __future__ import annotations

import _signal
import errno
import os

from .. import __version__
from ..base.clock import SYSTEM_CLOCK, Clock
from ..base.cstrings import assign
from ..base.errors import S6ipcError, Unusable
from ..base.log import Log
from ..base.typeshim import NamedTuple, Protocol
from . import upgrade
from .liveview import NAME_VARIABLE, StatusSocket, status_name
from .readiness import NOTIFY_VARIABLES, Readiness
from .upgrade import PreflightChild

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, NoReturn, Optional, Sequence

__all__ = ["FORMAT", "Ending", "Lineage", "State", "DaemonPart", "UpgradeLoop", "System", "Lifecycle",
           "process_ages", "our_children", "take_over_text", "preflight_check"]

#: The layout of the state; a new image refuses a state of another format or another daemon's.
FORMAT = 2
_TICKS = os.sysconf("SC_CLK_TCK")


class Ending(NamedTuple):
    """Why a daemon's loop returned: exit with *code*, or — *exec_argv* set — exec that command
    line in the same PID (an in-place upgrade: the program layer does it, never the library)."""

    code: int = 0
    exec_argv: Optional[List[str]] = None


class Lineage(NamedTuple):
    """What a daemon is across its images: the generation (in-place upgrades since it started),
    when it started (wall clock, for people; CLOCK_MONOTONIC, for the uptime), the signal mask to
    restore, its status socket, and the readiness variables (``NOTIFY_SOCKET``, ``WATCHDOG_*``,
    taken out of the environment by the first image)."""

    generation: int
    started_wall: float
    started_monotonic: float
    sigmask: List[int]
    status_fd: Optional[int]
    readiness: Dict[str, str]
    #: In-place upgrades that happened, and those that did not (preflight refused, exec failed).
    upgrades: int = 0
    upgrade_failures: int = 0
    #: The last attempt: {"result": "ok"|"refused"|"failed", "reason", "pause_ms", "exec_ms", "at"}
    #: (wall time).
    last_upgrade: Optional[Dict[str, Any]] = None
    #: CLOCK_MONOTONIC just before the exec (the old image's): where the pause starts.
    exec_monotonic: Optional[float] = None


class State(NamedTuple):
    """What one image hands the next: *kind* (the program: ``ipcserverd``, ``tcpserver4d``,
    ``fdholderd``), the *version* that wrote it, the lineage, named descriptors {name: fd} and
    the daemon's own part (its :meth:`DaemonPart.to_state`)."""

    kind: str
    version: str
    lineage: Lineage
    descriptors: Dict[str, int]
    daemon: Dict[str, Any]

    def to_json(self) -> Dict[str, Any]:
        return {"format": FORMAT, "kind": self.kind, "version": self.version,
                "lineage": dict(self.lineage._asdict()), "descriptors": dict(self.descriptors),
                "daemon": self.daemon}

    @classmethod
    def from_json(cls, obj: Dict[str, Any], kind: str) -> State:
        """Read a state for daemon *kind*. Raises ValueError (of another format or daemon),
        KeyError or TypeError (malformed)."""
        if obj.get("format") != FORMAT:
            legacy = _from_release_0_1(obj, kind)
            if legacy is not None:
                return legacy
        if obj.get("format") != FORMAT or obj.get("kind") != kind:
            written_by = obj.get("kind", obj.get("program"))  # format 1 said "program"
            raise ValueError(f"a state of format {obj.get('format')!r} for {written_by!r}: "
                             f"this is {kind} format {FORMAT}")
        raw = obj["lineage"]
        fd = raw["status_fd"]
        last = raw.get("last_upgrade")
        at = raw.get("exec_monotonic")
        lineage = Lineage(int(raw["generation"]), float(raw["started_wall"]), float(raw["started_monotonic"]),
                          [int(s) for s in raw["sigmask"]], None if fd is None else int(fd),
                          {str(k): str(v) for k, v in dict(raw["readiness"]).items()
                           if k in NOTIFY_VARIABLES},
                          int(raw.get("upgrades", 0)), int(raw.get("upgrade_failures", 0)),
                          None if last is None else _last_upgrade(last), None if at is None else float(at))
        descriptors = {str(k): int(v) for k, v in dict(obj["descriptors"]).items()}
        daemon = obj["daemon"]
        if not isinstance(daemon, dict):
            raise TypeError("the daemon's part of the state is not an object")
        return cls(kind, str(obj["version"]), lineage, descriptors, daemon)


def _last_upgrade(raw: object) -> Dict[str, Any]:
    """The ``last_upgrade`` of a state, checked. Raises TypeError, ValueError."""
    last = dict(raw)  # type: ignore[call-overload]
    if last.get("result") not in ("ok", "refused", "failed"):
        raise ValueError(f"last_upgrade result {last.get('result')!r}")
    reason, pause, started = last.get("reason"), last.get("pause_ms"), last.get("exec_ms")
    return {"result": last["result"], "reason": None if reason is None else str(reason),
            "pause_ms": None if pause is None else float(pause),
            "exec_ms": None if started is None else float(started), "at": float(last["at"])}


def _from_release_0_1(obj: Dict[str, Any], kind: str) -> Optional[State]:
    """A state written by s6ipc 0.1 (before this module), so that a daemon of that release can be
    upgraded in place to this one: ipcserverd's format 1, fdholderd's unnumbered layout. None for
    anything else. Raises KeyError, TypeError, ValueError when it is malformed."""
    if obj.get("format") == 1 and obj.get("program") == kind:  # ipcserverd
        status_fd = obj["status_fd"]
        readiness = {str(k): str(v) for k, v in dict(obj["environment"]).items() if k in NOTIFY_VARIABLES}
        lineage = Lineage(int(obj["generation"]), float(obj["started_wall"]), float(obj["started"]),
                          [int(s) for s in obj["sigmask"]], None if status_fd is None else int(status_fd),
                          readiness)
        daemon = {"accepted": obj["accepted"], "refused": obj["refused"], "children": obj["children"]}
        return State(kind, "0.1", lineage, {"listen": 0}, daemon)
    if "format" not in obj and obj.get("kind") == kind and "started_ns" in obj:  # fdholderd
        import time

        started_wall = int(obj["started_ns"]) / 1e9  # it counted uptime on the wall clock
        status_fd = obj["status_fd"]
        started_monotonic = time.monotonic() - (time.time() - started_wall)
        lineage = Lineage(int(obj["generation"]), started_wall, started_monotonic,
                          [int(s) for s in obj["mask"]], None if status_fd is None else int(status_fd), {})
        daemon = obj["daemon"]
        if not isinstance(daemon, dict):
            raise TypeError("the daemon's part of the state is not an object")
        return State(kind, str(obj["version"]), lineage, {}, daemon)
    return None


class DaemonPart(Protocol):
    """What a daemon gives its life: its state, its live view, its ``STATUS=``, its descriptors."""

    def to_state(self) -> Dict[str, Any]:
        """The daemon's part of the state (JSON data)."""
        ...

    def restore(self, state: Dict[str, Any]) -> None:
        """Take over *state* (what :meth:`to_state` wrote in the previous image). Raises
        ValueError, KeyError or TypeError when this code cannot."""
        ...

    def describe(self) -> Dict[str, Any]:
        """The daemon's fields of the live view's document."""
        ...

    def status_text(self) -> str:
        """systemd's ``STATUS=`` line."""
        ...

    def descriptors(self) -> Dict[str, int]:
        """The descriptors the state names, by name: kept open across the exec."""
        ...


class UpgradeLoop(Protocol):
    """What the lifecycle asks of a daemon's loop during an upgrade (ipcserverd's and tcpserverd's
    :class:`~s6ipc.serve.loop.Server`, :class:`~s6ipc.fdholder.server.FdHolderDaemon`)."""

    def watch(self, fd: int, on_event: Callable[[int], None]) -> None:
        """Poll *fd* too; call *on_event(mask)* from the loop when it is ready."""
        ...

    def unwatch(self, fd: int) -> None:
        ...

    def expect_child(self, pid: int, on_exit: Callable[[int], None]) -> None:
        """When child *pid* is reaped (with the loop's other children, not counted as one of its
        connections), call *on_exit(wait status)* from the loop."""
        ...

    def stop_for_exec(self, argv: List[str]) -> None:
        """End the loop (after the daemon's drain) for the exec of *argv*."""
        ...

    def unread_signals(self) -> bytes:
        """The signal numbers in the self-pipe that the loop has not read yet (taken out of it)."""
        ...


def process_ages(pids: Iterable[int]) -> Dict[int, Optional[float]]:
    """Seconds since each process of *pids* started (None: gone), from the kernel's start times
    (:func:`s6ipc.daemon.upgrade.start_ticks`): they survive any number of upgrades and cost
    nothing per connection."""
    with open("/proc/uptime", "rb") as f:
        now = float(f.read().split()[0])
    ages: Dict[int, Optional[float]] = {}
    for pid in pids:
        ticks = upgrade.start_ticks(pid)
        ages[pid] = None if ticks is None else max(0.0, now - ticks / _TICKS)
    return ages


def our_children(pids: Iterable[int]) -> List[int]:
    """Those of *pids* that are this process's children (running, or exited and not yet reaped):
    ``waitid(P_PID, pid, WEXITED|WNOHANG|WNOWAIT)`` fails with ECHILD for any other process, and
    reaps nothing. A state may only make a daemon adopt these: it never signals another's process."""
    mine = []
    for pid in pids:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            continue
        except OSError:  # EINTR…: it is not known to be ours
            continue
        mine.append(pid)
    return mine


class System:
    """The operating system as the lifecycle uses it (tests/support/lifecycle.py fakes it).

    *exec* replaces the process image (:func:`s6ipc.base.execution.exec_argv`, given by the program
    layer); it returns only by raising."""

    def __init__(self, exec: Callable[[List[str]], NoReturn]) -> None:
        self._exec = exec

    def exec(self, argv: List[str]) -> NoReturn:
        from ..base.messages import flush_stdio

        flush_stdio()
        self._exec(argv)

    def start_preflight(self, program: str, args: Sequence[str], state: Dict[str, Any]) -> PreflightChild:
        return upgrade.start_preflight(program, args, state=state)

    def reexec_argv(self, program: str, args: Sequence[str]) -> List[str]:
        return upgrade.reexec_argv(program, args)

    def write_state(self, state: Dict[str, Any]) -> int:
        return upgrade.write_state(state)

    def take_state(self, warn: Callable[[str], object]) -> Optional[Dict[str, Any]]:
        return upgrade.take_state(warn)

    def discard_state(self, fd: int) -> None:
        upgrade.discard_state(fd)

    def keep_across_exec(self, fds: Iterable[int]) -> None:
        upgrade.keep_across_exec(fds)

    def close_on_exec(self, fds: Iterable[int]) -> None:
        for fd in fds:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass

    def block_signals(self, signals: Iterable[int]) -> List[int]:
        return upgrade.block_signals(signals)

    def restore_mask(self, mask: Iterable[int]) -> None:
        upgrade.restore_mask(mask)

    def raise_signal(self, sig: int) -> None:
        """Send *sig* to this process (blocked: it stays pending across the exec)."""
        os.kill(os.getpid(), sig)

    def take_pending(self, sig: int) -> None:
        """Consume *sig* if it is pending (blocked), so that it is never delivered."""
        _signal.sigtimedwait([sig], 0)

    def process_ages(self, pids: Iterable[int]) -> Dict[int, Optional[float]]:
        return process_ages(pids)

    def our_children(self, pids: Iterable[int]) -> List[int]:
        return our_children(pids)


def take_over_text(e: BaseException) -> str:
    """The one line of a state this code cannot take over."""
    text = f"no {e} in the handoff state" if isinstance(e, KeyError) else " ".join(str(e).split())
    return f"unable to take over from the previous image: {text or type(e).__name__}"


def preflight_check(kinds: Sequence[str], parse: Callable[[State], object]) -> None:
    """In the preflight child (a program's ``preflight`` hook): read the state the running daemon
    gave on stdin, if any, as the new image would — the lineage here (a state of one of *kinds*),
    the daemon's part with *parse*, which must touch no descriptor. Raises what the reading raises."""
    obj = upgrade.preflight_state()
    if obj is None:
        return
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(f"a state for {kind!r}: this is {' or '.join(kinds)}")
    parse(State.from_json(obj, kind))


class Lifecycle:
    """The life of one daemon across its images.

    *kind* names the daemon (its state and its live view: ``ipcserverd``); *program* and *args*
    are the command line the next image runs (``s6-ipcserverd -1 …``: :func:`upgrade.reexec_argv`).
    *part* is the daemon's own part, *log* where the warnings go, *readiness* where ``RELOADING=1``
    / ``READY=1`` go, *held_signals* tells the daemon's own signals (its table, read at the exec:
    they are blocked across it), *loop* is the daemon's loop (:class:`UpgradeLoop`: it watches the
    preflight and stops for the exec; needed for SIGUSR2).
    """

    def __init__(self, kind: str, program: str, args: Sequence[str], part: DaemonPart, log: Log,
                 readiness: Readiness, *, held_signals: Callable[[], Sequence[int]], system: System,
                 loop: Optional[UpgradeLoop] = None, clock: Clock = SYSTEM_CLOCK, verbosity: int = 1,
                 guard: Optional[Callable[[List[int]], Callable[[], None]]] = None) -> None:
        self.kind, self.program, self.args = kind, program, list(args)
        self.part, self.log, self.readiness = part, log, readiness
        self.held_signals = held_signals
        #: Called just before the exec, with the held signals blocked (given the mask before), before
        #: the state is written: forks what must outlive the exec (fdholderd's guardian, the
        #: servers' stand-in); returns what undoes it if the exec fails. Raises S6ipcError.
        self.guard = guard
        self.system, self.loop, self.clock, self.verbosity = system, loop, clock, verbosity
        self.generation = 0
        self.started_wall = clock.wall_ns() / 1e9
        self.started_monotonic = clock.monotonic()
        #: The upgrade facts of the live view (the lineage's, see :class:`Lineage`).
        self.upgrades = self.upgrade_failures = 0
        self.last_upgrade: Optional[Dict[str, Any]] = None
        self._exec_monotonic: Optional[float] = None
        #: The live view's socket, kept across the exec (its abstract name holds the PID).
        self.status: Optional[StatusSocket] = None
        #: True from a preflight that passed until the exec (or its failure).
        self.upgrading = False
        #: The preflight running beside the loop, if any.
        self.preflight: Optional[PreflightChild] = None

    # -- the new image --------------------------------------------------------------------------
    @staticmethod
    def take(system: System, kind: str, log: Log) -> Optional[State]:
        """The state the previous image of this process handed over (None: a fresh start, also
        when ``$S6IPC_HANDOFF`` names anything else: one warning on *log*); its readiness
        variables go back into the environment. Raises :class:`Unusable` (one line, exit 111)."""
        obj = system.take_state(log.warn)
        if obj is None:
            return None
        try:
            state = State.from_json(obj, kind)
        except (KeyError, TypeError, ValueError) as e:
            raise Unusable(take_over_text(e)) from None
        assign(os.environ, state.lineage.readiness.items())
        return state

    def adopt(self, state: State, restore: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        """Take *state* over: the lineage, and the daemon's part (through *restore*, by default
        the part's :meth:`~DaemonPart.restore`). Raises :class:`Unusable` (one line, exit 111) for
        whatever the daemon's part raises but its own :class:`S6ipcError` (which it raises as is)."""
        lineage = state.lineage
        self.generation = lineage.generation
        self.started_wall, self.started_monotonic = lineage.started_wall, lineage.started_monotonic
        self.upgrades, self.upgrade_failures = lineage.upgrades, lineage.upgrade_failures
        self.last_upgrade, self._exec_monotonic = lineage.last_upgrade, lineage.exec_monotonic
        try:
            (restore or self.part.restore)(state.daemon)
        except S6ipcError as e:  # the daemon's own start-up errors (fd 0…), with their own lines and codes
            self._ending_the_upgrade(e)
            raise
        except Exception as e:  # ValueError…, or the new version's own bug: the supervisor must see it
            failure = Unusable(take_over_text(e))
            self._ending_the_upgrade(failure)
            raise failure from None

    def _ending_the_upgrade(self, failure: S6ipcError) -> None:
        """The new image cannot take over and exits (*failure*): the previous one said
        ``RELOADING=1``, and no ``READY=1`` follows, so ``STOPPING=1`` (``STATUS=`` the failure) says
        that this process ends. systemd 257 holds a Type=notify service whose last word was
        ``RELOADING=1`` in ``reloading (reload-notify)`` after its main process died, until the
        start timeout, before it restarts it; 252 needs no word but is told the same."""
        self.tell(lambda: self.readiness.stopping(str(failure)))

    def open_live_view(self, watch: Callable[[int, Callable[[int], None]], None],
                       state: Optional[State] = None) -> None:
        """Serve the live view from the daemon's loop (*watch* polls a descriptor): on the status
        socket the previous image handed over, else a new one. One that cannot be made is a warning."""
        fd = state.lineage.status_fd if state is not None else None
        try:
            self.status = StatusSocket(self.kind, self.document, fd)
        except S6ipcError as e:
            self.log.warn(f"{e}: no live view")
            return
        if self.status.squatted:
            self.log.warn(f"another process holds @{status_name(self.kind, os.getpid())}: "
                          f"live view at @{self.status.name}")
        watch(self.status.fileno(), self.status.on_event)

    def resumed(self, state: State, served_until: Optional[float] = None) -> None:
        """The new image serves and its handlers are in place: the upgrade is counted, the signals
        held across the exec are let in. Its pause, on CLOCK_MONOTONIC, is the time nobody
        accepted: from when a stand-in that served during the exec stopped (*served_until*), else
        from just before the exec, to now; ``exec_ms`` is the new image's start (from the exec)."""
        self.upgrades += 1
        since = self._exec_monotonic
        self._exec_monotonic = None
        now = self.clock.monotonic()
        started = None if since is None else round((now - since) * 1e3, 3)
        pause = started if served_until is None else round(max(0.0, now - served_until) * 1e3, 3)
        self.last_upgrade = {"result": "ok", "reason": None, "pause_ms": pause, "exec_ms": started,
                             "at": round(self.clock.wall_ns() / 1e9, 3)}
        self.system.restore_mask(state.lineage.sigmask)

    def _failed(self, result: str, reason: str) -> None:
        """An upgrade that did not happen (*result* ``refused``: the preflight; ``failed``: the exec)."""
        self.upgrade_failures += 1
        self.last_upgrade = {"result": result, "reason": reason, "pause_ms": None, "exec_ms": None,
                             "at": round(self.clock.wall_ns() / 1e9, 3)}

    # -- what it shows --------------------------------------------------------------------------
    def uptime(self) -> float:
        return self.clock.monotonic() - self.started_monotonic

    def document(self) -> Dict[str, Any]:
        """The live view's document: the common fields, then the daemon's (docs/status.md)."""
        document: Dict[str, Any] = {"program": self.kind, "pid": os.getpid(),
                                    "name": os.environ.get(NAME_VARIABLE, ""), "version": __version__,
                                    "generation": self.generation, "uptime": round(self.uptime(), 3),
                                    "started": round(self.started_wall, 3), "upgrades": self.upgrades,
                                    "upgrade_failures": self.upgrade_failures,
                                    "last_upgrade": self.last_upgrade}
        document.update(self.part.describe())
        return document

    def status_text(self) -> str:
        return self.part.status_text()

    # -- SIGUSR2 --------------------------------------------------------------------------------
    def tell(self, send: Callable[[], object]) -> None:
        """Send one readiness message; a failure is a warning, never the end of the daemon."""
        try:
            send()
        except S6ipcError as e:
            self.log.warn(str(e))

    def state(self, mask: Sequence[int] = (), exec_monotonic: Optional[float] = None) -> State:
        """What the next image would get now (the signal mask *mask* to restore, the exec's time)."""
        named = dict(self.part.descriptors())
        if self.status is not None:
            named["status"] = self.status.fileno()
        lineage = Lineage(self.generation + 1, self.started_wall, self.started_monotonic, list(mask),
                          None if self.status is None else self.status.fileno(), self._readiness(),
                          self.upgrades, self.upgrade_failures, self.last_upgrade, exec_monotonic)
        return State(self.kind, __version__, lineage, named, self.part.to_state())

    def _readiness(self) -> Dict[str, str]:
        kept = {}
        if self.readiness.notifier.address is not None:
            kept["NOTIFY_SOCKET"] = self.readiness.notifier.address
        if self.readiness.watchdog_interval is not None:
            kept["WATCHDOG_USEC"] = str(round(self.readiness.watchdog_interval * 1e6))
            kept["WATCHDOG_PID"] = str(os.getpid())
        return kept

    def requested(self) -> None:
        """SIGUSR2, from the loop: start the preflight of the installed code beside the loop, which
        goes on serving; its verdict comes back through the loop (:meth:`UpgradeLoop.expect_child`).
        A SIGUSR2 while a preflight runs or an exec is coming is coalesced with it."""
        loop = self.loop
        assert loop is not None, "SIGUSR2 without a loop to watch the preflight"
        if self.upgrading:
            return
        if self.preflight is not None:
            if self.preflight.overdue(self.clock.monotonic()):  # not even SIGALRM ended it (stopped)
                self.preflight.kill()
            return
        if self.verbosity >= 2:
            self.log.info("received SIGUSR2, checking the installed s6ipc before upgrading in place")
        self.tell(self.readiness.reloading)
        try:
            child = self.system.start_preflight(self.program, self.args, self.state().to_json())
        except S6ipcError as e:
            self._refused(str(e))
            return
        child.started = self.clock.monotonic()
        self.preflight = child

        def output(mask: int) -> None:
            if not child.read_output():
                loop.unwatch(child.stderr_fd)

        loop.watch(child.stderr_fd, output)
        loop.expect_child(child.pid, self._preflight_ended)

    def _preflight_ended(self, status: int) -> None:
        child, self.preflight = self.preflight, None
        if child is None:
            return
        assert self.loop is not None
        self.loop.unwatch(child.stderr_fd)
        problem = child.verdict(status)
        if problem is not None:
            self._refused(problem)
            return
        self.upgrading = True
        self.loop.stop_for_exec(self.system.reexec_argv(self.program, self.args))

    def _refused(self, problem: str) -> None:
        self._failed("refused", problem)
        if self.verbosity >= 1:
            self.log.warn(f"unable to upgrade in place: {problem}; still serving with s6ipc {__version__}")
        self.tell(self.readiness.notifier.ready)

    def ending(self) -> None:
        """The daemon exits: a preflight still running is killed (its verdict has no one to read it)."""
        if self.preflight is not None:
            self.preflight.kill()

    def _keep_signals_pending(self) -> None:
        """With the held signals blocked: every signal byte the loop has not read yet is raised
        again (pending across the exec, for the next image's handlers, or for this image's if the
        exec fails); SIGUSR2 is coalesced with the upgrade under way (a pending one consumed)."""
        held = set(self.held_signals())
        usr2 = int(_signal.SIGUSR2)
        unread = self.loop.unread_signals() if self.loop is not None else b""
        for sig in dict.fromkeys(unread):
            if sig != usr2 and sig in held:
                self.system.raise_signal(sig)
        if usr2 in held:
            self.system.take_pending(usr2)

    def replace(self, argv: List[str]) -> None:
        """Hand the state over and exec *argv*. Returns only when the exec failed: then everything
        is undone, one warning said, and the daemon serves on (the module docstring says why)."""
        system = self.system
        mask = system.block_signals(self.held_signals())
        self._keep_signals_pending()
        undo_guard = None
        if self.guard is not None:  # forked with the signals blocked: it hears none of the daemon's
            try:
                undo_guard = self.guard(mask)
            except S6ipcError as e:  # none: the upgrade goes on, as before there were any
                self.log.warn(str(e))
        state = self.state(mask, self.clock.monotonic())
        kept = list(state.descriptors.values())
        memfd = -1
        try:
            system.keep_across_exec(kept)
            memfd = system.write_state(state.to_json())
            if self.verbosity >= 2:
                self.log.info(f"upgrading in place: exec {' '.join(argv[:2])}")
            system.exec(argv)
        except S6ipcError as e:
            why = str(e)
        except (TypeError, ValueError) as e:  # a daemon's part that is not JSON: its bug, not fatal
            why = f"unable to write the state: {e}"
        except OSError as e:
            why = f"unable to exec {argv[0]}: {os.strerror(e.errno or errno.EIO)}"
        system.restore_mask(mask)
        system.close_on_exec(fd for fd in kept if fd != 0)
        if memfd >= 0:
            system.discard_state(memfd)
        if undo_guard is not None:
            undo_guard()
        self.upgrading = False
        self._failed("failed", why)
        self.tell(self.readiness.notifier.ready)
        if self.verbosity >= 1:
            self.log.warn(f"unable to upgrade in place: {why}; still serving with s6ipc {__version__}")
