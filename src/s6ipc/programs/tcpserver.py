"""tcpserver, tcpserver4, tcpserver6: rewrite s6-tcpserver's options into the chain
binder → [applyuidgid] → daemon, and exec it.

Like ``ipcserver`` they do no work: they normalise the options exactly as s6-networking 2.5.1.3
does and exec the chain, whose stages (ours, named with :func:`s6ipc.chain.run.stage`) then
run in this same process. One module runs the three names; the differences between them, all s6's:

* ``tcpserver`` takes ``-q/-Q/-v`` (passed on as ``-v0``/``-v2``), ``-4/-6`` (default: the
  family of *ip*, which must then parse as an address, prefix-style), and passes ``-b``
  **verbatim, 0 included** — the binder then does not listen and the daemon dies 111 ("trouble
  with socket") right after its readiness line.
* ``tcpserver4``/``tcpserver6`` take ``-v N`` (passed on as two words when not 1), turn
  ``-b 0`` into ``-b 1``, and do not check *ip* (their binder does).

Neither checks the port: the binder does (usage, exit 100). ``-c 0``/``-C 0`` become 1 here;
capping at 1000 is the daemon's job.
"""

from __future__ import annotations

from ..base.messages import Reporter
from ..base.options import Command, UsageError, flag, parse_uint, setting
from ..chain.options import SERVER_OPTIONS, ServerOptions, backlog_at_least_one, naming_style, wrapper_backlog
from ..chain.run import exec_into, stage
from ..sockets.inet import ip46_scan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE_TCPSERVER = (
    "[ -q | -Q | -v ] [ -4 | -6 ] [ -d | -D ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] "
    "[ -b backlog ] [ -G gid,gid,... ] [ -g gid ] [ -u uid ] [ -U ] ip port prog..."
)
USAGE_FAMILY = (
    "[ -v verbosity ] [ -d | -D ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] [ -b backlog ] "
    "[ -G gid,gid,... ] [ -g gid ] [ -u uid ] [ -U ] ip port prog..."
)
USAGES = {"tcpserver": USAGE_TCPSERVER, "tcpserver4": USAGE_FAMILY, "tcpserver6": USAGE_FAMILY}


class TcpServerOptions(ServerOptions):
    """The options of s6-tcpserver / s6-tcpserver4 / s6-tcpserver6 after parsing (None: not given);
    the IPC-only ones of :class:`ServerOptions` (lookup, perms, systemd) stay at their defaults."""

    def __init__(self) -> None:
        super().__init__()
        self.family = 0  # 4, 6, or 0: from the address


#: ``s6-tcpserver``: ``-q -Q -v`` and ``-4 -6``, the backlog verbatim.
COMMAND = Command({
    **SERVER_OPTIONS, "4": flag("family", 4), "6": flag("family", 6),
    "b": setting("backlog", wrapper_backlog),
}, 3)
#: ``s6-tcpserver4``/``6``: ``-v verbosity``, no ``-q -Q -4 -6``.
FAMILY_COMMAND = Command({
    **{letter: option for letter, option in SERVER_OPTIONS.items() if letter not in "qQv"},
    "v": setting("verbosity", parse_uint), "b": setting("backlog", backlog_at_least_one),
}, 3)


def parse(args: List[str], family: int = 0) -> tuple[TcpServerOptions, List[str]]:
    """Parse the command line of ``s6-tcpserver`` (*family* 0) or ``s6-tcpserver4``/``6`` (4, 6).

    Returns the options and ``[ip, port, prog...]`` with ``family`` decided (4 or 6). Raises
    :class:`UsageError`, also for an *ip* that does not parse when the family comes from it, and
    :class:`BadInput` for ``-A`` limits that do not parse.
    """
    o = TcpServerOptions()
    o.family = family
    rest = (FAMILY_COMMAND if family else COMMAND).parse(args, o)
    if o.admission:  # checked here, as s6 checks -c (BadInput: exit 100)
        from ..serve.admission import parse_limits

        parse_limits(o.admission, True)
    if not o.family:
        scanned = ip46_scan(rest[0])
        if scanned is None:
            raise UsageError("invalid ip")
        o.family = 6 if len(scanned[0]) == 16 else 4
    return o, rest


def build_chain(o: TcpServerOptions, ip: str, port: str, prog: List[str], style: str = "",
                wrapper_verbosity: bool = True) -> List[str]:
    """The argv s6-tcpserver (or, without *wrapper_verbosity*, s6-tcpserver4/6) would exec,
    with our stages in place of s6's binaries."""
    argv = stage(f"tcpserver{o.family}-socketbinder", style)
    if not o.reuse:
        argv.append("-D")
    if o.backlog is not None:
        argv += ["-b", str(o.backlog)]
    argv += ["--", ip, port]
    argv += o.privileges.stage(style)
    argv += stage(f"tcpserver{o.family}d", style)
    if wrapper_verbosity:
        if o.verbosity != 1:
            argv.append(f"-v{o.verbosity}")
    elif o.verbosity != 1:
        argv += ["-v", str(o.verbosity)]
    if o.notify:
        argv.append("-1")
    return argv + o.limits() + ["--"] + prog


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    if reporter.name.endswith(("tcpserver4", "tcpserver6")):  # the one-family wrappers
        o, rest = parse(args, family=6 if reporter.name.endswith("6") else 4)
        exec_into(reporter, build_chain(o, rest[0], rest[1], rest[2:], naming_style(reporter),
                                        wrapper_verbosity=False))
    o, rest = parse(args)
    exec_into(reporter, build_chain(o, rest[0], rest[1], rest[2:], naming_style(reporter)))
