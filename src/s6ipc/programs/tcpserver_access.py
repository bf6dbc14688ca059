"""tcpserver-access: check a TCP client against rules, DNS and ident, adjust the environment, exec prog.

All the deciding is :func:`s6ipc.tcpaccess.evaluate` (shared with the TCP daemon's fast path); this
module logs its lines with our own pid, then exits (1 refused, 2/99/111 for ident and DNS
rejections) or execs the final command.
"""

from __future__ import annotations

import errno
import os
from typing import List, NoReturn

from ..access import EXECLINE_MISSING, RulesSource, emit
from ..accessrules import EXECLINEB
from ..errors import ExecFailure
from ..execution import exec_argv, restore_default_signals
from ..messages import Reporter, flush_stdio
from ..tcpaccess import USAGE, FdConnection, evaluate, parse_options

__all__ = ["USAGE", "main"]


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    options = parse_options(args)
    outcome = evaluate(options, dict(os.environ), FdConnection(), RulesSource(options))
    emit(reporter, outcome.lines, os.getpid())
    if outcome.error is not None:
        reporter.die(outcome.error)
    flush_stdio()
    if not outcome.allowed:
        os._exit(outcome.exit_code)
    restore_default_signals()
    try:
        exec_argv(outcome.argv, outcome.env, path_env=outcome.search_path_env)
    except ExecFailure as e:
        if outcome.argv[0] == EXECLINEB and e.errno == errno.ENOENT:
            reporter.warn(EXECLINE_MISSING)
        reporter.die(e)
