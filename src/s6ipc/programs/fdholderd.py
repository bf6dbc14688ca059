"""fdholderd: hold descriptors for clients of the listening socket on fd 0 (s6-fdholderd)."""

from __future__ import annotations

import os
from typing import List, NoReturn

from ..fdholder.daemon import DaemonConfig, FdHolderDaemon
from ..messages import Reporter, flush_stdio
from ..options import getopt, parse_uint

USAGE = ("[ -v verbosity ] [ -1 ] [ -c maxconn ] [ -n maxfds ] [ -t timeout ] [ -T lameducktimeout ] "
         "[ -i rulesdir | -x rulesfile ]")


def parse(args: List[str]) -> DaemonConfig:
    """Parse s6-fdholderd's command line (extra arguments are ignored, as s6 does)."""
    opts, _ = getopt(args, "v:1c:n:i:x:t:T:")
    config = DaemonConfig()
    for letter, value in opts:
        v = value or ""
        if letter == "v":
            config.verbosity = parse_uint(v)
        elif letter == "1":
            config.notify = True
        elif letter == "i":
            config.rules_dir, config.rules_cdb = v, None
        elif letter == "x":
            config.rules_cdb, config.rules_dir = v, None
        elif letter == "t":
            config.timeout_ms = parse_uint(v)
        elif letter == "T":
            config.lameduck_ms = parse_uint(v)
        elif letter == "c":
            config.maxconn = parse_uint(v)
        elif letter == "n":
            config.maxfds = parse_uint(v)
    return config


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    daemon = FdHolderDaemon(parse(args), reporter)
    daemon.start()
    code = daemon.serve()
    flush_stdio()
    os._exit(code)
