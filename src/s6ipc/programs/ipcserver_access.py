"""ipcserver-access: check a client against access rules, adjust the environment, exec prog.

All the deciding is :func:`s6ipc.access.evaluate` (shared with ipcserverd's fast path); this module
logs its lines with our own pid, then exits 1 (refused) or execs the final command.
"""

from __future__ import annotations

import errno
import os
from typing import List, NoReturn

from ..access import EXECLINE_MISSING, USAGE, RulesSource, emit, evaluate, parse_options
from ..accessrules import EXECLINEB
from ..errors import ExecFailure
from ..execution import exec_argv, restore_default_signals
from ..messages import Reporter, flush_stdio
from ..sockets import local_path

__all__ = ["USAGE", "main"]


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    options = parse_options(args)
    env = dict(os.environ)
    outcome = evaluate(options, env, lambda: local_path(0), RulesSource(options))
    emit(reporter, outcome.lines, os.getpid())
    if outcome.error is not None:
        reporter.die(outcome.error)
    if not outcome.allowed:
        flush_stdio()
        os._exit(1)
    flush_stdio()
    restore_default_signals()
    try:
        exec_argv(outcome.argv, outcome.env, path_env=outcome.search_path_env)
    except ExecFailure as e:
        if outcome.argv[0] == EXECLINEB and e.errno == errno.ENOENT:
            reporter.warn(EXECLINE_MISSING)
        reporter.die(e)
