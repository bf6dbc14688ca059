"""fdholder-daemon: rewrite s6-fdholder-daemon's options into the chain
socketbinder → [applyuidgid] → fdholderd, exactly as s6 does, and exec it.

Like ipcserver, it only builds an argv: ``-c 0`` and ``-n 0`` become 1, ``-b`` is passed as
given (even 0), ``-v 1``, ``-t 0`` and ``-T 0`` are left out, the privilege options become an
applyuidgid stage (shared with ipcserver), and ``-i``/``-x`` (last one wins) are required.
"""

from __future__ import annotations

from ..base.errors import BadInput
from ..base.messages import Reporter
from ..base.options import Command, flag, parse_uint, setting
from ..chain.options import PRIVILEGE_OPTIONS, naming_style, one_or_more
from ..chain.run import PrivilegeOptions, exec_into, stage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

USAGE = (
    "[ -v verbosity ] [ -d | -D ] [ -1 ] [ -c maxconn ] [ -n maxfds ] [ -b backlog ] "
    "[ -G gid,gid,... ] [ -g gid ] [ -u uid ] [ -U ] [ -t timeout ] [ -T lameducktimeout ] "
    "[ -i rulesdir | -x rulesfile ] path"
)


class _Options:
    """s6-fdholder-daemon's options (None: not given, left to the stage that takes it)."""

    def __init__(self) -> None:
        self.verbosity, self.notify, self.reuse = 1, False, True
        self.maxconn: Optional[int] = None
        self.maxfds: Optional[int] = None
        self.backlog: Optional[int] = None
        self.timeout = self.lameduck = 0
        self.rules: Optional[List[str]] = None  # ["-i", dir] or ["-x", file]: the last one given
        self.privileges = PrivilegeOptions()


COMMAND = Command({
    "v": setting("verbosity", parse_uint), "d": flag("reuse", True), "D": flag("reuse", False),
    "1": flag("notify"), "c": setting("maxconn", one_or_more), "n": setting("maxfds", one_or_more),
    "b": setting("backlog", parse_uint), **PRIVILEGE_OPTIONS, "t": setting("timeout", parse_uint),
    "T": setting("lameduck", parse_uint), "i": setting("rules", lambda v: ["-i", v]),
    "x": setting("rules", lambda v: ["-x", v]),
}, 1, missing="no path")


def build_chain(args: List[str], style: str = "") -> List[str]:
    """The argv s6-fdholder-daemon would exec, with our stages. Raises UsageError/BadInput."""
    o = _Options()
    rest = COMMAND.parse(args, o)
    if o.rules is None:
        raise BadInput("no access rights specified!")
    argv = stage("ipcserver-socketbinder", style)
    if not o.reuse:
        argv.append("-D")
    if o.backlog is not None:
        argv += ["-b", str(o.backlog)]
    argv += ["--", rest[0]]
    argv += o.privileges.stage(style)
    argv += stage("fdholderd", style)
    if o.verbosity != 1:
        argv += ["-v", str(o.verbosity)]
    if o.notify:
        argv.append("-1")
    numbers = (("-c", o.maxconn), ("-n", o.maxfds), ("-t", o.timeout or None), ("-T", o.lameduck or None))
    for option, number in numbers:
        if number is not None:
            argv += [option, str(number)]
    return argv + o.rules


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    exec_into(reporter, build_chain(args, naming_style(reporter)))
