"""Option families shared by several programs, and how a program names the stages it chains.

Each family is a table of :class:`~s6ipc.base.options.Option` letters that a program's
:class:`~s6ipc.base.options.Command` takes in (``{**BINDER_OPTIONS, "a": …}``):

* :data:`SERVER_OPTIONS` / :class:`ServerOptions` / :func:`take_common`: what s6-ipcserver and
  s6-tcpserver share (``-q -Q -v -d -D -1 -c -C``, our ``-A`` passed on to the daemon, and
  :data:`PRIVILEGE_OPTIONS`, the privilege drop ``-u -g -G -U`` that s6-fdholder-daemon shares too);
* :data:`BINDER_OPTIONS`, :data:`DATAGRAM_OPTIONS`, :data:`PERMS_OPTIONS`: the socket binders'
  ``-d -D -b -B``, ``-m -M`` and ``-a`` (ipcserver-socketbinder, the tcpserver binders,
  systemd-socket's fallback), named as the keyword arguments of the bind calls;
* :data:`CLIENT_VERBOSITY`: the clients' ``-q -Q -v`` (one less, back to 1, one more);
* :func:`parse_timeout`, :func:`holder_client`: the ``[ -t timeout ] socket…`` of the simple
  fd-holder clients (their ``-t`` is :func:`s6ipc.base.durations.scan_timeout`);
* :func:`naming_style`: ``s6-`` when a wrapper runs under an s6 name, so its stages do too.
"""

from __future__ import annotations

from ..base.durations import scan_timeout
from ..base.messages import Reporter
from ..base.options import UINT32_MAX, Command, Option, collect, flag, parse_octal, parse_uint, setting
from .run import PrivilegeOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

    from ..fdholder.client import FdHolderClient

__all__ = [
    "ServerOptions", "take_common", "parse_timeout", "holder_client", "naming_style", "one_or_more",
    "wrapper_backlog", "backlog_at_least_one", "SERVER_OPTIONS", "PRIVILEGE_OPTIONS", "BINDER_OPTIONS",
    "DATAGRAM_OPTIONS", "PERMS_OPTIONS", "CLIENT_VERBOSITY",
]


def naming_style(reporter: Reporter) -> str:
    """``s6-`` when invoked under an s6 name (the stages then report as s6's do), else ``""``."""
    return "s6-" if reporter.name.startswith("s6-") else ""


def one_or_more(text: str) -> int:
    """A count where s6 reads 0 as 1 (``-c 0``, ``-n 0`` of the wrappers). Raises UsageError."""
    return parse_uint(text) or 1


def wrapper_backlog(text: str) -> Optional[int]:
    """A wrapper's ``-b backlog`` as s6-tcpserver keeps it: (unsigned int)-1, s6's "not given", is
    None (the binder's default); 0 passes verbatim. Raises UsageError."""
    backlog = parse_uint(text)
    return None if backlog == UINT32_MAX else backlog


def backlog_at_least_one(text: str) -> Optional[int]:
    """``-b backlog`` of s6-ipcserver and s6-tcpserver4/6: as :func:`wrapper_backlog`, 0 becomes 1."""
    backlog = wrapper_backlog(text)
    return None if backlog is None else backlog or 1


def _privilege(letter: str) -> Option:
    def take(into: Any, value: str) -> None:
        into.privileges.take(letter, value)

    return Option(letter != "U", take)


#: ``-u -g -G -U`` into the ``privileges`` (a :class:`PrivilegeOptions`) of the options object.
PRIVILEGE_OPTIONS: Dict[str, Option] = {letter: _privilege(letter) for letter in PrivilegeOptions.LETTERS}

#: What s6-ipcserver and s6-tcpserver share, into a :class:`ServerOptions`.
SERVER_OPTIONS: Dict[str, Option] = {
    "q": flag("verbosity", 0), "Q": flag("verbosity", 1), "v": flag("verbosity", 2),
    "d": flag("reuse", True), "D": flag("reuse", False), "1": flag("notify"),
    "c": setting("maxconn", one_or_more), "C": setting("localmaxconn", one_or_more),
    "A": collect("admission"), **PRIVILEGE_OPTIONS,
}

