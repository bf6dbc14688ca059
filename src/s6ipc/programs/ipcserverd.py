"""ipcserverd: accept connections on the listening socket on fd 0, spawn prog per connection."""

from __future__ import annotations

import os
from typing import List, NoReturn, Optional

from ..execution import DEFAULT_PATH, Spawner
from ..messages import Reporter, flush_stdio
from ..options import UsageError, getopt, parse_uint
from ..server import ConnectionPolicy, Server, ServerConfig
from .chain import own_prefix, program_name

USAGE = "[ -v verbosity ] [ -1 ] [ -P | -p ] [ -c maxconn ] [ -C localmaxconn ] prog..."


def parse(args: List[str]) -> ServerConfig:
    """Parse s6-ipcserverd's command line. Raises :class:`UsageError`."""
    opts, rest = getopt(args, "v:1Ppc:C:")
    config = ServerConfig(rest)
    for letter, value in opts:
        if letter == "v":
            config.verbosity = parse_uint(value or "")
        elif letter == "1":
            config.notify = True
        elif letter in "Pp":
            config.lookup = letter == "p"
        elif letter == "c":
            config.maxconn = parse_uint(value or "")
        elif letter == "C":
            config.localmaxconn = parse_uint(value or "")
    if not rest or not rest[0]:
        raise UsageError("no program")
    return config


def access_fast_path(config: ServerConfig) -> Optional[ConnectionPolicy]:
    """The in-process policy replacing our own ipcserver-access as prog, or None.

    Applies when prog is ``<own prefix> [s6-]ipcserver-access OPTIONS… prog…`` with valid options
    and ``-p`` (with ``-P`` the program would only fail, which it then does itself). See
    :mod:`s6ipc.access` for what the fast path guarantees.
    """
    prefix = own_prefix()
    argv, n = config.argv, len(prefix)
    if not config.lookup or len(argv) <= n or argv[:n] != prefix:
        return None
    if program_name(argv[n]) != "ipcserver-access":
        return None
    from ..access import FastAccess, parse_options

    try:
        options = parse_options(argv[n + 1 :])
    except UsageError:
        return None
    standin = Spawner(["false"], path_env={"PATH": DEFAULT_PATH}) if config.verbosity >= 2 else None
    return FastAccess(options, Reporter(argv[n]), Spawner(argv), standin)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args)
    child_name = reporter.name[:-1] if reporter.name.endswith("d") else reporter.name
    server = Server(config, reporter, Reporter(child_name + " (child)"))
    server.policy = access_fast_path(config)
    server.start()
    code = server.serve()
    flush_stdio()
    os._exit(code)
