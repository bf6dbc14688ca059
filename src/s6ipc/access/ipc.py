"""ipcserver-access as a library: from rules, environment and connection to a final command or a refusal.

Both the ``ipcserver-access`` program and ipcserverd's in-process fast path (:class:`FastAccess`)
run :func:`evaluate`, so they cannot diverge. Some facts about s6-ipcserver-access 2.11 it follows:

* ``PROTO`` must be set (any value); ``${PROTO}REMOTEEUID`` and ``${PROTO}REMOTEEGID`` must be set
  and be whole unsigned 32-bit decimals; else exit 100 (``PROTO not set``, ``invalid $…``). The
  rules file of ``-x`` is opened only after these checks.
* A refusal logs ``deny pid P uid U gid G: REASON`` at verbosity 2 and exits 1, writing nothing to
  the client. An acceptance logs ``allow pid P uid U gid G`` from verbosity 1 (the default) on.
  Without a ruleset every client is accepted, with a warning at verbosity 2.
* Environment: the rule's modifications, then ``${PROTO}LOCALPATH`` (``-l`` value, else
  ``getsockname`` of fd 0, which fails with ``unable to ipc_local`` *after* the allow line). With
  ``-E``, the rule's modifications then the removal of ``PROTO`` and ``${PROTO}`` REMOTEEUID,
  REMOTEEGID, REMOTEPATH, LOCALPATH and CONNNUM; fd 0 is not looked at and ``-l`` is ignored.
  Modifications are applied as skalibs' ``env_merge`` does (see :mod:`s6ipc.envdir`).
* A rule with an exec string runs ``/usr/lib/execline/bin/execlineb -Pc STRING`` instead of prog
  (STRING cut at its first NUL, as a C string). The program is searched in the PATH the process
  had *before* the rule's modifications.

The fast path (what "pid" means in its log lines): a connection that is accepted spawns only the
final program; the ``allow`` line names that program's pid — the pid ipcserver-access would have
had, since it becomes the program by ``execve``. A refused connection spawns nothing when
ipcserverd logs at verbosity below 2 and its ``deny`` line names ipcserverd's own pid (the process
that decided); at ipcserverd verbosity 2 a stand-in (``false``, exit 1) is spawned so that
ipcserverd's own allow/end lines are the same as with the program, and the ``deny`` line names the
stand-in's pid. Anything out of the ordinary — an environment or rules error, a program that
cannot be executed, an ``env``/``exec`` entry that is not a regular file (reading a FIFO could block
the whole daemon, where s6 only blocks one connection) — is handed to the real ipcserver-access
program for that connection, which then does and reports exactly what it always does.
"""

from __future__ import annotations

import errno
import os

from ..base.envdir import merge_env
from ..base.errors import BadInput, ExecFailure, S6ipcError, SystemFailure
from ..base.execution import DEFAULT_PATH, Spawner
from ..base.log import Log
from ..base.options import UsageError, env_uint, getopt, parse_uint
from ..base.typeshim import Protocol, dataclass, field
from ..sockets.unix import address_text
from .rules import EXECLINEB, CdbRules, Decision, FsRules, RuleSet, Verdict, check, rules_from_cdb

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "USAGE", "EXECLINE_MISSING", "AccessOptions", "parse_options", "LogLine", "Outcome", "RulesChoice",
    "RulesSource", "evaluate", "connection_local_path", "refusal_standin", "emit", "FastPath", "FastAccess",
]

USAGE = "[ -v verbosity ] [ -e | -E ] [ -l localname ] [ -i rulesdir | -x rulesfile ] prog..."

#: The extra warning (beyond s6) printed when an exec rule cannot run because execline is missing.
EXECLINE_MISSING = (f"execline is not installed ({EXECLINEB} not found): "
                    "exec rules cannot run, the connection is refused")

_UNSET_WITHOUT_ENV = ("REMOTEEUID", "REMOTEEGID", "REMOTEPATH", "LOCALPATH", "CONNNUM")
_MAX_EXEC_SPAWNERS = 64


@dataclass(frozen=True)
class AccessOptions:
    """s6-ipcserver-access's command line, parsed."""

    prog: Tuple[str, ...]
    verbosity: int = 1
    doenv: bool = True
    localname: Optional[str] = None
    rules_kind: Optional[str] = None  # "fs" (-i), "cdb" (-x) or None
    rules_path: str = ""


def parse_options(args: Sequence[str]) -> AccessOptions:
    """Parse the arguments after the program name. Raises :class:`UsageError`."""
    opts, rest = getopt(list(args), "v:Eel:i:x:")
    verbosity, doenv = 1, True
    localname: Optional[str] = None
    kind: Optional[str] = None
    path = ""
    for letter, value in opts:
        v = value or ""
        if letter == "v":
            verbosity = parse_uint(v)
        elif letter in "Ee":
            doenv = letter == "e"
        elif letter == "l":
            localname = v
        elif letter in "ix":
            kind, path = ("fs" if letter == "i" else "cdb"), v
    if not rest or not rest[0]:
        raise UsageError("no program")
    return AccessOptions(tuple(rest), verbosity, doenv, localname, kind, path)


@dataclass(frozen=True)
class LogLine:
    """One line ipcserver-access logs: *kind* is ``info`` or ``warning``; ``{pid}`` in *text*
    stands for the pid s6 prints there (see :meth:`render`)."""

    kind: str
    text: str

    def render(self, pid: int) -> str:
        return self.text.replace("{pid}", str(pid))


