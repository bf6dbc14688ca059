"""fdholderd: hold descriptors for clients of the listening socket on fd 0 (s6-fdholderd).

With ``$NOTIFY_SOCKET`` it also says ``READY=1``; SIGUSR2 upgrades it in place (daemon/lifecycle.py,
fdholder/life.py).
"""

from __future__ import annotations

import os

from ..base.messages import Reporter
from ..base.options import Command, Option, flag, parse_uint, setting
from ..base.s6release import s6_release
from ..chain.daemon import serve_on, system
from ..daemon.lifecycle import Lifecycle, State
from ..daemon.readiness import Notifier, Readiness
from ..fdholder.life import KIND, HolderLife
from ..fdholder.server import DaemonConfig, FdHolderDaemon

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn, Optional

USAGE = ("[ -v verbosity ] [ -1 ] [ -c maxconn ] [ -n maxfds ] [ -t timeout ] [ -T lameducktimeout ] "
         "[ -i rulesdir | -x rulesfile ]")


def _rules_dir(config: DaemonConfig, path: str) -> None:
    config.rules_dir, config.rules_cdb = path, None


def _rules_cdb(config: DaemonConfig, path: str) -> None:
    config.rules_cdb, config.rules_dir = path, None


#: Extra arguments are ignored, as s6 does.
COMMAND = Command({
    "v": setting("verbosity", parse_uint), "1": flag("notify"), "c": setting("maxconn", parse_uint),
    "n": setting("maxfds", parse_uint), "i": Option(True, _rules_dir), "x": Option(True, _rules_cdb),
    "t": setting("timeout_ms", parse_uint), "T": setting("lameduck_ms", parse_uint),
})


def parse(args: List[str]) -> DaemonConfig:
    """Parse s6-fdholderd's command line (extra arguments are ignored, as s6 does)."""
    config = DaemonConfig(release=s6_release(os.environ))
    COMMAND.parse(args, config)
    return config


def preflight(args: List[str]) -> None:
    """What ``s6ipc preflight fdholderd ARGS`` checks before an in-place upgrade: the options,
    and that this code can take over the state of the running holder (given on stdin)."""
    from ..daemon.lifecycle import preflight_check
    from ..fdholder import server

    parse(args).normalise()
    preflight_check((KIND,), lambda state: server.parse_state(state.daemon))


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    config = parse(args)
    os_ = system()
    state: Optional[State] = Lifecycle.take(os_, KIND, reporter)
    # set below: SIGUSR2 is only read from the loop, once the lifecycle exists
    hook: List[Lifecycle] = []
    daemon = FdHolderDaemon(config, reporter, on_upgrade=lambda: hook[0].requested())
    readiness = Readiness(Notifier.from_environment(unset=False))
    holder = HolderLife(daemon, reporter)
    life = Lifecycle(KIND, reporter.name, args, holder, reporter, readiness,
                     held_signals=lambda: daemon.signals, system=os_, loop=daemon, clock=daemon.clock,
                     verbosity=config.verbosity, guard=holder.guard)
    hook.append(life)

    def start(taken: Optional[Dict[str, Any]]) -> None:
        def before_ready() -> None:
            if taken is None:
                holder.collect()  # what the guardian of an image that died after its exec holds
            life.open_live_view(daemon.watch, state)
        daemon.start(taken, before_ready=before_ready)

    if state is None:
        start(None)
    else:
        life.adopt(state, start)
        holder.released(state.daemon)
        life.resumed(state)
    life.tell(readiness.notifier.ready)
    serve_on(life, daemon.run, daemon.serve_on)
