"""What both access programs share, and their fast path: an access program's work done inside the daemon.

An access program (``ipcserver-access``, ``tcpserver-access``) reads its client from the environment
its server set, decides with the rules, logs, and becomes the final program by ``execve`` — or exits.
The decision itself is one function per program (:func:`s6ipc.access.ipc.decide`,
:func:`s6ipc.access.tcp.decide`) taking the client as values (ids, or address and port) and returning
an :class:`Outcome`. Two sources feed it:

* the program (``s6ipc ipcserver-access``…) scans the client out of the environment, as s6's do
  (``evaluate`` in each module, with s6's exit-100 checks);
* the daemon's fast path (:class:`FastPath`) reads it from the peer the daemon identified at accept
  time (:mod:`s6ipc.serve.peers`, :mod:`s6ipc.serve.tcppeer`): the values the daemon just printed
  into the child's environment, never parsed back.

What "pid" means in the fast path's log lines: a connection that is accepted spawns only the final
program; the ``allow`` line names that program's pid — the pid the access program would have had,
since it becomes the program by ``execve``. A refused connection spawns nothing when the daemon
logs at verbosity below 2 and its ``deny`` line names the daemon's own pid (the process that
decided); at daemon verbosity 2 a stand-in (``false``, exit 1) is spawned so that the daemon's own
allow/end lines are the same as with the program, and the ``deny`` line names the stand-in's pid.
Anything out of the ordinary — an environment or rules error, a program that cannot be executed, an
``env``/``exec`` entry that is not a regular file (reading a FIFO could block the whole daemon, where
s6 only blocks one connection) — is handed to the real access program for that connection, which
then does and reports exactly what it always does.
"""

from __future__ import annotations

import os

from ..base.errors import ExecFailure, S6ipcError
from ..base.execution import DEFAULT_PATH, Spawner
from ..base.log import Log
from ..base.options import Option
from ..base.typeshim import Generic, Protocol, TypeVar, dataclass, field
from .rules import EXECLINEB, CdbRules, Decision, FsRules, RuleSet, rules_from_cdb

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["EXECLINE_MISSING", "RULES_OPTIONS", "FastPath", "LogLine", "Outcome", "RulesChoice",
           "RulesSource", "emit", "refusal_standin"]

#: The extra warning (beyond s6) printed when an exec rule cannot run because execline is missing.
EXECLINE_MISSING = (f"execline is not installed ({EXECLINEB} not found): "
                    "exec rules cannot run, the connection is refused")

#: At most this many exec-rule spawners are kept (one per distinct exec string); then they start over.
_MAX_EXEC_SPAWNERS = 64


@dataclass(frozen=True)
class LogLine:
    """One line an access program logs: *kind* is ``info``, ``warning`` or ``fatal``; ``{pid}`` in
    *text* stands for the pid s6 prints there (see :meth:`render`)."""

    kind: str
    text: str

    def render(self, pid: int) -> str:
        return self.text.replace("{pid}", str(pid))


@dataclass
class Outcome:
    """What an access program does for one connection, once the environment checks passed.

    *lines* are logged first, in order. Then: *error* set — fail with it (exit 111); *allowed*
    false — exit *exit_code* (1: refused by the rules); else exec *argv* with *env*, searching
    *search_path_env*'s PATH.
    """

    lines: List[LogLine]
    allowed: bool
    argv: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    search_path_env: Mapping[str, str] = field(default_factory=dict)
    error: Optional[S6ipcError] = None
    decision: Optional[Decision] = None
    exit_code: int = 1


class RulesChoice(Protocol):
    """What :class:`RulesSource` reads from a program's options: ``-i`` (``fs``) or ``-x`` (``cdb``)."""

    @property
    def rules_kind(self) -> Optional[str]: ...

    @property
    def rules_path(self) -> str: ...


def _rules(kind: str) -> Option:
    def choose(fields: Dict[str, Any], path: str) -> None:
        fields["rules_kind"], fields["rules_path"] = kind, path

    return Option(True, choose)


#: ``[ -i rulesdir | -x rulesfile ]`` of both access programs (the last one given wins), into the
#: keyword arguments of their options record: ``rules_kind`` (``fs``, ``cdb``) and ``rules_path``.
RULES_OPTIONS = {"i": _rules("fs"), "x": _rules("cdb")}


class RulesSource:
    """The ruleset an access program's options name, opened when first needed.

    A directory is read at every lookup anyway; a cdb is read once and then re-read whenever
    ``stat`` shows it changed (:meth:`CdbRules.refresh`), so a long-lived user (the fast path)
    sees a replaced file at its next connection, as a new access process would.
    With *never_block*, an ``env`` or ``exec`` entry that is not a regular file (a FIFO would
    block on read, as it does in s6) is an error (EAGAIN) instead of being read.
    """

    def __init__(self, options: RulesChoice, never_block: bool = False) -> None:
        self.kind = options.rules_kind
        self.path = options.rules_path
        self._fs = FsRules(self.path, never_block) if self.kind == "fs" else None
        self._cdb: Optional[CdbRules] = None

    def get(self) -> Optional[RuleSet]:
        """The ruleset (None: none was given). Raises :class:`SystemFailure` ``cdb_init FILE``."""
        if self._fs is not None:
            return self._fs
        if self.kind != "cdb":
            return None
        if self._cdb is None:
            self._cdb = rules_from_cdb(self.path)
        else:
            self._cdb.refresh()
        return self._cdb