@dataclass
class Outcome:
    """What ipcserver-access does for one connection, once the environment checks passed.

    *lines* are logged first, in order. Then: *error* set — fail with it (exit 111); *allowed*
    false — exit *exit_code* (1: refused by the rules); else exec *argv* with *env*, searching
    *search_path_env*'s PATH. tcpserver-access (:mod:`s6ipc.tcpaccess`) fills the same record.
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


class RulesSource:
    """The ruleset an :class:`AccessOptions` names, opened when first needed.

    A directory is read at every lookup anyway; a cdb is read once and then re-read whenever
    ``stat`` shows it changed (:meth:`CdbRules.refresh`), so a long-lived user (the fast path)
    sees a replaced file at its next connection, as a new ipcserver-access process would.
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


def _client_id(env: Mapping[str, str], name: str) -> int:
    return env_uint(env, name)


def evaluate(options: AccessOptions, env: Mapping[str, str], local_path: Callable[[], str],
             source: RulesSource, euid: Optional[int] = None, egid: Optional[int] = None) -> Outcome:
    """Decide for one connection whose ipcserver-access environment is *env*.

    *local_path* returns ``getsockname`` of the connection (raising :class:`SystemFailure`
    ``ipc_local``); it is called only when the environment needs it. Raises :class:`BadInput`
    (exit 100) for the environment checks and :class:`SystemFailure` (exit 111) for the rules.
    """
    proto = env.get("PROTO")
    if proto is None:
        raise BadInput("PROTO not set")
    uid = _client_id(env, proto + "REMOTEEUID")
    gid = _client_id(env, proto + "REMOTEEGID")
    lines: List[LogLine] = []
    rules = source.get()
    if rules is None:
        if options.verbosity >= 2:
            lines.append(LogLine("warning", "invoked without a ruleset!"))
        decision = Decision(Verdict.ALLOW)
    else:
        decision = check(rules, uid, gid, euid=euid, egid=egid)
    if not decision.allowed:
        if options.verbosity >= 2:
            reason = os.strerror(decision.errno)
            lines.append(LogLine("info", f"deny pid {{pid}} uid {uid} gid {gid}: {reason}"))
        return Outcome(lines, False, decision=decision)
    if options.verbosity >= 1:
        lines.append(LogLine("info", f"allow pid {{pid}} uid {uid} gid {gid}"))
    modifs = decision.modif_strings()
    if options.doenv:
        if options.localname is not None:
            where = options.localname
        else:
            try:
                where = local_path()
            except SystemFailure as e:
                return Outcome(lines, True, error=e, decision=decision)
        modifs.append(f"{proto}LOCALPATH={where}")
    else:
        modifs.append("PROTO")
        modifs.extend(proto + suffix for suffix in _UNSET_WITHOUT_ENV)
    exec_string = decision.exec_string()
    argv = list(options.prog) if exec_string is None else [EXECLINEB, "-Pc", os.fsdecode(exec_string)]
    return Outcome(lines, True, argv, merge_env(env, modifs), env, decision=decision)


def connection_local_path(conn: object) -> Callable[[], str]:
    """A *local_path* callable for :func:`evaluate` over a connected socket object."""

    def local() -> str:
        try:
            return address_text(conn.getsockname())  # type: ignore[attr-defined]
        except OSError as e:
            raise SystemFailure("ipc_local", e.errno or errno.ENOTSOCK) from None

    return local


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


class _Launch(Spawner):
    """One accepted connection: spawn the final program, then log the ``allow`` line with its pid.

    If the program cannot be executed, the real ipcserver-access program is spawned instead (with
    the environment it would have had), and reports the failure itself.
    """

    def __init__(self, owner: FastPath, target: Spawner, lines: List[LogLine],
                 original_env: Dict[str, str]) -> None:
        super().__init__(target.argv)
        self.owner = owner
        self.target = target
        self.lines = lines
        self.original_env = original_env

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


class FastPath:
    """A daemon's per-connection policy doing an access program's work in-process.

    Subclasses say how to decide (:meth:`decide`, the program's own ``evaluate``) and how the
    daemon calls them. *fallback* spawns the whole access command (the real program, used for
    the unusual cases, see the module docstring); *log* is a reporter named as the program word
    was (``s6-ipcserver-access``, ``tcpserver-access``…); *standin* — a spawner of a program
    exiting 1, or None — is used for refusals when the daemon logs at verbosity 2.
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

    def decide(self, env: Dict[str, str], conn: object) -> Optional[Outcome]:
        """The program's decision for this connection, or None to hand it to the program."""
        raise NotImplementedError

    def __call__(self, peer: object, env: Dict[str, str], conn: object
                 ) -> Optional[Tuple[Spawner, Dict[str, str]]]:
        """The spawner and environment for this connection (a :data:`s6ipc.server.ConnectionPolicy`),
        or None to refuse it (the daemon closes it)."""
        try:
            outcome = self.decide(env, conn)
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


class FastAccess(FastPath):
    """ipcserverd's per-connection policy doing ipcserver-access's work in-process.

    Plug an instance into :attr:`s6ipc.server.Server.policy` when the server's program is
    ``<our prefix> ipcserver-access OPTIONS… prog…`` (arguments: see :class:`FastPath`).
    """

    def __init__(self, options: AccessOptions, log: Log, fallback: Spawner,
                 standin: Optional[Spawner] = None, path_env: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(options, log, fallback, standin, path_env)
        self.ipc_options = options
        self._euid = os.geteuid()
        self._egid = os.getegid()

    def decide(self, env: Dict[str, str], conn: object) -> Optional[Outcome]:
        return evaluate(self.ipc_options, env, connection_local_path(conn), self.source,
                        self._euid, self._egid)
