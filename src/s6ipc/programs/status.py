"""status: print the live view of running s6ipc daemons (ipcserverd, fdholderd), for humans or as JSON.

``s6ipc status PID`` asks the daemon running as PID; ``s6ipc status NAME`` asks every daemon of
that program (``ipcserverd``, ``fdholderd``) in this network namespace. Without ``-j`` each
answer is rendered as text; with ``-j`` each is printed as one JSON document on one line
(docs/status.md). See :mod:`s6ipc.daemon.liveview` for the protocol and who may read it.
"""

from __future__ import annotations

import os

from ..base.messages import Reporter, flush_stdio, write_stdout
from ..base.options import Command, flag
from ..daemon.liveview import lookup, render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, NoReturn

USAGE = "[ -j ] pid|name"
COMMAND = Command({"j": flag("json")})


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    o: Dict[str, bool] = {}
    target = COMMAND.parse_one(args, o)
    as_json = o.get("json", False)
    import json

    found = lookup(target)
    texts = [json.dumps(d, separators=(",", ":")) + "\n" if as_json else render(d) for d in found]
    write_stdout(("" if as_json else "\n").join(texts).encode("utf-8", "surrogateescape"))
    flush_stdio()
    os._exit(0)
