"""ipcserverd: accept connections on the listening socket on fd 0, spawn prog per connection."""

from __future__ import annotations

import os
from typing import List, NoReturn

from ..messages import Reporter, flush_stdio
from ..options import UsageError, getopt, parse_uint
from ..server import Server, ServerConfig

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


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args)
    child_name = reporter.name[:-1] if reporter.name.endswith("d") else reporter.name
    server = Server(config, reporter, Reporter(child_name + " (child)"))
    server.start()
    code = server.serve()
    flush_stdio()
    os._exit(code)
