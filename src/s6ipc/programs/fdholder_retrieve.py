"""fdholder-retrieve: get a descriptor from an fd-holder daemon onto fd 0, then exec a program.

With ``fdholder-retrieve HOLDER ID s6ipc ipcserverd prog…`` a service starts on a listening
socket that outlives it (see docs/zero-downtime-restarts.md).
"""

from __future__ import annotations

from ..base.descriptors import move_fd
from ..base.durations import scan_timeout
from ..base.messages import Reporter
from ..base.options import Command, flag, setting
from ..chain.run import exec_into
from ..fdholder.client import FdHolderClient

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, NoReturn

USAGE = "[ -D ] [ -t timeout ] socket id prog..."
COMMAND = Command({"D": flag("delete"), "t": setting("timeout", scan_timeout)}, 3)


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o: Dict[str, Any] = {}
    rest = COMMAND.parse(args, o)
    holder = FdHolderClient(rest[0], o.get("timeout"))
    fd = holder.retrieve(rest[1], o.get("delete", False))
    holder.close()
    move_fd(fd, 0)  # s6's "unable to move fd" / "unable to uncoe stdin"
    exec_into(reporter, rest[2:])
