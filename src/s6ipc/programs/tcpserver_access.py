"""tcpserver-access: check a TCP client against rules, DNS and ident, adjust the environment, exec prog.

All the deciding is :func:`s6ipc.access.tcp.evaluate`: the client scanned out of the environment,
then the decision the TCP daemon's fast path makes from its peer; this module logs its lines with
our own pid, then exits (1 refused, 2/99/111 for ident and DNS rejections) or execs the final
command.
"""

from __future__ import annotations

import os

from ..access.fastpath import RulesSource
from ..access.tcp import USAGE, FdConnection, evaluate, parse_options
from ..base.messages import Reporter
from ..chain.run import conclude

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

__all__ = ["USAGE", "main"]


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    options = parse_options(args)
    conclude(reporter, evaluate(options, dict(os.environ), FdConnection(), RulesSource(options)))
