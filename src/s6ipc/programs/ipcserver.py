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
from ..base.options import UINT32_MAX, UsageError, getopt, parse_octal, parse_uint
from ..chain.options import ServerOptions, naming_style, take_common
from ..chain.run import exec_into, stage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = (
    "[ -q | -Q | -v ] [ -d | -D ] [ -P | -p ] [ -1 ] [ -c maxconn ] [ -C localmaxconn ] "
    "[ -b backlog ] [ -a socketperms ] [ -G gid,gid,... ] [ -g gid ] [ -u uid ] [ -U ] path prog..."
)


def parse(args: List[str]) -> tuple[ServerOptions, List[str]]:
    """Parse s6-ipcserver's command line. Raises :class:`UsageError`."""
    opts, rest = getopt(args, "qQvdDPp1c:C:b:a:G:g:u:US")
    o = ServerOptions()
    for letter, value in opts:
        v = value or ""
        if take_common(o, letter, v):
            continue
        if letter in "Pp":
            o.lookup = letter == "p"
        elif letter == "S":
            o.systemd = True
        elif letter == "b":
            # s6-ipcserver keeps "not given" as (unsigned int)-1: -b 4294967295 means the default
            backlog = parse_uint(v)
            o.backlog = None if backlog == UINT32_MAX else backlog or 1
        elif letter == "a":
            o.perms = parse_octal(v)
    if len(rest) < 2:
        raise UsageError("too few arguments")
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