#: The binders' ``[ -d | -D ] [ -b backlog ] [ -B ]``: bind_unix_socket's and bind_tcp_socket's
#: keyword arguments.
BINDER_OPTIONS: Dict[str, Option] = {
    "d": flag("reuse", True), "D": flag("reuse", False), "b": setting("backlog", parse_uint),
    "B": flag("blocking"),
}
#: ``[ -M | -m ]``: a stream (the default) or a datagram socket.
DATAGRAM_OPTIONS: Dict[str, Option] = {"m": flag("datagram", True), "M": flag("datagram", False)}
#: ``[ -a perms ]`` of a Unix socket, octal.
PERMS_OPTIONS: Dict[str, Option] = {"a": setting("perms", parse_octal)}


def _quieter(into: Any, _: str) -> None:
    into.verbosity = max(into.verbosity - 1, 0)


def _louder(into: Any, _: str) -> None:
    into.verbosity += 1


#: s6-ipcclient's and s6-tcpclient's ``[ -q | -Q | -v ]``, into an object's ``verbosity``.
CLIENT_VERBOSITY: Dict[str, Option] = {
    "q": Option(False, _quieter), "Q": flag("verbosity", 1), "v": Option(False, _louder),
}


class ServerOptions:
    """The options of s6-ipcserver after parsing (None: not given)."""

    def __init__(self) -> None:
        self.verbosity = 1
        self.reuse = True
        self.lookup = True
        self.notify = False
        self.maxconn: Optional[int] = None
        self.localmaxconn: Optional[int] = None
        self.backlog: Optional[int] = None
        self.perms = 0o777
        self.systemd = False
        self.privileges = PrivilegeOptions()
        #: ``-A`` values (an extension: admission limits, :mod:`s6ipc.serve.admission`), in order.
        self.admission: List[str] = []

    def limits(self) -> List[str]:
        """``-c maxconn -C localmaxconn`` and each ``-A limits`` for the daemon, those given (the
        last of its options)."""
        argv: List[str] = []
        if self.maxconn is not None:
            argv += ["-c", str(self.maxconn)]
        if self.localmaxconn is not None:
            argv += ["-C", str(self.localmaxconn)]
        for spec in self.admission:
            argv += ["-A", spec]
        return argv


def take_common(o: ServerOptions, letter: str, v: str) -> bool:
    """Record one of the options s6-ipcserver and s6-tcpserver share (:data:`SERVER_OPTIONS`) in
    *o*; False for any other letter. Raises :class:`UsageError`."""
    option = SERVER_OPTIONS.get(letter)
    if option is None:
        return False
    option.apply(o, v)
    return True


_TIMEOUT = {"t": setting("timeout", scan_timeout)}


def parse_timeout(args: List[str], operands: int) -> Tuple[Optional[float], List[str]]:
    """Parse ``-t MS`` (0: no timeout) and require *operands* arguments after the options.

    Returns (timeout in seconds or None, the operands and whatever follows). Raises :class:`UsageError`.
    """
    got: Dict[str, Optional[float]] = {}
    rest = Command(_TIMEOUT, operands).parse(args, got)
    return got.get("timeout"), rest


def holder_client(args: List[str], operands: int) -> Tuple[FdHolderClient, List[str]]:
    """The command line of the simple fd-holder clients, ``[ -t timeout ] socket …`` with at least
    *operands* operands: a client of the holder at the first one (connected: s6's errors), and
    the operands. Raises :class:`UsageError`, and what :class:`FdHolderClient` raises."""
    from ..fdholder.client import FdHolderClient

    timeout, rest = parse_timeout(args, operands)
    return FdHolderClient(rest[0], timeout), rest
