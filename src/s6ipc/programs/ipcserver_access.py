"""ipcserver-access: check a client against access rules, adjust the environment, exec prog.

All the deciding is :func:`s6ipc.access.ipc.evaluate`: the client scanned out of the environment,
then the decision ipcserverd's fast path makes from its peer; this module logs its lines with our
own pid, then exits 1 (refused) or execs the final command.
"""

from __future__ import annotations

import os

from ..access.fastpath import RulesSource
from ..access.ipc import USAGE, evaluate, parse_options
from ..base.messages import Reporter
from ..chain.run import conclude
from ..sockets.unix import local_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

__all__ = ["USAGE", "main"]


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    options = parse_options(args)
    env = dict(os.environ)
    conclude(reporter, evaluate(options, env, lambda: local_path(0), RulesSource(options)))
