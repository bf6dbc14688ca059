"""ipcserver-access: check a client against access rules, adjust the environment, exec prog.

All the deciding is :func:`s6ipc.access.evaluate` (shared with ipcserverd's fast path); this module
logs its lines with our own pid, then exits 1 (refused) or execs the final command.
"""

from __future__ import annotations

import errno
import os
from typing import List, NoReturn

from ..access import EXECLINE_MISSING, USAGE, Outcome, RulesSource, emit, evaluate, parse_options
from ..accessrules import EXECLINEB
from ..errors import ExecFailure
from ..execution import exec_argv, restore_default_signals
from ..messages import Reporter, flush_stdio
from ..sockets import local_path

__all__ = ["USAGE", "main", "conclude"]


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    options = parse_options(args)
    env = dict(os.environ)
    conclude(reporter, evaluate(options, env, lambda: local_path(0), RulesSource(options)))


def conclude(reporter: Reporter, outcome: Outcome) -> NoReturn:
    """Do what an access program's *outcome* says: log its lines with our pid, then die of its
    error, exit with its refusal code, or exec its command (exec rules through execline)."""
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
