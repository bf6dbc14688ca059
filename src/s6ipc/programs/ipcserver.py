"""ipcserver: rewrite s6-ipcserver's options into the chain socketbinder → [applyuidgid] → ipcserverd.

It does no work itself: it validates and normalises the options exactly as s6-ipcserver does
(``-b/-c/-C 0`` become 1, ``-a`` becomes ``0NNN``, ``-q/-v`` become ``-v0/-v2``, ``-U`` becomes
``-Uz`` and resets earlier ``-u/-g/-G``, a uid or gid of 0 means no change) and execs the chain.
The stages are named with :func:`s6ipc.chain.run.stage`, so the chain runs from a venv
without activating it — and, being ours, runs in this same process (see ``chain``).

Extension (not in s6-ipcserver, absent from its usage line; docs/ipcserver.md): ``-S`` builds the
chain on a socket passed by systemd instead of binding one — ``systemd-socket -l PATH -f`` takes
the place of the socket binder: the passed socket bound to PATH is adopted, and PATH is bound as
usual only when systemd passed none. So one ``ExecStart=`` line serves a ``.socket`` unit.
"""

from __future__ import annotations

from ..base.messages import Reporter
from ..base.options import Command, flag, parse_octal, setting
from ..chain.options import SERVER_OPTIONS, ServerOptions, backlog_at_least_one, naming_style
from ..chain.run import exec_into, stage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = (
    "[ -q | -Q | -v ] [ -d | -D ] [ -P | -p ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] "
    "[ -b backlog ] [ -a socketperms ] [ -G gid,gid,... ] [ -g gid ] [ -u uid ] [ -U ] path prog..."
)


COMMAND = Command({
    **SERVER_OPTIONS, "P": flag("lookup", False), "p": flag("lookup", True), "S": flag("systemd"),
    "b": setting("backlog", backlog_at_least_one), "a": setting("perms", parse_octal),
}, 2)


def parse(args: List[str]) -> tuple[ServerOptions, List[str]]:
    """Parse s6-ipcserver's command line. Raises :class:`UsageError`, :class:`BadInput` for ``-A``
    limits that do not parse."""
    o = ServerOptions()
    rest = COMMAND.parse(args, o)
    if o.admission:  # checked here, as s6 checks -c (BadInput: exit 100)
        from ..serve.admission import parse_limits

        parse_limits(o.admission, False)
    return o, rest


def build_chain(o: ServerOptions, path: str, prog: List[str], style: str = "") -> List[str]:
    """The argv s6-ipcserver would exec, with our stages in place of /usr/bin/s6-*."""
    if o.systemd:  # extension: the socket systemd passed, bound to path (else bind path)
        argv = stage("systemd-socket", "") + ["-l", path, "-f"]
    else:
        argv = stage("ipcserver-socketbinder", style)
    if not o.reuse:
        argv.append("-D")
    if o.backlog is not None:
        argv += ["-b", str(o.backlog)]
    if o.perms != 0o777:
        argv += ["-a", "0" + format(o.perms & 0o777, "o")]
    argv += ["--"] if o.systemd else ["--", path]
    argv += o.privileges.stage(style)
    argv += stage("ipcserverd", style)
    if o.verbosity != 1:
        argv.append(f"-v{o.verbosity}")
    if o.notify:
        argv.append("-1")
    if not o.lookup:
        argv.append("-P")
    return argv + o.limits() + ["--"] + prog


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o, rest = parse(args)
    exec_into(reporter, build_chain(o, rest[0], rest[1:], naming_style(reporter)))
