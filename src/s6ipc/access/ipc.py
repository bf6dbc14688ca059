"""ipcserver-access as a library: from rules, environment and connection to a final command or a refusal.

Both the ``ipcserver-access`` program (:func:`evaluate`: the client scanned out of the environment)
and ipcserverd's in-process fast path (:class:`FastAccess`: the client is the daemon's peer) run
:func:`decide`, so they cannot diverge. Some facts about s6-ipcserver-access 2.11 it follows:

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
  Modifications are applied as skalibs' ``env_merge`` does (see :mod:`s6ipc.base.envdir`).
* A rule with an exec string runs ``/usr/lib/execline/bin/execlineb -Pc STRING`` instead of prog
  (STRING cut at its first NUL, as a C string). The program is searched in the PATH the process
  had *before* the rule's modifications.

The fast path (:class:`FastAccess`, ipcserverd doing this work in-process) takes the client's ids
from the peer ipcserverd identified (:class:`IpcClient`) instead of scanning them back out of the
environment; what it guarantees: :mod:`s6ipc.access.fastpath`.
"""

from __future__ import annotations

import errno
import os

from ..base.envdir import merge_env
from ..base.errors import BadInput, SystemFailure
from ..base.execution import Spawner
from ..base.log import Log
from ..base.options import Command, env_uint, flag, parse_uint, setting
from ..base.typeshim import Protocol, dataclass
from ..sockets.unix import address_text
from .fastpath import (
    EXECLINE_MISSING,
    RULES_OPTIONS,
    FastPath,
    LogLine,
    Outcome,
    RulesChoice,
    RulesSource,
    emit,
    refusal_standin,
)
from .rules import EXECLINEB, Decision, Verdict, check

__all__ = ["USAGE", "AccessOptions", "FastAccess", "IpcClient", "client_from_env", "connection_local_path",
           "decide", "evaluate", "parse_options",
           # the shared part, still answered here (and as s6ipc.access.NAME) for the callers of 0.1
           "EXECLINE_MISSING", "FastPath", "LogLine", "Outcome", "RulesChoice", "RulesSource", "emit",
           "refusal_standin"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

USAGE = "[ -v verbosity ] [ -e | -E ] [ -l localname ] [ -i rulesdir | -x rulesfile ] prog..."

_UNSET_WITHOUT_ENV = ("REMOTEEUID", "REMOTEEGID", "REMOTEPATH", "LOCALPATH", "CONNNUM")


@dataclass(frozen=True)
class AccessOptions:
    """s6-ipcserver-access's command line, parsed."""

    prog: Tuple[str, ...]
    verbosity: int = 1
    doenv: bool = True
    localname: Optional[str] = None
    rules_kind: Optional[str] = None  # "fs" (-i), "cdb" (-x) or None
    rules_path: str = ""


_COMMAND = Command({
    "v": setting("verbosity", parse_uint), "E": flag("doenv", False), "e": flag("doenv", True),
    "l": setting("localname"), **RULES_OPTIONS,
}, program=True)


def parse_options(args: Sequence[str]) -> AccessOptions:
    """Parse the arguments after the program name. Raises :class:`UsageError`."""
    fields: Dict[str, Any] = {}
    rest = _COMMAND.parse(list(args), fields)
    return AccessOptions(tuple(rest), **fields)


class IpcClient(Protocol):
    """What ipcserver-access's decision needs of a client: its ids (``SO_PEERCRED`` at connect time).
    ipcserverd's peers (:class:`s6ipc.serve.peers.UnixPeer`) are such clients."""

    @property
    def uid(self) -> int: ...

    @property
    def gid(self) -> int: ...


def client_from_env(env: Mapping[str, str]) -> Tuple[str, int, int]:
    """``PROTO``, ``${PROTO}REMOTEEUID`` and ``${PROTO}REMOTEEGID`` of *env*, scanned as s6 does.
    Raises :class:`BadInput` (exit 100): ``PROTO not set``, ``invalid $…`` (or ``… not set``)."""
    proto = env.get("PROTO")
    if proto is None:
        raise BadInput("PROTO not set")
    return proto, env_uint(env, proto + "REMOTEEUID"), env_uint(env, proto + "REMOTEEGID")


def decide(options: AccessOptions, proto: str, uid: int, gid: int, env: Mapping[str, str],
           local_path: Callable[[], str], source: RulesSource, euid: Optional[int] = None,
           egid: Optional[int] = None) -> Outcome:
    """Decide for client *uid*:*gid* of a connection whose environment is *env* (``PROTO`` *proto*).

    The one decision of ipcserver-access, whether the client comes from the environment
    (:func:`evaluate`, the program) or from the daemon's peer (:class:`FastAccess`).
    *local_path* returns ``getsockname`` of the connection (raising :class:`SystemFailure`
    ``ipc_local``); it is called only when the environment needs it. *euid*/*egid* (default: ours)
    are what the rules' ``self`` keys stand for. Raises :class:`SystemFailure` (exit 111) for the
    rules.
    """
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


def evaluate(options: AccessOptions, env: Mapping[str, str], local_path: Callable[[], str],
             source: RulesSource, euid: Optional[int] = None, egid: Optional[int] = None) -> Outcome:
    """Decide for one connection whose ipcserver-access environment is *env*: the client is
    scanned out of it (:func:`client_from_env`), then :func:`decide`. Raises :class:`BadInput`
    (exit 100) for the environment checks and :class:`SystemFailure` (exit 111) for the rules."""
    proto, uid, gid = client_from_env(env)
    return decide(options, proto, uid, gid, env, local_path, source, euid, egid)


def connection_local_path(conn: object) -> Callable[[], str]:
    """A *local_path* callable for :func:`decide` over a connected socket object."""

    def local() -> str:
        try:
            return address_text(conn.getsockname())  # type: ignore[attr-defined]
        except OSError as e:
            raise SystemFailure("ipc_local", e.errno or errno.ENOTSOCK) from None

    return local


class FastAccess(FastPath[IpcClient]):
    """ipcserverd's per-connection policy doing ipcserver-access's work in-process.

    Plug an instance into a :class:`s6ipc.serve.loop.Server` as its ``policy`` when the server's program is
    ``<our prefix> ipcserver-access OPTIONS… prog…`` and its identity is
    :class:`s6ipc.serve.peers.UnixPeers` with credential lookup (``-p``): the client's ids are the
    peer's, and ``PROTO`` is ``IPC``, what that identity puts in the environment. Arguments: see
    :class:`s6ipc.access.fastpath.FastPath`.
    """

    def __init__(self, options: AccessOptions, log: Log, fallback: Spawner,
                 standin: Optional[Spawner] = None, path_env: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(options, log, fallback, standin, path_env)
        self.ipc_options = options
        self._euid = os.geteuid()
        self._egid = os.getegid()

    def outcome(self, peer: IpcClient, env: Dict[str, str], conn: object) -> Optional[Outcome]:
        return decide(self.ipc_options, "IPC", peer.uid, peer.gid, env, connection_local_path(conn),
                      self.source, self._euid, self._egid)