def refusal_standin(daemon_verbosity: int) -> Optional[Spawner]:
    """The stand-in a fast path spawns for a refused connection (``false``, exit 1) when the daemon
    logs at verbosity 2 or more, so that its allow/end lines are those of a real child; else None."""
    return Spawner(["false"], path_env={"PATH": DEFAULT_PATH}) if daemon_verbosity >= 2 else None


def emit(log: Log, lines: Sequence[LogLine], pid: int) -> None:
    """Write *lines* to *log*, with *pid* where s6 prints its pid."""
    for line in lines:
        if line.kind == "warning":
            log.warn(line.render(pid))
        elif line.kind == "fatal":
            log.error(line.render(pid))
        else:
            log.info(line.render(pid))


class _Launch:
    """One decided connection: spawn *target* (the final program, or the refusal stand-in), then log
    the access program's lines with its pid.

    If *target* cannot be executed, the real access program is spawned instead (with the
    environment it would have had), and reports the failure itself. What the daemon's loop asks of
    a spawner: :meth:`spawn` and :attr:`name`.
    """

    __slots__ = ("owner", "target", "lines", "original_env")

    def __init__(self, owner: FastPath[Any], target: Spawner, lines: List[LogLine],
                 original_env: Dict[str, str]) -> None:
        self.owner = owner
        self.target = target
        self.lines = lines
        self.original_env = original_env

    @property
    def name(self) -> str:
        return self.target.name

    def spawn(self, fd: int, env: Dict[str, str]) -> int:
        try:
            pid = self.target.spawn(fd, env)
        except (ExecFailure, ValueError):
            return self.owner.fallback.spawn(fd, self.original_env)
        emit(self.owner.log, self.lines, pid)
        return pid


class _Program(RulesChoice, Protocol):
    @property
    def prog(self) -> Tuple[str, ...]: ...


#: What a fast path reads from the daemon's peer (:class:`s6ipc.access.ipc.IpcClient`…).
ClientT = TypeVar("ClientT", contravariant=True)


class FastPath(Generic[ClientT]):
    """A daemon's per-connection policy doing an access program's work in-process.

    Call it as the daemon's loop calls a policy: with the peer it identified (a *ClientT*: what the
    subclass reads from it), the environment prepared for the child and the accepted socket; it
    returns the spawner and the environment to spawn, or None when the connection is refused (the
    daemon then closes it). Subclasses say how to decide (:meth:`outcome`, the program's own
    decision function fed from the peer).

    *fallback* spawns the whole access command (the real program, used for the unusual cases, see
    the module docstring); *log* is a reporter named as the program word was
    (``s6-ipcserver-access``, ``tcpserver-access``…); *standin* — a spawner of a program exiting 1,
    or None — is used for refusals when the daemon logs at verbosity 2.
    """

    def __init__(self, options: _Program, log: Log, fallback: Spawner,
                 standin: Optional[Spawner] = None, path_env: Optional[Mapping[str, str]] = None) -> None:
        self.options = options
        self.log = log
        self.fallback = fallback
        self.standin = standin
        self.source = RulesSource(options, never_block=True)
        search = dict(os.environ if path_env is None else path_env)
        self._search = {"PATH": search["PATH"]} if "PATH" in search else {}
        self._prog = Spawner(options.prog, path_env=self._search)
        self._execs: Dict[str, Spawner] = {}

    def _target(self, outcome: Outcome) -> Spawner:
        """The prog spawner, or one for the rule's exec string (kept for the next connections)."""
        if outcome.decision is None or outcome.decision.exec_string() is None:
            return self._prog
        script = outcome.argv[2]
        spawner = self._execs.get(script)
        if spawner is None:
            if len(self._execs) >= _MAX_EXEC_SPAWNERS:
                self._execs.clear()
            spawner = self._execs[script] = Spawner(outcome.argv, path_env=self._search)
        return spawner

    def outcome(self, peer: ClientT, env: Dict[str, str], conn: object) -> Optional[Outcome]:
        """The program's decision for this connection, or None to hand it to the program."""
        raise NotImplementedError

    def __call__(self, peer: ClientT, env: Dict[str, str], conn: object
                 ) -> Optional[Tuple[Union[_Launch, Spawner], Dict[str, str]]]:
        """The spawner and environment for this connection, or None to refuse it."""
        try:
            outcome = self.outcome(peer, env, conn)
        except Exception:  # S6ipcError as expected, or anything else: the program will do the work
            return self.fallback, env
        if outcome is None or outcome.error is not None:
            return self.fallback, env
        if not outcome.allowed:
            if self.standin is not None:
                return _Launch(self, self.standin, outcome.lines, env), env
            emit(self.log, outcome.lines, os.getpid())
            return None
        return _Launch(self, self._target(outcome), outcome.lines, env), outcome.env
