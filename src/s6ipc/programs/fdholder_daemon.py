"""fdholder-daemon: rewrite s6-fdholder-daemon's options into the chain
socketbinder → [applyuidgid] → fdholderd, exactly as s6 does, and exec it.

Like ipcserver, it only builds an argv: ``-c 0`` and ``-n 0`` become 1, ``-b`` is passed as
given (even 0), ``-v 1``, ``-t 0`` and ``-T 0`` are left out, the privilege options become an
applyuidgid stage (shared with ipcserver), and ``-i``/``-x`` (last one wins) are required.
"""

from __future__ import annotations

from ..base.errors import BadInput
from ..base.messages import Reporter
from ..base.options import UsageError, getopt, parse_uint
from ..chain.options import naming_style
from ..chain.run import PrivilegeOptions, exec_into, stage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

USAGE = (
    "[ -v verbosity ] [ -d | -D ] [ -1 ] [ -c maxconn ] [ -n maxfds ] [ -b backlog ] "
    "[ -G gid,gid,... ] [ -g gid ] [ -u uid ] [ -U ] [ -t timeout ] [ -T lameducktimeout ] "
    "[ -i rulesdir | -x rulesfile ] path"
)


def build_chain(args: List[str], style: str = "") -> List[str]:
    """The argv s6-fdholder-daemon would exec, with our stages. Raises UsageError/BadInput."""
    opts, rest = getopt(args, "v:dD1c:n:b:G:g:u:Ut:T:i:x:")
    privileges = PrivilegeOptions()
    verbosity, notify, reuse = 1, False, True
    maxconn: Optional[int] = None
    maxfds: Optional[int] = None
    backlog: Optional[int] = None
    timeout = lameduck = 0
    rules: Optional[List[str]] = None
    for letter, value in opts:
        v = value or ""
        if letter == "v":
            verbosity = parse_uint(v)
        elif letter in "dD":
            reuse = letter == "d"
        elif letter == "1":
            notify = True
        elif letter == "c":
            maxconn = parse_uint(v) or 1
        elif letter == "n":
            maxfds = parse_uint(v) or 1
        elif letter == "b":
            backlog = parse_uint(v)
        elif letter in PrivilegeOptions.LETTERS:
            privileges.take(letter, v)
        elif letter == "t":
            timeout = parse_uint(v)
        elif letter == "T":
            lameduck = parse_uint(v)
        elif letter in "ix":
            rules = [f"-{letter}", v]
    if not rest:
        raise UsageError("no path")
    if rules is None:
        raise BadInput("no access rights specified!")
    argv = stage("ipcserver-socketbinder", style)
    if not reuse:
        argv.append("-D")
    if backlog is not None:
        argv += ["-b", str(backlog)]
    argv += ["--", rest[0]]
    argv += privileges.stage(style)
    argv += stage("fdholderd", style)
    if verbosity != 1:
        argv += ["-v", str(verbosity)]
    if notify:
        argv.append("-1")
    numbers = (("-c", maxconn), ("-n", maxfds), ("-t", timeout or None), ("-T", lameduck or None))
    for option, number in numbers:
        if number is not None:
            argv += [option, str(number)]
    return argv + rules


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    exec_into(reporter, build_chain(args, naming_style(reporter)))
