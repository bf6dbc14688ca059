"""Option families shared by several programs, and how a program names the stages it chains.

* :class:`ServerOptions` / :func:`take_common`: what s6-ipcserver and s6-tcpserver share
  (``-q -Q -v -d -D -1 -c -C`` and the privilege drop ``-u -g -G -U``);
* :func:`parse_timeout`: the ``[ -t timeout ] operands…`` of the simple fd-holder clients;
* :func:`naming_style`: ``s6-`` when a wrapper runs under an s6 name, so its stages do too.
"""

from __future__ import annotations

from ..base.messages import Reporter
from ..base.options import UsageError, getopt, parse_uint
from .run import PrivilegeOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

__all__ = ["ServerOptions", "take_common", "parse_timeout", "naming_style"]


def naming_style(reporter: Reporter) -> str:
    """``s6-`` when invoked under an s6 name (the stages then report as s6's do), else ``""``."""
    return "s6-" if reporter.name.startswith("s6-") else ""


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

    def limits(self) -> List[str]:
        """``-c maxconn -C localmaxconn`` for the daemon, those given (the last of its options)."""
        argv: List[str] = []
        if self.maxconn is not None:
            argv += ["-c", str(self.maxconn)]
        if self.localmaxconn is not None:
            argv += ["-C", str(self.localmaxconn)]
        return argv


def take_common(o: ServerOptions, letter: str, v: str) -> bool:
    """Record one of the options s6-ipcserver and s6-tcpserver share (``-q -Q -v -d -D -1 -c -C``
    and the privilege drop) in *o*; False for any other letter. Raises :class:`UsageError`."""
    if letter in "qQv":
        o.verbosity = {"q": 0, "Q": 1, "v": 2}[letter]
    elif letter in "dD":
        o.reuse = letter == "d"
    elif letter == "1":
        o.notify = True
    elif letter == "c":
        o.maxconn = parse_uint(v) or 1
    elif letter == "C":
        o.localmaxconn = parse_uint(v) or 1
    elif letter in PrivilegeOptions.LETTERS:
        o.privileges.take(letter, v)
    else:
        return False
    return True


def parse_timeout(args: List[str], operands: int) -> Tuple[Optional[float], List[str]]:
    """Parse ``-t MS`` (0: no timeout) and require *operands* arguments after the options.

    Returns (timeout in seconds or None, the operands and whatever follows). Raises :class:`UsageError`.
    """
    opts, rest = getopt(args, "t:")
    milliseconds = 0
    for _, value in opts:
        milliseconds = parse_uint(value or "")
    if len(rest) < operands:
        raise UsageError("too few arguments")
    return (milliseconds / 1000 if milliseconds else None), rest
