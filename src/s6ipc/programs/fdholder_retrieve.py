"""fdholder-retrieve: get a descriptor from an fd-holder daemon onto fd 0, then exec a program.

With ``fdholder-retrieve HOLDER ID s6ipc ipcserverd prog…`` a service starts on a listening
socket that outlives it (see docs/zero-downtime-restarts.md).
"""

from __future__ import annotations

from ..base.descriptors import move_fd
from ..base.messages import Reporter
from ..base.options import UsageError, getopt, parse_uint
from ..chain.run import exec_into
from ..fdholder.client import FdHolderClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "[ -D ] [ -t timeout ] socket id prog..."


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    opts, rest = getopt(args, "Dt:")
    timeout, delete = 0, False
    for letter, value in opts:
        if letter == "D":
            delete = True
        else:
            timeout = parse_uint(value or "")
    if len(rest) < 3:
        raise UsageError("too few arguments")
    holder = FdHolderClient(rest[0], timeout / 1000 if timeout else None)
    fd = holder.retrieve(rest[1], delete)
    holder.close()
    move_fd(fd, 0)  # s6's "unable to move fd" / "unable to uncoe stdin"
    exec_into(reporter, rest[2:])
