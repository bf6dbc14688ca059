"""fdholderd: hold descriptors for clients of the listening socket on fd 0 (s6-fdholderd).

With ``$NOTIFY_SOCKET`` it also says ``READY=1``; SIGUSR2 upgrades it in place (fdholder/inplace.py).
"""

from __future__ import annotations

import os

from ..base.messages import Reporter, flush_stdio
from ..base.options import getopt, parse_uint
from ..daemon.readiness import Notifier
from ..daemon.upgrade import preflight_state, take_state
from ..fdholder.life import InPlace, open_live_view, read_state, resume
from ..fdholder.server import DaemonConfig, FdHolderDaemon

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

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


def preflight(args: List[str]) -> None:
    """What ``s6ipc preflight fdholderd ARGS`` checks before an in-place upgrade: the options,
    and that this code can take over the state of the running holder (given on stdin)."""
    parse(args).normalise()
    state = preflight_state()
    if state is not None:
        read_state(state)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args)
    state = take_state()
    upgrader = InPlace(reporter.name, args, reporter, Notifier.from_environment(unset=False))
    daemon = FdHolderDaemon(config, reporter, upgrader=upgrader)
    if state is None:
        daemon.start(before_ready=lambda: open_live_view(daemon, upgrader, None))
        upgrader.tell(upgrader.notifier.ready)
    else:
        resume(daemon, upgrader, state)
    code = daemon.serve()
    flush_stdio()
    os._exit(code)
