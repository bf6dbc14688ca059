"""listen-pid: the last-exec rule — make LISTEN_PID name this process, then exec the daemon.

Placed last, right before the daemon, after wrappers that fork (a shell script, ``chpst``…): the
``LISTEN_FDS`` list inherited (fds 3, 4, … open, names consistent) is kept as it is, and
``LISTEN_PID``/``LISTEN_PIDFDID`` are rewritten for this PID, which the exec'd daemon keeps.
"""

from __future__ import annotations

import os

from ..base.errors import BadInput
from ..base.messages import Reporter
from ..base.options import Command
from ..chain.run import exec_into
from ..sockets.give import describe, pending_list
from ..sockets.listenfds import PassedFd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "prog..."

COMMAND = Command({}, program=True)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    rest = COMMAND.parse(args, {})
    if os.environ.get("LISTEN_FDS") is None:
        raise BadInput("LISTEN_FDS is not set: no socket to hand over")
    os.environ["LISTEN_PID"] = str(os.getpid())  # the rule itself: whatever PID the list was made for
    passed: List[PassedFd] = pending_list()
    describe(passed)
    exec_into(reporter, rest)
