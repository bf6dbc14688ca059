"""tcpserver-access: check a TCP client against rules, DNS and ident, adjust the environment, exec prog.

All the deciding is :func:`s6ipc.tcpaccess.evaluate` (shared with the TCP daemon's fast path); this
module logs its lines with our own pid, then exits (1 refused, 2/99/111 for ident and DNS
rejections) or execs the final command.
"""

from __future__ import annotations

import os
from typing import List, NoReturn, Optional, Sequence

from ..access import RulesSource, refusal_standin
from ..errors import BadInput
from ..execution import Spawner
from ..messages import Reporter
from ..options import UsageError
from ..tcpaccess import USAGE, FastTcpAccess, FdConnection, evaluate, parse_options
from .chain import own_program_call
from .ipcserver_access import conclude

__all__ = ["USAGE", "main", "fast_path"]


def fast_path(argv: Sequence[str], verbosity: int) -> Optional[FastTcpAccess]:
    """The in-process policy for a TCP daemon whose prog *argv* is our own tcpserver-access
    (``S6IPC [s6-]tcpserver-access OPTIONS… prog…``, see :func:`own_program_call`), or None.

    *verbosity* is the daemon's: at 2 and more a refusal spawns a stand-in (``false``) so that the
    daemon's own allow/end lines stay those of a real child. See :mod:`s6ipc.tcpaccess`.
    """
    call = own_program_call(argv)
    if call is None or call.name != "tcpserver-access":
        return None
    try:
        options = parse_options(call.args)
    except (UsageError, BadInput):
        return None
    return FastTcpAccess(options, Reporter(call.word), Spawner(argv), refusal_standin(verbosity))


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    options = parse_options(args)
    conclude(reporter, evaluate(options, dict(os.environ), FdConnection(), RulesSource(options)))
