"""status: print the live view of running s6ipc daemons (ipcserverd, fdholderd), for humans or as JSON.

``s6ipc status PID`` asks the daemon running as PID; ``s6ipc status NAME`` asks every daemon of
that program (``ipcserverd``, ``fdholderd``) in this network namespace. Without ``-j`` each
answer is rendered as text; with ``-j`` each is printed as one JSON document on one line
(docs/status.md). See :mod:`s6ipc.daemon.liveview` for the protocol and who may read it.
"""

from __future__ import annotations

import errno
import os

from ..base.errors import Refused
from ..base.messages import Reporter, flush_stdio, write_stdout
from ..base.options import Command, UsageError, flag, scan_magnitude
from ..daemon.liveview import find_daemons, query, render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, NoReturn

    from ..daemon.liveview import Document

#: The largest pid Linux hands out (``/proc/sys/kernel/pid_max`` is at most 2**22).
PID_MAX = 2**22

USAGE = "[ -j ] pid|name"
COMMAND = Command({"j": flag("json")})


def documents(target: str) -> List[Document]:
    """The live views *target* (a pid or a program name) names. Raises :class:`Refused` (ESRCH)
    when there is none, and what :func:`s6ipc.daemon.liveview.query` raises."""
    if target.isascii() and target.isdigit():
        pid = scan_magnitude(target, 10, PID_MAX)
        if pid is None:  # no process can have it
            raise Refused(f"find a live view of pid {target}", errno.ESRCH)
        return [query(pid)]
    daemons = find_daemons(program=target)
    if not daemons:
        raise Refused(f"find a running {target} with a live view", errno.ESRCH)
    return [query(pid, name) for name, pid in daemons]


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o: Dict[str, bool] = {}
    rest = COMMAND.parse(args, o)
    if len(rest) != 1 or not rest[0]:
        raise UsageError("one pid or name")
    as_json = o.get("json", False)
    import json

    found = documents(rest[0])
    texts = [json.dumps(d, separators=(",", ":")) + "\n" if as_json else render(d) for d in found]
    write_stdout(("" if as_json else "\n").join(texts).encode("utf-8", "surrogateescape"))
    flush_stdio()
    os._exit(0)
